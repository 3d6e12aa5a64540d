"""Where the frames to compare come from: a run folder's crops, an image folder or a video file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from videdit import layout, records
from videdit.errors import InputError
from videdit.io.images import list_images, read_image
from videdit.io.probe import is_video_name

# The unedited output: the pipeline's latents key (render/recon/) and its crop video's stem (reconstruction.mp4).
RECONSTRUCTION_KEYS = (layout.RECONSTRUCTION_KEY, Path(layout.RECONSTRUCTION_VIDEO).stem)
# Render outputs that are not one video of crops.
NOT_AN_OUTPUT = (Path(layout.SIDE_BY_SIDE_VIDEO).stem,)


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
    info = records.RenderInfo.load(render)
    if info is None or not any(info.expand):
        return None
    left, _right, top, _bottom = info.expand
    return (left, top, left + info.resolution, top + info.resolution)


def crop_outputs(run: Path) -> dict[str, FrameSource]:
    """Rendered crops per key: RUN/render/<key>/*.png (lossless), else RUN/render/<key>.mp4. Reconstruction first."""
    render = records.RunFolder(run).render
    outputs: dict[str, FrameSource] = {}
    if render.is_dir():
        crop = render_crop_box(render)
        for entry in sorted(render.iterdir()):
            if entry.is_dir() and entry.name not in NOT_AN_OUTPUT and list_images(entry):
                outputs[entry.name] = FrameSource(label_for(entry, run), images=list_images(entry), crop=crop)
        if not outputs:  # no frame folders: fall back to the (lossy) crop videos
            for entry in sorted(render.iterdir()):
                key = layout.video_stem(entry.name)
                if key is not None and key not in NOT_AN_OUTPUT and entry.is_file():
                    outputs[key] = FrameSource(label_for(entry, run), video=entry, crop=crop)
    if not outputs:
        raise InputError(f"{render} has no rendered crops; run the render stage first")
    return _reconstruction_first(outputs)


def full_frame_outputs(run: Path, source_video: Path) -> dict[str, FrameSource]:
    """The final full-frame videos: RUN/<name>.<key>.mp4 keyed by <key>, else RUN/composite/<key>.mp4."""
    outputs: dict[str, FrameSource] = {}
    for path in sorted(run.iterdir()):
        if layout.is_compare_name(path.name):  # the side-by-side view of the outputs, not one of them
            continue
        key = layout.published_key(path.name, source_video.stem) or layout.video_stem(path.name)
        if key is not None and path.is_file():
            outputs[key] = FrameSource(label_for(path, run), video=path)
    composite = records.RunFolder(run).stage("composite")
    if not outputs and composite.is_dir():
        for path in sorted(composite.iterdir()):
            key = layout.composite_key(path.name)  # None for the blend masks: not an output
            if key is not None and path.is_file():
                outputs[key] = FrameSource(label_for(path, run), video=path)
    if not outputs:
        raise InputError(f"{run} has no final videos to compare with {source_video.name}")
    return _reconstruction_first(outputs)


def _reconstruction_first(outputs: dict[str, FrameSource]) -> dict[str, FrameSource]:
    order = sorted(outputs, key=lambda k: (not is_reconstruction(k), k))
    return {k: outputs[k] for k in order}
