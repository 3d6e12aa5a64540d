"""Whole-pipeline throughput: every stage on a 1080p clip at the real configuration, against its floor.

    python -m benchmarks pipeline [--frames 3] [--size 1920x1080] [--resolution 1024] [--tune-steps 2]
                                  [--tune-batch 4] [--device auto|cpu|cuda] [--threads 2] [--json]

A clip of --frames frames of the astronaut photo swaying (videdit.synthetic.make_clip, the face scaled
with the frame) goes through `Pipeline.run` one stage at a time, with the networks of the real
configuration and random weights (same cost, no download): the StyleGAN3-R generator at --resolution,
the ReStyle-e4e encoder on IR-SE50, LPIPS on AlexNet; the `default` preset otherwise (edit: age, so
the render has two outputs). Per stage it prints:

* seconds per frame, wall clock (the stage's own time from its manifest; tune: seconds per PTI step,
  since its cost is steps x batch, whatever the video's length);
* peak memory during the stage: resident (VmHWM reset before it), and torch's CUDA peak on a GPU;
* the floor, measured in the same run after the pipeline, with the same networks: for network stages
  the passes one frame needs times one pass timed alone at the stage's batch (encode: n_iters encoder
  passes + n_iters - 1 syntheses; render: one synthesis per output; tune: one synthesis forward +
  backward of the step's batch, per step, in the micro-batches the tuner uses); for align: decoding one
  frame, its landmarks, its two crop warps (unaligned at the generator's size, aligned at the encoder's)
  and their two PNG writes, timed alone. edit, smooth and composite have no floor here;
* the stage over its floor. On the CPU both are process CPU time (all threads), so the ratio holds
  on a machine shared with other jobs, whose load changes between the stage and its floor; on a GPU
  both are wall time;
* what a 1-minute clip at 30 fps (1800 frames) would take on this machine: wall s/frame x 1800; tune:
  s/step x the preset's steps (per video). On the CPU also CPU s / threads x 1800: what the machine
  would take with no other job on it if every part used all threads (a lower bound; the wall figure
  includes the other jobs' load).

Small clips overstate s/frame: per-video costs (landmark models, the average image, the render's
generator load, video encoder start) are shared by few frames. The printed table is markdown
(docs/benchmarks.md takes it as is).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import from the repository root instead
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import copy
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    best_time, cuda_peak_mb, markdown_table, peak_rss_mb, ratio, reset_peak_rss, set_threads, sync,
)
from videdit.errors import VideditError
from videdit.layout import MANIFEST
from videdit.pipeline import ModelSource, Pipeline

MINUTE_FRAMES = 60 * 30  # a 1-minute clip at 30 fps
EDIT_DIRECTION = "age"  # any named direction: recon + one edit, as `videdit run --edit age` renders


def parse_size(text: str) -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 1920x1080, got {text!r}") from None
    if width < 64 or height < 64 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError(f"size must be even and at least 64x64 (H.264), got {text!r}")
    return width, height


class RealConfigModels(ModelSource):
    """The released networks' architectures with random weights: R generator, ReStyle-e4e on IR-SE50.

    The generator is built once per instance (an R-1024 takes seconds to initialise) and shared by
    the encoder's average latent.
    """

    name = "bench-real-config"

    def __init__(self, resolution: int, seed: int = 0):
        self.resolution = resolution
        self.seed = seed
        self._generator = None

    def generator_identity(self):
        return f"bench-r{self.resolution}:{self.seed}"

    def encoder_identity(self):
        return f"bench-e4e-ir_se50:{self.seed}"

    def _build_generator(self):
        if self._generator is None:
            import torch

            from videdit.networks.stylegan3 import Generator, r_config_kwargs

            torch.manual_seed(self.seed)
            self._generator = Generator(**r_config_kwargs(self.resolution)).eval()
        return self._generator

    def load_generator(self, device):
        return self._build_generator().to(device)

    def load_encoder(self, device):
        import torch

        from videdit.networks.encoders import build_encoder_on_meta, reference_state_dict

        G = self._build_generator()
        encoder = build_encoder_on_meta("e4e", "ir_se50", n_styles=G.num_ws)
        state = reference_state_dict(encoder)  # deterministic random weights, cheap to make
        with torch.no_grad():  # small style heads keep the codes near the average latent (finite PTI losses)
            for key, value in state.items():
                if key.startswith("styles.") and ".linear." in key:
                    value.mul_(0.05)
        encoder.load_state_dict(state, strict=True, assign=True)
        return encoder.to(device).eval(), G.mapping.w_avg.detach().clone().to(device)

    def edit_direction(self, name_or_path):
        import numpy as np

        direction = np.random.default_rng(self.seed).standard_normal(512).astype(np.float32)
        return direction / np.linalg.norm(direction), f"bench-direction:{name_or_path}:{self.seed}"


def build_pipeline(args) -> Pipeline:
    overrides = {
        "align.crop_size": args.resolution,
        "tune.steps": args.tune_steps,
        "tune.lpips_random_backbone": True,  # AlexNet LPIPS with random weights: the real cost, no file
        "edit.direction": EDIT_DIRECTION,
    }
    if args.tune_batch:
        overrides["tune.batch_size"] = args.tune_batch
    # No up-front estimate: its probe passes would count on the ratio clock of every stage run.
    return Pipeline.from_preset("default", overrides=overrides, device=args.device, quiet=True,
                                models=RealConfigModels(args.resolution), estimate_time=False)


def ratio_clock(device: str):
    """The clock of stage-over-floor ratios: process CPU time on the CPU (steady when other jobs share
    the machine), wall time on a GPU (the CPU only waits there)."""
    return time.perf_counter if device.startswith("cuda") else time.process_time


def run_stages(pipe: Pipeline, clip: Path, run_dir: Path) -> dict[str, dict]:
    """Each stage alone (the ones before it cached): its wall seconds, its seconds on the ratio clock
    (the whole `run` call: the cached stages' checks are milliseconds) and its peak memory."""
    import torch

    cuda = pipe.device.startswith("cuda")
    clock = ratio_clock(pipe.device)
    rows = {}
    for stage in pipe.active_stages():  # the optional stitch stage only when the settings turn it on
        gc.collect()
        if cuda:
            torch.cuda.reset_peak_memory_stats(pipe.device)
        reset_peak_rss()
        print(f"pipeline bench: {stage} ...", file=sys.stderr, flush=True)
        start = clock()
        result = pipe.run(clip, run_dir, until=stage)
        sync(pipe.device)
        clock_s = clock() - start
        if result.status != "ok" or result.stages.get(stage) != "ran":
            raise VideditError(f"pipeline bench: stage {stage} did not run ({result.status}: {result.error})")
        manifest = json.loads((run_dir / stage / MANIFEST).read_text())
        rows[stage] = {"seconds": float(manifest["seconds"]), "clock_seconds": clock_s, "peak_rss_mb": peak_rss_mb(),
                       "peak_cuda_mb": cuda_peak_mb(pipe.device) if cuda else None}
        print(f"pipeline bench: {stage} took {rows[stage]['seconds']:.1f} s ({clock_s:.1f} s on the ratio clock), "
              f"peak RSS {rows[stage]['peak_rss_mb'] / 1024:.1f} GB", file=sys.stderr, flush=True)
    return rows


def align_floor(clip: Path, align, device: str, workdir: Path, clock) -> dict:
    """Seconds of decoding one frame, finding its landmarks, cutting its two crops and writing them as PNG.
    align: the run's AlignSettings (pipe.sections["align"]: aligned_size is the encoder's input)."""
    from videdit.face import ffhq_quad, make_backend, quad_to_crop
    from videdit.face.alignment import encoder_crop
    from videdit.io import VideoReader, write_png

    crop_size, aligned_size = align.crop_size, align.aligned_size
    backend = make_backend(align.landmarks, device=device, detect_max_side=align.detect_max_side)
    start = clock()
    frames = [frame.image for frame in VideoReader(clip)]
    decode_s = (clock() - start) / len(frames)  # per frame: opening the file is per video
    frame = frames[0]
    faces = []
    landmarks_s = best_time(lambda: faces.append(backend.find_faces(frame)), 1, clock=clock)
    if not faces[0]:
        raise VideditError(f"pipeline bench: no face in the first frame of {clip}")
    quad = ffhq_quad(faces[0][0].landmarks)
    crops = []
    encoder_input = align.encoder_input
    warps_s = best_time(lambda: crops.extend([quad_to_crop(frame, quad, crop_size),
                                              encoder_crop(frame, quad, aligned_size, encoder_input)]), 1, clock=clock)
    writes_s = best_time(lambda: [write_png(workdir / f"floor{i}.png", c) for i, c in enumerate(crops[:2])], 1,
                         clock=clock)
    parts = {"decode": decode_s, "landmarks": landmarks_s, "2 warps": warps_s, "2 PNG writes": writes_s}
    return {"seconds": sum(parts.values()), "what": " + ".join(f"{k} {v:.2f}" for k, v in parts.items())}


def network_floors(pipe: Pipeline, n_iters: int, input_size: int, n_outputs: int, batches: dict[str, int],
                   clock) -> dict[str, dict]:
    """Per frame (tune: per step): the passes a stage needs, each pass timed alone at the stage's batch."""
    import torch

    G = pipe.generator()
    encoder, latent_avg = pipe.encoder()
    device = torch.device(pipe.device)

    def latents(batch: int):
        return latent_avg.reshape(1, 1, -1).expand(batch, G.num_ws, -1).contiguous()

    def identity(batch: int):
        return torch.eye(3, device=device).expand(batch, 3, 3)

    def per_frame(fn, batch: int) -> float:
        return best_time(fn, 1, device=device, clock=clock) / batch

    def synthesis_s(batch: int) -> float:
        ws, eye = latents(batch), identity(batch)
        with torch.inference_mode():
            return per_frame(lambda: G.synthesis(ws, transform=eye), batch)

    b = batches["encode"]
    x = torch.zeros(b, 6, input_size, input_size, device=device)  # the encoder's input: crop and feedback image
    with torch.inference_mode():
        encoder_s = per_frame(lambda: encoder(x), b)
    encode_synthesis_s = synthesis_s(b)
    render_synthesis_s = encode_synthesis_s if batches["render"] == b else synthesis_s(batches["render"])

    from videdit.tuning.loop import default_micro_batch

    trained = copy.deepcopy(G).requires_grad_(True)  # tuning trains a copy, as run_tune does
    params = list(trained.synthesis.parameters())
    micro = min(batches["tune"], default_micro_batch(device, batches["tune"]))  # as PTI splits a step's batch
    ws_step, eye_step = latents(micro), identity(micro)

    def forward_backward():
        image = trained.synthesis(ws_step, transform=eye_step)
        torch.autograd.grad(image.square().mean(), params, allow_unused=True)

    step_s = best_time(forward_backward, 1, device=device, clock=clock) * -(-batches["tune"] // micro)
    return {
        "encode": {"seconds": n_iters * encoder_s + (n_iters - 1) * encode_synthesis_s,
                   "what": f"{n_iters} x encoder {encoder_s:.2f} + {n_iters - 1} x synthesis {encode_synthesis_s:.2f} "
                           f"(batch {b})"},
        "tune": {"seconds": step_s, "what": f"synthesis fwd+bwd of the step's batch of {batches['tune']}"
                                             f" (in micro-batches of {micro})"},
        "render": {"seconds": n_outputs * render_synthesis_s,
                   "what": f"{n_outputs} x synthesis {render_synthesis_s:.2f} (batch {batches['render']})"},
    }


def summarise(stages: dict[str, dict], floors: dict[str, dict], n_frames: int, preset_steps: int,
              tune_steps: int, threads: int = 1) -> list[dict]:
    """Per stage: seconds per frame (tune: per step), the floor, their ratio, the 1-minute extrapolation."""
    rows = []
    for stage, measured in stages.items():
        units = tune_steps if stage == "tune" else n_frames
        per_unit = measured["seconds"] / units
        floor = floors.get(stage)
        scale = preset_steps if stage == "tune" else MINUTE_FRAMES
        minute = per_unit * scale
        rows.append(dict(measured, stage=stage, unit="step" if stage == "tune" else "frame", per_unit_s=per_unit,
                         floor_s=floor["seconds"] if floor else None, floor_what=floor["what"] if floor else "",
                         over_floor=ratio(measured["clock_seconds"] / units, floor["seconds"]) if floor else None, minute_s=minute,
                         minute_unloaded_s=measured["clock_seconds"] / units / threads * scale))
    return rows


def format_table(rows: list[dict], cuda: bool, preset_steps: int) -> str:
    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    def duration(value: float) -> str:
        return f"{value / 60:.1f} min" if value < 3600 else f"{value / 3600:.1f} h"

    clock = "s" if cuda else "CPU s"
    headers = ["stage", "s per frame", "peak RSS GB"] + (["peak CUDA GB"] if cuda else []) + [
        f"floor {clock}", f"floor is ({clock})", f"x floor ({clock})", "1 min @ 30 fps"] + (
        [] if cuda else ["1 min, CPU s / threads"])
    body = []
    for r in rows:
        unit = "" if r["unit"] == "frame" else " /step"
        minute = duration(r["minute_s"]) + (f" ({preset_steps} steps)" if r["stage"] == "tune" else "")
        cells = [r["stage"], seconds(r["per_unit_s"]) + unit, f"{r['peak_rss_mb'] / 1024:.1f}"]
        if cuda:
            cells.append(f"{r['peak_cuda_mb'] / 1024:.1f}")
        cells += [seconds(r["floor_s"]), r["floor_what"] or "-",
                  "-" if r["over_floor"] is None else f"{r['over_floor']:.2f}", minute]
        if not cuda:
            cells.append(duration(r["minute_unloaded_s"]))
        body.append(cells)
    total = sum(r["minute_s"] for r in rows)
    last = [] if cuda else [f"**{duration(sum(r['minute_unloaded_s'] for r in rows))}**"]
    body.append(["**total**", "", "", *([""] if cuda else []), "", "", "", f"**{duration(total)}**", *last])
    return markdown_table(headers, body)


def estimate_table(estimated: dict[str, float], stages: dict[str, dict]) -> str:
    """Per stage: the estimate, the wall seconds it took, actual / estimate; the same for the whole run."""
    body = []
    for stage, measured in stages.items():
        guess = estimated.get(stage, 0.0)
        body.append([stage, f"{guess:.1f}", f"{measured['seconds']:.1f}",
                     f"{measured['seconds'] / guess:.2f}" if guess >= 0.05 else "-"])
    total_guess = sum(estimated.get(s, 0.0) for s in stages)
    total = sum(m["seconds"] for m in stages.values())
    body.append(["**total**", f"{total_guess:.1f}", f"{total:.1f}", f"**{total / total_guess:.2f}**" if total_guess else "-"])
    return markdown_table(["stage", "estimate s", "actual s", "actual / estimate"], body)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3, help="clip length (default 3)")
    parser.add_argument("--size", type=parse_size, default=(1920, 1080), help="clip size WIDTHxHEIGHT")
    parser.add_argument("--resolution", type=int, choices=(256, 512, 1024), default=1024,
                        help="generator and crop size (1024: the real one; 256 for a quick run)")
    parser.add_argument("--tune-steps", type=int, default=2, help="PTI steps run (the extrapolation uses the preset's)")
    parser.add_argument("--tune-batch", type=int, default=0, help="PTI batch (default: the preset's, 4)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.tune_steps < 1 or args.tune_batch < 0 or args.threads < 1:
        parser.error("--frames, --tune-steps and --threads must be >= 1, --tune-batch >= 0")

    import torch

    from videdit import presets
    from videdit.ops.backend import current_mode
    from videdit.synthetic import make_clip

    set_threads(args.threads)
    try:
        pipe = build_pipeline(args)
        sections = pipe.sections
        preset_steps = int(presets.load_preset("default")["tune"]["steps"])  # what a real run does
        n_iters = sections["encode"].n_iters
        tune_batch = sections["tune"].batch_size
        n_outputs = len(pipe.edit_keys())
        with tempfile.TemporaryDirectory(prefix="videdit-bench-pipeline-") as tmp:
            root = Path(tmp)
            width, height = args.size
            clip = make_clip(root / "clip.mp4", n_frames=args.frames, size=args.size, scale=height / 480, fps=30).path
            start = time.perf_counter()
            pipe.generator()  # built before the timing: loading the networks is per process, not per video
            pipe.encoder()
            load_s = time.perf_counter() - start
            print(f"pipeline bench: {args.frames} frames {width}x{height}, R-{args.resolution} generator, e4e/IR-SE50 "
                  f"encoder ({n_iters} iterations), LPIPS-Alex, PTI batch {tune_batch} x {args.tune_steps} steps, "
                  f"{n_outputs} outputs; device {pipe.device}, {torch.get_num_threads()} threads, ops {current_mode()}, "
                  f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
                  f"networks built in {load_s:.1f} s", file=sys.stderr, flush=True)
            start = time.perf_counter()
            estimate = pipe.estimate(args.frames, list(pipe.active_stages()), clip)  # what `videdit run` says first
            print(f"pipeline bench: the up-front estimate's probe took {time.perf_counter() - start:.1f} s; "
                  f"{estimate.describe(args.frames)}", file=sys.stderr, flush=True)
            probe = {k: round(v, 3) for k, v in vars(estimate.probe).items() if v and k != "sample_bytes"}
            print(f"pipeline bench: the probe's seconds per pass: {probe}", file=sys.stderr, flush=True)
            stages = run_stages(pipe, clip, root / "run")
            print("pipeline bench: floors ...", file=sys.stderr, flush=True)
            clock = ratio_clock(pipe.device)
            batches = {"encode": min(sections["encode"].batch_size, args.frames), "tune": tune_batch,
                       "render": min(sections["render"].batch_size, args.frames)}
            floors = network_floors(pipe, n_iters, sections["encode"].input_size, n_outputs, batches, clock)
            floors["align"] = align_floor(clip, sections["align"], pipe.device_request, root, clock)
    except VideditError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    rows = summarise(stages, floors, args.frames, preset_steps, args.tune_steps, torch.get_num_threads())
    cuda = pipe.device.startswith("cuda")
    print(f"`python -m benchmarks pipeline --frames {args.frames} --size {width}x{height} --resolution {args.resolution} "
          f"--tune-steps {args.tune_steps}{f' --tune-batch {args.tune_batch}' if args.tune_batch else ''} "
          f"--device {pipe.device} --threads {args.threads}` (ops {current_mode()}, load average "
          f"{os.getloadavg()[0]:.1f} at the end)\n")
    print(format_table(rows, cuda, preset_steps))
    print("\nThe up-front estimate (what `videdit run` prints before the first stage) against the stage's wall time:\n")
    print(estimate_table(estimate.seconds, stages))
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
