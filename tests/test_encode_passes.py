"""Encode without wasted passes: ReStyle renders only what the next iteration reads (n_iters - 1 synthesis
passes per frame, no unaligned render), against the published per-frame loop's 2 * n_iters (aligned and
unaligned at every iteration); the latents are the same."""
from __future__ import annotations

import pytest
import torch

from videdit.networks.encoders import average_image, restyle_invert

pytestmark = pytest.mark.numeric


class CountingSynthesis(torch.nn.Module):
    """The generator's synthesis, counting the images it renders (a pass per image)."""

    def __init__(self, synthesis):
        super().__init__()
        self.inner = synthesis
        self.images = 0

    def forward(self, ws, **kwargs):
        self.images += ws.shape[0]
        return self.inner(ws, **kwargs)


def _published_loop(encoder, G, images, latent_avg, avg, n_iters, transforms):
    """stylegan3-editing's video loop: every iteration renders the aligned image (fed back) and the
    unaligned one (at the frame's transform)."""
    codes, feedback = None, avg.expand(images.shape[0], *avg.shape)
    identity = torch.eye(3).expand(images.shape[0], 3, 3)
    with torch.inference_mode():
        for _ in range(n_iters):
            residual = encoder(torch.cat([images, feedback], 1))
            codes = residual + (latent_avg if codes is None else codes)
            aligned = G.synthesis(codes, transform=identity)
            G.synthesis(codes, transform=transforms)  # the unaligned render, read by nothing downstream
            feedback = torch.nn.functional.adaptive_avg_pool2d(aligned, images.shape[-1])
    return codes


@pytest.mark.slow
def test_encode_renders_only_what_the_next_iteration_reads():
    from videdit.pipeline import StandInModels

    torch.manual_seed(0)
    models = StandInModels(resolution=64)
    G = models.load_generator("cpu")
    encoder, latent_avg = models.load_encoder("cpu")
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    transforms = torch.eye(3).expand(3, 3, 3).clone()
    transforms[:, 0, 2] = 0.05
    avg = average_image(G, latent_avg, 64)
    n_iters = 3

    counter = CountingSynthesis(G.synthesis)
    G.synthesis = counter
    ours = restyle_invert(encoder, G, images, latent_avg, n_iters=n_iters, avg_image=avg,
                          synthesis_transforms=transforms, input_size=64, render_final=False).codes
    ours_passes = counter.images / images.shape[0]
    counter.images = 0
    published = _published_loop(encoder, G, images, latent_avg, avg, n_iters, transforms)
    published_passes = counter.images / images.shape[0]
    print(f"synthesis passes per frame: videdit {ours_passes:g}, published loop {published_passes:g}")
    assert ours_passes == n_iters - 1 and published_passes == 2 * n_iters
    torch.testing.assert_close(ours, published, rtol=0, atol=1e-5)
