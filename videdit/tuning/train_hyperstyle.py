"""Training the HyperStyle hypernetwork (`videdit train hyperstyle --images DIR --generator G --encoder E`).

Every image of the folder (aligned faces) is inverted once with the ReStyle encoder; its latent stays
fixed. A training step runs the HyperStyle iteration (videdit/networks/hyperstyle.py) on a batch with
gradients and minimises, summed over the iterations' reconstructions,
    l2_weight * L2 + lpips_weight * LPIPS + identity_weight * (1 - cos(id(x), id(y)))
with Adam; the generator is frozen. The hypernetwork's backbone starts from the encoder's when that is
a ResNet34 ReStyle encoder (the same 6-channel stem and body).

Runs on the shared loop (videdit/tuning/loop.py): checkpoints (hypernetwork, optimizer, step, losses,
RNG) go to OUT/checkpoints/latest.pt every `checkpoint_every` steps; a rerun with the same settings
and images resumes there. The result is
OUT/hypernetwork.safetensors (load with `videdit.checkpoints.load_network`) and OUT/train.json.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from videdit.device import resolve_device
from videdit.errors import InputError
from videdit.fileio import atomic_write_text
from videdit.records import CHECKPOINTS
from videdit.tuning.data import (
    CHECKPOINT_NAME,
    batch_indices,
    private_generator,
    settings_fingerprint,
    update_with_files,
    update_with_module,
)
from videdit.tuning.loop import LoopConfig, StepOutput, run_loop

log = logging.getLogger("videdit")

HYPERNETWORK_NAME = "hypernetwork.safetensors"


@dataclass
class HyperStyleTrainSettings:
    """layers: tuned synthesis layers (names or indices; None = the medium and fine non-ToRGB layers).
    input_size, code_dim, inner_channels, rank: the hypernetwork's shape (see networks/hyperstyle.py).
    identity_weight > 0 needs an `identity_model` passed to train_hyperstyle.
    """

    steps: int = 1000
    batch_size: int = 2
    lr: float = 1e-4
    n_iters: int = 5
    l2_weight: float = 1.0
    lpips_weight: float = 0.8
    lpips_net: str = "alex"
    allow_l2_only: bool = False
    lpips_random_backbone: bool = False
    identity_weight: float = 0.0
    layers: list | None = None
    input_size: int = 256
    code_dim: int = 512
    inner_channels: int = 128
    rank: int = 16
    encoder_iters: int = 3
    init_backbone_from_encoder: bool = True
    max_grad_norm: float = 1.0  # gradient clipping (0 = off): offsets feed back into the next iteration
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "cpu"
    weights_dir: str | None = None
    progress: bool = True


@dataclass
class HyperStyleTrainResult:
    hypernetwork_path: Path
    steps_done: int
    resumed_from_step: int
    losses: list[float] = field(repr=False)
    num_images: int = 0
    parameters: int = 0
    seconds: float = 0.0


def training_images(folder: Path) -> list[Path]:
    """The images of the training folder (the one image lister, natural order); one line when there are none."""
    from videdit.io.images import IMAGE_SUFFIXES, list_images

    if not folder.is_dir():
        raise InputError(f"train hyperstyle: no such folder {folder}")
    paths = list_images(folder)
    if not paths:
        raise InputError(f"train hyperstyle: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return paths


def load_images(paths: list[Path], resolution: int) -> torch.Tensor:
    """[M, 3, res, res] in [-1, 1]."""
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as image:
            image = image.convert("RGB")
            if image.size != (resolution, resolution):
                image = image.resize((resolution, resolution), Image.LANCZOS)
            out.append(torch.from_numpy(np.array(image)).permute(2, 0, 1))
    return torch.stack(out).float() / 127.5 - 1


def _encoder_parts(encoder):
    """(encoder module, latent_avg) from a path, a RestyleCheckpoint or an (encoder, latent_avg) pair."""
    if isinstance(encoder, (str, PathLike)):
        from videdit.checkpoints.restyle import load_restyle_checkpoint

        ckpt = load_restyle_checkpoint(encoder, build_generator=False)
        return ckpt.encoder, ckpt.latent_avg
    if isinstance(encoder, tuple) and len(encoder) >= 2:
        if hasattr(encoder, "latent_avg"):
            return encoder.encoder, encoder.latent_avg
        return encoder[0], encoder[1]
    raise InputError("train hyperstyle: encoder must be a ReStyle checkpoint path or an (encoder, latent_avg) pair")


@torch.no_grad()
def invert_images(encoder, latent_avg: torch.Tensor, G, images: torch.Tensor, n_iters: int, batch_size: int,
                  device: torch.device) -> torch.Tensor:
    from videdit.networks.encoders import average_image, restyle_invert

    encoder = encoder.to(device).eval()
    latent_avg = latent_avg.to(device)
    avg = average_image(G, latent_avg)
    codes = []
    for lo in range(0, len(images), batch_size):
        out = restyle_invert(encoder, G, images[lo:lo + batch_size].to(device), latent_avg, n_iters=n_iters,
                             avg_image=avg, render_final=False)
        codes.append(out.codes.float().cpu().clone())
    return torch.cat(codes)


def _fingerprint(settings: HyperStyleTrainSettings, G, paths: list[Path], latents: torch.Tensor) -> str:
    h = settings_fingerprint(asdict(settings), ignore=("steps", "checkpoint_every", "device", "weights_dir", "progress"))
    update_with_module(h, G)
    update_with_files(h, paths)
    h.update(latents.numpy().tobytes())
    return h.hexdigest()


def train_hyperstyle(
    images_dir: str | PathLike,
    generator,
    encoder,
    out: str | PathLike,
    settings: HyperStyleTrainSettings | None = None,
    *,
    identity_model: Callable[[torch.Tensor], torch.Tensor] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> HyperStyleTrainResult:
    """Train a hypernetwork for `generator` on the images of `images_dir`; write OUT/hypernetwork.safetensors.

    generator: a module or a checkpoint path; encoder: a ReStyle checkpoint path or (encoder, latent_avg).
    identity_model: differentiable images [B,3,H,W] in [-1,1] -> embeddings [B, D] for the identity loss.
    """
    from videdit.checkpoints import save_network
    from videdit.losses import make_reconstruction_loss
    from videdit.networks.hyperstyle import HyperNetwork, hyperstyle_invert, parameter_count

    t_start = time.perf_counter()
    s = settings or HyperStyleTrainSettings()
    if s.steps < 0 or s.batch_size < 1 or s.lr <= 0 or s.n_iters < 1:
        raise InputError("train hyperstyle: steps >= 0, batch_size >= 1, lr > 0 and n_iters >= 1 are required")
    if s.identity_weight > 0 and identity_model is None:
        raise InputError("train hyperstyle: identity_weight > 0 needs an identity model (none given)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(s.device)
    G = private_generator(generator, device)
    paths = training_images(Path(images_dir))
    images = load_images(paths, G.img_resolution)
    enc, latent_avg = _encoder_parts(encoder)
    latents = invert_images(enc, latent_avg, G, images, s.encoder_iters, max(s.batch_size, 4), device)

    try:
        # The initial weights are a function of the seed alone (not of what the process ran before).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            hyper = HyperNetwork.for_generator(G, s.layers, input_size=s.input_size, code_dim=s.code_dim,
                                               inner_channels=s.inner_channels, rank=s.rank).to(device)
    except ValueError as err:
        raise InputError(f"train hyperstyle: {err}") from None
    if s.init_backbone_from_encoder and getattr(enc, "backbone", None) == "resnet34" and enc.in_channels == 6:
        # The same stem and body: start from the encoder's features rather than from noise.
        own = hyper.backbone.state_dict()
        hyper.backbone.load_state_dict({k: v for k, v in enc.state_dict().items() if k in own}, strict=False)
    hyper.train()
    for module in hyper.modules():  # batches of a few images: keep BatchNorm's statistics as they are
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    optimizer = torch.optim.Adam(hyper.parameters(), lr=s.lr)
    loss_fn = make_reconstruction_loss(s.l2_weight, s.lpips_weight, s.lpips_net, allow_l2_only=s.allow_l2_only,
                                       weights_dir=s.weights_dir, random_backbone=s.lpips_random_backbone).to(device)
    pool = np.arange(len(paths))

    def step(index: int) -> StepOutput:
        idx = batch_indices(index, pool, s.batch_size, s.seed)
        target = images[idx].to(device)
        result = hyperstyle_invert(hyper, G, target, latents[idx].to(device), None, n_iters=s.n_iters)
        loss = target.new_zeros(())
        for image in result.images[1:]:
            part, _ = loss_fn(image, target)
            if identity_model is not None and s.identity_weight > 0:
                cos = torch.nn.functional.cosine_similarity(identity_model(image), identity_model(target), dim=1)
                part = part + s.identity_weight * (1 - cos).mean()
            loss = loss + part
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(hyper.parameters(), s.max_grad_norm)
        optimizer.step()
        return StepOutput(float(loss.detach()) / s.n_iters)

    config = LoopConfig("train hyperstyle", s.steps, out / CHECKPOINTS / CHECKPOINT_NAME, s.checkpoint_every,
                        _fingerprint(s, G, paths, latents), s.seed, s.progress, nan_hint="lower the learning rate")
    run = run_loop(step, {"hypernetwork": hyper, "optimizer": optimizer}, config, device=device,
                   on_step=(lambda k, out: on_step(k, out.loss)) if on_step is not None else None)
    hyper.eval().requires_grad_(False)
    path = save_network(hyper, out / HYPERNETWORK_NAME, kind="hypernetwork")
    atomic_write_text(out / "train.json", json.dumps({
        "steps_done": run.steps_done, "resumed_from_step": run.resumed_from_step, "images": len(paths),
        "parameters": parameter_count(hyper), "losses": run.losses}))
    return HyperStyleTrainResult(hypernetwork_path=path, steps_done=run.steps_done,
                                 resumed_from_step=run.resumed_from_step, losses=run.losses, num_images=len(paths),
                                 parameters=parameter_count(hyper), seconds=time.perf_counter() - t_start)
