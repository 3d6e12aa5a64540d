"""Where the frames to compare come from: a run folder's crops, an image folder or a video file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from videdit.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
RECONSTRUCTION_KEY = "reconstruction"
# Render outputs that are not one video of crops.
NOT_AN_OUTPUT = ("side_by_side",)


@dataclass
class FrameSource:
    """A sequence of uint8 RGB frames: image files in order, or a decoded video."""

    label: str  # what to call it in reports (a path relative to the run where possible)
    images: list[Path] | None = None
    video: Path | None = None

    @property
    def count(self) -> int | None:
        return len(self.images) if self.images is not None else None

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.images is not None:
            for path in self.images:
                yield read_image(path)
        else:
            yield from decode_video(self.video)


def read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read image {path}: {err}") from err


def decode_video(path: Path) -> Iterator[np.ndarray]:
    """RGB frames of the first video stream, upright (rotation metadata applied, as the pipeline reads)."""
    from videdit.io.video import VideoReader

    for frame in VideoReader(path):
        yield frame.image


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def label_for(path: Path, run: Path) -> str:
    try:
        return str(path.relative_to(run))
    except ValueError:
        return str(path)


def reference_source(run: Path, against: Path | None) -> FrameSource:
    """The frames outputs are compared with: the run's unaligned input crops unless `against` is given.

    `against` may be another run folder (its input crops), a folder of images, or a video file (then
    the comparison is full-frame, against the run's final videos).
    """
    if against is None:
        folder = run / "align" / "unaligned"
        if not folder.is_dir() or not image_files(folder):
            raise InputError(f"{folder} has no input crops; run the align stage first or pass --against")
        return FrameSource(label_for(folder, run), images=image_files(folder))
    against = Path(against)
    if not against.exists():
        raise InputError(f"{against} does not exist")
    if against.is_dir():
        crops = against / "align" / "unaligned"
        folder = crops if crops.is_dir() else against
        files = image_files(folder)
        if not files:
            raise InputError(f"{folder} holds no images to compare against")
        return FrameSource(str(folder), images=files)
    if against.suffix.lower() in VIDEO_SUFFIXES:
        return FrameSource(str(against), video=against)
    raise InputError(f"{against} is neither a folder of frames, a run folder nor a video file")


def crop_outputs(run: Path) -> dict[str, FrameSource]:
    """Rendered crops per key: RUN/render/<key>/*.png, else RUN/render/<key>.mp4. Reconstruction first."""
    render = run / "render"
    outputs: dict[str, FrameSource] = {}
    if render.is_dir():
        for entry in sorted(render.iterdir()):
            if entry.is_dir() and entry.name not in NOT_AN_OUTPUT and image_files(entry):
                outputs[entry.name] = FrameSource(label_for(entry, run), images=image_files(entry))
        for entry in sorted(render.glob("*.mp4")):
            if entry.stem not in outputs and entry.stem not in NOT_AN_OUTPUT:
                outputs[entry.stem] = FrameSource(label_for(entry, run), video=entry)
    if not outputs:
        raise InputError(f"{render} has no rendered crops; run the render stage first")
    return _reconstruction_first(outputs)


def full_frame_outputs(run: Path, source_video: Path) -> dict[str, FrameSource]:
    """The final full-frame videos at the top of the run (<name>.<key>.mp4), keyed by <key>."""
    outputs: dict[str, FrameSource] = {}
    prefix = source_video.stem + "."
    for path in sorted(run.glob("*.mp4")):
        key = path.stem[len(prefix):] if path.stem.startswith(prefix) else path.stem
        outputs[key] = FrameSource(label_for(path, run), video=path)
    if not outputs:
        raise InputError(f"{run} has no final videos (*.mp4) to compare with {source_video.name}")
    return _reconstruction_first(outputs)


def _reconstruction_first(outputs: dict[str, FrameSource]) -> dict[str, FrameSource]:
    order = sorted(outputs, key=lambda k: (k != RECONSTRUCTION_KEY, k))
    return {k: outputs[k] for k in order}
