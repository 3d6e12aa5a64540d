"""Two alternatives to PTI for the `tune` stage: HyperStyle offsets and the local manifold tweak.

Both take what `run_tune` takes (align folder, pivot latents, generator, output folder, settings) and
write `out_dir/generator.safetensors`, so the render stage works unchanged.

* `run_hyperstyle`: a trained hypernetwork (videdit/networks/hyperstyle.py) predicts per-frame weight
  offsets in `n_iters` refinement iterations, each frame against its unaligned crop, rendered from its
  own latent at its own transform (as PTI). The per-frame offsets are filtered over time with the
  latent smoothing's kernel and written to `offsets.safetensors` (factored form, `FrameOffsets`);
  `generator.safetensors` holds the generator with the video's mean offsets applied, for renderers
  that take one generator. Feed-forward: no checkpoints (a rerun takes seconds).
* `run_local_tweak`: "near-perfect inversion by a local tweak". The synthesis network (minus the
  Fourier input layer, as in PTI) is tuned with Adam on
      laplacian(x, G(w)) + lambda_local * softplus(-D(G(w)))            (local: the video's frames)
    + global_weight * softplus(-D(G(z)))                                (global cohesion: z ~ N(0, I))
  and, when `update_discriminator`, D is trained alternately with the usual logistic GAN loss, its
  "real" samples being the video's frames (local) and the frozen original generator's samples at the
  same z (global), so the tweak stays local and the rest of the manifold is held where it was.
  Stops at `max_steps`, or earlier when the Laplacian loss's mean over the last `stop_window` steps
  is below `stop_threshold` or improved by less than `stop_rel_improvement` over the previous window.
  Resumable from `out_dir/checkpoints/latest.pt` like PTI.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from videdit.errors import CheckpointError, InputError, MissingWeightsError
from videdit.stages.tune import (
    CropFrames,
    batch_indices,
    inverse_transforms,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
    trainable_parameters,
)

log = logging.getLogger("videdit")

OFFSETS_NAME = "offsets.safetensors"
TUNERS = ("pti", "hyperstyle", "local-tweak")


@dataclass
class TunerResult:
    generator_path: Path
    num_frames: int
    seconds: float
    steps_done: int = 0  # local tweak: optimisation steps; HyperStyle: refinement iterations
    resumed_from_step: int = 0
    stopped_early: bool = False
    final_loss: float = float("nan")
    offsets_path: Path | None = None  # HyperStyle only


def _read_inputs(align_dir: Path, latents_path: Path):
    latents = np.load(latents_path)
    with np.load(align_dir / "transforms.npz") as t:
        matrix = t["matrix"]
        face_found = t["face_found"] if "face_found" in t else np.ones(len(matrix), bool)
    if len(matrix) != latents.shape[0]:
        raise InputError(f"tune: {latents.shape[0]} latents but {len(matrix)} transforms")
    return latents, inverse_transforms(matrix), face_found


def _private_generator(generator, device: torch.device):
    from videdit.checkpoints import load_generator

    if isinstance(generator, (str, PathLike)):
        G = load_generator(generator, device=device)
    else:
        G = copy.deepcopy(generator).to(device)
    return G.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------
# HyperStyle


@dataclass
class HyperStyleSettings:
    """hypernetwork: a file written by `videdit train hyperstyle` (required).
    smooth_window: 5 = the latent smoothing's published kernel over the per-frame offsets, 1 = none.
    """

    hypernetwork: str | None = None
    n_iters: int = 5
    batch_size: int = 4
    smooth_window: int = 5
    device: str = "cpu"
    progress: bool = True


def load_hypernetwork(source, device: torch.device):
    from videdit.networks.hyperstyle import HyperNetwork

    if isinstance(source, HyperNetwork):
        return source.to(device).eval()
    if source is None:
        raise MissingWeightsError("the HyperStyle tuner needs a trained hypernetwork: set tune.hypernetwork = PATH "
                                  "(made by `videdit train hyperstyle`)")
    from videdit.checkpoints import load_network

    net = load_network(source, device, kind="hypernetwork")
    if not isinstance(net, HyperNetwork):
        raise CheckpointError(f"{source}: holds a {type(net).__name__}, not a HyperStyle hypernetwork")
    return net.eval()


@torch.no_grad()
def run_hyperstyle(
    align_dir: str | PathLike,
    latents_path: str | PathLike,
    generator,
    out_dir: str | PathLike,
    settings: HyperStyleSettings | None = None,
    *,
    hypernetwork=None,
) -> TunerResult:
    """Per-frame HyperStyle offsets for a video; writes offsets.safetensors and generator.safetensors.

    hypernetwork: a HyperNetwork module (overrides settings.hypernetwork, a path).
    """
    from tqdm.auto import tqdm

    from videdit.checkpoints import save_generator
    from videdit.networks.hyperstyle import FrameOffsets, apply_offsets, hyperstyle_invert
    from videdit.stages.smooth import SmoothSettings, smoothing_kernel

    t_start = time.perf_counter()
    settings = settings or HyperStyleSettings()
    if settings.n_iters < 1 or settings.batch_size < 1:
        raise InputError("hyperstyle: n_iters >= 1 and batch_size >= 1 are required")
    align_dir, out_dir = Path(align_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(settings.device)
    latents, inv_all, _ = _read_inputs(align_dir, Path(latents_path))
    n = latents.shape[0]
    G = _private_generator(generator, device)
    hyper = load_hypernetwork(hypernetwork if hypernetwork is not None else settings.hypernetwork, device)
    missing = [s.name for s in hyper.specs if s.name not in G.synthesis.layer_names
               or tuple(getattr(G.synthesis, s.name).weight.shape[:2]) != (s.out_channels, s.in_channels)]
    if missing:
        raise CheckpointError(f"hyperstyle: the hypernetwork was trained for another generator (layer {missing[0]} differs)")
    crops = CropFrames(align_dir / "unaligned", n, G.img_resolution)
    ws_all = torch.from_numpy(np.asarray(latents, dtype=np.float32))

    parts: list[FrameOffsets] = []
    for lo in tqdm(range(0, n, settings.batch_size), desc="hyperstyle", unit="batch", disable=not settings.progress):
        idx = np.arange(lo, min(lo + settings.batch_size, n))
        out = hyperstyle_invert(hyper, G, crops.batch(idx, device), ws_all[idx].to(device), inv_all[idx].to(device),
                                n_iters=settings.n_iters)
        parts.append(FrameOffsets.from_output(hyper, out))
    base = {k: getattr(G.synthesis, k).weight.detach().float().cpu().clone() for k in parts[0].rows}
    offsets = FrameOffsets({k: torch.cat([p.rows[k] for p in parts]) for k in parts[0].rows}, parts[0].cols,
                           parts[0].bias, base)
    if settings.smooth_window != 1:
        offsets = offsets.filtered(smoothing_kernel(SmoothSettings(window=settings.smooth_window)))
    offsets_path = offsets.save(out_dir / OFFSETS_NAME)
    apply_offsets(G, {k: v.to(device) for k, v in offsets.mean_deltas().items()})
    generator_path = save_generator(G, out_dir / "generator.safetensors")
    (out_dir / "tuner.json").write_text(json.dumps({
        "tuner": "hyperstyle", "num_frames": n, "n_iters": settings.n_iters, "smooth_window": settings.smooth_window,
        "layers": offsets.layers, "generator": "mean offsets applied (render applies the per-frame ones)",
        "offsets": OFFSETS_NAME}))
    return TunerResult(generator_path=generator_path, num_frames=n, seconds=time.perf_counter() - t_start,
                       steps_done=settings.n_iters, offsets_path=offsets_path)


# --------------------------------------------------------------------------------------------------
# Local tweak


@dataclass
class LocalTweakSettings:
    """discriminator: an NVIDIA .pkl (its 'D') or our discriminator .safetensors; None = the generator's
    file when that is a .pkl. lambda_local weighs the local adversarial term, global_weight the global
    cohesion term (0 turns a term off; with both off no discriminator is needed).
    """

    discriminator: str | None = None
    max_steps: int = 200
    lr: float = 3e-4
    d_lr: float = 3e-4
    batch_size: int = 4
    global_batch: int = 4
    lambda_local: float = 0.1
    global_weight: float = 1.0
    update_discriminator: bool = True
    pyramid_levels: int = 5
    stop_window: int = 20
    stop_threshold: float = 0.0
    stop_rel_improvement: float = 0.0  # e.g. 0.01: stop when a window improves on the last by < 1 %
    checkpoint_every: int = 50
    seed: int = 0
    device: str = "cpu"
    progress: bool = True


def load_tweak_discriminator(source, generator, device: torch.device):
    """D from settings (a path or module), else from the generator's file if that is an NVIDIA pickle."""
    from videdit.checkpoints import load_discriminator

    if isinstance(source, torch.nn.Module):
        return copy.deepcopy(source).to(device)
    if source is None:
        if isinstance(generator, (str, PathLike)) and Path(generator).suffix.lower() == ".pkl":
            source = generator
        else:
            raise MissingWeightsError("the local-tweak tuner needs a discriminator: set tune.discriminator = PATH "
                                      "(an NVIDIA .pkl holding 'D')")
    try:
        return load_discriminator(source, device)
    except CheckpointError as err:
        if "has no 'D'" in str(err):
            raise CheckpointError(f"local-tweak needs a discriminator, but {err}; use a training snapshot .pkl "
                                  "(NVIDIA's network-snapshot files hold 'D')") from None
        raise


