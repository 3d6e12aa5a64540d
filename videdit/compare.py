"""RUN/<name>.compare.mp4: the input and each edit side by side (one edit: split-screen, the input's left half
beside the edit's right half), each labelled, scaled to at most MAX_WIDTH pixels wide, with the source's frame
times and audio. For looking, not grading: H.264 4:2:0 8-bit, which every browser plays. Written after the
final videos, from them, so it shows exactly what was published; rewritten only when one of them is newer."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from videdit.io.probe import probe_video

MAX_WIDTH = 1920
CRF = 20


def _even(n: float) -> int:
    return max(2, int(round(n / 2)) * 2)


def panel_layout(size: tuple[int, int], n_panels: int, split: bool) -> tuple[int, int]:
    """(width, height) of each panel's picture: the source scaled (never up) so all panels fit MAX_WIDTH, even."""
    width, height = size
    total = width if split else width * n_panels
    scale = min(1.0, MAX_WIDTH / total)
    panel_w = _even(width * scale)
    while (panel_w if split else panel_w * n_panels) > MAX_WIDTH:
        panel_w -= 2
    return panel_w, _even(height * panel_w / width)


def is_current(path: Path, inputs: list[Path]) -> bool:
    """Whether `path` exists and is no older than any of `inputs` (then it was made from them)."""
    return path.is_file() and all(path.stat().st_mtime_ns >= p.stat().st_mtime_ns for p in inputs)


def write_compare(source: Path, outputs: dict[str, Path], path: Path) -> Path:
    """Write the comparison of `source` with `outputs` (label -> full-frame video of the source's size and frame
    count) to `path`, atomically."""
    from PIL import Image

    from videdit.fileio import atomic_path
    from videdit.io.reader import VideoReader
    from videdit.io.writer import VideoWriter
    from videdit.picture import label_strip

    info = probe_video(source)
    labels = list(outputs)
    split = len(labels) == 1
    panel_w, panel_h = panel_layout(info.size, 1 if split else 1 + len(labels), split)
    strip_h = label_strip("", 8).shape[0]
    if split:
        titles = [f"input | {labels[0]}"]
    else:
        titles = ["input"] + labels
    width = panel_w * len(titles)
    height = _even(panel_h + strip_h)
    header = np.concatenate([label_strip(t, panel_w) for t in titles], axis=1)
    audio = None if info.is_image_folder or info.audio is None else source
    readers = [iter(VideoReader(source))] + [iter(VideoReader(outputs[k])) for k in labels]

    def scaled(image: np.ndarray) -> np.ndarray:
        if image.shape[1] == panel_w and image.shape[0] == panel_h:
            return image
        return np.asarray(Image.fromarray(image).resize((panel_w, panel_h), Image.Resampling.BILINEAR))

    with atomic_path(path, fsync=False) as tmp:
        with VideoWriter(tmp, info.fps, (width, height), audio_from=audio, time_base=info.time_base, codec="h264",
                         crf=CRF, pix_fmt="yuv420p") as writer:
            for frames in zip(*readers):
                source_frame = frames[0]
                pictures = [scaled(f.image) for f in frames]
                if split:  # the input's left half, the edit's right half, a thin line between
                    half = panel_w // 2
                    body = np.concatenate([pictures[0][:, :half], pictures[1][:, half:]], axis=1)
                    body[:, half - 1:half + 1] = 255
                else:
                    body = np.concatenate(pictures, axis=1)
                frame = np.zeros((height, width, 3), np.uint8)
                frame[:strip_h] = header
                frame[strip_h:strip_h + panel_h] = body
                writer.write(frame, pts=source_frame.pts)
    return path


def write_run_compare(source: Path, published: dict[str, Path], path: Path, reconstruction_key: str) -> Path | None:
    """The run's comparison: the input beside its edits (beside the reconstruction when there is no edit), unless
    the file is already newer than every video it shows. None when there is nothing to show."""
    edits = {k: p for k, p in published.items() if k != reconstruction_key and p.is_file()}
    shown = edits or {k: p for k, p in published.items() if p.is_file()}
    if not shown:
        return None
    if is_current(path, [Path(source), *shown.values()]):
        return path
    return write_compare(Path(source), shown, path)
