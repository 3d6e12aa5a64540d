"""Pivotal tuning (PTI, as in the published StyleGAN3 video code): tuner "pti".

The synthesis network is fine-tuned so that every frame, rendered from its own (unsmoothed) pivot
latent at its own transform, matches the frame's unaligned crop. The mapping network and the
Fourier-feature input layer (`synthesis.input.*`) stay frozen, so the learned transform from w and the
feature grid are unchanged and the frame transforms keep their meaning.

Loss: l2_weight * L2 + lpips_weight * LPIPS (AlexNet by default). Adam, lr 3e-4, batch 4.

Resumable through the shared loop (videdit/tuning/loop.py): every `checkpoint_every` steps the
generator, the optimizer and the RNG state go to `out_dir/checkpoints/latest.pt`. A checkpoint made
with different settings or inputs is ignored (and replaced).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from typing import Callable

import numpy as np

from videdit.lazy import lazy_module, no_grad
from videdit.device import resolve_device
from videdit.errors import InputError
from videdit.layout import TUNE_INFO
from videdit.records import TRANSFORMS
from videdit.tuning import PTI
from videdit.tuning.base import TuneInputs, TuneResult, Tuner, checkpoint_path, elapsed, write_generator, write_record
from videdit.tuning.data import (
    CropFrames,
    batch_indices,
    inverse_transforms,
    settings_fingerprint,
    unfreeze_synthesis,
    update_with_files,
    update_with_module,
)
from videdit.tuning.loop import LoopConfig, StepOutput, accumulate_gradients, default_micro_batch, run_loop, should_stop

torch = lazy_module("torch")  # settings are read without loading torch (start-up)


@dataclass
class TuneSettings:
    """PTI settings. steps, lr, batch_size, the loss weights and lpips_net default to the published video
    code's (run_pti_video.py: 350 steps; the paper ran 8000 per video). Batches and early stop are not the
    published ones (docs/deviations.md):

    batch_size: frames per step, consecutive slices of a running stream of per-epoch shuffles (every batch
    full; the published DataLoader goes epoch by epoch with a short last batch).
    early_stop_threshold: the run ends when the mean loss (l2_weight * L2 + lpips_weight * LPIPS) of the last
    `early_stop_window` steps falls below it; 0 (the default) = never. The published lpips_threshold (0.06)
    is not this: a batch whose LPIPS is under it ends that epoch, not the run, without counting a step.
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
    fit_memory: bool = True  # lower micro_batch to what one probe sample says fits in free memory
    micro_batch: int = 0  # samples per forward/backward of a step (gradients accumulated over the batch);
    #                       0: 1 on a CPU, the whole batch on a GPU. Memory and speed only: same maths.


def _fingerprint(settings: TuneSettings, inputs: TuneInputs, crops: CropFrames, pool: np.ndarray) -> str:
    """What determines the tuning trajectory (not `steps`: a longer run continues a shorter one)."""
    h = settings_fingerprint(asdict(settings), ignore=("steps", "checkpoint_every", "device", "weights_dir",
                                                       "frame_cache_mb", "progress", "fit_memory", "micro_batch"))
    update_with_module(h, inputs.generator)
    h.update(np.ascontiguousarray(inputs.latents).tobytes())
    h.update(inputs.inv_transforms.numpy().tobytes())
    h.update(pool.tobytes())
    update_with_files(h, crops.paths)
    return h.hexdigest()


