"""Smoothing against hand-computed values: the published kernel, the three end rules, wrapped angles."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from videdit.errors import InputError
from videdit.stylespace import load_styles, save_styles
from videdit.stages.smooth import (
    SmoothSettings,
    run_smooth,
    smooth_latents,
    smooth_transforms,
    smoothing_kernel,
    temporal_filter,
)

pytestmark = pytest.mark.numeric

RAMP = np.arange(6) * 12.0  # 0, 12, ..., 60: kernel sums below are small integers


def test_kernel_is_published_one():
    taps = smoothing_kernel(SmoothSettings())
    np.testing.assert_allclose(taps, np.array([0.25, 0.75, 1.0, 0.75, 0.25]) / 3, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(smoothing_kernel(SmoothSettings(window=1)), [1.0])
    with pytest.raises(InputError):
        smoothing_kernel(SmoothSettings(window=4))


@pytest.mark.parametrize(
    "padding, expected",
    [
        # reflect: frame 0 sees x2 x1 | x0 x1 x2 -> (24 + 3*12 + 0 + 3*12 + 24) / 12 = 10
        #          frame 1 sees x1 | x0 x1 x2 x3 -> (12 + 0 + 4*12 + 3*24 + 36) / 12 = 14
        ("reflect", [10, 14, 24, 36, 46, 50]),
        # edge: frame 0 sees x0 x0 | x0 x1 x2 -> (3*12 + 24) / 12 = 5; frame 1 -> (4*12 + 3*24 + 36) / 12 = 13
        ("edge", [5, 13, 24, 36, 47, 55]),
        # renormalize: frame 0 uses taps 4 3 1 -> (3*12 + 24) / 8 = 7.5; frame 1 taps 3 4 3 1 -> 156 / 11
        ("renormalize", [7.5, 156 / 11, 24, 36, 60 - 156 / 11, 52.5]),
    ],
)
def test_temporal_filter_hand_values(padding, expected):
    out = temporal_filter(RAMP, smoothing_kernel(SmoothSettings()), padding)
    assert out.shape == RAMP.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def test_short_videos_keep_every_frame():
    taps = smoothing_kernel(SmoothSettings())
    np.testing.assert_allclose(temporal_filter(np.array([7.0]), taps, "reflect"), [7.0])
    # Two frames, reflect: frame 0 sees x0 x1 | x0 x1 x0 -> (0 + 3*12 + 0 + 3*12 + 0) / 12 = 6
    np.testing.assert_allclose(temporal_filter(np.array([0.0, 12.0]), taps, "reflect"), [6.0, 6.0])
    np.testing.assert_allclose(temporal_filter(np.array([0.0, 12.0]), taps, "renormalize"), [36 / 7, 48 / 7])


def test_latents_fine_layers_are_video_mean():
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((7, 16, 8)).astype(np.float32)
    out = smooth_latents(latents, SmoothSettings())
    assert out.shape == latents.shape and out.dtype == np.float32
    mean = latents[:, 9:].astype(np.float64).mean(axis=0)
    for t in range(7):
        np.testing.assert_allclose(out[t, 9:], mean, atol=1e-6)
    # Coarse layers: frame 3 is the plain 5-tap average of frames 1..5.
    hand = (latents[1] + 3 * latents[2] + 4 * latents[3] + 3 * latents[4] + latents[5]) / 12
    np.testing.assert_allclose(out[3, :9], hand[:9], atol=1e-6)
    # fine_layers_from=None leaves the fine layers filtered per frame instead.
    out2 = smooth_latents(latents, SmoothSettings(fine_layers_from=None))
    np.testing.assert_allclose(out2[3], hand, atol=1e-6)


def test_wrapped_angle_is_smoothed_across_180():
    rot = np.array([170.0, 175.0, 179.0, -179.0, -175.0, -170.0])  # a steady turn through 180 degrees
    rotation, translation, matrix = smooth_transforms(rot, np.zeros((6, 2)), SmoothSettings())
    # Unwrapped 170 175 179 181 185 190; frame 2: (170 + 3*175 + 4*179 + 3*181 + 185) / 12 = 178.25
    # frame 3: (175 + 3*179 + 4*181 + 3*185 + 190) / 12 = 181.75 -> -178.25 after wrapping.
    np.testing.assert_allclose(rotation[2:4], [178.25, -178.25], atol=1e-9)
    # reflect ends: frame 0 = (179 + 3*175 + 4*170 + 3*175 + 179) / 12 = 174
    np.testing.assert_allclose(rotation[0], 174.0, atol=1e-9)
    # Matrices follow make_transform: [[c, s, tx], [-s, c, ty], [0, 0, 1]].
    a = np.deg2rad(178.25)
    np.testing.assert_allclose(matrix[2], [[np.cos(a), np.sin(a), 0], [-np.sin(a), np.cos(a), 0], [0, 0, 1]], atol=1e-12)
    # Filtering the wrapped angles instead would be far off (58.25 degrees for frame 2).
    naive = temporal_filter(rot, smoothing_kernel(SmoothSettings()), "reflect")
    np.testing.assert_allclose(naive[2], 58.25, atol=1e-9)


def test_translation_smoothed_as_parameters():
    trans = np.stack([RAMP / 120, -RAMP / 240], axis=1)
    _, translation, matrix = smooth_transforms(np.zeros(6), trans, SmoothSettings(padding="edge"))
    np.testing.assert_allclose(translation[:, 0], np.array([5, 13, 24, 36, 47, 55]) / 120, atol=1e-12)
    np.testing.assert_allclose(matrix[:, 1, 2], -np.array([5, 13, 24, 36, 47, 55]) / 240, atol=1e-12)


def test_run_smooth_writes_every_frame(tmp_path):
    n = 5
    latents = np.random.default_rng(1).standard_normal((n, 16, 4)).astype(np.float32)
    src = tmp_path / "edit"
    src.mkdir()
    np.save(src / "latents_recon.npy", latents)
    np.save(src / "latents_age+5.npy", latents + 1)
    styles = {"L0_36_512": torch.arange(n * 3, dtype=torch.float32).reshape(n, 3)}  # an S edit's per-frame offsets
    save_styles(src / "styles_eyes.safetensors", styles)
    rot = np.array([0.0, 10, 20, 30, 40])
    np.savez(tmp_path / "transforms.npz", rotation_deg=rot, translation=np.zeros((n, 2)),
             matrix=np.tile(np.eye(3), (n, 1, 1)), face_found=np.ones(n, bool))
    res = run_smooth(sorted(src.glob("*.npy")), tmp_path / "transforms.npz", tmp_path / "out")
    assert set(res.latents_paths) == {"recon", "age+5", "eyes"} and res.num_frames == n
    for key in ("recon", "age+5"):
        assert np.load(res.latents_paths[key]).shape == (n, 16, 4)
    # The S edit's offsets are smoothed with the same kernel (reflect ends), every channel on its own.
    smoothed = load_styles(res.latents_paths["eyes"])["L0_36_512"].numpy()
    np.testing.assert_allclose(smoothed, temporal_filter(styles["L0_36_512"].numpy(), smoothing_kernel(SmoothSettings()),
                                                         "reflect"), atol=1e-5)  # values < 15: float32 sums of 5 taps
    assert res.latents_paths["eyes"].name == "styles_eyes.safetensors"
    with np.load(res.transforms_path) as t:
        assert t["matrix"].shape == (n, 3, 3) and t["face_found"].all()
        # reflect ends: frame 0 sees 20 10 | 0 10 20 -> 100 / 12; frame 1 sees 10 | 0 10 20 30 -> 140 / 12
        np.testing.assert_allclose(t["rotation_deg"], [100 / 12, 140 / 12, 20, 40 - 140 / 12, 40 - 100 / 12], atol=1e-5)
    # Mismatched frame counts are a clear error, not a silent truncation.
    np.save(src / "latents_short.npy", latents[:3])
    with pytest.raises(InputError, match="3 frames"):
        run_smooth([src / "latents_short.npy"], tmp_path / "transforms.npz", tmp_path / "out2")


def test_latents_file_names_parse_back_to_their_keys():
    from videdit import layout

    assert layout.latents_key("latents.npy") == "recon"  # encode's
    assert layout.latents_key(layout.latents_name("smile-2")) == "smile-2"
    assert layout.latents_key("latents_.npy") is None and layout.latents_key("styles_x.safetensors") is None
    assert layout.styles_key(layout.styles_name("text-a-face+4")) == "text-a-face+4"
