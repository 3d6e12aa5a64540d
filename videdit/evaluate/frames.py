"""Where the frames to compare come from: a run folder's crops, an image folder or a video file."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from videdit import records
from videdit.errors import InputError
from videdit.io.images import list_images, read_image
from videdit.io.probe import is_video_name

# The unedited output: the pipeline's latents key is "recon" (render/recon/, render/reconstruction.mp4).
RECONSTRUCTION_KEYS = ("recon", "reconstruction")
# Render outputs that are not one video of crops.
NOT_AN_OUTPUT = ("side_by_side",)


def is_reconstruction(key: str) -> bool:
    return key in RECONSTRUCTION_KEYS


@dataclass
class FrameSource:
    """A sequence of uint8 RGB frames: image files in order, or a decoded video."""

    label: str  # what to call it in reports (a path relative to the run where possible)
    images: list[Path] | None = None
    video: Path | None = None
    crop: tuple[int, int, int, int] | None = None  # (left, top, right, bottom) kept of each frame

    def _cropped(self, image: np.ndarray) -> np.ndarray:
        if self.crop is None:
            return image
        left, top, right, bottom = self.crop
        return image[top:bottom, left:right]

    @property
    def count(self) -> int | None:
        return len(self.images) if self.images is not None else None

    def __iter__(self) -> Iterator[np.ndarray]:
        frames = (read_image(p) for p in self.images) if self.images is not None else decode_video(self.video)
        for image in frames:
            yield self._cropped(image)


def decode_video(path: Path) -> Iterator[np.ndarray]:
    """RGB frames of the first video stream, upright (rotation metadata applied, as the pipeline reads)."""
    from videdit.io.reader import VideoReader

    for frame in VideoReader(path):
        yield frame.image


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
        folder = records.RunFolder(run).unaligned_frames
        if not folder.is_dir() or not list_images(folder):
            raise InputError(f"{folder} has no input crops; run the align stage first or pass --against")
        return FrameSource(label_for(folder, run), images=list_images(folder))
    against = Path(against)
    if not against.exists():
        raise InputError(f"{against} does not exist")
    if against.is_dir():
        crops = records.RunFolder(against).unaligned_frames
        folder = crops if crops.is_dir() else against
        files = list_images(folder)
        if not files:
            raise InputError(f"{folder} holds no images to compare against")
        return FrameSource(str(folder), images=files)
    if is_video_name(against):
        return FrameSource(str(against), video=against)
    raise InputError(f"{against} is neither a folder of frames, a run folder nor a video file")


def render_crop_box(render: Path) -> tuple[int, int, int, int] | None:
    """The unexpanded view inside renders with an extended field of view (render.json's expand).

    The render stage puts the frame's own res x res view at (left, top) of a larger canvas; only that
    part corresponds to the input crop.
    """
    meta_path = render / records.RENDER_INFO
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        left, _right, top, _bottom = (int(v) for v in meta.get("expand", (0, 0, 0, 0)))
        res = int(meta["resolution"])
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{meta_path} is not a render description: {err}") from err
    if not (left or _right or top or _bottom):
        return None
    return (left, top, left + res, top + res)


def crop_outputs(run: Path) -> dict[str, FrameSource]:
    """Rendered crops per key: RUN/render/<key>/*.png (lossless), else RUN/render/<key>.mp4. Reconstruction first."""
    render = run / "render"
    outputs: dict[str, FrameSource] = {}
    if render.is_dir():
        crop = render_crop_box(render)
        for entry in sorted(render.iterdir()):
            if entry.is_dir() and entry.name not in NOT_AN_OUTPUT and list_images(entry):
                outputs[entry.name] = FrameSource(label_for(entry, run), images=list_images(entry), crop=crop)
        if not outputs:  # no frame folders: fall back to the (lossy) crop videos
            for entry in sorted(render.glob("*.mp4")):
                if entry.stem not in NOT_AN_OUTPUT:
                    outputs[entry.stem] = FrameSource(label_for(entry, run), video=entry, crop=crop)
    if not outputs:
        raise InputError(f"{render} has no rendered crops; run the render stage first")
    return _reconstruction_first(outputs)


def full_frame_outputs(run: Path, source_video: Path) -> dict[str, FrameSource]:
    """The final full-frame videos: RUN/<name>.<key>.mp4 keyed by <key>, else RUN/composite/<key>.mp4."""
    outputs: dict[str, FrameSource] = {}
    prefix = source_video.stem + "."
    for path in sorted(run.glob("*.mp4")):
        key = path.stem[len(prefix):] if path.stem.startswith(prefix) else path.stem
        outputs[key] = FrameSource(label_for(path, run), video=path)
    if not outputs:
        for path in sorted((run / "composite").glob("*.mp4")):
            if path.stem != "masks":  # the composite stage's blend masks, not an output
                outputs[path.stem] = FrameSource(label_for(path, run), video=path)
    if not outputs:
        raise InputError(f"{run} has no final videos (*.mp4) to compare with {source_video.name}")
    return _reconstruction_first(outputs)


def _reconstruction_first(outputs: dict[str, FrameSource]) -> dict[str, FrameSource]:
    order = sorted(outputs, key=lambda k: (not is_reconstruction(k), k))
    return {k: outputs[k] for k in order}