class PTI(Tuner):
    name = PTI
    settings_class = TuneSettings
    section = "tune"
    record_name = TUNE_INFO
    runtime_fields = ("device", "progress", "frame_cache_mb", "weights_dir", "fit_memory", "micro_batch")

    def check(self, settings: TuneSettings) -> None:
        if settings.steps < 0 or settings.batch_size < 1 or settings.checkpoint_every < 0 or settings.lr <= 0:
            raise InputError("tune: steps >= 0, batch_size >= 1, checkpoint_every >= 0 and lr > 0 are required")

    def tune(self, inputs: TuneInputs, out_dir: Path, settings: TuneSettings, *,
             on_step: Callable[[int, float], None] | None = None) -> TuneResult:
        """Tune inputs.generator on the video. on_step(step, loss) runs after every step (steps counted from 1)."""
        from videdit.losses import make_reconstruction_loss

        t_start = time.perf_counter()
        self.check(settings)
        s, device, G = settings, inputs.device, inputs.generator
        pool = inputs.pool()
        params = unfreeze_synthesis(G)
        optimizer = torch.optim.Adam(params, lr=s.lr, betas=(0.9, 0.999))
        crops = inputs.crops(s.frame_cache_mb << 20)
        loss_fn = make_reconstruction_loss(s.l2_weight, s.lpips_weight, s.lpips_net, allow_l2_only=s.allow_l2_only,
                                           weights_dir=s.weights_dir, random_backbone=s.lpips_random_backbone).to(device)
        ws_all, inv_all = inputs.ws(), inputs.inv_transforms

        micro_batch = min(s.batch_size, s.micro_batch or default_micro_batch(device, s.batch_size))
        if s.fit_memory and micro_batch > 1:
            from videdit.memory import fit_batch

            def probe() -> None:  # one sample's forward and backward; no optimizer step, so nothing changes
                idx = pool[:1]
                image = G.synthesis(ws_all[idx].to(device), transform=inv_all[idx].to(device))
                loss_fn(image, crops.batch(idx, device))[0].backward()
                for p in params:
                    p.grad = None

            micro_batch = fit_batch(micro_batch, probe, device=str(device), what="tune (micro-batch)").batch_size

        def loss_of(idx: np.ndarray):
            image = G.synthesis(ws_all[idx].to(device), transform=inv_all[idx].to(device))
            return loss_fn(image, crops.batch(idx, device))

        def step(index: int) -> StepOutput:
            idx = batch_indices(index, pool, s.batch_size, s.seed)
            optimizer.zero_grad(set_to_none=True)
            loss, parts = accumulate_gradients(idx, micro_batch, loss_of)
            optimizer.step()
            return StepOutput(loss, parts)

        window = max(s.early_stop_window, 1)
        config = LoopConfig("tune", s.steps, checkpoint_path(out_dir), s.checkpoint_every,
                            _fingerprint(s, inputs, crops, pool), s.seed, s.progress, nan_hint="lower tune.lr")
        run = run_loop(step, {"generator": G, "optimizer": optimizer}, config, device=device,
                       stop=(lambda losses: should_stop(losses, window, s.early_stop_threshold))
                       if s.early_stop_threshold > 0 else None,
                       on_step=(lambda k, out: on_step(k, out.loss)) if on_step is not None else None)
        generator_path = write_generator(G, out_dir)
        write_record(out_dir, self.record_name, {
            "steps_done": run.steps_done, "stopped_early": run.stopped_early, "resumed_from_step": run.resumed_from_step,
            "lpips_used": loss_fn.lpips is not None, "losses": run.losses})
        last = run.losses[-window:]
        return TuneResult(generator_path=generator_path, num_frames=inputs.num_frames, seconds=elapsed(t_start),
                          steps_done=run.steps_done, resumed_from_step=run.resumed_from_step,
                          stopped_early=run.stopped_early,
                          final_loss=float(sum(last) / len(last)) if last else float("nan"),
                          lpips_used=loss_fn.lpips is not None)


PTI_TUNER = PTI()


def run_tune(align_dir: str | PathLike, latents_path: str | PathLike, generator, out_dir: str | PathLike,
             settings: TuneSettings | None = None, *, on_step: Callable[[int, float], None] | None = None) -> TuneResult:
    """PTI on an align folder and a latents file; writes out_dir/generator.safetensors (resumes from out_dir/checkpoints/)."""
    return PTI_TUNER.run(align_dir, latents_path, generator, out_dir, settings, on_step=on_step)


@no_grad
def reconstruction_psnr(G: torch.nn.Module, align_dir: str | PathLike, latents_path: str | PathLike,
                        batch_size: int = 4, device: str = "cpu") -> float:
    """Mean PSNR (dB, images in [-1, 1] as range 2) of each frame rendered from its latent and transform vs its crop."""
    from videdit.records import UNALIGNED, TransformsRecord, load_latents

    align_dir = Path(align_dir)
    dev = resolve_device(device)
    latents = torch.from_numpy(np.asarray(load_latents(latents_path), dtype=np.float32))
    inv_all = inverse_transforms(TransformsRecord.load(align_dir / TRANSFORMS).matrix)
    crops = CropFrames(align_dir / UNALIGNED, len(latents), G.img_resolution)
    psnrs = []
    for lo in range(0, len(latents), batch_size):
        idx = np.arange(lo, min(lo + batch_size, len(latents)))
        image = G.synthesis(latents[idx].to(dev), transform=inv_all[idx].to(dev)).clamp(-1, 1)
        mse = ((image - crops.batch(idx, dev)) ** 2).mean(dim=(1, 2, 3))
        psnrs.extend((10 * torch.log10(4.0 / mse.clamp_min(1e-12))).tolist())
    return float(np.mean(psnrs))
