"""`videdit eval`: evaluate a run folder, write metrics.json and plots, format terminal tables.

Public API (the CLI calls these):
    load_models(settings) -> EvalModels             dlib + LPIPS (+ ArcFace), once for several runs
    evaluate_run(run_dir, against=None, settings=EvalSettings(), *, models=None) -> dict
                                                    (also writes RUN/eval/metrics.json and plots;
                                                    max_frames N: RUN/eval/first_N/)
    format_summary(metrics) -> str                  one-screen table of one run
    compare_runs(run_dirs) -> str                   runs side by side (reads RUN/eval/metrics.json)
    metrics_to_json(metrics) -> str                 strict JSON (NaN as null) for --json output
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from itertools import zip_longest
from pathlib import Path

import numpy as np

from videdit import layout, progress, records
from videdit.errors import InputError
from videdit.runfolder import prepare_run_dir
from videdit.evaluate import frames as frames_mod
from videdit.evaluate.frames import FrameSource, is_reconstruction

SCHEMA_VERSION = 1


@dataclass
class EvalSettings:
    """How a run is evaluated (defaults follow the published protocol plus full-size metrics)."""

    sizes: tuple[int | None, ...] = (256, None)  # pixel-metric sizes; None = the frames' own size
    flow_size: int | None = 256  # temporal metrics run at this square size (None = own size)
    detect_size: int = 384  # face detection works on a copy this large (longer side)
    identity_model: str = "auto"  # auto (ArcFace when its weights are present, else dlib) | dlib | arcface
    weights_dir: Path | None = None  # where ArcFace / AlexNet checkpoints may be
    lpips: bool = True
    lpips_random_backbone: bool = False  # tests only: exercises LPIPS without weights, values meaningless
    pixel_metrics_for_edits: bool = False  # edits differ from the input on purpose; off by default
    max_frames: int | None = None  # evaluate only the first frames (quick looks)
    plots: bool = True
    write: bool = True  # write RUN/eval/metrics.json and plots
    out: Path | None = None  # where they go instead of RUN/eval/ (a read-only run folder)
    device: str = "cpu"


@dataclass
class EvalModels:
    """The models an evaluation uses; load once with `load_models` to evaluate several runs."""

    analyzer: object  # identity.FaceAnalyzer
    lpips: object | None  # lpips.LPIPS, or None when skipped
    notes: dict[str, str] = field(default_factory=dict)  # what was loaded
    skipped: dict[str, str] = field(default_factory=dict)  # what was not, and why


def load_models(settings: EvalSettings | None = None) -> EvalModels:
    from videdit.evaluate import identity, metrics as pixel

    settings = settings or EvalSettings()
    notes: dict[str, str] = {}
    skipped: dict[str, str] = {}
    lpips_model = None
    if settings.lpips:
        status = pixel.load_lpips(settings.weights_dir, settings.lpips_random_backbone, settings.device)
        lpips_model = status.model
        (notes if status.model is not None else skipped)["lpips"] = status.reason
    else:
        skipped["lpips"] = "turned off in the settings"
    analyzer = identity.FaceAnalyzer(settings.detect_size, embedder=identity_embedder(settings, skipped))
    notes["identity"] = analyzer.model_name
    return EvalModels(analyzer, lpips_model, notes, skipped)


def size_label(size: int | None) -> str:
    return "full" if size is None else str(size)


# ---------------------------------------------------------------------------------------------
# evaluation


def evaluation_folder(run_dir, against=None, settings: EvalSettings | None = None) -> Path:
    """Where the evaluation of `run_dir` goes, made and checked writable (settings.write): one line before any
    work when it cannot be written (a read-only run folder: `--out`), not a traceback after the metrics."""
    settings = settings or EvalSettings()
    out_dir = Path(settings.out) if settings.out is not None else Path(run_dir) / layout.EVAL_DIR
    # Another reference, or only the first frames, gets its own folder, so the run's own (whole) evaluation is
    # never overwritten.
    out_dir = out_dir if against is None else out_dir / f"against_{Path(against).stem}"
    if settings.max_frames is not None:
        out_dir = out_dir / f"first_{settings.max_frames}"
    if settings.write and Path(run_dir).is_dir():
        prepare_run_dir(out_dir, what="the evaluation folder")
    return out_dir


def evaluate_run(run_dir, against=None, settings: EvalSettings | None = None, *, models: EvalModels | None = None) -> dict:
    """Evaluate every rendered output of a run against its input; returns the metrics dict.

    Without `against` the reference is RUN/align/unaligned and the outputs are RUN/render/<key>/
    crops. `against` may be another run or an image folder (same crop-level comparison), or the
    source video: then the run's final full-frame videos are compared with it. `models` (from
    `load_models`) saves reloading them when several runs are evaluated.
    """
    settings = settings or EvalSettings()
    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"{run} is not a run folder")
    out_dir = evaluation_folder(run, against, settings)
    reference = frames_mod.reference_source(run, Path(against) if against is not None else None)
    if reference.video is not None:
        outputs = frames_mod.full_frame_outputs(run, reference.video)
    else:
        outputs = frames_mod.crop_outputs(run)
    counts = {src.label: src.count for src in (reference, *outputs.values()) if src.count is not None}
    if len(set(counts.values())) > 1:  # image folders: catch a mismatch before loading any model
        raise InputError("frame counts differ: " + ", ".join(f"{label} has {n}" for label, n in counts.items()))
    started = time.perf_counter()
    metrics = _evaluate_sources(reference, outputs, settings, models or load_models(settings))
    metrics["run"] = str(run)
    metrics["transforms"] = _transform_stats(run)
    metrics["latents"] = _latent_stats(run)
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    if settings.write:
        metrics["eval_dir"] = frames_mod.label_for(out_dir, run)
        metrics["plots"] = []
        if settings.plots:
            try:
                metrics["plots"] = _write_plots(run, metrics, out_dir)
            except ImportError:  # matplotlib is an optional dependency (the `eval` extra)
                metrics["skipped"]["plots"] = "matplotlib is not installed (pip install 'videdit[eval]')"
        for name in (layout.METRICS_PLOT, layout.TRANSFORMS_PLOT, layout.LATENT_PLOT):  # an earlier evaluation's
            if frames_mod.label_for(out_dir / name, run) not in metrics["plots"]:
                (out_dir / name).unlink(missing_ok=True)
        records.save_metrics(out_dir, metrics_to_json(metrics))
    return metrics


@dataclass
class _OutputTrack:
    """Everything gathered about one output (reconstruction or an edit) while streaming the frames."""

    source: FrameSource
    series: dict[str, list] = field(default_factory=dict)  # per-frame values by metric name
    embeddings: list = field(default_factory=list)
    offsets: list = field(default_factory=list)  # mean output - input landmark position per frame
    previous_small: np.ndarray | None = None  # last frame at the temporal metrics' size
    resized_from: list[int] | None = None

    def add(self, name: str, value) -> None:
        self.series.setdefault(name, []).append(value)

    def summary(self, input_warp: list, input_diff: list) -> dict:
        from videdit.evaluate import temporal

        similarity = np.asarray(self.series["identity_similarity"], dtype=float)
        warp_out, warp_in = _nanmean(self.series.get("warp_error", [])), _nanmean(input_warp)
        diff_out, diff_in = _nanmean(self.series.get("frame_difference", [])), _nanmean(input_diff)
        offsets = np.asarray(self.offsets, dtype=float).reshape(-1, 2)
        return {
            "source": self.source.label,
            "resized_from": self.resized_from,  # [width, height] when not at the reference's size
            "per_frame": self.series,
            "summary": {name: _mean_std(values) for name, values in self.series.items() if name != "face_found"},
            "faces_found": int(sum(self.series["face_found"])),
            "temporal": {
                "warp_error": warp_out,
                "warp_error_input": warp_in,
                "warp_error_ratio": temporal.safe_ratio(warp_out, warp_in),
                "frame_difference": diff_out,
                "frame_difference_input": diff_in,
                "frame_difference_ratio": temporal.safe_ratio(diff_out, diff_in),
                "identity_std_global": temporal.global_std(similarity),
                "identity_std_local": temporal.local_std(similarity),
                "identity_consistency": temporal.identity_consistency(self.embeddings),
                # How much the face swims against the input's face from frame to frame (pixels).
                "landmark_offset_jitter": float(np.hypot(temporal.local_std(offsets[:, 0]), temporal.local_std(offsets[:, 1]))),
            },
        }


def _evaluate_sources(reference: FrameSource, outputs: dict[str, FrameSource], settings: EvalSettings, models: EvalModels) -> dict:
    """Stream all sources frame by frame (one frame of each in memory) and gather every metric."""
    from videdit.evaluate import identity, metrics as pixel, temporal

    image_metrics = pixel.ImageMetrics(models.lpips if settings.lpips else None, settings.device)
    analyzer = models.analyzer
    tracks = {key: _OutputTrack(source) for key, source in outputs.items()}
    pixel_keys = {k for k in tracks if is_reconstruction(k) or settings.pixel_metrics_for_edits or len(tracks) == 1}
    reference_embeddings: list = []
    input_warp, input_diff = [], []
    previous_ref = None
    previous_box = None
    frame_size = None
    count = 0
    missing = object()
    streams = zip_longest(reference, *(track.source for track in tracks.values()), fillvalue=missing)
    total = min(n for n in (reference.count, settings.max_frames) if n is not None) \
        if (reference.count, settings.max_frames) != (None, None) else None  # a video's count is known once read
    for index, (ref, *outs) in enumerate(progress.track(streams, total, "eval", "frame")):
        if settings.max_frames is not None and index >= settings.max_frames:
            break
        if ref is missing or any(o is missing for o in outs):
            ended = [src.label for src, frame in zip((reference, *outputs.values()), (ref, *outs)) if frame is missing]
            raise InputError(f"frame counts differ: {', '.join(ended)} ended at frame {index}")
        frame_size = (ref.shape[1], ref.shape[0])
        # Follow the same person as in the previous frame when several faces are in view.
        ref_face = analyzer.observe(ref, near=previous_box)
        previous_box = ref_face.box if ref_face.found else previous_box
        reference_embeddings.append(ref_face.embedding)
        # Flow between consecutive input frames: where each pixel should come from, for every output.
        small_ref = _temporal_frame(ref, settings.flow_size)
        flow = None
        if previous_ref is not None:
            flow = temporal.backward_flow(previous_ref, small_ref)
            input_warp.append(temporal.warping_error(previous_ref, small_ref, flow))
            input_diff.append(temporal.frame_difference(previous_ref, small_ref))
        previous_ref = small_ref

        for (key, track), out in zip(tracks.items(), outs):
            if out.shape != ref.shape:
                # e.g. crops rendered at the generator's size, input crops at another: compare at the input's.
                track.resized_from = track.resized_from or [out.shape[1], out.shape[0]]
                out = temporal.resize_to(out, (ref.shape[1], ref.shape[0]))
            if key in pixel_keys:
                for size in settings.sizes:
                    for name, value in image_metrics.compare(ref, out, size).items():
                        if value is not None:
                            track.add(f"{name}@{size_label(size)}", value)
            out_face = analyzer.observe(out, fallback_box=ref_face.box, near=ref_face.box)
            track.embeddings.append(out_face.embedding)
            track.offsets.append(identity.landmark_offset(ref_face, out_face))
            track.add("face_found", bool(out_face.found))
            track.add("identity_similarity", identity.cosine_similarity(ref_face.embedding, out_face.embedding))
            if analyzer.embedder is None:
                track.add("identity_distance", identity.euclidean_distance(ref_face.embedding, out_face.embedding))
            track.add("landmark_error", identity.landmark_error(ref_face, out_face))
            small_out = _temporal_frame(out, settings.flow_size)
            if flow is not None:
                track.add("warp_error", temporal.warping_error(track.previous_small, small_out, flow))
                track.add("frame_difference", temporal.frame_difference(track.previous_small, small_out))
            track.previous_small = small_out
        count = index + 1
    if count == 0:
        raise InputError(f"{reference.label} has no frames")

    # An edit should keep who the person is: compare its faces with the reconstruction's as well.
    reconstruction = next((track for key, track in tracks.items() if is_reconstruction(key)), None)
    if reconstruction is not None:
        for track in tracks.values():
            if track is not reconstruction:
                track.series["identity_vs_reconstruction"] = [
                    identity.cosine_similarity(a, b) for a, b in zip(reconstruction.embeddings, track.embeddings)
                ]
    result_outputs = {key: track.summary(input_warp, input_diff) for key, track in tracks.items()}
    return {
        "schema": SCHEMA_VERSION,
        "reference": reference.label,
        "frames": count,
        "frame_size": list(frame_size) if frame_size else None,
        "identity_model": analyzer.model_name,
        "faces_found_input": int(sum(e is not None for e in reference_embeddings)),
        "input_temporal": {
            "warp_error_per_frame": input_warp,
            "frame_difference_per_frame": input_diff,
            "identity_consistency": temporal.identity_consistency(reference_embeddings),
        },
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
        "models": dict(models.notes),
        "skipped": dict(models.skipped),
        "outputs": result_outputs,
    }


def identity_embedder(settings: EvalSettings, skipped: dict[str, str]):
    """ArcFace-family embedder when asked for or when its weights are present; None means dlib's.

    Why ArcFace is not used, when it is not, goes into `skipped`.
    """
    from videdit.errors import MissingWeightsError
    from videdit.evaluate import identity

    if settings.identity_model == "dlib":
        return None
    if settings.identity_model not in ("auto", "arcface"):
        raise InputError(f"unknown identity model {settings.identity_model!r}; use auto, dlib or arcface")
    from videdit.weights import resolve_weights_dir

    weights_dir = resolve_weights_dir(settings.weights_dir)
    path = identity.find_arcface_weights(weights_dir)
    if path is None:
        names = " or ".join(identity.ARCFACE_FILES)
        if settings.identity_model == "arcface":
            raise MissingWeightsError(f"identity model arcface needs {names} in {weights_dir}")
        skipped["arcface"] = f"{names} not found in {weights_dir}; dlib's ResNet used"
        return None
    return identity.ArcFaceEmbedder(path, settings.device)


def _temporal_frame(image: np.ndarray, size: int | None) -> np.ndarray:
    from videdit.evaluate.temporal import resize_to

    return resize_to(image, None if size is None else (size, size))


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _mean_std(values) -> dict:
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "frames": 0}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "frames": int(finite.size)}


def _transforms(path: Path) -> "records.AlignRecord | None":
    """A transforms file of the run (align or smooth) through the records reader; None when that stage has not run."""
    return records.AlignRecord.load(path) if path.is_file() else None


def _transform_stats(run: Path) -> dict:
    """Frame-to-frame jitter of the transforms, as aligned and as smoothed (degrees, crop pixels)."""
    from videdit.evaluate.temporal import local_std

    stats = {}
    folder = records.RunFolder(run)
    raw = _transforms(folder.align / records.TRANSFORMS)
    crop = float(raw.crop_size) if raw is not None and raw.crop_size else None
    for name, data in (("raw", raw), ("smoothed", _transforms(folder.smoothed_transforms))):
        if data is None:
            continue
        translation = data.translation.astype(float) * (crop if crop else 1.0)
        stats[name] = {
            "rotation_jitter_deg": local_std(data.rotation_deg),
            "translation_jitter": float(np.hypot(local_std(translation[:, 0]), local_std(translation[:, 1]))),
            "translation_unit": "pixels" if crop else "crop widths",
        }
    return stats


def _latent_series(run: Path) -> dict[str, np.ndarray]:
    series = {}
    folder = records.RunFolder(run)
    if folder.latents.is_file():
        series["encoded"] = records.load_latents(folder.latents)
    smooth = folder.smoothed_transforms.parent
    if smooth.is_dir():
        for key in sorted(records.latents_keys(smooth), key=lambda k: (not is_reconstruction(k), k)):
            series[f"smoothed {key}"] = records.load_latents(folder.smoothed_latents(key))
    return series


def _latent_stats(run: Path) -> dict:
    """Mean frame-to-frame step of each latent series (L2 over the whole W+ code)."""
    stats = {}
    for name, latents in _latent_series(run).items():
        flat = latents.reshape(len(latents), -1).astype(np.float64)
        steps = np.linalg.norm(np.diff(flat, axis=0), axis=1)
        stats[name] = {"frames": int(len(flat)), "mean_step": float(steps.mean()) if steps.size else 0.0}
    return stats


def latent_pca(series: dict[str, np.ndarray], components: int = 3) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Project every series on the principal components of the first (the encoder's latents)."""
    first = next(iter(series.values()))
    flat = first.reshape(len(first), -1).astype(np.float64)
    mean = flat.mean(0)
    _, singular, vt = np.linalg.svd(flat - mean, full_matrices=False)
    components = max(1, min(components, vt.shape[0]))
    variance = singular**2
    explained = variance[:components] / max(variance.sum(), 1e-12)
    projections = {
        name: (lat.reshape(len(lat), -1).astype(np.float64) - mean) @ vt[:components].T
        for name, lat in series.items()
        if lat.reshape(len(lat), -1).shape[1] == flat.shape[1]
    }
    return projections, explained


