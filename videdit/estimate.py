"""The up-front estimate of a run: expected seconds per stage and memory per frame, said before long work.

A model of what each stage does, calibrated by what a short probe measures on this device (never by constants
tuned to one machine): the passes and per-frame jobs a stage makes, as the stage code makes them, times one
of each timed here after a warm-up:

* align (whole video): the landmark backend's start, then per frame one decode, one landmark search and its
  two crops (two warps, two PNG writes; the second pass only cuts the few frames the first could not);
  a face track's align has its landmarks already: per frame a decode and the two crops;
* encode: the average image once, fit_batch's one-frame probe, then per frame n_iters encoder passes
  (timed at the stage's batch: the encoder gains from batching) and n_iters - 1 syntheses;
* tune (PTI), stitch: building the tuning loss (loading LPIPS) once, then per step a synthesis forward, the
  loss (L2, and LPIPS where its weights are there) and the backward, per micro-batch (timed at the tuner's
  micro-batch: 1 on a CPU, the whole batch on a GPU), plus fit_batch's probe, and Adam's update per step.
  Not modelled: the checkpoints (under 1 % of a demo's tune in a profile);
* render: per frame one synthesis per output, plus fit_batch's probe, and a video opened per output (and the
  side-by-side one); its per-frame PNG and crop-video writes are left out (a few per cent at 64 px, under one
  at 1024, where a synthesis costs seconds);
* composite: per output a video encoder opened, and per frame one decode of the source and per output a
  paste (the render read back, warped, colour matched, blended) and one frame encoded at the source's size,
  each timed on the source's own first frames with the run's encoder settings.

Each pass is timed after a warm-up call (first calls allocate and pick kernels) as the median of up to
PROBE_CALLS calls within PROBE_BUDGET_S (at least one): on a machine shared with other jobs the time of a
pass swings with their load, and a stage's time is its passes' typical time, not the fastest one. Synthesis is
timed at batch 1 on a CPU (per image it costs no less in a batch there) and at the stage's batch on a GPU
(where batch 1 is mostly launch overhead). Cached stages cost nothing; the reporter rescales the rest from the
stages that finish.
"""
from __future__ import annotations

import statistics
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

NOTE = "from timed passes of each network and of the first frames on this device"
NETWORK_STAGES = {"encode", "tune", "stitch", "render"}
FRAME_STAGES = {"align", "render", "composite"}  # probed on the source's first frames (render: its videos opened)
PROBE_CALLS = 5  # timed calls of one pass at most (after the warm-up)
PROBE_BUDGET_S = 1.0  # no more timed calls once they add up to this: a costly pass is timed once
VIDEO_PROBE_FRAMES = 8  # source frames decoded and encoded to time composite's per-frame I/O


@dataclass
class Estimate:
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> expected seconds
    sample_bytes: int = 0  # peak memory of one synthesis pass at batch 1 (0: not probed)
    probe_seconds: float = 0.0  # what the probe itself took (part of the run's time, before the first stage)
    probe: "Probe | None" = None
    settings: ResolvedSettings | None = None
    n_outputs: int = 1

    def for_frames(self, stage: str, n_frames: int, track: bool = False) -> float:
        """Expected seconds of `stage` on n_frames frames; track: a face track's stage (its share of the video)."""
        if self.probe is None or self.settings is None:
            return self.seconds.get(stage, 0.0)
        return stage_seconds(self.settings, self.probe, n_frames, [stage], self.n_outputs, track=track)[stage]

    def describe(self, n_frames: int, seconds: dict[str, float] | None = None) -> str:
        """One line for the run's start: the frames, each stage worth a second, the total and the memory.
        seconds: the planned stages' estimates (default: one of each stage on the whole video)."""
        seconds = self.seconds if seconds is None else seconds
        total = sum(seconds.values())
        memory = (f"; memory about {_size(self.sample_bytes)} per frame of a render batch, PTI about 3x that per sample"
                  if self.sample_bytes else "")
        stages = ", ".join(f"{k} ~{format_duration(v)}" for k, v in seconds.items() if v >= 1)
        return (f"estimate ({NOTE}): {n_frames} frames" + (f", {stages}" if stages else "")  # none worth a second
                + f"; about {format_duration(total)} in all if nothing is cached" + memory)