def _tweak_fingerprint(settings: LocalTweakSettings, G, D, latents: np.ndarray, inv: torch.Tensor, crops: CropFrames) -> str:
    relevant = {k: v for k, v in asdict(settings).items()
                if k not in ("max_steps", "checkpoint_every", "device", "progress", "discriminator",
                             "stop_window", "stop_threshold", "stop_rel_improvement")}
    h = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode())
    for net in (G, D):
        if net is None:
            continue
        for name, value in sorted(net.state_dict().items()):
            if name != "synthesis.input.transform":
                h.update(name.encode())
                h.update(value.detach().cpu().contiguous().numpy().tobytes())
    h.update(np.ascontiguousarray(latents).tobytes())
    h.update(inv.numpy().tobytes())
    for p in crops.paths:
        h.update(f"{p.name}:{p.stat().st_size}".encode())
    return h.hexdigest()


def should_stop(losses: list[float], window: int, threshold: float, rel_improvement: float) -> bool:
    """The stopping rule on the reconstruction losses so far (see the module notes)."""
    if window < 1 or len(losses) < window:
        return False
    recent = float(np.mean(losses[-window:]))
    if threshold > 0 and recent < threshold:
        return True
    if rel_improvement > 0 and len(losses) >= 2 * window:
        previous = float(np.mean(losses[-2 * window:-window]))
        return previous - recent < rel_improvement * previous
    return False