def _write_plots(run: Path, metrics: dict, out_dir: Path) -> list[str]:
    from videdit.evaluate import plots

    written = []
    per_frame = {k: v["per_frame"] for k, v in metrics["outputs"].items()}
    path = plots.plot_metrics_over_time(per_frame, metrics["input_temporal"]["warp_error_per_frame"], out_dir / layout.METRICS_PLOT)
    if path:
        written.append(path)
    folder = records.RunFolder(run)
    raw = _transforms(folder.align / records.TRANSFORMS)
    if raw is not None:
        smoothed = _transforms(folder.smoothed_transforms)
        written.append(plots.plot_transforms(raw.arrays(), smoothed.arrays() if smoothed else None, out_dir / layout.TRANSFORMS_PLOT))
    # Encoded and smoothed reconstruction only: an edit is a far-off shifted copy that would squash the scale.
    series = {name: lat for name, lat in _latent_series(run).items()
              if name == "encoded" or is_reconstruction(name.removeprefix("smoothed "))}
    if series and len(next(iter(series.values()))) >= 2:
        projections, explained = latent_pca(series)
        written.append(plots.plot_latent_trajectory(projections, explained, out_dir / layout.LATENT_PLOT))
    return [frames_mod.label_for(p, run) for p in written]


# ---------------------------------------------------------------------------------------------
# metrics.json


