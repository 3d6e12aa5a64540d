"""The encode stage on a small align folder: latents file, batching, preview, input errors."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_encoders import SCALE_TOL
from videdit import records
from videdit.errors import InputError, VideditError
from videdit.io import VideoInfo
from videdit.networks.encoders import average_image, restyle_invert
from videdit.stages.encode import EncodeSettings, load_aligned_batch, run_encode

pytestmark = pytest.mark.numeric

torch.set_num_threads(2)

N_FRAMES, CROP, SIZE = 3, 48, 32


class TinyEncoder(torch.nn.Module):
    """A cheap stand-in with the encoder's contract ([B, 6, S, S] -> [B, 16, 512]); the real
    encoders are tested in test_encoders.py, this file tests the stage around them."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(4)
        self.conv = torch.nn.Conv2d(6, 8, 3, stride=4)
        self.linear = torch.nn.Linear(8 * 4, 16 * 512)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)

    def forward(self, x):
        features = torch.nn.functional.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 2).flatten(1)
        return self.linear(features).view(-1, 16, 512)


def _make_transform(tx, ty, angle):
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return [[c, s, tx], [-s, c, ty], [0.0, 0.0, 1.0]]


@pytest.fixture(scope="module")
def models():
    from videdit.networks.stylegan3 import Generator, tiny_generator_kwargs

    torch.manual_seed(0)
    G = Generator(**tiny_generator_kwargs(32)).eval()
    return TinyEncoder().eval(), G, G.mapping.w_avg.clone()


@pytest.fixture()
def align_dir(tmp_path):
    root = tmp_path / "align"
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:CROP, 0:CROP] / CROP
    for folder in ("aligned", "unaligned"):
        (root / folder).mkdir(parents=True)
        for i in range(N_FRAMES):
            base = np.stack([np.sin(6 * xx + i), np.cos(5 * yy - i), np.sin(3 * (xx + yy))], axis=-1)
            noise = rng.normal(0, 0.1, base.shape)
            pixels = np.clip((base + noise + 1) * 127.5, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / folder / f"{i:06d}.png")
    matrix = np.array([_make_transform(0.02 * i, -0.01 * i, 4.0 * i - 3) for i in range(N_FRAMES)], dtype=np.float32)
    np.savez(root / "transforms.npz", matrix=matrix, rotation_deg=np.zeros(N_FRAMES, np.float32),
             face_found=np.ones(N_FRAMES, bool))
    source = VideoInfo(path="source.mp4", width=CROP, height=CROP, fps=Fraction(30000, 1001), time_base=Fraction(1, 30000),
                       n_frames=N_FRAMES, n_frames_is_estimate=False, duration_s=N_FRAMES * 1001 / 30000, rotation_deg=0,
                       codec="h264")
    records.save_video_info(root, source)  # the preview takes the source's frame rate from it
    return root


def test_load_aligned_batch_normalises_and_resizes(tmp_path):
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:, 32:] = 255
    Image.fromarray(pixels).save(tmp_path / "a.png")
    batch = load_aligned_batch([tmp_path / "a.png"], 32)
    assert batch.shape == (1, 3, 32, 32) and batch.dtype == torch.float32
    assert batch[0, :, :, :15].eq(-1).all() and batch[0, :, :, 17:].eq(1).all()  # 0 -> -1, 255 -> 1
    # Area-like downscale: the column pair straddling the edge averages to about 0, not a hard step.
    assert abs(batch[0, 0, 0, 15].item() + batch[0, 0, 0, 16].item()) < 1e-5


