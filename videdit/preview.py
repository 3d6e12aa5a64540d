"""`videdit preview`: see an edit on a few key frames before spending a whole run on it.

The key frames (auto: the middle frame of each shot, at most MAX_AUTO_FRAMES, evenly spread over the shots) are
written as an image folder, RUN/preview/keyframes/, and that folder goes through the pipeline's own stages as a
small run of its own, RUN/preview/run/: align (each key frame aligned alone: the shot detector sees the cuts
between them), encode, tune (none: the untuned generator; or a quick PTI on the key frames with tune_steps),
edit, smooth (off: key frames are not neighbours), render and composite (the full frame, by composite's own
paste). So the code is the run's, not a copy, and the stage cache is the run's: a second preview with another
strength finds align, encode and tune cached and renders only.

What is shared with the run folder: the lock (a preview and a run do not write RUN at once), RUN/.digests.json
(the video is hashed once for both), and with --faces RUN/tracks.json (the shots, found once for the preview
and the run). The key frames' own stages are not reused by the full run: its crops are cut with each shot's
first box and its latents are smoothed over neighbours, so its numbers differ.

Writes RUN/preview/sheet.png (one column per key frame: the input on top, then the reconstruction and one row
per edit and strength) and RUN/preview/index.html.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videdit import layout, records
from videdit.errors import InputError, VideditError
from videdit.records_view import KeyFrames, ViewFolder

MAX_AUTO_FRAMES = 6
CELL_PX = 360  # the longest side of a contact-sheet cell
NO_FINE_LAYER = 32  # smooth.fine_layers_from at its bound, past every generator's last W+ entry (16 or 18): no layer averaged


@dataclass
class PreviewResult:
    """What a preview made and what it cost. rows: (key, strength) of every rendered row after the input, the
    reconstruction first. stages: the key frames' run, stage -> ran | cached (encode "cached": no encoder ran)."""

    video: Path
    run_dir: Path
    sheet: Path
    page: Path
    frames: list[int]
    shots: list[tuple[int, int]]
    rows: list[tuple[str, float]]
    stages: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    n_video_frames: int = 0
    full_run_seconds: float | None = None  # the full run's up-front estimate on this device (None: not made)

    @property
    def encoded(self) -> bool:
        """Whether this preview ran the encoder (False: the key frames' latents came from the cache)."""
        return self.stages.get("encode") == "ran"

    def describe(self) -> str:
        """One line: the key frames, what ran, the cost beside the full run's estimate."""
        from videdit.progress import format_duration

        ran = [k for k, v in self.stages.items() if v == "ran"]
        text = (f"preview: {len(self.frames)} key frames ({', '.join(map(str, self.frames))}) of {self.n_video_frames}, "
                f"{len(self.rows) - 1} edit rows; ran {', '.join(ran) or 'nothing (all cached)'}; "
                f"took {format_duration(self.seconds)}")
        if self.full_run_seconds:
            text += (f"; the full run's estimate ~{format_duration(self.full_run_seconds)} "
                     f"(preview = 1/{max(1, round(self.full_run_seconds / max(self.seconds, 1e-9)))})")
        return text

    def to_json(self) -> dict[str, Any]:
        return {"video": str(self.video), "run_dir": str(self.run_dir), "sheet": str(self.sheet), "page": str(self.page),
                "frames": self.frames, "shots": [list(s) for s in self.shots], "rows": [list(r) for r in self.rows],
                "stages": self.stages, "seconds": round(self.seconds, 3), "n_video_frames": self.n_video_frames,
                "full_run_seconds": self.full_run_seconds, "encoded": self.encoded}


