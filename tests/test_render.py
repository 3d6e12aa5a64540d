"""Rendering: outputs, exact zero-strength edit, field-of-view expansion, StyleSpace offsets."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from videdit.errors import InputError
from videdit.io.color import to_uint8
from videdit.stages.render import RenderSettings, canvas_tiles, render_expanded, run_render

pytestmark = pytest.mark.numeric

N_FRAMES = 5
RES = 32
FPS = Fraction(24)


def _generator():
    from videdit.networks.stylegan3 import Generator, tiny_generator_kwargs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        G = Generator(**tiny_generator_kwargs(RES, channels=8, num_layers=4)).eval()
    with torch.no_grad():  # a random generator is nearly flat grey; more contrast makes the checks bite
        getattr(G.synthesis, G.synthesis.layer_names[-1]).weight.mul_(5)
    return G


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A tiny generator, smoothed latents (recon, a zero and a non-zero edit), transforms, crops, a source clip."""
    from videdit.networks.stylegan3 import make_transform
    from videdit.synthetic import astronaut, make_clip, place_photo

    root = tmp_path_factory.mktemp("render")
    G = _generator()
    gen = torch.Generator().manual_seed(2)
    ws = G.mapping(torch.randn(1, G.z_dim, generator=gen), None).detach()
    ws = (ws.repeat(N_FRAMES, 1, 1) + 0.1 * torch.randn(N_FRAMES, G.num_ws, G.w_dim, generator=gen)).numpy()
    direction = np.random.default_rng(3).standard_normal(512).astype(np.float32)
    direction *= 10 / np.linalg.norm(direction)  # a large step, so the edit stands out of the codec noise
    smooth = root / "smooth"
    smooth.mkdir()
    np.save(smooth / "latents_recon.npy", ws)
    np.save(smooth / "latents_age+0.npy", ws.copy())
    np.save(smooth / "latents_age+3.npy", ws + 3 * direction)
    rotation = np.linspace(-4, 4, N_FRAMES)
    translation = np.stack([np.linspace(0, 0.05, N_FRAMES), np.linspace(0.02, -0.02, N_FRAMES)], axis=1)
    matrix = np.stack([np.asarray(make_transform(tuple(translation[i]), rotation[i])) for i in range(N_FRAMES)])
    np.savez(smooth / "transforms.npz", rotation_deg=rotation, translation=translation, matrix=matrix)
    align = root / "align"
    (align / "unaligned").mkdir(parents=True)
    photo = astronaut()
    for i in range(N_FRAMES):
        crop = place_photo(photo, (48, 48), rotation[i], (0.0, 0.0), (255.0, 110.0), 0.15)  # 48 px: resized to 32
        Image.fromarray(crop).save(align / "unaligned" / f"{i:06d}.png")
    clip = make_clip(root / "source.mp4", n_frames=N_FRAMES, size=(64, 48), fps=FPS, face_centre=(255.0, 110.0), scale=0.2)
    return dict(G=G, smooth=smooth, align=align, clip=clip, root=root, matrix=matrix)


def _png(folder: Path, i: int) -> np.ndarray:
    return np.asarray(Image.open(folder / f"{i:06d}.png"))


@pytest.fixture(scope="module")
def plain_render(scene):
    out = scene["root"] / "render_plain"
    result = run_render(scene["G"], scene["smooth"], None, out, RenderSettings(batch_size=2),
                        source_video=scene["clip"].path, align_dir=scene["align"])
    return result, out


