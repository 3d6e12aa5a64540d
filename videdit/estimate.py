"""The up-front estimate of a run: expected seconds per stage and memory per frame, said before long work.

Rough by design: one probe pass of the generator and of the encoder at batch 1 (after a warm-up call), a
fixed per-frame cost for align and composite (decode, landmarks, PNGs), PTI's measured 3.3
forward-equivalents per sample-step. Cached stages cost nothing; the reporter learns the true scale from
the stages that finish.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from videdit.memory import measure_peak
from videdit.progress import format_duration
from videdit.settings import ResolvedSettings

NOTE = "rough, from one probe pass per network on this device"
PTI_PASSES = 3.3  # forward-equivalents per sample and step (forward, backward, LPIPS)


@dataclass
class Estimate:
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> expected seconds
    sample_bytes: int = 0  # peak memory of one synthesis pass at batch 1 (0: not probed)

    def describe(self, n_frames: int) -> str:
        """One line for the run's start: the frames, each stage worth a second, the total and the memory."""
        total = sum(self.seconds.values())
        memory = (f"; memory about {_size(self.sample_bytes)} per frame of a render batch, PTI about 3x that per sample"
                  if self.sample_bytes else "")
        stages = ", ".join(f"{k} ~{format_duration(v)}" for k, v in self.seconds.items() if v >= 1)
        return (f"estimate ({NOTE}): {n_frames} frames" + (f", {stages}" if stages else "")  # none worth a second
                + f"; about {format_duration(total)} if nothing is cached" + memory)


def estimate_run(settings: ResolvedSettings, n_frames: int, stages: list[str], n_outputs: int,
                 generator: Callable[[], object], encoder: Callable[[], tuple]) -> Estimate:
    """Expected seconds of `stages` for a video of n_frames with n_outputs rendered keys: passes per frame
    (or per step) times one pass timed here. generator(), encoder(): the run's networks (loaded on demand,
    only when a stage that needs them is pending; the probe runs on the generator's device)."""
    result = Estimate()
    t_syn = t_enc = 0.0
    if set(stages) & {"encode", "tune", "stitch", "render"} and n_frames:
        import torch  # here: a run of align alone never loads it

        G = generator()
        ws = G.mapping.w_avg.detach().reshape(1, 1, -1).repeat(1, G.num_ws, 1)
        device = ws.device
        with torch.no_grad():
            G.synthesis(ws)  # warm-up (first calls allocate and pick kernels)
            t0 = time.perf_counter()
            result.sample_bytes = measure_peak(lambda: G.synthesis(ws), device)
            t_syn = time.perf_counter() - t0
            if "encode" in stages:
                network, _ = encoder()
                x = torch.zeros(1, 6, 256, 256, device=device)
                network(x)
                t0 = time.perf_counter()
                network(x)
                t_enc = time.perf_counter() - t0
    sections = settings.sections
    tune = sections["tune"]
    per_stage = {
        "align": 0.15 * n_frames,
        "encode": n_frames * sections["encode"].n_iters * (t_enc + t_syn),
        "tune": 0.0 if settings.tuner == "none" else tune.steps * tune.batch_size * PTI_PASSES * t_syn,
        "stitch": sections["stitch"].steps * PTI_PASSES * t_syn,
        "render": n_frames * n_outputs * t_syn,
        "composite": 0.05 * n_frames * n_outputs,
    }
    result.seconds = {name: per_stage.get(name, 0.0) for name in stages}
    return result


def _size(n_bytes: float) -> str:
    if n_bytes >= 2**30:
        return f"{n_bytes / 2**30:.1f} GB"
    return f"{n_bytes / 2**20:.0f} MB" if n_bytes >= 2**20 else f"{max(1, round(n_bytes / 2**10))} KB"  # never "0 MB"