def _json_ready(value):
    """NaN / inf become null (JSON has neither); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def metrics_to_json(metrics: dict | list, indent: int | None = 1) -> str:
    """Strict JSON text of one metrics dict (or a list of them): NaN / inf written as null."""
    return json.dumps(_json_ready(metrics), indent=indent, allow_nan=False)


load_metrics = records.load_metrics  # RUN/eval/metrics.json (a run folder or the file) -> dict


# ---------------------------------------------------------------------------------------------
# terminal tables

# (column title, how to get a number from one output's record, format)
_COLUMNS = (
    ("faces", lambda o: (o["faces_found"], len(o["per_frame"]["face_found"])), "{}/{}"),
    ("L2@256", lambda o: o["summary"].get("l2@256", {}).get("mean"), "{:.4f}"),
    ("LPIPS@256", lambda o: o["summary"].get("lpips@256", {}).get("mean"), "{:.4f}"),
    ("MS-SSIM@256", lambda o: o["summary"].get("ms_ssim@256", {}).get("mean"), "{:.4f}"),
    ("PSNR", lambda o: o["summary"].get("psnr@full", {}).get("mean"), "{:.2f}"),
    ("ID sim", lambda o: o["summary"].get("identity_similarity", {}).get("mean"), "{:.3f}"),
    ("ID dist", lambda o: o["summary"].get("identity_distance", {}).get("mean"), "{:.3f}"),
    ("ID std g/l", lambda o: (o["temporal"].get("identity_std_global"), o["temporal"].get("identity_std_local")), "{:.3f}/{:.3f}"),
    ("LM err %", lambda o: o["summary"].get("landmark_error", {}).get("mean"), "{:.2f}"),
    ("warp err", lambda o: o["temporal"].get("warp_error"), "{:.2f}"),
    ("warp x in", lambda o: o["temporal"].get("warp_error_ratio"), "{:.2f}"),
)

_ROWS_FOR_COMPARE = (
    ("faces found in output", lambda o: (o["faces_found"], len(o["per_frame"]["face_found"])), "{}/{}"),
    ("L2@256", lambda o: o["summary"].get("l2@256", {}).get("mean"), "{:.4f}"),
    ("LPIPS@256", lambda o: o["summary"].get("lpips@256", {}).get("mean"), "{:.4f}"),
    ("MS-SSIM@256", lambda o: o["summary"].get("ms_ssim@256", {}).get("mean"), "{:.4f}"),
    ("L2 full", lambda o: o["summary"].get("l2@full", {}).get("mean"), "{:.4f}"),
    ("PSNR full (dB)", lambda o: o["summary"].get("psnr@full", {}).get("mean"), "{:.2f}"),
    ("identity similarity", lambda o: o["summary"].get("identity_similarity", {}).get("mean"), "{:.3f}"),
    ("identity distance (dlib)", lambda o: o["summary"].get("identity_distance", {}).get("mean"), "{:.3f}"),
    ("identity vs reconstruction", lambda o: o["summary"].get("identity_vs_reconstruction", {}).get("mean"), "{:.3f}"),
    ("identity std global", lambda o: o["temporal"].get("identity_std_global"), "{:.4f}"),
    ("identity std local", lambda o: o["temporal"].get("identity_std_local"), "{:.4f}"),
    ("landmark error (%)", lambda o: o["summary"].get("landmark_error", {}).get("mean"), "{:.2f}"),
    ("landmark jitter (px)", lambda o: o["temporal"].get("landmark_offset_jitter"), "{:.2f}"),
    ("warping error", lambda o: o["temporal"].get("warp_error"), "{:.2f}"),
    ("warping error / input", lambda o: o["temporal"].get("warp_error_ratio"), "{:.2f}"),
    ("frame diff / input", lambda o: o["temporal"].get("frame_difference_ratio"), "{:.2f}"),
)


def _cell(getter, fmt: str, record: dict) -> str:
    try:
        value = getter(record)
    except (KeyError, TypeError):
        return "-"
    values = value if isinstance(value, tuple) else (value,)
    if any(v is None or (isinstance(v, float) and not math.isfinite(v)) for v in values):
        return "-"
    return fmt.format(*values)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def format_summary(metrics: dict) -> str:
    """One screen: a row per output (reconstruction, edits), the main numbers in columns."""
    from videdit.evaluate import identity
    records = metrics["outputs"].values()
    # Columns no output has (e.g. the dlib distance under ArcFace) are left out to fit one screen.
    columns = [c for c in _COLUMNS if any(_cell(c[1], c[2], r) != "-" for r in records)]
    header = ["output"] + [title for title, _, _ in columns]
    rows = [[key] + [_cell(get, fmt, record) for _, get, fmt in columns] for key, record in metrics["outputs"].items()]
    lines = [
        f"videdit eval {metrics.get('run', '')}: {metrics['frames']} frames vs {metrics['reference']}"
        f" (identity: {metrics['identity_model']})",
        _table(header, rows),
    ]
    input_warp = _nanmean([v for v in metrics["input_temporal"]["warp_error_per_frame"] if v is not None])
    if math.isfinite(input_warp):
        lines.append(f"input warping error {input_warp:.2f} (8-bit levels); 'warp x in' = output / input, 1 = no added flicker")
    if metrics["identity_model"].startswith("dlib"):
        lines.append(
            f"ID dist: dlib distance, same person below {identity.DLIB_SAME_PERSON_DISTANCE}; "
            "ID sim: cosine (different people score ~0.9 with dlib)"
        )
    if "lpips" in metrics.get("models", {}):
        lines.append(f"lpips: {metrics['models']['lpips']}")
    for name, reason in metrics.get("skipped", {}).items():
        lines.append(f"skipped {name}: {reason}")
    for name, stats in metrics.get("transforms", {}).items():
        lines.append(
            f"transforms {name}: rotation jitter {stats['rotation_jitter_deg']:.3f} deg, "
            f"translation jitter {stats['translation_jitter']:.3f} {stats['translation_unit']}"
        )
    if metrics.get("plots"):
        lines.append("plots: " + ", ".join(metrics["plots"]))
    return "\n".join(lines)


def compare_runs(run_dirs) -> str:
    """Side-by-side table of several evaluated runs (each RUN/eval/metrics.json, or metrics dicts).

    One block per output key the runs share; a run lacking a key shows '-'.
    """
    records = []
    for item in run_dirs:
        metrics = item if isinstance(item, dict) else load_metrics(item)
        name = Path(metrics.get("run") or str(item)).name or str(item)
        records.append((name, metrics))
    if not records:
        raise InputError("no runs to compare")
    # Runs may name the unedited output "recon" (the pipeline) or "reconstruction": one block for both.
    by_key = [{("reconstruction" if is_reconstruction(k) else k): v for k, v in m["outputs"].items()} for _, m in records]
    keys: list[str] = []
    for outputs in by_key:
        keys.extend(k for k in outputs if k not in keys)
    blocks = []
    for key in keys:
        header = [key] + [name for name, _ in records]
        rows = []
        for title, getter, fmt in _ROWS_FOR_COMPARE:
            cells = [_cell(getter, fmt, outputs[key]) if key in outputs else "-" for outputs in by_key]
            if any(c != "-" for c in cells):
                rows.append([title] + cells)
        blocks.append(_table(header, rows))
    frames = ", ".join(f"{name}: {m['frames']} frames" for name, m in records)
    return "\n\n".join([f"videdit eval compare ({frames})", *blocks])
