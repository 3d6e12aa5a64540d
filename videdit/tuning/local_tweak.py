"""The local manifold tweak ("near-perfect inversion by a local tweak"): tuner "local-tweak".

The synthesis network (minus the Fourier input layer, as in PTI) is tuned with Adam on
    laplacian(x, G(w)) + lambda_local * softplus(-D(G(w)))            (local: the video's frames)
  + global_weight * softplus(-D(G(z)))                                (global cohesion: z ~ N(0, I))
and, when `update_discriminator`, D is trained alternately with the usual logistic GAN loss, its
"real" samples being the video's frames (local) and the frozen original generator's samples at the
same z (global), so the tweak stays local and the rest of the manifold is held where it was.
Stops at `max_steps`, or earlier when the Laplacian loss's mean over the last `stop_window` steps
is below `stop_threshold` or improved by less than `stop_rel_improvement` over the previous window.
Resumable from `out_dir/checkpoints/latest.pt` through the shared loop.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from videdit.lazy import lazy_module
from videdit.errors import CheckpointError, InputError, MissingWeightsError
from videdit.tuning.base import TuneInputs, TuneResult, Tuner, checkpoint_path, elapsed, write_generator, write_record
from videdit.tuning.data import (
    batch_indices,
    settings_fingerprint,
    unfreeze_synthesis,
    update_with_files,
    update_with_module,
)
from videdit.tuning.loop import LoopConfig, StepOutput, run_loop, should_stop

torch = lazy_module("torch")  # settings are read without loading torch (start-up)
F = lazy_module("torch.nn.functional")

__all__ = ["LocalTweak", "LocalTweakSettings", "load_tweak_discriminator", "run_local_tweak", "should_stop"]


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


def load_tweak_discriminator(source, generator_file: Path | None, device: torch.device):
    """D from settings (a path or module), else from the generator's file if that is an NVIDIA pickle."""
    from videdit.checkpoints import load_discriminator

    if isinstance(source, torch.nn.Module):
        return copy.deepcopy(source).to(device)
    if source is None:
        if generator_file is not None and Path(generator_file).suffix.lower() == ".pkl":
            source = generator_file
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


def _fingerprint(settings: LocalTweakSettings, inputs: TuneInputs, D, crops) -> str:
    h = settings_fingerprint(asdict(settings), ignore=("max_steps", "checkpoint_every", "device", "progress",
                                                       "discriminator", "stop_window", "stop_threshold",
                                                       "stop_rel_improvement"))
    update_with_module(h, inputs.generator)
    update_with_module(h, D)
    h.update(np.ascontiguousarray(inputs.latents).tobytes())
    h.update(inputs.inv_transforms.numpy().tobytes())
    update_with_files(h, crops.paths)
    return h.hexdigest()


def _logits(net, images):
    return net(images, None).flatten()


