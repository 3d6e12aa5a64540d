"""Per-video pivotal tuning (stage `tune`, PTI as in the published StyleGAN3 video code).

The synthesis network is fine-tuned so that every frame, rendered from its own (unsmoothed) pivot
latent at its own transform, matches the frame's unaligned crop. The mapping network and the
Fourier-feature input layer (`synthesis.input.*`) stay frozen, so the learned transform from w and the
feature grid are unchanged and the frame transforms keep their meaning.

Loss: l2_weight * L2 + lpips_weight * LPIPS (AlexNet by default). Adam, lr 3e-4, batch 4.

Resumable: every `checkpoint_every` steps the generator, the optimizer and the RNG state go to
`out_dir/checkpoints/latest.pt` (written to a temporary name, then renamed). Batches are a pure
function of (seed, step), so a run resumed from a checkpoint follows the uninterrupted run exactly.
A checkpoint made with different settings or inputs is ignored (and replaced).
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
from collections import deque
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from videdit.errors import CheckpointError, InputError

log = logging.getLogger("videdit")

CHECKPOINT_NAME = "latest.pt"
CHECKPOINT_VERSION = 1


@dataclass
class TuneSettings:
    """PTI settings (defaults: the published code's; the paper ran 8000 steps per video).

    early_stop_threshold: the run ends when the mean loss of the last `early_stop_window` steps falls
    below it (0 = never).
    lpips_random_backbone: a randomly initialised LPIPS backbone (tests and demos only: not perceptual).
    frame_cache_mb: decoded target crops kept in memory up to this size; the rest are read per batch.
    """

    steps: int = 350
    lr: float = 3e-4
    batch_size: int = 4
    l2_weight: float = 1.0
    lpips_weight: float = 1.0
    lpips_net: str = "alex"
    allow_l2_only: bool = False
    checkpoint_every: int = 50
    early_stop_threshold: float = 0.0
    early_stop_window: int = 50
    seed: int = 0
    device: str = "cpu"
    weights_dir: str | None = None
    lpips_random_backbone: bool = False
    frame_cache_mb: int = 1024
    progress: bool = True


@dataclass
class TuneResult:
    generator_path: Path
    steps_done: int
    stopped_early: bool
    resumed_from_step: int  # 0 for a fresh run
    final_loss: float  # mean over the last early_stop_window steps (nan if no step ran)
    lpips_used: bool
    num_frames: int
    seconds: float


# --------------------------------------------------------------------------------------------------
# Inputs


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def inverse_transforms(matrix: np.ndarray) -> torch.Tensor:
    """float32 [N,3,3] inverses (what G.synthesis takes) of the make_transform matrices, inverted in float64."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 3 or matrix.shape[1:] != (3, 3):
        raise InputError(f"transforms must be [N,3,3] matrices, got {list(matrix.shape)}")
    return torch.from_numpy(np.linalg.inv(matrix).astype(np.float32))


class CropFrames:
    """The unaligned crops of an align folder as [-1, 1] NCHW tensors at the generator's resolution.

    Frames are decoded on demand; up to `cache_bytes` of decoded uint8 frames are kept.
    """

    def __init__(self, folder: Path, count: int, resolution: int, cache_bytes: int = 0):
        self.paths = [folder / f"{i:06d}.png" for i in range(count)]
        missing = [p.name for p in self.paths if not p.is_file()]
        if missing:
            raise InputError(f"{folder}: {len(missing)} of {count} crops missing (first: {missing[0]})")
        self.resolution = resolution
        self.cache_bytes = cache_bytes
        self._cache: dict[int, torch.Tensor] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.paths)

    def _uint8(self, index: int) -> torch.Tensor:
        if index in self._cache:
            return self._cache[index]
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            frame = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()
        if self._cached_bytes + frame.numel() <= self.cache_bytes:
            self._cache[index] = frame
            self._cached_bytes += frame.numel()
        return frame

    def batch(self, indices, device: torch.device) -> torch.Tensor:
        images = torch.stack([self._uint8(int(i)) for i in indices]).to(device=device, dtype=torch.float32)
        images = images / 127.5 - 1.0
        if images.shape[-1] != self.resolution or images.shape[-2] != self.resolution:
            images = torch.nn.functional.interpolate(images, size=(self.resolution, self.resolution),
                                                     mode="bilinear", align_corners=False, antialias=True)
        return images


