"""HyperStyle offsets: tuner "hyperstyle".

A trained hypernetwork (videdit/networks/hyperstyle.py) predicts per-frame weight offsets in `n_iters`
refinement iterations, each frame against its unaligned crop, rendered from its own latent at its own
transform (as PTI). The per-frame offsets are filtered over time with the latent smoothing's kernel and
written to `offsets.safetensors` (factored form, `FrameOffsets`); `generator.safetensors` holds the
generator with the video's mean offsets applied, for anything that reads one generator. Feed-forward:
no loop, no checkpoints (a rerun takes seconds).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from videdit.lazy import lazy_module, no_grad
from videdit.errors import CheckpointError, InputError, MissingWeightsError
from videdit.records import OFFSETS
from videdit.tuning.base import TuneInputs, TuneResult, Tuner, elapsed, write_generator, write_record

torch = lazy_module("torch")  # settings are read without loading torch (start-up)


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


class HyperStyle(Tuner):
    name = "hyperstyle"
    settings_class = HyperStyleSettings
    section = "hyperstyle"
    file_fields = ("hypernetwork",)

    def check(self, settings: HyperStyleSettings) -> None:
        if settings.n_iters < 1 or settings.batch_size < 1:
            raise InputError("hyperstyle: n_iters >= 1 and batch_size >= 1 are required")

    @no_grad
    def tune(self, inputs: TuneInputs, out_dir: Path, settings: HyperStyleSettings, *, hypernetwork=None) -> TuneResult:
        """Per-frame offsets; writes offsets.safetensors and generator.safetensors.

        hypernetwork: a HyperNetwork module (overrides settings.hypernetwork, a path).
        """
        from videdit import progress

        from videdit.networks.hyperstyle import FrameOffsets, apply_offsets, hyperstyle_invert
        from videdit.temporal import SmoothSettings, smoothing_kernel

        t_start = time.perf_counter()
        self.check(settings)
        s, device, G, n = settings, inputs.device, inputs.generator, inputs.num_frames
        hyper = load_hypernetwork(hypernetwork if hypernetwork is not None else s.hypernetwork, device)
        missing = [spec.name for spec in hyper.specs if spec.name not in G.synthesis.layer_names
                   or tuple(getattr(G.synthesis, spec.name).weight.shape[:2]) != (spec.out_channels, spec.in_channels)]
        if missing:
            raise CheckpointError(f"hyperstyle: the hypernetwork was trained for another generator (layer {missing[0]} differs)")
        crops = inputs.crops()
        ws_all, inv_all = inputs.ws(), inputs.inv_transforms

        parts: list[FrameOffsets] = []
        for lo in progress.track(range(0, n, s.batch_size), desc="hyperstyle", unit="batch"):
            idx = np.arange(lo, min(lo + s.batch_size, n))
            out = hyperstyle_invert(hyper, G, crops.batch(idx, device), ws_all[idx].to(device), inv_all[idx].to(device),
                                    n_iters=s.n_iters)
            parts.append(FrameOffsets.from_output(hyper, out))
        base = {k: getattr(G.synthesis, k).weight.detach().float().cpu().clone() for k in parts[0].rows}
        offsets = FrameOffsets({k: torch.cat([p.rows[k] for p in parts]) for k in parts[0].rows}, parts[0].cols,
                               parts[0].bias, base)
        if s.smooth_window != 1:
            offsets = offsets.filtered(smoothing_kernel(SmoothSettings(window=s.smooth_window)))
        offsets_path = offsets.save(out_dir / OFFSETS)
        apply_offsets(G, {k: v.to(device) for k, v in offsets.mean_deltas().items()})
        generator_path = write_generator(G, out_dir)
        write_record(out_dir, self.record_name, {
            "tuner": self.name, "num_frames": n, "n_iters": s.n_iters, "smooth_window": s.smooth_window,
            "layers": offsets.layers, "generator": "mean offsets applied (render applies the per-frame ones)",
            "offsets": OFFSETS})
        return TuneResult(generator_path=generator_path, num_frames=n, seconds=elapsed(t_start),
                          steps_done=s.n_iters, offsets_path=offsets_path)


HYPERSTYLE_TUNER = HyperStyle()


def run_hyperstyle(align_dir: str | PathLike, latents_path: str | PathLike, generator, out_dir: str | PathLike,
                   settings: HyperStyleSettings | None = None, *, hypernetwork=None) -> TuneResult:
    """HyperStyle on an align folder and a latents file; writes offsets.safetensors and generator.safetensors."""
    return HYPERSTYLE_TUNER.run(align_dir, latents_path, generator, out_dir, settings, hypernetwork=hypernetwork)