class LocalTweak(Tuner):
    name = "local-tweak"
    settings_class = LocalTweakSettings
    section = "local_tweak"
    file_fields = ("discriminator",)

    def check(self, s: LocalTweakSettings) -> None:
        if s.max_steps < 0 or s.batch_size < 1 or s.lr <= 0 or s.global_batch < 0 or s.checkpoint_every < 0:
            raise InputError("local-tweak: max_steps >= 0, batch_size >= 1, global_batch >= 0 and lr > 0 are required")

    def with_generator_file(self, settings: LocalTweakSettings, generator_file):
        if not settings.discriminator and generator_file and str(generator_file).lower().endswith(".pkl"):
            return dataclasses.replace(settings, discriminator=str(generator_file))  # NVIDIA snapshots hold D
        return settings

    def tune(self, inputs: TuneInputs, out_dir: Path, settings: LocalTweakSettings, *, discriminator=None) -> TuneResult:
        """Tune inputs.generator by the local tweak. discriminator: a module (overrides settings.discriminator)."""
        from videdit.losses_pyramid import laplacian_loss

        t_start = time.perf_counter()
        self.check(settings)
        s, device, G = settings, inputs.device, inputs.generator
        pool = inputs.pool()
        uses_d = s.lambda_local > 0 or (s.global_weight > 0 and s.global_batch > 0)
        D = load_tweak_discriminator(discriminator if discriminator is not None else s.discriminator,
                                     inputs.generator_file, device) if uses_d else None
        if D is not None:
            D.eval().requires_grad_(False)
            if D.img_resolution != G.img_resolution:
                raise InputError(f"local-tweak: discriminator is for {D.img_resolution} px images, generator makes {G.img_resolution} px")
        # The original generator: global cohesion's reference samples.
        G_ref = copy.deepcopy(G) if D is not None and s.update_discriminator and s.global_weight > 0 else None
        opt_g = torch.optim.Adam(unfreeze_synthesis(G), lr=s.lr, betas=(0.9, 0.999))
        d_params = list(D.parameters()) if D is not None and s.update_discriminator else []
        opt_d = torch.optim.Adam(d_params, lr=s.d_lr, betas=(0.0, 0.99)) if d_params else None
        crops = inputs.crops(256 << 20)
        ws_all, inv_all = inputs.ws(), inputs.inv_transforms
        draws_z = D is not None and s.global_weight > 0 and s.global_batch > 0

        def z_batch(index: int) -> torch.Tensor:  # a pure function of (seed, step): resumes draw the same z
            gen = torch.Generator().manual_seed(s.seed * 1_000_003 + index)
            return torch.randn(s.global_batch, G.z_dim, generator=gen).to(device)

        def step(index: int) -> StepOutput:
            idx = batch_indices(index, pool, s.batch_size, s.seed)
            target = crops.batch(idx, device)
            ws_z = G.mapping(z_batch(index), None) if draws_z else None  # mapping is frozen: same w for G and G_ref

            # Generator step.
            image = G.synthesis(ws_all[idx].to(device), transform=inv_all[idx].to(device))
            rec = laplacian_loss(image, target, s.pyramid_levels)
            loss = rec
            if D is not None and s.lambda_local > 0:
                loss = loss + s.lambda_local * F.softplus(-_logits(D, image)).mean()
            sample = G.synthesis(ws_z) if ws_z is not None else None
            if sample is not None:
                loss = loss + s.global_weight * F.softplus(-_logits(D, sample)).mean()
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
                d_loss = sum(F.softplus(-_logits(D, r)).mean() + F.softplus(_logits(D, f)).mean()
                             for r, f in zip(real, fake))
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                D.requires_grad_(False)
            value = float(rec.detach())
            return StepOutput(value, {"laplacian": value}, objective=float(loss.detach()))

        state = {"generator": G, "optimizer": opt_g}
        if opt_d is not None:
            state.update(discriminator=D, optimizer_d=opt_d)
        config = LoopConfig(self.name, s.max_steps, checkpoint_path(out_dir), s.checkpoint_every,
                            _fingerprint(s, inputs, D, crops), s.seed, s.progress, nan_hint="lower tune.lr")
        run = run_loop(step, state, config, device=device,
                       stop=lambda losses: should_stop(losses, s.stop_window, s.stop_threshold, s.stop_rel_improvement))
        generator_path = write_generator(G, out_dir)
        write_record(out_dir, self.record_name, {
            "tuner": self.name, "steps_done": run.steps_done, "stopped_early": run.stopped_early,
            "resumed_from_step": run.resumed_from_step, "uses_discriminator": D is not None,
            "laplacian_losses": run.losses})
        window = run.losses[-max(s.stop_window, 1):]
        return TuneResult(generator_path=generator_path, num_frames=inputs.num_frames, seconds=elapsed(t_start),
                          steps_done=run.steps_done, resumed_from_step=run.resumed_from_step,
                          stopped_early=run.stopped_early, final_loss=float(np.mean(window)) if window else float("nan"))


LOCAL_TWEAK_TUNER = LocalTweak()


def run_local_tweak(align_dir: str | PathLike, latents_path: str | PathLike, generator, out_dir: str | PathLike,
                    settings: LocalTweakSettings | None = None, *, discriminator=None) -> TuneResult:
    """The local tweak on an align folder and a latents file; writes out_dir/generator.safetensors."""
    return LOCAL_TWEAK_TUNER.run(align_dir, latents_path, generator, out_dir, settings, discriminator=discriminator)