def batch_indices(step: int, pool: np.ndarray, batch_size: int, seed: int) -> np.ndarray:
    """Frames of batch `step`: consecutive slices of a stream of per-epoch shuffles of `pool`.

    A pure function of its arguments (each epoch's permutation comes from its own seeded generator),
    so a resumed run draws exactly the batches an uninterrupted one would.
    """
    n = len(pool)
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    out = np.empty(batch_size, dtype=np.int64)
    perms: dict[int, np.ndarray] = {}
    for j, pos in enumerate(positions):
        epoch, offset = divmod(int(pos), n)
        if epoch not in perms:
            perms[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        out[j] = pool[perms[epoch][offset]]
    return out


# --------------------------------------------------------------------------------------------------
# Which parameters are tuned


def frozen_parameter_names(G: torch.nn.Module) -> list[str]:
    """The mapping network and the Fourier-feature input layer: never tuned."""
    return [name for name, _ in G.named_parameters() if name.startswith(("mapping.", "synthesis.input."))]


def trainable_parameters(G: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    frozen = set(frozen_parameter_names(G))
    return [(name, p) for name, p in G.named_parameters() if name.startswith("synthesis.") and name not in frozen]


# --------------------------------------------------------------------------------------------------
# Checkpoints


def _state_digest(G: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, value in sorted(G.state_dict().items()):
        if name == "synthesis.input.transform":  # its value is irrelevant: transforms are passed per call
            continue
        h.update(name.encode())
        h.update(value.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def _fingerprint(settings: TuneSettings, G: torch.nn.Module, latents: np.ndarray, inv_transforms: torch.Tensor,
                 crops: CropFrames, pool: np.ndarray) -> str:
    """What determines the tuning trajectory (not `steps`: a longer run continues a shorter one)."""
    relevant = {k: v for k, v in asdict(settings).items()
                if k not in ("steps", "checkpoint_every", "device", "weights_dir", "frame_cache_mb", "progress")}
    h = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode())
    h.update(_state_digest(G).encode())
    h.update(np.ascontiguousarray(latents).tobytes())
    h.update(inv_transforms.numpy().tobytes())
    h.update(pool.tobytes())
    for p in crops.paths:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}".encode())
    return h.hexdigest()


def save_checkpoint(path: Path, payload: dict) -> None:
    """torch.save to a temporary file beside `path`, fsync, then rename: never a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unreadable: start over rather than fail the stage
        log.warning("tune: ignoring unreadable checkpoint %s (%s)", path, type(err).__name__)
        return None
    if not isinstance(payload, dict) or payload.get("version") != CHECKPOINT_VERSION:
        log.warning("tune: ignoring checkpoint %s of another format", path)
        return None
    return payload


# --------------------------------------------------------------------------------------------------
# The tuning loop


def _render(G: torch.nn.Module, ws: torch.Tensor, inv_transform: torch.Tensor) -> torch.Tensor:
    return G.synthesis(ws, transform=inv_transform)


def run_tune(
    align_dir: str | PathLike,
    latents_path: str | PathLike,
    generator,
    out_dir: str | PathLike,
    settings: TuneSettings | None = None,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> TuneResult:
    """Tune a copy of `generator` (a module or a checkpoint path) on the video; write out_dir/generator.safetensors.

    Resumes from out_dir/checkpoints/ when a compatible checkpoint is there. `on_step(step, loss)` is
    called after every optimisation step (steps counted from 1).
    """
    from videdit.checkpoints import load_generator, save_generator
    from videdit.losses import make_reconstruction_loss

    t_start = time.perf_counter()
    settings = settings or TuneSettings()
    if settings.steps < 0 or settings.batch_size < 1 or settings.checkpoint_every < 0 or settings.lr <= 0:
        raise InputError("tune: steps >= 0, batch_size >= 1, checkpoint_every >= 0 and lr > 0 are required")
    align_dir, out_dir = Path(align_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(settings.device)

    # --- inputs
    latents = np.load(latents_path)
    with np.load(align_dir / "transforms.npz") as t:
        matrix = t["matrix"]
        face_found = t["face_found"] if "face_found" in t else np.ones(len(matrix), bool)
    n = latents.shape[0]
    if len(matrix) != n:
        raise InputError(f"tune: {n} latents but {len(matrix)} transforms")
    inv_all = inverse_transforms(matrix)
    pool = np.flatnonzero(face_found) if face_found.any() else np.arange(n)  # tune on frames with a face

    # --- the network: a private copy, so the caller's generator is left as it was
    if isinstance(generator, (str, PathLike)):
        G = load_generator(generator, device=device)
    else:
        G = copy.deepcopy(generator)
    G = G.to(device).eval()  # eval: no layer here behaves differently in training, and LPIPS stays fixed
    if latents.ndim != 3 or latents.shape[1] != G.num_ws:
        raise InputError(f"tune: latents have shape {list(latents.shape)}, generator wants [N, {G.num_ws}, w_dim]")
    for p in G.parameters():
        p.requires_grad_(False)
    named = trainable_parameters(G)
    for _, p in named:
        p.requires_grad_(True)
    params = [p for _, p in named]
    optimizer = torch.optim.Adam(params, lr=settings.lr, betas=(0.9, 0.999))

    crops = CropFrames(align_dir / "unaligned", n, G.img_resolution, settings.frame_cache_mb << 20)
    loss_fn = make_reconstruction_loss(settings.l2_weight, settings.lpips_weight, settings.lpips_net,
                                       allow_l2_only=settings.allow_l2_only, weights_dir=settings.weights_dir,
                                       random_backbone=settings.lpips_random_backbone).to(device)
    ws_all = torch.from_numpy(np.asarray(latents, dtype=np.float32))
    fingerprint = _fingerprint(settings, G, latents, inv_all, crops, pool)

    # --- resume
    ckpt_path = out_dir / "checkpoints" / CHECKPOINT_NAME
    start, losses, stopped_early = 0, [], False
    ckpt = load_checkpoint(ckpt_path)
    if ckpt is not None and ckpt.get("fingerprint") == fingerprint and int(ckpt["step"]) <= settings.steps:
        try:
            G.load_state_dict(ckpt["generator"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise CheckpointError(f"tune checkpoint {ckpt_path} does not fit this generator: {str(err).splitlines()[0]}") from None
        torch.set_rng_state(ckpt["rng_cpu"])
        if device.type == "cuda" and ckpt.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng_cuda"], device)
        start, losses, stopped_early = int(ckpt["step"]), list(ckpt["losses"]), bool(ckpt["stopped_early"])
        log.info("tune: resuming from step %d of %d", start, settings.steps)
    else:
        if ckpt is not None:
            log.warning("tune: checkpoint %s is from other settings, inputs or more steps; starting over", ckpt_path)
        torch.manual_seed(settings.seed)  # nothing in the loop draws from it today; kept for any random op

    window = deque(losses[-settings.early_stop_window:], maxlen=max(settings.early_stop_window, 1))

    saved_step = start

    def checkpoint(step: int) -> None:
        nonlocal saved_step
        saved_step = step
        save_checkpoint(ckpt_path, {
            "version": CHECKPOINT_VERSION, "step": step, "fingerprint": fingerprint, "stopped_early": stopped_early,
            "generator": {k: v.detach().to("cpu") for k, v in G.state_dict().items()},
            "optimizer": optimizer.state_dict(), "losses": losses,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        })

    from tqdm.auto import tqdm

    bar = tqdm(total=settings.steps, initial=start, desc="tune", unit="step", disable=not settings.progress,
               dynamic_ncols=True)
    step = start
    try:
        while step < settings.steps and not stopped_early:
            idx = batch_indices(step, pool, settings.batch_size, settings.seed)
            ws = ws_all[idx].to(device)
            inv = inv_all[idx].to(device)
            target = crops.batch(idx, device)
            image = _render(G, ws, inv)
            loss, parts = loss_fn(image, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                raise InputError(f"tune: loss became {value} at step {step}; lower tune.lr")
            losses.append(value)
            window.append(value)
            if settings.early_stop_threshold > 0 and len(window) == window.maxlen:
                stopped_early = sum(window) / len(window) < settings.early_stop_threshold
            bar.update(1)
            bar.set_postfix({k: f"{float(v):.4f}" for k, v in {"loss": value, **parts}.items()}, refresh=False)
            if settings.checkpoint_every and (step % settings.checkpoint_every == 0 or stopped_early):
                checkpoint(step)
            if on_step is not None:
                on_step(step, value)
    finally:
        bar.close()
    if stopped_early:
        log.info("tune: early stop at step %d (mean loss of the last %d steps %.5f < %g)", step, len(window),
                 sum(window) / len(window), settings.early_stop_threshold)
    if settings.checkpoint_every and step > saved_step:
        checkpoint(step)  # the final state, so a rerun with the same steps finishes at once

    for p in G.parameters():
        p.requires_grad_(False)
    generator_path = save_generator(G, out_dir / "generator.safetensors")
    (out_dir / "tune.json").write_text(json.dumps({
        "steps_done": step, "stopped_early": stopped_early, "resumed_from_step": start,
        "lpips_used": loss_fn.lpips is not None, "losses": losses}, indent=None))
    return TuneResult(
        generator_path=generator_path, steps_done=step, stopped_early=stopped_early, resumed_from_step=start,
        final_loss=float(sum(window) / len(window)) if window else float("nan"),
        lpips_used=loss_fn.lpips is not None, num_frames=n, seconds=time.perf_counter() - t_start)


@torch.no_grad()
def reconstruction_psnr(G: torch.nn.Module, align_dir: str | PathLike, latents_path: str | PathLike,
                        batch_size: int = 4, device: str = "cpu") -> float:
    """Mean PSNR (dB, images in [-1, 1] as range 2) of each frame rendered from its latent and transform vs its crop."""
    align_dir = Path(align_dir)
    dev = resolve_device(device)
    latents = torch.from_numpy(np.asarray(np.load(latents_path), dtype=np.float32))
    with np.load(align_dir / "transforms.npz") as t:
        inv_all = inverse_transforms(t["matrix"])
    crops = CropFrames(align_dir / "unaligned", len(latents), G.img_resolution)
    psnrs = []
    for lo in range(0, len(latents), batch_size):
        idx = np.arange(lo, min(lo + batch_size, len(latents)))
        image = _render(G, latents[idx].to(dev), inv_all[idx].to(dev)).clamp(-1, 1)
        mse = ((image - crops.batch(idx, dev)) ** 2).mean(dim=(1, 2, 3))
        psnrs.extend((10 * torch.log10(4.0 / mse.clamp_min(1e-12))).tolist())
    return float(np.mean(psnrs))