def test_outputs_frames_fps_audio(scene, plain_render):
    from videdit.io.probe import probe_video
    from videdit.io.reader import VideoReader

    result, out = plain_render
    assert set(result.frames_dirs) == {"recon", "age+0", "age+3"}
    assert result.videos["recon"].name == "reconstruction.mp4"
    for key, folder in result.frames_dirs.items():
        assert sorted(p.name for p in folder.iterdir()) == [f"{i:06d}.png" for i in range(N_FRAMES)]
    for video in [*result.videos.values(), result.side_by_side]:
        info = probe_video(video)
        assert info.fps == FPS and info.audio is not None, video
        frames = [f.image for f in VideoReader(video)]
        assert len(frames) == N_FRAMES, video
    # Side by side: input crop | reconstruction | each edit, at render size.
    side = next(iter(VideoReader(result.side_by_side))).image
    assert side.shape == (RES, 4 * RES, 3)
    meta = json.loads((out / "render.json").read_text())
    assert meta["side_by_side_columns"] == ["input", "recon", "age+0", "age+3"]
    # The columns are in that order (up to H.264 loss, large on 32 px colour noise).
    def pooled(image):  # 4x4 block means: what survives the codec
        return image.astype(np.float64).reshape(RES // 4, 4, RES // 4, 4, 3).mean(axis=(1, 3))

    column = [pooled(side[:, k * RES:(k + 1) * RES]) for k in range(4)]
    recon0, edit0 = pooled(_png(result.frames_dirs["recon"], 0)), pooled(_png(result.frames_dirs["age+3"], 0))
    assert np.abs(column[1] - recon0).mean() < 0.5 * np.abs(column[1] - edit0).mean()
    assert np.abs(column[3] - edit0).mean() < 0.5 * np.abs(column[3] - recon0).mean()


def test_zero_strength_edit_renders_reconstruction_exactly(plain_render):
    result, _ = plain_render
    for i in range(N_FRAMES):
        recon = _png(result.frames_dirs["recon"], i)
        np.testing.assert_array_equal(_png(result.frames_dirs["age+0"], i), recon)
        assert np.abs(_png(result.frames_dirs["age+3"], i).astype(int) - recon).mean() > 1  # the edit shows
    assert recon.std() > 10  # not a flat image: the comparisons above mean something


@pytest.mark.parametrize("feather", [0, 4])
def test_expanded_centre_equals_unexpanded(scene, plain_render, feather):
    result, _ = plain_render
    expand = (8, 6, 4, 10)  # left, right, top, bottom
    out = scene["root"] / f"render_expanded_{feather}"
    res2 = run_render(scene["G"], scene["smooth"], ["recon"], out,
                      RenderSettings(expand=expand, feather=feather, side_by_side=False))
    left, right, top, bottom = expand
    assert res2.size == (left + RES + right, top + RES + bottom)
    for i in range(N_FRAMES):
        wide = _png(res2.frames_dirs["recon"], i)
        assert wide.shape == (top + RES + bottom, left + RES + right, 3)
        plain = _png(result.frames_dirs["recon"], i)
        centre = wide[top:top + RES, left:left + RES]
        f = feather
        # Inside the feather band the centre tile is pasted untouched: bit-identical.
        np.testing.assert_array_equal(centre[f:RES - f, f:RES - f], plain[f:RES - f, f:RES - f])
        # In the band it is blended with shifted views of the same content, which agree because shifts by whole
        # pixels are (nearly) exact for StyleGAN3: at most one level of rounding.
        assert np.abs(centre.astype(int) - plain).max() <= 1


def test_tiles_show_what_lies_beside_the_frame(scene):
    """The left strip of an expanded render is what the frame shows after moving the content 8 px right."""
    from videdit.networks.stylegan3 import make_transform

    G = scene["G"]
    ws = torch.from_numpy(np.load(scene["smooth"] / "latents_recon.npy")[:2])
    matrix = scene["matrix"][:2]
    tiles, size = canvas_tiles(RES, (8, 0, 0, 0), 0)
    wide = render_expanded(G, ws, torch.from_numpy(np.linalg.inv(matrix)), tiles, size)
    moved = np.stack([np.asarray(make_transform((8 / RES, 0.0), 0.0)) @ m for m in matrix])  # shift after M
    with torch.no_grad():
        shifted = G.synthesis(ws, transform=torch.from_numpy(np.linalg.inv(moved)).float())
    torch.testing.assert_close(wide[..., :8], shifted[..., :8], atol=1e-4, rtol=0)
    # ...and the rest of that shifted view is the frame itself, 8 px further right.
    torch.testing.assert_close(shifted[..., 8:], wide[..., 8:RES], atol=1e-3, rtol=0)
    assert (shifted[..., 8:] - wide[..., :RES - 8]).abs().mean() > 1e-2  # the opposite direction does not fit


def test_stylespace_offsets_apply_at_render(scene, tmp_path):
    """An S edit (smooth/styles_<key>.safetensors, per-frame offsets) renders the reconstruction's styles plus its
    offsets; zero offsets render the reconstruction."""
    from videdit.errors import VideditError
    from videdit.stylespace import save_styles

    G = scene["G"]
    smooth = tmp_path / "smooth"
    smooth.mkdir()
    for name in ("latents_recon.npy", "transforms.npz"):
        (smooth / name).write_bytes((scene["smooth"] / name).read_bytes())
    widths = G.synthesis.style_widths()
    layer = G.synthesis.layer_names[2]
    zero = {k: torch.zeros(N_FRAMES, w) for k, w in widths.items()}
    save_styles(smooth / "styles_none.safetensors", zero)
    save_styles(smooth / "styles_eyes.safetensors", dict(zero, **{layer: zero[layer].index_fill(1, torch.tensor([1]), 3.0)}))
    res = run_render(G, smooth, None, tmp_path / "out", RenderSettings(side_by_side=False))
    assert list(res.frames_dirs) == ["recon", "eyes", "none"]
    for i in range(N_FRAMES):
        recon = _png(res.frames_dirs["recon"], i).astype(int)
        # Zero offsets: the reconstruction's own styles, drawn through the S path instead of from W+; the two paths
        # may round differently in float32 (see docs/stylespace.md), which moves a pixel by at most one level.
        assert np.abs(_png(res.frames_dirs["none"], i) - recon).max() <= 1
        assert np.abs(_png(res.frames_dirs["eyes"], i) - recon).mean() > 1  # the offset shows
    # Offsets laid out for another generator are one clear error.
    save_styles(smooth / "styles_eyes.safetensors", {"L99_1_1": torch.zeros(N_FRAMES, 1)})
    with pytest.raises(VideditError, match="StyleSpace") as err:
        run_render(G, smooth, ["eyes"], tmp_path / "out2", RenderSettings(side_by_side=False))
    assert "\n" not in str(err.value)


def test_expand_limits():
    with pytest.raises(InputError, match="at most"):
        canvas_tiles(32, (30, 0, 0, 0), 4)
    with pytest.raises(InputError):
        canvas_tiles(32, (-1, 0, 0, 0), 0)
    tiles, size = canvas_tiles(32, (4, 4, 4, 4), 2)
    assert len(tiles) == 9 and size == (40, 40)
    assert tiles[-1].shift == (0.0, 0.0)  # the centre is painted last


def _frame_offsets(G, n: int, seed: int = 5):
    """Random per-frame HyperStyle offsets (factored form) of two layers of G, base = G's weights."""
    from videdit.networks.hyperstyle import FrameOffsets

    gen = torch.Generator().manual_seed(seed)
    rows, cols, bias, base = {}, {}, {}, {}
    for name in G.synthesis.layer_names[1:3]:
        weight = getattr(G.synthesis, name).weight
        c_out, c_in = weight.shape[:2]
        rows[name] = 0.6 * torch.randn(n, c_out, 2, generator=gen)
        cols[name] = torch.randn(c_in, 2, generator=gen)
        bias[name] = 0.1 * torch.randn(c_in, generator=gen)
        base[name] = weight.detach().clone()
    return FrameOffsets(rows, cols, bias, base)


def test_hyperstyle_per_frame_offsets_apply_at_render(scene, tmp_path):
    """tune/offsets.safetensors + the mean-offset generator render each frame with its own offsets."""
    import copy

    from videdit.checkpoints import save_generator
    from videdit.errors import CheckpointError
    from videdit.networks.hyperstyle import FrameOffsets, apply_offsets, synthesize
    from videdit.tuning.data import inverse_transforms

    G0 = scene["G"]
    offsets = _frame_offsets(G0, N_FRAMES)
    offsets_path = offsets.save(tmp_path / "offsets.safetensors")
    G_mean = apply_offsets(copy.deepcopy(G0), offsets.mean_deltas())  # what the tuner saves as its generator
    gen_path = save_generator(G_mean, tmp_path / "generator.safetensors")
    settings = RenderSettings(side_by_side=False, batch_size=2)
    per_frame = run_render(gen_path, scene["smooth"], ["recon", "age+3"], tmp_path / "per_frame", settings,
                           offsets=offsets_path)
    mean = run_render(gen_path, scene["smooth"], ["recon"], tmp_path / "mean", settings)

    ws = torch.from_numpy(np.load(scene["smooth"] / "latents_recon.npy"))
    inv = inverse_transforms(scene["matrix"])
    with torch.no_grad():
        expected = synthesize(G0, ws, inv, FrameOffsets.load(offsets_path).deltas())
    expected = to_uint8(expected)
    for i in range(N_FRAMES):
        got = _png(per_frame.frames_dirs["recon"], i).astype(int)
        assert np.abs(got - expected[i]).max() <= 1, i  # float round-off may flip a rounding
        assert np.abs(got - _png(mean.frames_dirs["recon"], i)).mean() > 0.5, i  # not the mean offsets
    # The edit reuses the frame's offsets with its edited latent.
    assert np.abs(_png(per_frame.frames_dirs["age+3"], 0).astype(int) - _png(per_frame.frames_dirs["recon"], 0)).mean() > 1
    assert json.loads((tmp_path / "per_frame" / "render.json").read_text())["weight_offsets"]["layers"] == offsets.layers

    # A module passed in is left unchanged (the base weights go into a copy).
    before = {k: v.clone() for k, v in G_mean.state_dict().items()}
    run_render(G_mean, scene["smooth"], ["recon"], tmp_path / "module", settings, offsets=offsets)
    assert all(torch.equal(before[k], v) for k, v in G_mean.state_dict().items())
    np.testing.assert_array_equal(_png(tmp_path / "module" / "recon", 3), _png(per_frame.frames_dirs["recon"], 3))

    # Offsets of another video length, or without base weights, are one clear error.
    short = FrameOffsets({k: v[:3] for k, v in offsets.rows.items()}, offsets.cols, offsets.bias, offsets.base)
    with pytest.raises(CheckpointError, match="3 frames; the video has 5"):
        run_render(gen_path, scene["smooth"], ["recon"], tmp_path / "short", settings, offsets=short)
    no_base = FrameOffsets(offsets.rows, offsets.cols, offsets.bias).save(tmp_path / "old.safetensors")
    with pytest.raises(CheckpointError, match="no base weights"):
        run_render(gen_path, scene["smooth"], ["recon"], tmp_path / "old", settings, offsets=no_base)


def test_hyperstyle_offsets_with_expanded_render(scene, tmp_path):
    """Per-frame offsets and field-of-view expansion together: the centre still equals the unexpanded render."""
    import copy

    from videdit.networks.hyperstyle import apply_offsets

    offsets = _frame_offsets(scene["G"], N_FRAMES)
    G_mean = apply_offsets(copy.deepcopy(scene["G"]), offsets.mean_deltas())
    plain = run_render(G_mean, scene["smooth"], ["recon"], tmp_path / "plain", RenderSettings(side_by_side=False),
                       offsets=offsets)
    wide = run_render(G_mean, scene["smooth"], ["recon"], tmp_path / "wide",
                      RenderSettings(side_by_side=False, expand=(8, 8, 0, 8), feather=0), offsets=offsets)
    for i in (0, N_FRAMES - 1):
        np.testing.assert_array_equal(_png(wide.frames_dirs["recon"], i)[0:RES, 8:8 + RES], _png(plain.frames_dirs["recon"], i))


def test_parts_merge_to_the_whole_stage_bytes(scene, plain_render, tmp_path):
    """Render in frame ranges that start on batch boundaries (a sharded run's parts: PNGs and render.json only)
    and their merge write the same files as the whole stage: the videos are encoded once from the PNGs,
    the pixels the whole render encodes."""
    from videdit.stages.render import merge_render_parts

    _, whole = plain_render
    parts = []
    for start, end in [(0, 2), (2, 4), (4, N_FRAMES)]:
        parts.append(tmp_path / f"part{start}")
        run_render(scene["G"], scene["smooth"], None, parts[-1], RenderSettings(batch_size=2),
                   source_video=scene["clip"].path, align_dir=scene["align"], frames=(start, end))
        assert not list(parts[-1].glob("*.mp4"))  # no video is encoded in a part
    merged = tmp_path / "merged"
    merge_render_parts(parts, merged, RenderSettings(batch_size=2), source_video=scene["clip"].path,
                       align_dir=scene["align"])
    files = {p.relative_to(merged).as_posix(): p.read_bytes() for p in sorted(merged.rglob("*")) if p.is_file()}
    expected = {p.relative_to(whole).as_posix(): p.read_bytes() for p in sorted(whole.rglob("*")) if p.is_file()}
    assert files.keys() == expected.keys() and files == expected
    with pytest.raises(InputError, match="outside the video"):
        run_render(scene["G"], scene["smooth"], None, tmp_path / "bad", RenderSettings(), frames=(3, N_FRAMES + 1))