@dataclass
class Probe:
    """Seconds of one pass or job of each kind, measured on the run's device (0: not measured, not needed)."""

    synthesis: float = 0.0  # per image, at batch 1 on a CPU, at the render batch on a GPU
    synthesis_encode: float = 0.0  # per image at the encode batch (= synthesis on a CPU)
    encoder_1: float = 0.0  # one frame alone (fit_batch's probe; taken as `encoder`)
    encoder: float = 0.0  # per frame at the encode batch
    train_step: float = 0.0  # one synthesis forward, the tuning loss and the backward, of one micro-batch
    micro_batch: int = 1
    loss_start: float = 0.0  # building the tuning loss (LPIPS loaded), once per tuning stage
    optimizer_step: float = 0.0  # one Adam update of the synthesis weights, once per tuning step
    align_start: float = 0.0  # landmark backend built (its modules already imported, as by the probe)
    decode: float = 0.0  # one source frame decoded
    search: float = 0.0  # one landmark search on a source frame
    crops: float = 0.0  # align's two crops of a frame: two warps and two PNG writes
    paste: float = 0.0  # one output pasted into one frame (render read, warp, colour match, blend)
    video_start: float = 0.0  # one output video opened and closed
    video_frame: float = 0.0  # one frame encoded at the source's size
    sample_bytes: int = 0

    @property
    def align_frame(self) -> float:
        """A frame of a whole video's align: decode, landmark search, two crops."""
        return self.decode + self.search + self.crops


def estimate_run(settings: ResolvedSettings, n_frames: int, stages: list[str], n_outputs: int, device: str,
                 generator: Callable[[], object], encoder: Callable[[], tuple], video: Path | None = None,
                 weights_dir: Path | None = None) -> Estimate:
    """Expected seconds of `stages` for a video of n_frames with n_outputs rendered keys. generator(),
    encoder(): the run's networks (loaded on demand, only when a stage that needs them is pending); video:
    the source (its first frames time align and composite; None: those not estimated); weights_dir: where
    the tuning loss finds LPIPS's weights."""
    t0 = time.perf_counter()
    probe = Probe()
    if video is not None and set(stages) & FRAME_STAGES and n_frames:
        _probe_frames(probe, settings, Path(video), device, stages, n_outputs)
    if set(stages) & NETWORK_STAGES and n_frames:
        _probe_networks(probe, settings, n_frames, stages, device, generator, encoder, weights_dir)
    result = Estimate(seconds=stage_seconds(settings, probe, n_frames, stages, n_outputs), sample_bytes=probe.sample_bytes,
                      probe=probe, settings=settings, n_outputs=n_outputs)
    result.probe_seconds = time.perf_counter() - t0
    return result


