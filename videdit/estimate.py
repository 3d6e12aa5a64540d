"""The up-front estimate of a run: expected seconds per stage and memory per frame, said before long work.

Calibrated by what a short probe measures on this device, never by constants tuned to one machine: the
passes a stage makes (as the stage code makes them) times one pass of each kind timed here after a warm-up:

* align: the landmark backend's start, then per frame one decode and one landmark search (timed on the
  first frame) and its crops' PNG writes (one crop written);
* encode: the average image once, fit_batch's one-frame probe, then per frame n_iters encoder passes
  (timed at the stage's batch: the encoder gains from batching) and n_iters - 1 syntheses;
* tune, stitch: per step, a synthesis forward and backward per micro-batch (timed at the tuner's
  micro-batch: 1 on a CPU, the whole batch on a GPU), plus fit_batch's probe;
* render: per frame one synthesis per output, plus fit_batch's probe;
* composite: a fixed per-frame cost per output (no probe: it is a few per cent of a run).

Each network pass is the faster of two timed calls (the first doubling as the warm-up). Synthesis is timed
at batch 1 on a CPU (per image it costs no less in a batch there) and at the stage's batch
on a GPU (where batch 1 is mostly launch overhead). Cached stages cost nothing; the reporter rescales the
rest from the stages that finish.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from videdit.lazy import lazy_module
from videdit.memory import measure_peak
from videdit.progress import format_duration
from videdit.settings import ResolvedSettings

torch = lazy_module("torch")  # loaded by the first network probe: a run of align alone never loads it

NOTE = "from one probe pass per network and one frame on this device"
COMPOSITE_FRAME_S = 0.05  # per frame and output: paste, colour match and video encoding; not probed
NETWORK_STAGES = {"encode", "tune", "stitch", "render"}


@dataclass
class Estimate:
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> expected seconds
    sample_bytes: int = 0  # peak memory of one synthesis pass at batch 1 (0: not probed)
    probe_seconds: float = 0.0  # what the probe itself took (part of the run's time, before the first stage)
    probe: "Probe | None" = None
    settings: ResolvedSettings | None = None
    n_outputs: int = 1

    def for_frames(self, stage: str, n_frames: int) -> float:
        """Expected seconds of `stage` on n_frames frames (a face track's share of the video)."""
        if self.probe is None or self.settings is None:
            return self.seconds.get(stage, 0.0)
        return stage_seconds(self.settings, self.probe, n_frames, [stage], self.n_outputs)[stage]

    def describe(self, n_frames: int) -> str:
        """One line for the run's start: the frames, each stage worth a second, the total and the memory."""
        total = sum(self.seconds.values())
        memory = (f"; memory about {_size(self.sample_bytes)} per frame of a render batch, PTI about 3x that per sample"
                  if self.sample_bytes else "")
        stages = ", ".join(f"{k} ~{format_duration(v)}" for k, v in self.seconds.items() if v >= 1)
        return (f"estimate ({NOTE}): {n_frames} frames" + (f", {stages}" if stages else "")  # none worth a second
                + f"; about {format_duration(total)} in all if nothing is cached" + memory)


@dataclass
class Probe:
    """Seconds of one pass of each kind, measured on the run's device (0: not measured, not needed)."""

    synthesis: float = 0.0  # per image, at batch 1 on a CPU, at the render batch on a GPU
    synthesis_encode: float = 0.0  # per image at the encode batch (= synthesis on a CPU)
    encoder_1: float = 0.0  # one frame alone (fit_batch's probe; taken as `encoder`)
    encoder: float = 0.0  # per frame at the encode batch
    train_step: float = 0.0  # one synthesis forward + backward of one micro-batch
    micro_batch: int = 1
    align_start: float = 0.0  # landmark backend start
    align_frame: float = 0.0  # decode + landmark search + crop writes, per frame
    sample_bytes: int = 0


def estimate_run(settings: ResolvedSettings, n_frames: int, stages: list[str], n_outputs: int, device: str,
                 generator: Callable[[], object], encoder: Callable[[], tuple], video: Path | None = None) -> Estimate:
    """Expected seconds of `stages` for a video of n_frames with n_outputs rendered keys. generator(),
    encoder(): the run's networks (loaded on demand, only when a stage that needs them is pending); video:
    the source (its first frame times align; None: align not estimated)."""
    t0 = time.perf_counter()
    probe = Probe()
    if video is not None and "align" in stages and n_frames:
        _probe_align(probe, settings, Path(video), device)
    if set(stages) & NETWORK_STAGES and n_frames:
        _probe_networks(probe, settings, n_frames, stages, device, generator, encoder)
    result = Estimate(seconds=stage_seconds(settings, probe, n_frames, stages, n_outputs), sample_bytes=probe.sample_bytes,
                      probe=probe, settings=settings, n_outputs=n_outputs)
    result.probe_seconds = time.perf_counter() - t0
    return result


def stage_seconds(settings: ResolvedSettings, probe: Probe, n_frames: int, stages: list[str],
                  n_outputs: int) -> dict[str, float]:
    """Stage -> expected seconds: the passes each stage makes times the probe's time for one pass."""
    sections = settings.sections
    encode, tune, stitch = sections["encode"], sections["tune"], sections["stitch"]
    fits = {name: getattr(sections[name], "fit_memory", True) and getattr(sections[name], "batch_size", 1) > 1
            for name in ("encode", "render")}
    encode_fit = (encode.n_iters * probe.encoder_1 + (encode.n_iters - 1) * probe.synthesis) if fits["encode"] else 0.0

    def training(steps: int, batch: int) -> float:
        micro = max(1, min(probe.micro_batch, batch))
        return (steps * -(-batch // micro) + 1) * probe.train_step if steps else 0.0  # + 1: fit_batch's probe

    per_stage = {
        "align": (probe.align_start + n_frames * probe.align_frame) if probe.align_frame else 0.0,
        "encode": probe.synthesis + encode_fit
                  + n_frames * (encode.n_iters * probe.encoder + (encode.n_iters - 1) * probe.synthesis_encode),
        "tune": 0.0 if settings.tuner == "none" else training(tune.steps, tune.batch_size),
        "stitch": training(stitch.steps, getattr(stitch, "batch_size", 1)),
        "render": (n_frames * n_outputs + (1 if fits["render"] else 0)) * probe.synthesis,
        "composite": COMPOSITE_FRAME_S * n_frames * n_outputs,
    }
    return {name: per_stage.get(name, 0.0) for name in stages}


def _timed(fn: Callable[[], object], device: str) -> float:
    """Seconds of one call of fn (CUDA work waited for)."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _best_of_two(fn: Callable[[], object], device: str) -> float:
    """The faster of two timed calls, the first doubling as the warm-up (first calls pick kernels and allocate,
    so they only come out slower): on a machine shared with other jobs, a burst of load that falls on one call
    does not become the estimate."""
    return min(_timed(fn, device), _timed(fn, device))


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def _probe_networks(probe: Probe, settings: ResolvedSettings, n_frames: int, stages: list[str], device: str,
                    generator: Callable[[], object], encoder: Callable[[], tuple]) -> None:
    sections = settings.sections
    G = generator()
    device = str(G.mapping.w_avg.device)  # the probe runs where the generator is
    cuda = device.startswith("cuda")

    def ws(batch: int):
        return G.mapping.w_avg.detach().reshape(1, 1, -1).repeat(batch, G.num_ws, 1).to(device)

    def synthesis_per_image(batch: int) -> float:
        latents = ws(batch)
        return _best_of_two(lambda: G.synthesis(latents), device) / batch

    with torch.no_grad():
        one = ws(1)
        first = _timed(lambda: G.synthesis(one), device)  # also the warm-up (first calls allocate, pick kernels)
        t0 = time.perf_counter()
        probe.sample_bytes = measure_peak(lambda: G.synthesis(one), device)
        probe.synthesis = min(first, time.perf_counter() - t0)
        probe.synthesis_encode = probe.synthesis
        if cuda:  # batch 1 on a GPU is mostly launch overhead: time the batches the stages run
            probe.synthesis = synthesis_per_image(min(sections["render"].batch_size, n_frames))
            probe.synthesis_encode = synthesis_per_image(min(sections["encode"].batch_size, n_frames))
        if "encode" in stages:
            network, _ = encoder()
            size = sections["encode"].input_size
            batch = min(sections["encode"].batch_size, n_frames)
            x = torch.zeros(batch, 6, size, size, device=device)
            probe.encoder = _best_of_two(lambda: network(x), device) / batch  # at the stage's shape
            probe.encoder_1 = probe.encoder  # fit_batch's one-frame probe: a little dearer per frame, not timed
    if set(stages) & {"tune", "stitch"} and settings.tuner != "none":
        probe.micro_batch = sections["tune"].micro_batch or (sections["tune"].batch_size if cuda else 1)
        probe.train_step = _train_step_seconds(G, ws(probe.micro_batch), device)


def _train_step_seconds(G, latents, device: str) -> float:
    """One synthesis forward and backward (weight gradients, as tuning takes) of latents' batch."""
    params = list(G.synthesis.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)

        def step():
            image = G.synthesis(latents)
            torch.autograd.grad(image.square().mean(), params, allow_unused=True)

        return _best_of_two(step, device)  # the first backward also allocates the gradients' buffers
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _probe_align(probe: Probe, settings: ResolvedSettings, video: Path, device: str) -> None:
    """The landmark backend's start, and the first frame's decode, landmark search and crop write."""
    from videdit.face import make_backend
    from videdit.io import VideoReader, write_png

    align = settings.sections["align"]
    t0 = time.perf_counter()
    backend = make_backend(align.landmarks, device=device, detect_max_side=align.detect_max_side)
    probe.align_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    frame = next(iter(VideoReader(video).frames([0])), None)  # reading stops after it
    if frame is None:
        return
    decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    backend.find_faces(frame.image)
    search = time.perf_counter() - t0
    crop = frame.image[: align.crop_size, : align.crop_size]
    with tempfile.TemporaryDirectory(prefix="videdit-estimate-") as tmp:
        t0 = time.perf_counter()
        write_png(Path(tmp) / "crop.png", crop, level=int(align.png_compression))
        write = time.perf_counter() - t0
    # Two passes over the video (landmarks, then crops) decode each frame twice; two crops per frame.
    probe.align_frame = 2 * decode + search + 2 * write


def _size(n_bytes: float) -> str:
    if n_bytes >= 2**30:
        return f"{n_bytes / 2**30:.1f} GB"
    return f"{n_bytes / 2**20:.0f} MB" if n_bytes >= 2**20 else f"{max(1, round(n_bytes / 2**10))} KB"  # never "0 MB"