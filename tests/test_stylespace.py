"""StyleSpace (S) against stylegan3-editing's own W2S / forward(all_s=...) outputs, and the S helpers.

References: tests/data/golden/sg3*_64_styles.* (trimmed by make_trimmed_styles.py; see the reference set's
README section "StyleSpace (S) and StyleCLIP global directions"). The full set (../shared/golden or
$VIDEDIT_GOLDEN) adds whole-image and full-delta_i_c checks. Tolerances: the reference README's image
criterion (1e-4) and 1e-5 for styles, which are single affine layers (float32 round-off is ~1e-6).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from videdit.errors import VideditError
from videdit.networks.stylegan3 import Generator, make_transform, tiny_generator_kwargs
from videdit.stylespace import (
    ChannelRef, apply_channel_edit, apply_styleclip, check_styles, load_styles, parse_channel, save_styles,
    stack_styles, unstack_styles,
)
from videdit.styleclip import styleclip_direction

DATA = Path(__file__).resolve().parent / "data" / "golden"
FULL = Path(os.environ.get("VIDEDIT_GOLDEN", Path(__file__).resolve().parents[2] / "shared" / "golden"))
HAVE_FULL = (FULL / "sg3t_64_styles.safetensors").exists()
needs_full = pytest.mark.skipif(not HAVE_FULL, reason="full reference set (../shared/golden or $VIDEDIT_GOLDEN) not present")

pytestmark = [pytest.mark.numeric, pytest.mark.usefixtures("one_torch_thread")]


def load(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def crop(images: torch.Tensor) -> torch.Tensor:
    return images[:, :, 16:48, 16:48]  # the trimmed references keep this centre crop


def worst(a, b) -> float:
    return (a.detach().double() - b.detach().double()).abs().max().item()


@pytest.fixture(scope="module", params=["sg3t_64", "sg3r_64"])
def case(request):
    """(generator with the reference state, trimmed reference tensors, the styles JSON, ws)."""
    name = request.param
    G = Generator(**json.loads((DATA / f"{name}.json").read_text())["constructor_kwargs"])
    G.load_state_dict(load(DATA / f"{name}_state.safetensors"), strict=True)
    G.eval()
    ref = load(DATA / f"{name}_styles.safetensors")
    meta = json.loads((DATA / f"{name}_styles.json").read_text())
    ws = ref["ws.w0"].unsqueeze(1).repeat(1, G.num_ws, 1)
    return G, ref, meta, ws


def reference_styles(ref: dict, meta: dict) -> dict:
    return {key: ref[f"styles.{key}"] for key in meta["layer_order"]}


def test_w_to_s_equals_published_w2s(case):
    G, ref, meta, ws = case
    with torch.no_grad():
        S = G.synthesis.w_to_s(ws)
    assert list(S) == meta["layer_order"] == list(G.synthesis.style_widths())
    errors = {key: worst(S[key], ref[f"styles.{key}"]) for key in S}
    print("\nw_to_s worst abs:", max(errors.values()))
    assert max(errors.values()) <= 1e-5, errors
    torgb = G.synthesis.layer_names[-1]
    # The ToRGB entry carries its weight gain 1/sqrt(in_channels) (1x1 conv): without it, it would be far off.
    raw = getattr(G.synthesis, torgb).affine(ws[:, -1])
    assert worst(raw, ref[f"styles.{torgb}"]) > 0.1
    assert torch.allclose(S["input"][:, :2].norm(dim=1), torch.ones(3))


def test_render_from_styles_equals_render_from_ws(case):
    G, ref, meta, ws = case
    T = ref["transform_inv"]
    with torch.no_grad():
        from_ws = G.synthesis(ws, transform=T)
        from_s = G.synthesis(None, transform=T, styles=G.synthesis.w_to_s(ws))
        from_ref_s = G.synthesis(None, transform=T, styles=reference_styles(ref, meta))
    assert torch.equal(from_ws, from_s)
    e = worst(crop(from_ref_s), ref["img_from_styles.c32"])
    print(f"\nrender from reference styles worst abs: {e:.2e}")
    assert e <= 1e-4


U = 2.0 ** -24  # float32 unit roundoff


def affine_rounding_bound(affine, x: torch.Tensor) -> torch.Tensor:
    """Bound on |a - b| for two float32 evaluations of affine(x) that differ only in summation order: each is
    within (K+2)*u*(sum_i |x_i*w_ji| + |b_j|) of the exact value (K-term dot product, the bias, the gains;
    Higham's gamma_K), so their difference within twice that."""
    terms = x.abs() @ (affine.weight.abs() * affine.weight_gain).t() + affine.bias.abs() * affine.bias_gain
    return 2 * (affine.in_features + 2) * U * terms


@torch.no_grad()
def styles_rounding_bound(synthesis, ws: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-entry bound on |S_a - S_b| for two float32 evaluations of w_to_s(ws) that differ only in summation order
    (say one matrix product per layer against a row at a time). The layers: the affine's bound (ToRGB's times its
    gain, plus that product's rounding). `input`, t / |t[:2]|: with dt the affine's bound and n = |t[:2]|,
    |d(t/n)| <= dt/n + |t| |dn| / n^2 where |dn| <= |dt[:2]| (+ the norm's rounding), plus the division's rounding."""
    w = ws.to(torch.float32)
    t = synthesis.input.affine(w[:, 0])
    dt = affine_rounding_bound(synthesis.input.affine, w[:, 0])
    n = t[:, :2].norm(dim=1, keepdim=True)
    dn = dt[:, :2].norm(dim=1, keepdim=True) + 4 * U * n
    bounds = {"input": dt / n + t.abs() * dn / n ** 2 + 2 * U * t.abs() / n}
    for index, name in enumerate(synthesis.layer_names, start=1):
        layer = getattr(synthesis, name)
        bound = affine_rounding_bound(layer.affine, w[:, index])
        if layer.is_torgb:
            gain = 1 / layer.in_channels ** 0.5
            bound = gain * bound + 2 * U * gain * layer.affine(w[:, index]).abs()
        bounds[name] = bound
    return bounds


def test_render_from_ws_is_the_render_of_its_styles_bit_for_bit(tiny):
    """Exact by construction: forward renders ws through w_to_s, so both calls run the same operations on the same
    values, on the CPU's sample-by-sample inference path and on the batched path that a backward pass takes. On
    the first, each sample's styles and render are also those of the sample alone, whatever batch it is in."""
    ws = tiny.mapping(torch.randn(3, tiny.z_dim, generator=torch.Generator().manual_seed(1))).detach()
    inverses = torch.linalg.inv(make_transform(torch.tensor([[0.0, 0.0], [0.1, -0.05], [-0.07, 0.12]]),
                                               torch.tensor([0.0, 12.0, -20.0]))).float()
    with torch.no_grad():
        images = tiny.synthesis(ws, transform=inverses)
        S = tiny.synthesis.w_to_s(ws)
        assert torch.equal(images, tiny.synthesis(None, transform=inverses, styles=S))
        alone = tiny.synthesis.w_to_s(ws[1:2])
        assert all(torch.equal(S[key][1:2], alone[key]) for key in S)
        assert torch.equal(images[1:2], tiny.synthesis(ws[1:2], transform=inverses[1:2]))
        batched = tiny.synthesis.w_to_s(ws, per_sample=False)  # one matrix product per layer (statistics)
    bounds = styles_rounding_bound(tiny.synthesis, ws)  # the same sums, rounded in another order
    assert all(((batched[key] - S[key]).abs() <= bounds[key]).all() for key in S)
    with torch.enable_grad():
        ws = ws.clone().requires_grad_(True)
        from_ws = tiny.synthesis(ws, transform=inverses)
        from_s = tiny.synthesis(None, transform=inverses, styles=tiny.synthesis.w_to_s(ws))
    assert torch.equal(from_ws, from_s)


def test_render_from_styles_is_differentiable(case):
    G, ref, meta, ws = case
    S = {k: v.clone().requires_grad_(True) for k, v in reference_styles(ref, meta).items()}
    G.synthesis(None, transform=ref["transform_inv"][0], styles=S).square().mean().backward()
    assert all(S[k].grad is not None and S[k].grad.abs().sum() > 0 for k in S)


def test_hand_channel_edits_match_published(case):
    G, ref, meta, ws = case
    widths = G.synthesis.style_widths()
    S = reference_styles(ref, meta)
    for edit in meta["hand_edits"]:  # the input 4-vector, an early conv, a middle conv, the ToRGB layer
        S = apply_channel_edit(S, parse_channel(f"{edit['key']}:{edit['channel']}", widths), edit["delta"])
    with torch.no_grad():
        img = G.synthesis(None, transform=ref["transform_inv"], styles=S)
    e = worst(crop(img), ref["img_hand_edit.c32"])
    print(f"\nhand edit worst abs: {e:.2e} (edit changes the image by {meta['check']['hand_vs_plain']:.2f})")
    assert e <= 1e-4


def test_styleclip_direction_on_reference_rows(case):
    """The published get_delta_s on the kept delta_i_c rows (they include the largest |r_c|, so the normaliser
    is the full set's, and rows on both sides of beta): each kept channel's direction value is reproduced."""
    G, ref, meta, ws = case
    flat_std = torch.cat([ref[f"s_std.{k}"] for k in meta["layer_order"]])
    flat_dir = torch.cat([ref[f"direction.{k}"] for k in meta["layer_order"]])
    index = ref["delta_i_c.index"]
    got = styleclip_direction(ref["delta_i_c.rows"], {"kept": flat_std[index]}, ref["delta_i"], meta["styleclip"]["beta"])
    assert worst(got["kept"], flat_dir[index]) <= 1e-6
    assert (got["kept"] == 0).any() and (got["kept"] != 0).any()  # the threshold bites within the kept rows


def test_styleclip_render_matches_published(case):
    G, ref, meta, ws = case
    direction = {key: ref[f"direction.{key}"] for key in meta["layer_order"]}
    S = apply_styleclip(reference_styles(ref, meta), direction, meta["styleclip"]["alpha"])
    with torch.no_grad():
        img = G.synthesis(None, transform=ref["transform_inv"], styles=S)
    e = worst(crop(img), ref["img_styleclip.c32"])
    print(f"\nstyleclip render worst abs: {e:.2e}")
    assert e <= 1e-4


@needs_full
@pytest.mark.parametrize("name", ["sg3t_64", "sg3r_64"])
def test_full_reference_set(name):
    """Whole images and the whole delta_i_c (the trimmed copies keep crops and 24 rows)."""
    meta = json.loads((FULL / f"{name}_styles.json").read_text())
    ref = load(FULL / f"{name}_styles.safetensors")
    G = Generator(**json.loads((FULL / f"{name}.json").read_text())["constructor_kwargs"])
    G.load_state_dict(load(FULL / f"{name}_state.safetensors"), strict=True)
    G.eval()
    T = ref["transform_inv"]
    s_std = {k: ref[f"s_std.{k}"] for k in meta["layer_order"]}
    direction = styleclip_direction(ref["delta_i_c"], s_std, ref["delta_i"], meta["styleclip"]["beta"])
    assert list(direction) == meta["layer_order"]
    assert worst(torch.cat(list(direction.values())), torch.cat([ref[f"direction.{k}"] for k in direction])) <= 1e-6
    assert sum(int((d != 0).sum()) for d in direction.values()) == meta["check"]["n_direction_nonzero"]
    widths = G.synthesis.style_widths()
    with torch.no_grad():
        S = G.synthesis.w_to_s(ref["ws"])
        hand = S
        for edit in meta["hand_edits"]:
            hand = apply_channel_edit(hand, ChannelRef(edit["key"], edit["channel"]), edit["delta"])
        images = {
            "img_w": G.synthesis(ref["ws"], transform=T),
            "img_from_styles": G.synthesis(None, transform=T, styles=S),
            "img_hand_edit": G.synthesis(None, transform=T, styles=hand),
            "img_styleclip": G.synthesis(None, transform=T, styles=apply_styleclip(S, direction, meta["styleclip"]["alpha"])),
        }
    assert sum(widths.values()) == meta["check"]["n_total_channels"]
    for key, img in images.items():
        e = worst(img, ref[key])
        print(f"\n{name} {key} worst abs: {e:.2e}")
        assert e <= 1e-4, key


# ---- helpers: parsing, editing, batching, files ------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Generator(**tiny_generator_kwargs(resolution=16, channels=8)).eval()


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_parse_channel_errors_name_valid_ranges(tiny):
    widths = tiny.synthesis.style_widths()
    layer = tiny.synthesis.layer_names[3]
    assert parse_channel(f"{layer}:2", widths) == ChannelRef(layer, 2)
    assert parse_channel("input:3", widths) == ChannelRef("input", 3)
    with pytest.raises(VideditError) as err:
        parse_channel("L99_16_8:0", widths)
    assert "unknown StyleSpace layer 'L99_16_8'" in one_line(err) and f"{layer} (0-{widths[layer] - 1})" in one_line(err)
    with pytest.raises(VideditError) as err:
        parse_channel(f"{layer}:{widths[layer]}", widths)
    assert f"valid: 0-{widths[layer] - 1}" in one_line(err)
    for bad in ("input:-1", "input", f"{layer}:x", ":3"):
        with pytest.raises(VideditError) as err:
            parse_channel(bad, widths)
        one_line(err)


def test_channel_edit_changes_one_channel_only(tiny):
    with torch.no_grad():
        S = tiny.synthesis.w_to_s(tiny.mapping(torch.randn(2, tiny.z_dim)))
    ref = ChannelRef(tiny.synthesis.layer_names[1], 5)
    edited = apply_channel_edit(S, ref, 2.5)
    for key in S:
        diff = edited[key] - S[key]
        if key == ref.key:
            assert torch.allclose(diff[:, 5], torch.full((2,), 2.5)) and diff[:, :5].abs().max() == 0
        else:
            assert torch.equal(diff, torch.zeros_like(diff))
    assert not torch.equal(edited[ref.key], S[ref.key])  # the input S is left as it was


def test_stack_unstack_round_trip_and_checks(tiny):
    with torch.no_grad():
        S = tiny.synthesis.w_to_s(tiny.mapping(torch.randn(3, tiny.z_dim)))
    frames = unstack_styles(S)
    assert len(frames) == 3 and frames[1]["input"].shape == (1, 4)
    again = stack_styles(frames)
    assert list(again) == list(S) and all(torch.equal(again[k], S[k]) for k in S)
    with torch.no_grad():
        batched = tiny.synthesis(None, styles=S)
        single = tiny.synthesis(None, styles=frames[2])
    assert torch.equal(batched[2:], single)  # exact by construction: CPU inference renders each sample alone
    widths = tiny.synthesis.style_widths()
    check_styles(S, widths)
    bad = dict(S)
    bad.pop("input")
    with pytest.raises(VideditError) as err:
        check_styles(bad, widths)
    assert "missing ['input']" in one_line(err)
    with pytest.raises(VideditError):
        tiny.synthesis(None, styles=bad)
    with pytest.raises(ValueError):
        tiny.synthesis(torch.zeros(1, 16, tiny.w_dim), styles=S)


def test_save_load_styles_keeps_order_and_bytes(tiny, tmp_path):
    with torch.no_grad():
        S = tiny.synthesis.w_to_s(tiny.mapping(torch.randn(4, tiny.z_dim)))
    first = save_styles(tmp_path / "a" / "styles.safetensors", S)
    second = save_styles(tmp_path / "b.safetensors", S)
    assert first.read_bytes() == second.read_bytes()  # same S, same bytes
    loaded = load_styles(first, tiny.synthesis.style_widths())
    assert list(loaded) == list(S)  # L10 after L9, not sorted by name
    assert all(torch.equal(loaded[k], S[k]) for k in S)
    other = Generator(**tiny_generator_kwargs(resolution=16, channels=16)).synthesis
    with pytest.raises(VideditError) as err:
        load_styles(first, other.style_widths())
    one_line(err)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(VideditError) as err:
        load_styles(tmp_path / "junk.safetensors")
    one_line(err)
