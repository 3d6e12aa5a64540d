"""StyleCLIP global directions: direction arithmetic, CLIP text side (a tiny open_clip CLIP with random
weights, built offline), delta_i_c / s_stats computation on a tiny generator (resume, no leaking pushes),
the released-file loaders (s_stats refused when it could run code) and one-line errors."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.test_stylespace import U, styles_rounding_bound
from videdit.errors import CheckpointError, MissingWeightsError, VideditError
from videdit.networks.stylegan3 import Generator, tiny_generator_kwargs
from videdit.styleclip import (
    CLIP_MEAN, CLIP_STD, SStats, channel_clip_deltas, clip_tokenizer, compute_s_stats, compute_styleclip_directions,
    load_clip, load_delta_i_c, load_s_stats, prompt_templates, sample_styles, save_s_stats, styleclip_direction, text_direction,
    text_edit_direction,
)

pytestmark = [pytest.mark.numeric, pytest.mark.usefixtures("one_torch_thread")]


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def tiny_clip():
    """A CLIP in OpenAI's layout with random weights: 1 vision and 1 text block, width 64, 32 px, 32-d embeddings."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    model = CLIP(32, CLIPVisionCfg(layers=1, width=64, patch_size=16, image_size=32),
                 CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1), quick_gelu=True)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def clip_file(tiny_clip, tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny-clip.pt"
    torch.save(tiny_clip.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tiny_G():
    """A small generator whose input affine is not the constant it starts as (so `input` channels move images)."""
    torch.manual_seed(1)
    G = Generator(**tiny_generator_kwargs(resolution=16, channels=4)).eval()
    with torch.no_grad():
        G.synthesis.input.affine.weight.normal_()
    return G


# ---- direction arithmetic --------------------------------------------------------------------------------------

def test_direction_arithmetic_split_threshold_and_errors():
    s_std = {"input": np.array([1, 2, 3, 4], np.float32), "L0_36_3": np.array([0.5, 1, 2], np.float32)}
    delta_i = torch.tensor([1.0, 0.0])
    delta_i_c = torch.tensor([[0.9, 1], [0.1, 0], [-0.5, 2], [0.2, 0], [0.0, 1], [-0.3, 0], [0.12, 0]])
    d = styleclip_direction(delta_i_c, s_std, delta_i, beta=0.13)
    assert list(d) == ["input", "L0_36_3"] and d["input"].shape == (4,) and d["L0_36_3"].shape == (3,)
    # r = [0.9, 0.1, -0.5, 0.2, 0, -0.3, 0.12]; |r| < 0.13 -> 0; / 0.9; * std
    expected = torch.tensor([1.0, 0, -0.5 / 0.9 * 3, 0.2 / 0.9 * 4, 0, -0.3 / 0.9 * 1, 0])
    assert torch.allclose(torch.cat([d["input"], d["L0_36_3"]]), expected, atol=1e-6)
    nothing = styleclip_direction(delta_i_c, s_std, delta_i, beta=5.0)  # no channel passes: zero, not NaN
    assert all(torch.equal(v, torch.zeros_like(v)) for v in nothing.values())
    with pytest.raises(VideditError) as err:
        styleclip_direction(delta_i_c[:6], s_std, delta_i, beta=0.1)
    assert "[7, D]" in one_line(err)
    with pytest.raises(VideditError) as err:
        styleclip_direction(delta_i_c, s_std, torch.ones(3), beta=0.1)
    one_line(err)


def test_top_level_lazy_export():
    import videdit

    assert videdit.styleclip_direction is styleclip_direction
    code = "import sys, videdit; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


# ---- CLIP ------------------------------------------------------------------------------------------------------

def test_load_clip_from_state_dict_safetensors_and_torchscript(tiny_clip, clip_file, tmp_path):
    from safetensors.torch import save_file

    want = tiny_clip.state_dict()
    save_file({k: v.contiguous() for k, v in want.items()}, tmp_path / "c.safetensors")
    traced = torch.jit.trace_module(tiny_clip, {"encode_image": torch.zeros(1, 3, 32, 32)})
    traced.save(str(tmp_path / "c_jit.pt"))  # OpenAI's release is a TorchScript archive
    for path in (clip_file, tmp_path / "c.safetensors", tmp_path / "c_jit.pt"):
        model = load_clip(path)
        got = model.state_dict()
        assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want), path
        assert model.visual.image_size == (32, 32) and not model.training


def test_load_clip_bad_or_missing_file(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        load_clip(tmp_path / "ViT-B-32.pt")
    assert "ViT-B-32.pt not found" in one_line(err) and "videdit weights fetch clip_vit_b32" in one_line(err)
    for loader in (load_s_stats, lambda p: load_delta_i_c(p, {"input": np.ones(4)})):
        with pytest.raises(MissingWeightsError) as err:
            loader(tmp_path / "absent")
        one_line(err)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError) as err:
        load_clip(tmp_path / "other.pt")
    assert "missing visual.proj" in one_line(err)
    for junk in ("junk.pt", "junk.safetensors"):
        (tmp_path / junk).write_bytes(b"junk" * 10)
        with pytest.raises(CheckpointError) as err:
            load_clip(tmp_path / junk)
        one_line(err)


def test_templates_are_open_clips_imagenet_list_as_styleclip_uses_it():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    templates = prompt_templates()
    assert len(OPENAI_IMAGENET_TEMPLATES) == 80 and len(templates) == 79 and all("{}" in t for t in templates)
    assert "a photo of many {}." not in templates
    assert templates[0].format("a face") == "a bad photo of a a face."
    assert "a sculpture of a {}." in templates


def test_text_direction_is_the_published_average(tiny_clip, tmp_path):
    tokenizer = clip_tokenizer(tiny_clip)
    templates = ["a photo of {}.", "art of {}.", "{}"]
    got = text_direction(tiny_clip, tokenizer, "a happy face", templates=templates)

    def prompt_mean(prompt):  # one template at a time, then the average of unit vectors, renormalised
        rows = [tiny_clip.encode_text(tokenizer([t.format(prompt)]))[0] for t in templates]
        rows = torch.stack([r / r.norm() for r in rows]).mean(0)
        return rows / rows.norm()

    with torch.no_grad():
        diff = prompt_mean("a happy face") - prompt_mean("a face")
    assert (got - diff / diff.norm()).abs().max() <= 1e-5
    assert abs(got.norm().item() - 1) < 1e-5
    swapped = text_direction(tiny_clip, tokenizer, "a face", "a happy face", templates=templates)
    assert (swapped + got).abs().max() <= 1e-6
    (tmp_path / "templates.txt").write_text("\n".join(templates[:2]) + "\n")  # the published file's format
    from_file = text_direction(tiny_clip, tokenizer, "a happy face", templates=tmp_path / "templates.txt")
    assert not torch.allclose(from_file, got)  # two templates, not three
    with pytest.raises(VideditError):
        text_direction(tiny_clip, tokenizer, "a happy face", templates=["no placeholder"])
    default = text_direction(tiny_clip, tokenizer, "a happy face")
    assert default.shape == (32,)


# ---- computing delta_i_c and s_stats ----------------------------------------------------------------------------

def test_channel_deltas_follow_the_formula_and_do_not_leak(tiny_G, tiny_clip):
    stats = compute_s_stats(tiny_G, 64)
    samples = next(sample_styles(tiny_G, 2))
    key = tiny_G.synthesis.layer_names[2]
    rows = channel_clip_deltas(tiny_G, tiny_clip, samples, stats, key, [0, 1, 2], strength=5.0)
    alone = channel_clip_deltas(tiny_G, tiny_clip, samples, stats, key, [2], strength=5.0)
    # The published script leaves channels 0 and 1 pushed while it does channel 2; here channel 2 alone is the same.
    assert np.array_equal(rows[2], alone[0])
    assert np.allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-5)

    def embed(value):  # the published preprocessing, written out for one push
        S = {k: v.clone() for k, v in samples.items()}
        S[key][:, 2] = value
        with torch.no_grad():
            img = tiny_G.synthesis(None, transform=torch.eye(3), styles=S)
            img = F.interpolate(img, size=(32, 32), mode="bicubic", align_corners=True)
            img = ((img + 1) / 2).clamp(0, 1)
            img = (img - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
            f = tiny_clip.encode_image(img).double()
        return f / f.norm(dim=1, keepdim=True)

    mean, std = float(stats.mean[key][2]), float(stats.std[key][2])
    d = embed(mean + 5 * std) - embed(mean - 5 * std)
    d = (d / d.norm(dim=1, keepdim=True)).mean(0)
    # Round-off only: the module encodes minus and plus pushes in one CLIP batch (another batch shape, so sums in
    # another order), and the difference of two close unit vectors magnifies that: measured up to 2.3e-5 over the
    # kernel settings of .ci/run, so 1e-4 leaves 4x.
    error = np.abs(rows[2] - (d / d.norm()).numpy()).max()
    print(f"\ndelta_i_c row against the published preprocessing: worst abs {error:.2e}")
    assert error <= 1e-4


def test_s_stats_match_plain_statistics(tiny_G):
    stats = compute_s_stats(tiny_G, 50, truncation_psi=0.7, seed=3, batch_size=16)
    samples = next(sample_styles(tiny_G, 5, truncation_psi=0.7, seed=3))
    z = torch.from_numpy(np.random.RandomState(3).randn(50, tiny_G.z_dim).astype(np.float32))
    with torch.no_grad():
        S = tiny_G.synthesis.w_to_s(tiny_G.mapping(z, None, truncation_psi=0.7))
    # The same latents, but the statistics take one matrix product per layer and w_to_s here a row at a time (CPU
    # inference): each entry within the bound for two summation orders (test_stylespace), so are the means and,
    # std being a seminorm, the standard deviations (|std a - std b| <= max |a - b|); the statistics are then
    # stored as float32 (one more rounding).
    bounds = styles_rounding_bound(tiny_G.synthesis, tiny_G.mapping(z, None, truncation_psi=0.7))
    print(f"\nS of the statistics against w_to_s: worst abs {max((samples[k] - S[k][:5]).abs().max().item() for k in S):.2e}, "
          f"worst share of the bound {max(((samples[k] - S[k][:5]).abs() / bounds[k][:5]).max().item() for k in S):.2f}")
    for key, value in S.items():
        assert ((samples[key] - value[:5]).abs() <= bounds[key][:5]).all(), key
        atol = bounds[key].max().item() + 2 * U * value.abs().max().item()
        assert np.allclose(stats.mean[key], value.double().mean(0).numpy(), rtol=0, atol=atol), key
        assert np.allclose(stats.std[key], value.double().std(0, unbiased=False).numpy(), rtol=0, atol=atol), key
    # theta = mean arccos(input[:, 0]): each term moves by at most its bound / sqrt(1 - x^2).
    x = S["input"][:, 0].double()
    theta_bound = (bounds["input"][:, 0].double() / (1 - x.square()).sqrt()).mean().item() + 1e-12
    assert abs(stats.transform["theta"] - torch.arccos(x).mean().item()) <= theta_bound


def test_compute_directions_resumes_to_the_same_bytes(tiny_G, tiny_clip, tmp_path):
    out = tmp_path / "dirs"
    kwargs = dict(stats_samples=32, batch_size=8, chunk_channels=4, quiet=True)
    first = compute_styleclip_directions(tiny_G, tiny_clip, out, 1, **kwargs)
    total = sum(tiny_G.synthesis.style_widths().values())
    reference = first.delta_i_c.read_bytes()
    stats = load_s_stats(first.s_stats)
    delta_i_c = load_delta_i_c(first.delta_i_c, stats.std)
    assert delta_i_c.shape == (total, 32) and list(stats.std) == list(tiny_G.synthesis.style_widths())
    assert torch.isfinite(delta_i_c).all() and first.chunks_reused == 0
    # A killed run: the final file and two chunks are gone; the rerun computes just those two.
    first.delta_i_c.unlink()
    chunks = sorted((out / "partial").glob("*.npy"))
    for path in chunks[3:5]:
        path.unlink()
    again = compute_styleclip_directions(tiny_G, tiny_clip, out, 1, **kwargs)
    assert (again.chunks_computed, again.chunks_reused) == (2, len(chunks) - 2)
    assert again.delta_i_c.read_bytes() == reference
    with pytest.raises(VideditError) as err:  # other settings must not mix with the saved chunks
        compute_styleclip_directions(tiny_G, tiny_clip, out, 1, strength=10.0, **kwargs)
    assert "other settings" in one_line(err)
    # The files drive a text edit on this generator.
    direction = text_edit_direction("a happy face", beta=0.0, synthesis=tiny_G.synthesis, clip_path=_saved(tiny_clip, tmp_path),
                                    delta_i_c_path=again.delta_i_c, s_stats_path=again.s_stats, templates=["{}"])
    assert list(direction) == list(tiny_G.synthesis.style_widths()) and any(v.abs().sum() > 0 for v in direction.values())


def _saved(model, tmp_path) -> Path:
    path = tmp_path / "clip.pt"
    torch.save(model.state_dict(), path)
    return path


# ---- released files and bad input ------------------------------------------------------------------------------

def released_s_stats(widths: dict[str, int], protocol: int) -> bytes:
    rng = np.random.RandomState(0)
    mean = {k: rng.randn(w).astype(np.float32) for k, w in widths.items()}
    std = {k: rng.rand(w).astype(np.float32) for k, w in widths.items()}
    return pickle.dumps([{"theta": np.float64(0.02), "x": np.float32(0.01), "y": -0.003}, mean, std], protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_load_released_s_stats_layout(tmp_path, protocol):
    widths = {"input": 4, "L0_36_8": 8, "L1_16_3": 8}
    (tmp_path / "s_stats").write_bytes(released_s_stats(widths, protocol))
    stats = load_s_stats(tmp_path / "s_stats")
    assert list(stats.std) == list(widths) and stats.std["L0_36_8"].dtype == np.float32
    assert stats.transform == pytest.approx({"theta": 0.02, "x": 0.01, "y": -0.003})
    save_s_stats(tmp_path / "ours", stats)
    back = load_s_stats(tmp_path / "ours")
    assert all(np.array_equal(back.mean[k], stats.mean[k]) for k in widths)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_s_stats_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    cases = {
        "system": pickle.dumps([{}, {"input": _RunsCode(marker)}, {}]),
        "torch": pickle.dumps([{}, {"input": torch.zeros(4)}, {"input": torch.ones(4)}]),  # fine for snapshots, not here
        "objects": pickle.dumps([{}, {"input": np.array([print], dtype=object)}, {"input": np.zeros(1, np.float32)}]),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError) as err:
            load_s_stats(tmp_path / name)
        assert "refused" in one_line(err), name
    assert not marker.exists()
    (tmp_path / "cut").write_bytes(released_s_stats({"input": 4}, 4)[:40])
    with pytest.raises(CheckpointError) as err:
        load_s_stats(tmp_path / "cut")
    one_line(err)


def test_delta_i_c_must_match_the_generator(tiny_G, tmp_path):
    widths = tiny_G.synthesis.style_widths()
    stats = SStats({}, {k: np.zeros(w, np.float32) for k, w in widths.items()}, {k: np.ones(w, np.float32) for k, w in widths.items()})
    np.save(tmp_path / "delta_i_c.npy", np.zeros((sum(widths.values()) + 5, 512), np.float32))
    with pytest.raises(VideditError) as err:
        load_delta_i_c(tmp_path / "delta_i_c.npy", stats.std)
    assert f"has {sum(widths.values()) + 5} rows but the generator has {sum(widths.values())}" in one_line(err)
    # s_stats made for another generator is caught before anything heavy is loaded.
    other = {k: np.ones(w + 1, np.float32) for k, w in widths.items()}
    save_s_stats(tmp_path / "s_stats", SStats({}, other, other))
    (tmp_path / "clip.pt").write_bytes(b"unused")
    with pytest.raises(VideditError) as err:
        text_edit_direction("a happy face", beta=0.1, synthesis=tiny_G.synthesis, clip_path=tmp_path / "clip.pt",
                            delta_i_c_path=tmp_path / "delta_i_c.npy", s_stats_path=tmp_path / "s_stats")
    assert "another generator" in one_line(err)


def test_text_edit_with_files_missing_names_them_all(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        text_edit_direction("a happy face", beta=0.13, weights_dir=tmp_path)
    text = str(err.value)
    assert "3 weight file(s) missing" in text and "ViT-B-32.pt" in text and "delta_i_c.npy" in text and "s_stats" in text


def videdit(*args, env=None):
    # One thread: the CPU is shared, and oversubscribed threads made this 30x slower.
    return subprocess.run([sys.executable, "-m", "videdit", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))


@pytest.mark.slow
def test_cli_directions_styleclip(tiny_G, clip_file, tmp_path):
    from videdit.checkpoints import save_generator

    generator = save_generator(tiny_G, tmp_path / "g.safetensors")
    out = videdit("directions", "styleclip", "--generator", generator, "--clip", clip_file, "--out", tmp_path / "d",
                  "--samples", "1", "--stats-samples", "16")
    assert out.returncode == 0, out.stderr
    total = sum(tiny_G.synthesis.style_widths().values())
    assert f"{total} style channels x 2 pushes x 1 samples = {2 * total} renders" in out.stderr
    assert np.load(tmp_path / "d" / "delta_i_c.npy").shape == (total, 32)
    assert "0 reused" in out.stdout  # (resuming is checked in-process above)
    # Bad input: one line, non-zero exit.
    no_clip = videdit("directions", "styleclip", "--generator", generator, "--out", tmp_path / "e",
                      env={"VIDEDIT_WEIGHTS": str(tmp_path / "w")})
    assert no_clip.returncode == 3 and "ViT-B-32.pt" in no_clip.stderr and "Traceback" not in no_clip.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "s_stats").write_bytes(pickle.dumps([{}, {"input": _RunsCode(tmp_path / "pwned")}, {}]))
    bad = videdit("directions", "styleclip", "--generator", generator, "--clip", clip_file, "--out", tmp_path / "bad",
                  "--samples", "1", "--stats-samples", "16", "-q")
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 1 and len(lines) == 1 and "refused" in lines[0] and not (tmp_path / "pwned").exists()