def run_local_tweak(
    align_dir: str | PathLike,
    latents_path: str | PathLike,
    generator,
    out_dir: str | PathLike,
    settings: LocalTweakSettings | None = None,
    *,
    discriminator=None,
) -> TunerResult:
    """Tune a copy of `generator` on the video by the local tweak; write out_dir/generator.safetensors.

    discriminator: a module (overrides settings.discriminator). Resumes from out_dir/checkpoints/.
    """
    from tqdm.auto import tqdm

    from videdit.checkpoints import save_generator
    from videdit.losses_pyramid import laplacian_loss

    t_start = time.perf_counter()
    s = settings or LocalTweakSettings()
    if s.max_steps < 0 or s.batch_size < 1 or s.lr <= 0 or s.global_batch < 0:
        raise InputError("local-tweak: max_steps >= 0, batch_size >= 1, global_batch >= 0 and lr > 0 are required")
    align_dir, out_dir = Path(align_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(s.device)
    latents, inv_all, face_found = _read_inputs(align_dir, Path(latents_path))
    n = latents.shape[0]
    pool = np.flatnonzero(face_found) if face_found.any() else np.arange(n)

    G = _private_generator(generator, device)
    if latents.ndim != 3 or latents.shape[1] != G.num_ws:
        raise InputError(f"local-tweak: latents have shape {list(latents.shape)}, generator wants [N, {G.num_ws}, w_dim]")
    uses_d = s.lambda_local > 0 or (s.global_weight > 0 and s.global_batch > 0)
    D = load_tweak_discriminator(discriminator if discriminator is not None else s.discriminator, generator, device) if uses_d else None
    if D is not None:
        D.eval().requires_grad_(False)
        if D.img_resolution != G.img_resolution:
            raise InputError(f"local-tweak: discriminator is for {D.img_resolution} px images, generator makes {G.img_resolution} px")
    # The original generator: global cohesion's reference samples.
    G_ref = copy.deepcopy(G) if D is not None and s.update_discriminator and s.global_weight > 0 else None
    named = trainable_parameters(G)
    for _, p in named:
        p.requires_grad_(True)
    opt_g = torch.optim.Adam([p for _, p in named], lr=s.lr, betas=(0.9, 0.999))
    d_params = [p for p in D.parameters()] if D is not None and s.update_discriminator else []
    opt_d = torch.optim.Adam(d_params, lr=s.d_lr, betas=(0.0, 0.99)) if d_params else None

    crops = CropFrames(align_dir / "unaligned", n, G.img_resolution, 256 << 20)
    ws_all = torch.from_numpy(np.asarray(latents, dtype=np.float32))
    fingerprint = _tweak_fingerprint(s, G, D, latents, inv_all, crops)
    ckpt_path = out_dir / "checkpoints" / "latest.pt"
    start, losses, stopped = 0, [], False
    ckpt = load_checkpoint(ckpt_path)
    if ckpt is not None and ckpt.get("fingerprint") == fingerprint and ckpt.get("tuner") == "local-tweak" \
            and int(ckpt["step"]) <= s.max_steps:
        try:
            G.load_state_dict(ckpt["generator"])
            opt_g.load_state_dict(ckpt["optimizer"])
            if opt_d is not None:
                D.load_state_dict(ckpt["discriminator"])
                opt_d.load_state_dict(ckpt["optimizer_d"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise CheckpointError(f"local-tweak checkpoint {ckpt_path} does not fit: {str(err).splitlines()[0]}") from None
        start, losses, stopped = int(ckpt["step"]), list(ckpt["losses"]), bool(ckpt["stopped"])
        log.info("local-tweak: resuming from step %d", start)
    elif ckpt is not None:
        log.warning("local-tweak: checkpoint %s is from other settings or inputs; starting over", ckpt_path)

    def z_batch(step: int) -> torch.Tensor:  # a pure function of (seed, step): resumes draw the same z
        gen = torch.Generator().manual_seed(s.seed * 1_000_003 + step)
        return torch.randn(s.global_batch, G.z_dim, generator=gen).to(device)

    def d_logits(net, images):
        return net(images, None).flatten()

    def checkpoint(step: int) -> None:
        save_checkpoint(ckpt_path, {
            "version": 1, "tuner": "local-tweak", "step": step, "fingerprint": fingerprint, "stopped": stopped,
            "generator": {k: v.detach().cpu() for k, v in G.state_dict().items()},
            "optimizer": opt_g.state_dict(), "losses": losses,
            "discriminator": {k: v.detach().cpu() for k, v in D.state_dict().items()} if opt_d is not None else None,
            "optimizer_d": opt_d.state_dict() if opt_d is not None else None})

    step = start
    bar = tqdm(total=s.max_steps, initial=start, desc="local-tweak", unit="step", disable=not s.progress)
    try:
        while step < s.max_steps and not stopped:
            idx = batch_indices(step, pool, s.batch_size, s.seed)
            ws, inv = ws_all[idx].to(device), inv_all[idx].to(device)
            target = crops.batch(idx, device)
            z = z_batch(step) if D is not None and s.global_weight > 0 and s.global_batch > 0 else None
            ws_z = G.mapping(z, None) if z is not None else None  # mapping is frozen: same w for G and G_ref

            # Generator step.
            image = G.synthesis(ws, transform=inv)
            rec = laplacian_loss(image, target, s.pyramid_levels)
            loss = rec
            if D is not None and s.lambda_local > 0:
                loss = loss + s.lambda_local * F.softplus(-d_logits(D, image)).mean()
            sample = G.synthesis(ws_z) if ws_z is not None else None
            if sample is not None:
                loss = loss + s.global_weight * F.softplus(-d_logits(D, sample)).mean()
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()

            # Discriminator step: frames and the original generator's samples are "real"; the fakes are
            # this step's renders (made just before the generator's update: saves two more renders).
            if opt_d is not None:
                D.requires_grad_(True)
                fake = [image.detach()] if s.lambda_local > 0 else []
                real = [target] if s.lambda_local > 0 else []
                if sample is not None and G_ref is not None:
                    fake.append(sample.detach())
                    with torch.no_grad():
                        real.append(G_ref.synthesis(ws_z))
                d_loss = sum(F.softplus(-d_logits(D, r)).mean() + F.softplus(d_logits(D, f)).mean()
                             for r, f in zip(real, fake))
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                D.requires_grad_(False)

            step += 1
            value = float(rec.detach())
            if not math.isfinite(float(loss.detach())):
                raise InputError(f"local-tweak: loss became {float(loss.detach())} at step {step}; lower tune.lr")
            losses.append(value)
            stopped = should_stop(losses, s.stop_window, s.stop_threshold, s.stop_rel_improvement)
            bar.update(1)
            bar.set_postfix({"laplacian": f"{value:.4f}"}, refresh=False)
            if s.checkpoint_every and (step % s.checkpoint_every == 0 or stopped):
                checkpoint(step)
    finally:
        bar.close()
    if s.checkpoint_every and step > start:
        checkpoint(step)
    G.requires_grad_(False)
    generator_path = save_generator(G, out_dir / "generator.safetensors")
    (out_dir / "tuner.json").write_text(json.dumps({
        "tuner": "local-tweak", "steps_done": step, "stopped_early": stopped, "resumed_from_step": start,
        "uses_discriminator": D is not None, "laplacian_losses": losses}))
    window = losses[-max(s.stop_window, 1):]
    return TunerResult(generator_path=generator_path, num_frames=n, seconds=time.perf_counter() - t_start,
                       steps_done=step, resumed_from_step=start, stopped_early=stopped,
                       final_loss=float(np.mean(window)) if window else float("nan"))


def run_tuner(tuner: str, align_dir, latents_path, generator, out_dir, settings, **kwargs):
    """Dispatch on the tuner's name: 'pti' (videdit.stages.tune.run_tune), 'hyperstyle', 'local-tweak'."""
    if tuner == "pti":
        from videdit.stages.tune import run_tune

        return run_tune(align_dir, latents_path, generator, out_dir, settings, **kwargs)
    if tuner == "hyperstyle":
        return run_hyperstyle(align_dir, latents_path, generator, out_dir, settings, **kwargs)
    if tuner == "local-tweak":
        return run_local_tweak(align_dir, latents_path, generator, out_dir, settings, **kwargs)
    raise InputError(f"unknown tuner {tuner!r}; use one of {', '.join(TUNERS)}")