def pick_key_frames(shots: list[tuple[int, int]], limit: int = MAX_AUTO_FRAMES) -> list[int]:
    """The middle frame of each shot; with more shots than `limit`, of `limit` shots spread evenly over them."""
    if not shots:
        return []
    chosen = shots if len(shots) <= limit else [shots[int(i)] for i in np.linspace(0, len(shots) - 1, limit).round()]
    return [(start + end - 1) // 2 for start, end in chosen]


def parse_frames(text: str | None) -> list[int] | None:
    """`auto` (None) or comma-separated frame numbers; one line for anything else."""
    if text is None or str(text).strip().lower() == "auto":
        return None
    try:
        frames = sorted({int(part) for part in str(text).split(",") if part.strip()})
    except ValueError:
        raise InputError(f"--frames expects auto or comma-separated frame numbers, got {text!r}") from None
    if not frames:
        raise InputError("--frames names no frame")
    return frames


def preview_overrides(tune_steps: int = 0) -> dict[str, Any]:
    """The settings the key frames' run changes: no tuning (or a quick PTI), no smoothing across key frames (they
    are not neighbours), no side outputs, a near-lossless full-frame video to read the frames back from."""
    if tune_steps < 0:
        raise InputError(f"--tune-steps must be 0 or more, got {tune_steps}")
    return {"tune.tuner": "pti" if tune_steps else "none", "tune.steps": tune_steps or None,
            "smooth.window": 1, "smooth.fine_layers_from": NO_FINE_LAYER, "stitch.enabled": False,
            "align.preview": False, "encode.save_preview": False, "render.side_by_side": False,
            "composite.codec": "h264", "composite.crf": 0, "composite.pix_fmt": "yuv444p", "composite.seam_every": 0,
            "composite.save_masks": False, "faces.min_track_frames": 1}


def _shots(pipe, video: Path, run_dir: Path) -> list[tuple[int, int]]:
    if pipe.sections["faces"].select:  # the run's own tracks.json: found once for the preview and the run
        return [(s.start, s.end) for s in pipe.face_tracks(video, run_dir).shots]
    from videdit.face.shots import detect_shots

    return [(s.start, s.end) for s in detect_shots(video)]


def key_frames(pipe, video: Path, run_dir: Path, frames: list[int] | None) -> KeyFrames:
    """The key frames' record, from RUN/preview/keyframes.json while the video and the request are the same, else
    found (one decoding pass for the shots) and their PNGs written to RUN/preview/keyframes/."""
    from videdit.runner import DigestCache

    view = ViewFolder(run_dir)
    request = "auto" if frames is None else ",".join(map(str, frames))
    digest = DigestCache(run_dir / layout.DIGESTS).file_digest(video)
    known = KeyFrames.load(view.preview)
    if (known is not None and known.video_sha256 == digest and known.request == request
            and all((view.keyframes / layout.frame_name(i)).is_file() for i in range(len(known.frames)))):
        return known
    shots = _shots(pipe, video, run_dir)
    n_frames = shots[-1][1] if shots else 0
    if frames is None:
        frames = pick_key_frames(shots)
    bad = [i for i in frames if not 0 <= i < n_frames]
    if bad:
        raise InputError(f"--frames {bad[0]}: {video.name} has frames 0..{n_frames - 1}")
    from videdit.fileio import atomic_write_bytes
    from videdit.io.png import encode_png
    from videdit.io.reader import VideoReader

    view.keyframes.mkdir(parents=True, exist_ok=True)
    times = []
    for number, frame in enumerate(VideoReader(video).frames(frames)):
        path = view.keyframes / layout.frame_name(number)
        data = encode_png(frame.image)
        if not path.is_file() or path.read_bytes() != data:  # unchanged files keep their time: cached digests
            atomic_write_bytes(path, data)
        times.append(round(float(frame.time_s), 6))
    if len(times) != len(frames):
        raise InputError(f"{video}: read {len(times)} of the {len(frames)} key frames; the file may be truncated")
    for stale in sorted(view.keyframes.glob("*.png"))[len(frames):]:
        stale.unlink()
    record = KeyFrames(digest, request, n_frames, [list(s) for s in shots], list(frames), times)
    record.save(view.preview)
    return record


def _composited_frames(run_dir: Path, key: str) -> list[np.ndarray]:
    from videdit.io.reader import VideoReader

    return [frame.image for frame in VideoReader(records.RunFolder(run_dir).composite_video(key))]


def run_preview(pipe, video: str | Path, out: str | Path | None = None, *, frames: str | list[int] | None = None,
                tune_steps: int = 0, estimate: bool = True) -> PreviewResult:
    """The preview of `pipe`'s edits on the key frames of `video`, in the run folder `out` (default: the run's).

    frames: None / "auto" (the middle frame of each shot) or frame numbers. tune_steps: 0 renders with the untuned
    generator, N > 0 tunes it on the key frames for N PTI steps first. estimate: also make the full run's up-front
    estimate (one probe pass per network) to print beside the preview's cost. Raises VideditError (one line).
    """
    from videdit.io.png import encode_png
    from videdit.fileio import atomic_write_bytes
    from videdit.io.probe import probe_video
    from videdit.report_html import write_preview_page
    from videdit.runfolder import RunLock, prepare_run_dir

    t0 = time.perf_counter()
    video = Path(video)
    frames = parse_frames(frames if frames is None or isinstance(frames, str) else ",".join(map(str, frames)))
    probe_video(video)  # a bad file is one line before any work
    run_dir = Path(out) if out is not None else pipe.default_run_dir(video)
    view = ViewFolder(prepare_run_dir(run_dir))
    sub = pipe.derive(preview_overrides(tune_steps), quiet=True, estimate_time=False, views=False)
    with RunLock(run_dir, wait=pipe.wait):
        keys = key_frames(pipe, video, run_dir, frames)
        pipe.say(f"preview: key frames {', '.join(map(str, keys.frames))} of {keys.n_frames} ({len(keys.shots)} shots)")
        result = sub.run(view.keyframes, view.preview_run)
        if result.status != "ok":
            raise VideditError(f"preview: {result.error}")
        rows = sub.edit_keys()
        from videdit.io.images import list_images, read_image

        inputs = [read_image(p) for p in list_images(view.keyframes)]
        rendered = {key: _composited_frames(view.preview_run, key) for key, _ in rows}
        cells = [[_cell(image) for image in inputs]] + [[_cell(image) for image in rendered[key]] for key, _ in rows]
        from videdit.picture import sheet

        columns = [f"frame {i} · {t:.2f} s · shot {_shot_of(keys.shots, i) + 1}" for i, t in zip(keys.frames, keys.time_s)]
        row_labels = ["input"] + [_row_label(key, strength) for key, strength in rows]
        atomic_write_bytes(view.sheet, encode_png(sheet(cells, columns, row_labels)))
        full = None
        if estimate:
            full = sum(pipe.estimate(keys.n_frames, list(pipe.active_stages()), video).seconds.values())
        preview = PreviewResult(video, run_dir, view.sheet, view.preview_page, list(keys.frames),
                                [tuple(s) for s in keys.shots], rows, dict(result.stages), time.perf_counter() - t0,
                                keys.n_frames, full)
        write_preview_page(preview, pipe.resolved_settings())
    preview.seconds = time.perf_counter() - t0
    return preview


def _cell(image: np.ndarray) -> np.ndarray:
    from videdit.picture import fit

    return fit(image, CELL_PX, CELL_PX)


def _shot_of(shots: list[list[int]], frame: int) -> int:
    return next((n for n, (start, end) in enumerate(shots) if start <= frame < end), 0)


def _row_label(key: str, strength: float) -> str:
    if key == layout.RECONSTRUCTION_KEY:
        return "reconstruction"
    return key if key.endswith(f"{strength:+g}") else f"{key} {strength:+g}"