def test_encode_stage_writes_every_frame(models, align_dir, tmp_path):
    encoder, G, latent_avg = models
    settings = EncodeSettings(n_iters=2, batch_size=2, input_size=SIZE)  # batches of 2 and 1
    result = run_encode(align_dir, tmp_path / "encode", encoder, G, latent_avg, settings)
    assert result.n_frames == N_FRAMES and result.preview_path is None
    latents = np.load(result.latents_path)
    assert latents.shape == (N_FRAMES, 16, 512) and latents.dtype == np.float32
    assert sorted(p.name for p in (tmp_path / "encode").iterdir()) == ["latents.npy"]

    # The same frames, read here with PIL, through the network loop as one batch.
    frames = torch.stack([torch.from_numpy(np.array(Image.open(align_dir / "aligned" / f"{i:06d}.png"))).permute(2, 0, 1)
                          for i in range(N_FRAMES)]).float() / 127.5 - 1
    expected = restyle_invert(encoder, G, frames, latent_avg, n_iters=2, input_size=SIZE,
                              avg_image=average_image(G, latent_avg, SIZE), render_final=False).codes
    # Batches of 2 and 1 against one of 5: the generator renders each frame alone on the CPU (the same bits), but
    # the encoder's convolutions see other batch shapes, so the residuals are two float32 evaluations of the same
    # network: within the encoders' tolerance of their scale (SCALE_TOL, test_encoders), plus the rounding of
    # adding them to latent_avg (<= 2u of the latents).
    residual_scale = np.abs(latents - latent_avg.numpy()).max()
    assert residual_scale > 1e-3  # the encoder's residuals were added
    bound = SCALE_TOL * residual_scale + 2 * 2.0 ** -24 * np.abs(latents).max()
    print(f"\nencode stage against the loop in one batch: max difference {np.abs(latents - expected.numpy()).max():.3g}"
          f" (bound {bound:.3g})")
    assert np.abs(latents - expected.numpy()).max() <= bound

    again = run_encode(align_dir, tmp_path / "encode_b3", encoder, G, latent_avg,
                       EncodeSettings(n_iters=2, batch_size=3, input_size=SIZE))
    assert np.abs(np.load(again.latents_path) - latents).max() <= bound


def test_encode_stage_preview(models, align_dir, tmp_path):
    av = pytest.importorskip("av")
    encoder, G, latent_avg = models
    settings = EncodeSettings(n_iters=2, batch_size=2, input_size=SIZE, save_preview=True)
    result = run_encode(align_dir, tmp_path / "encode", encoder, G, latent_avg, settings)
    assert result.preview_path == tmp_path / "encode" / "preview.mp4"
    with av.open(str(result.preview_path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.average_rate == Fraction(30000, 1001)
    # aligned input | iteration 0 | iteration 1 (unaligned) | unaligned input, each SIZE wide
    assert len(frames) == N_FRAMES and frames[0].shape == (SIZE, SIZE * 4, 3)
    sources = load_aligned_batch([align_dir / "aligned" / f"{i:06d}.png" for i in range(N_FRAMES)], SIZE)
    first_panel = torch.from_numpy(frames[0][:, :SIZE].astype(np.float32) / 127.5 - 1).permute(2, 0, 1)
    # H.264 (4:2:0 chroma) of a noisy 32 px panel: close to its own frame, not exact.
    error_own, error_other = (first_panel - sources[0]).abs().mean(), (first_panel - sources[2]).abs().mean()
    assert error_own < 0.1 and error_own < 0.5 * error_other


def test_encode_stage_input_errors(models, align_dir, tmp_path):
    encoder, G, latent_avg = models
    settings = EncodeSettings(n_iters=1, input_size=SIZE)
    (align_dir / "aligned" / "000001.png").unlink()
    with pytest.raises(InputError, match="000001.png"):
        run_encode(align_dir, tmp_path / "a", encoder, G, latent_avg, settings)
    Image.fromarray(np.zeros((CROP, CROP, 3), np.uint8)).save(align_dir / "aligned" / "000001.png")
    Image.fromarray(np.zeros((CROP, CROP, 3), np.uint8)).save(align_dir / "aligned" / "000003.png")
    with pytest.raises(InputError, match="4 aligned crops"):
        run_encode(align_dir, tmp_path / "b", encoder, G, latent_avg, settings)
    (align_dir / "transforms.npz").unlink()
    with pytest.raises(InputError, match="transforms.npz"):
        run_encode(align_dir, tmp_path / "c", encoder, G, latent_avg, settings)
    with pytest.raises(VideditError, match="n_iters"):
        run_encode(align_dir, tmp_path / "d", encoder, G, latent_avg, EncodeSettings(n_iters=0))