def stage_seconds(settings: ResolvedSettings, probe: Probe, n_frames: int, stages: list[str],
                  n_outputs: int, track: bool = False) -> dict[str, float]:
    """Stage -> expected seconds: the passes each stage makes times the probe's time for one pass.
    track: the stages of one face track (its align reads the tracker's landmarks: no search, no backend)."""
    sections = settings.sections
    encode, stitch = sections["encode"], sections["stitch"]
    fits = {name: getattr(sections[name], "fit_memory", True) and getattr(sections[name], "batch_size", 1) > 1
            for name in ("encode", "render")}
    encode_fit = (encode.n_iters * probe.encoder_1 + (encode.n_iters - 1) * probe.synthesis) if fits["encode"] else 0.0

    def training(steps: int, batch: int) -> float:
        micro = max(1, min(probe.micro_batch, batch))
        # + 1: fit_batch's probe; the loss is built once per stage; one optimizer update per step
        return (probe.loss_start + (steps * -(-batch // micro) + 1) * probe.train_step
                + steps * probe.optimizer_step) if steps else 0.0

    if track:
        align = n_frames * (probe.decode + probe.crops)
    else:
        align = (probe.align_start + n_frames * probe.align_frame) if probe.align_frame else 0.0
    tune = sections["tune"]
    side_by_side = 1 if getattr(sections["render"], "side_by_side", False) else 0  # one more video of the crops
    per_stage = {
        "align": align,
        "encode": probe.synthesis + encode_fit
                  + n_frames * (encode.n_iters * probe.encoder + (encode.n_iters - 1) * probe.synthesis_encode),
        "tune": 0.0 if settings.tuner == "none" else training(tune.steps, tune.batch_size),
        "stitch": training(stitch.steps, getattr(stitch, "batch_size", 1)),
        "render": (n_frames * n_outputs + (1 if fits["render"] else 0)) * probe.synthesis
                  + (n_outputs + side_by_side) * probe.video_start,
        "composite": n_outputs * probe.video_start
                     + n_frames * (probe.decode + n_outputs * (probe.paste + probe.video_frame)),
    }
    return {name: per_stage.get(name, 0.0) for name in stages}


def _timed(fn: Callable[[], object], device: str) -> float:
    """Seconds of one call of fn (CUDA work waited for)."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _typical(fn: Callable[[], object], device: str, warmed: bool = False, timed: tuple[float, ...] = ()) -> float:
    """The median of up to PROBE_CALLS timed calls of fn, stopping once they add up to PROBE_BUDGET_S (at
    least one), after a warm-up call unless `warmed` (first calls allocate and pick kernels, so they only come
    out slower). On a machine shared with other jobs one call's time swings with their load (a 64 px
    synthesis measured 0.02 s and 1.1 s a minute apart on the 2-core machine), and a stage's time is its
    passes' typical time: the median, not the fastest, and not one call. timed: calls of fn already timed."""
    if not warmed:
        fn()
        _sync(device)
    times = list(timed)
    while not times or (len(times) < PROBE_CALLS and sum(times) < PROBE_BUDGET_S):
        times.append(_timed(fn, device))
    return statistics.median(times)


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def _probe_networks(probe: Probe, settings: ResolvedSettings, n_frames: int, stages: list[str], device: str,
                    generator: Callable[[], object], encoder: Callable[[], tuple], weights_dir: Path | None) -> None:
    sections = settings.sections
    G = generator()
    device = str(G.mapping.w_avg.device)  # the probe runs where the generator is
    cuda = device.startswith("cuda")

    def ws(batch: int):
        return G.mapping.w_avg.detach().reshape(1, 1, -1).repeat(batch, G.num_ws, 1).to(device)

    def synthesis_per_image(batch: int) -> float:
        latents = ws(batch)
        return _typical(lambda: G.synthesis(latents), device) / batch

    with torch.no_grad():
        one = ws(1)
        G.synthesis(one)  # the warm-up (first calls allocate, pick kernels); then the memory of a warm call
        _sync(device)
        t0 = time.perf_counter()
        probe.sample_bytes = measure_peak(lambda: G.synthesis(one), device)  # waits for CUDA work itself
        probe.synthesis = _typical(lambda: G.synthesis(one), device, warmed=True, timed=(time.perf_counter() - t0,))
        probe.synthesis_encode = probe.synthesis
        if cuda:  # batch 1 on a GPU is mostly launch overhead: time the batches the stages run
            probe.synthesis = synthesis_per_image(min(sections["render"].batch_size, n_frames))
            probe.synthesis_encode = synthesis_per_image(min(sections["encode"].batch_size, n_frames))
        if "encode" in stages:
            network, _ = encoder()
            size = sections["encode"].input_size
            batch = min(sections["encode"].batch_size, n_frames)
            x = torch.zeros(batch, 6, size, size, device=device)
            probe.encoder = _typical(lambda: network(x), device) / batch  # at the stage's shape
            probe.encoder_1 = probe.encoder  # fit_batch's one-frame probe: a little dearer per frame, not timed
    if set(stages) & {"tune", "stitch"} and settings.tuner != "none":
        tune = sections["tune"]
        probe.micro_batch = tune.micro_batch or (tune.batch_size if cuda else 1)
        t0 = time.perf_counter()
        loss = _tuning_loss(tune, weights_dir, device)
        probe.loss_start = time.perf_counter() - t0
        probe.train_step = _train_step_seconds(G, ws(probe.micro_batch), loss, device)
        probe.optimizer_step = _optimizer_step_seconds(G, device)


def _tuning_loss(tune, weights_dir: Path | None, device: str):
    """The loss PTI tunes with (videdit.losses.ReconstructionLoss: L2, and LPIPS where its weights are there),
    built as the tuner builds it, minus its warning (the tune stage says it)."""
    from videdit.errors import MissingWeightsError
    from videdit.losses import ReconstructionLoss, build_lpips

    lpips = None
    if getattr(tune, "lpips_weight", 0):
        try:
            lpips = build_lpips(tune.lpips_net, weights_dir=getattr(tune, "weights_dir", None) or weights_dir,
                                random_backbone=getattr(tune, "lpips_random_backbone", False))
        except MissingWeightsError:  # L2 only (allowed), or the tune stage fails with its own line
            lpips = None
    return ReconstructionLoss(getattr(tune, "l2_weight", 1.0), getattr(tune, "lpips_weight", 0.0), lpips).to(device)


def _train_step_seconds(G, latents, loss, device: str) -> float:
    """One tuning micro-batch: synthesis forward at an identity transform (as each frame has its own), the
    tuning loss against a target, and the backward to the synthesis weights."""
    params = list(G.synthesis.parameters())
    flags = [p.requires_grad for p in params]
    batch = latents.shape[0]
    transform = torch.eye(3, device=device).expand(batch, 3, 3)
    target = torch.zeros(batch, G.img_channels, G.img_resolution, G.img_resolution, device=device)
    try:
        for p in params:
            p.requires_grad_(True)

        def step():
            image = G.synthesis(latents, transform=transform)
            torch.autograd.grad(loss(image, target)[0], params, allow_unused=True)

        return _typical(step, device)  # the warm-up's backward also allocates the gradients' buffers
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _optimizer_step_seconds(G, device: str) -> float:
    """One Adam update (PTI's optimizer) of tensors like the synthesis weights, with gradients: copies, so the
    run's generator is untouched. Building it here also pays, before the stages, the first optimizer's import
    of torch._dynamo (13 of the 29 s of a demo's tune, profiled at load 7), which no per-step time shows."""
    weights = [p.detach().clone().requires_grad_(True) for p in G.synthesis.parameters()]
    for w in weights:
        w.grad = torch.ones_like(w)
    optimizer = torch.optim.Adam(weights, lr=3e-4)
    return _typical(optimizer.step, device)


def _probe_frames(probe: Probe, settings: ResolvedSettings, video: Path, device: str, stages: list[str],
                  n_outputs: int) -> None:
    """Align's and composite's per-frame jobs on the source's first frames: decode; the landmark backend's
    start, one search and the two crops (align pending); one paste (composite pending); the video encoder
    (render or composite pending)."""
    from videdit.io import VideoReader

    align = settings.sections["align"]
    reader = VideoReader(video)
    videos = bool(set(stages) & {"render", "composite"})
    wanted = VIDEO_PROBE_FRAMES if videos else 2
    t0 = time.perf_counter()
    frames, times = [], []
    for frame in reader.frames(range(wanted)):  # reading stops after them
        frames.append(frame.image)
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
    if not frames:
        return
    # The first frame also opens the container (once per pass): the others are the per-frame decode.
    probe.decode = statistics.median(times[1:]) if len(times) > 1 else times[0]
    frame = frames[0]
    face = None
    if "align" in stages:
        from videdit.face import make_backend

        def start():
            return make_backend(align.landmarks, device=device, detect_max_side=align.detect_max_side)

        start()  # the first also imports the backend's modules, once per process: the stage then only builds it
        t0 = time.perf_counter()
        backend = start()
        probe.align_start = time.perf_counter() - t0
        t0 = time.perf_counter()
        faces = backend.find_faces(frame)
        probe.search = time.perf_counter() - t0
        face = max(faces, key=lambda f: f.size) if faces else None
    quad = _face_quad(frame, face, align)
    with tempfile.TemporaryDirectory(prefix="videdit-estimate-") as tmp:
        if "align" in stages:
            probe.crops = _crops_seconds(frame, quad, align, Path(tmp))
        if "composite" in stages:
            probe.paste = _paste_seconds(frame, quad, face, settings, Path(tmp))
        if videos:
            probe.video_start, probe.video_frame = _video_seconds(frames, reader.info, settings, Path(tmp))


def _face_quad(frame, face, align):
    """The alignment quad of the face found, else a square on the frame's centre half its shorter side."""
    import numpy as np

    from videdit.face import ffhq_quad

    if face is not None:
        return ffhq_quad(face.landmarks, align.quad_rule)
    h, w = frame.shape[:2]
    r = min(h, w) / 4
    return np.array([[w / 2 - r, h / 2 - r], [w / 2 - r, h / 2 + r], [w / 2 + r, h / 2 + r], [w / 2 + r, h / 2 - r]])


def _crops_seconds(frame, quad, align, folder: Path) -> float:
    """Align's two crops of a frame: the unaligned one at crop_size, the encoder's aligned one, both written."""
    from videdit.face import quad_to_crop
    from videdit.face.alignment import encoder_crop
    from videdit.io import write_png

    def crops():
        unaligned = quad_to_crop(frame, quad, align.crop_size, fast_warp=True)
        aligned = encoder_crop(frame, quad, align.aligned_size, align.encoder_input)
        for name, crop in (("unaligned.png", unaligned), ("aligned.png", aligned)):
            write_png(folder / name, crop, level=int(align.png_compression))

    return _typical(crops, "cpu")


def _paste_seconds(frame, quad, face, settings: ResolvedSettings, folder: Path) -> float:
    """One output pasted into a frame as composite pastes it: the render (noise of the render's size) read
    back from PNG, the blend mask, the warp, the colour match and the blend."""
    import numpy as np

    from videdit.face import paste
    from videdit.io import read_image, write_png

    composite, render = settings.sections["composite"], settings.sections["render"]
    res = settings.sections["align"].crop_size
    left, right, top, bottom = render.expand
    noise = np.random.default_rng(0).integers(0, 256, (top + res + bottom, left + res + right, 3), dtype=np.uint8)
    path = folder / "render.png"
    write_png(path, noise)
    landmarks = face.landmarks if face is not None else None
    mask = composite.mask if landmarks is not None else "box"

    def paste_one():
        mask_of = paste.make_blend_mask(frame.shape[:2], quad, res, landmarks=landmarks, expand=tuple(render.expand),
                                        mask=mask, feather_px=composite.feather_px,
                                        grow_forehead=composite.grow_forehead)
        paste.composite_frame(frame, read_image(path), quad, res, mask_of, expand=tuple(render.expand),
                              color_match=composite.color_match)

    return _typical(paste_one, "cpu")


def _video_seconds(frames: list, info, settings: ResolvedSettings, folder: Path) -> tuple[float, float]:
    """(opening and closing an output video, one frame encoded): the source's first frames written at its size
    with the composite's encoder settings (closing flushes the frames the encoder held back)."""
    from videdit.io.encoding import EncoderSettings
    from videdit.io.writer import VideoWriter
    from videdit.layout import output_suffix

    composite = settings.sections["composite"]
    encoder = EncoderSettings(codec=composite.codec, crf=composite.crf, preset=composite.preset,
                              pix_fmt=composite.pix_fmt)
    t0 = time.perf_counter()
    writer = VideoWriter(folder / f"probe{output_suffix(composite.codec)}", info.fps, info.size, settings=encoder,
                         source=info)
    opened = time.perf_counter() - t0
    t0 = time.perf_counter()
    for image in frames:
        writer.write(image)
    writer.close()
    return opened, (time.perf_counter() - t0) / len(frames)


def _size(n_bytes: float) -> str:
    if n_bytes >= 2**30:
        return f"{n_bytes / 2**30:.1f} GB"
    return f"{n_bytes / 2**20:.0f} MB" if n_bytes >= 2**20 else f"{max(1, round(n_bytes / 2**10))} KB"  # never "0 MB"