"""Composite (stage `composite`): the rendered face crops back in the whole source frames.

For every frame with a face, the render of each key (RUN/render/<key>/%06d.png, expanded or not) is
warped back through the inverse of the frame's fixed unaligned box (align/transforms.npz `box_quads`) and blended
into the source frame with a soft mask (`videdit.face.paste`): the landmark face region or the whole
box, feathered; optionally the render's low frequencies are matched to the frame's around the mask
border. Frames without a face are copied unchanged. Frames are read, composited, encoded and dropped one
at a time, so memory does not depend on the video's length.

Outputs in out_dir: `<key>.mp4` (`<key>.mkv` for the lossless codec ffv1; source size, fps, timestamps and audio), `masks.mp4` when asked
(the blend mask as grey levels), and `composite.json` (counts, settings and the measured seam factor:
gradient energy across the mask border in the composite over the same in the source, on sampled
frames; 1 means no visible seam added).
"""
from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np

from videdit import progress, records
from videdit.errors import InputError
from videdit.layout import RENDER_INFO, composite_video_name, frame_name, masks_video_name, output_suffix

log = logging.getLogger("videdit")


@dataclass
class CompositeSettings:
    """mask: "landmarks" (face region from the frame's landmarks) or "box" (the whole render).
    feather_px: width of the soft mask edge in frame pixels (None: 6 % of the box side).
    grow_forehead: how far the brows are copied upward, in brow-to-chin distances.
    mask_smoothing: the landmarks that shape the mask are averaged over this many frames (centred,
    frames with a face only; 1 = off), so detector jitter does not make the seam flicker.
    color_match: match the render's low frequencies to the frame's around the mask border.
    save_masks: also write masks.mp4.
    codec / crf / preset / pix_fmt: the outputs' encoder ("auto": match the source: its codec family, bit
    depth, chroma, range and colour tags; see videdit.io.EncoderSettings). Frames are read at the source's
    depth (uint16 for 10-bit), so pixels outside every mask are copied exactly.
    seam_every: measure the seam factor on every n-th composited frame (0 = never).
    """

    mask: str = "landmarks"
    feather_px: float | None = None
    grow_forehead: float = 0.5
    mask_smoothing: int = 3
    color_match: bool = True
    save_masks: bool = False
    codec: str = "auto"
    crf: int | str = "auto"
    preset: str = "auto"
    pix_fmt: str = "auto"
    seam_every: int = 5

    def __post_init__(self):
        if self.mask not in ("landmarks", "box"):
            raise InputError(f"composite: mask must be 'landmarks' or 'box', got {self.mask!r}")
        if int(self.mask_smoothing) < 1:
            raise InputError(f"composite: mask_smoothing must be >= 1 frame, got {self.mask_smoothing}")
        if self.feather_px is not None and float(self.feather_px) < 0:
            raise InputError(f"composite: feather_px must be >= 0, got {self.feather_px}")


@dataclass
class CompositeResult:
    videos: dict[str, Path] = field(default_factory=dict)  # key -> full-frame video
    masks_video: Path | None = None
    stats: Path | None = None
    n_frames: int = 0
    n_composited: int = 0  # frames with a face (the others are copied)
    size: tuple[int, int] = (0, 0)  # (width, height) of the source and of the outputs
    seam_factor: dict[str, float] = field(default_factory=dict)  # key -> factor over sampled frames


def read_render_layout(render_dir: Path) -> records.RenderInfo:
    """Resolution, expansion and keys of the renders (render.json); without it, square unexpanded PNGs."""
    info = records.RenderInfo.load(render_dir)
    if info is not None:
        return info
    keys = sorted(p.name for p in render_dir.iterdir() if p.is_dir() and (p / frame_name(0)).is_file())
    if not keys:
        raise InputError(f"composite: no rendered frames in {render_dir}")
    width, height = _png_size(render_dir / keys[0] / frame_name(0))
    if width != height:
        raise InputError(f"composite: {render_dir} has {width}x{height} renders but no {RENDER_INFO} saying how "
                         "they were expanded")
    return records.RenderInfo(resolution=width, keys=keys)


def smooth_landmarks(landmarks: np.ndarray, found: np.ndarray, window: int,
                     segments: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
    """Centred moving average of landmarks [N, 68, 2] over `window` frames, using frames with a face only.

    The window shrinks symmetrically at the ends of each run of found frames and at segment (shot)
    boundaries, so the first and last frames stay anchored and no window crosses a cut; frames without
    a face keep their values.
    """
    from videdit.temporal import check_segments

    landmarks = np.asarray(landmarks, np.float64)
    out = landmarks.copy()
    half = max(int(window), 1) // 2
    if half == 0:
        return out
    found = np.asarray(found, bool)
    n = len(found)
    segment_of = np.empty(n, np.int64)
    for number, (start, end) in enumerate(check_segments(segments, n)):
        segment_of[start:end] = number
    for i in np.flatnonzero(found):
        reach = 0
        while (reach < half and i - reach - 1 >= 0 and i + reach + 1 < n and found[i - reach - 1] and found[i + reach + 1]
               and segment_of[i - reach - 1] == segment_of[i] == segment_of[i + reach + 1]):
            reach += 1
        out[i] = landmarks[i - reach:i + reach + 1].mean(axis=0)
    return out


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise InputError(f"composite: rendered frame {path} is missing; run the render stage again")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@dataclass
class _SeamTally:
    """Sums of seam energies over the sampled frames of one key."""

    composite: float = 0.0
    source: float = 0.0
    frames: int = 0

    def factor(self) -> float:
        if self.frames == 0:
            return float("nan")
        return self.composite / self.source if self.source > 0 else float("inf")


def _at_source_depth(frame: np.ndarray, composited: np.ndarray, blend_mask) -> np.ndarray:
    """A deep (uint16) frame with the 8-bit composite put in where the mask touches; every other pixel is
    the source's own value."""
    if blend_mask is None:
        return frame
    out = frame.copy()
    roi = blend_mask.roi
    touched = blend_mask.alpha > 0
    region = out[roi.slices]
    region[touched] = composited[roi.slices][touched].astype(np.uint16) * 257
    return out


@dataclass
class FaceLayer:
    """One face track to paste: its align and render folders, from source frame `start` on (its frame 0)."""

    align_dir: Path
    render_dir: Path
    start: int = 0
    segments: Sequence[tuple[int, int]] | None = None  # shots, in the track's own frame numbers


@dataclass
class _Layer:
    """A FaceLayer read in: geometry per frame and the render layout."""

    render_dir: Path
    start: int
    boxes: np.ndarray  # [n, 4, 2]: each frame's unaligned box (one per shot)
    face_found: np.ndarray
    landmarks: np.ndarray
    layout: records.RenderInfo

    @property
    def n_frames(self) -> int:
        return len(self.face_found)

    @property
    def face_size(self) -> float:
        """Mean eye-to-mouth scale of the face: smaller faces (farther away) are pasted first."""
        found = self.landmarks[self.face_found]
        return float(np.mean(np.ptp(found, axis=1).max(axis=1))) if len(found) else 0.0


def _load_layer(layer: FaceLayer, settings: CompositeSettings) -> _Layer:
    align = records.AlignRecord.load(layer.align_dir).require("landmarks")
    landmarks = np.asarray(align.landmarks, np.float64)
    if settings.mask == "landmarks":
        landmarks = smooth_landmarks(landmarks, align.face_found, settings.mask_smoothing, layer.segments)
    return _Layer(Path(layer.render_dir), int(layer.start), align.frame_boxes(), align.face_found,
                  landmarks, read_render_layout(Path(layer.render_dir)))


def run_composite(
    source_video: str | PathLike,
    align_dir: str | PathLike,
    render_dir: str | PathLike,
    keys: Sequence[str] | None,
    out_dir: str | PathLike,
    settings: CompositeSettings | None = None,
    *,
    segments: Sequence[tuple[int, int]] | None = None,
) -> CompositeResult:
    """Composite render_dir/<key>/%06d.png into the frames of source_video for each key (None = all).

    Writes out_dir/<key>.mp4 at the source's size, fps, timestamps and audio (and masks.mp4, .mkv for ffv1, with
    settings.save_masks). Frames where align found no face are copied unchanged. `segments` (shots)
    bound the mask landmarks' smoothing.
    """
    return run_composite_layers(source_video, [FaceLayer(Path(align_dir), Path(render_dir), 0, segments)], keys,
                                out_dir, settings, whole_video=True)


def run_composite_layers(
    source_video: str | PathLike,
    layers: Sequence[FaceLayer],
    keys: Sequence[str] | None,
    out_dir: str | PathLike,
    settings: CompositeSettings | None = None,
    *,
    whole_video: bool = False,
) -> CompositeResult:
    """Every face track's renders pasted into the source frames, for each key: smaller faces first, so a
    nearer face overlapping a farther one stays on top. Frames no track covers are copied unchanged.

    whole_video: the (single) layer covers every frame of the video, which is checked.
    """
    from videdit.face import paste as C
    from videdit.io.reader import VideoReader
    from videdit.io.writer import VideoWriter

    settings = settings or CompositeSettings()
    source_video, out_dir = Path(source_video), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = sorted((_load_layer(layer, settings) for layer in layers), key=lambda l: l.face_size)
    if not loaded:
        raise InputError("composite: no face track to paste")
    keys = list(keys) if keys is not None else list(loaded[0].layout.keys)
    if not keys:
        raise InputError(f"composite: no keys to composite in {loaded[0].render_dir}")
    for layer in loaded:
        for key in keys:
            if not (layer.render_dir / key).is_dir():
                raise InputError(f"composite: no rendered frames for {key!r} in {layer.render_dir}")

    from videdit.io.color import to_uint8
    from videdit.io.encoding import EncoderSettings

    reader = VideoReader(source_video, rgb="source")
    info = reader.info
    n_frames = loaded[0].n_frames if whole_video else info.n_frames
    deep = reader.dtype == np.uint16  # 10/12-bit source: composite at 8 bits, keep the source's bits elsewhere
    encoder = EncoderSettings(codec=settings.codec, crf=settings.crf, preset=settings.preset, pix_fmt=settings.pix_fmt)
    size = info.size
    audio = None if info.is_image_folder or info.audio is None else source_video
    result = CompositeResult(n_frames=n_frames, size=size)
    tallies = {key: _SeamTally() for key in keys}

    def writer(path: Path) -> VideoWriter:
        return VideoWriter(path, info.fps, size, audio_from=audio, time_base=info.time_base, settings=encoder,
                           source=info)

    with ExitStack() as stack:
        writers = {}
        for key in keys:
            result.videos[key] = out_dir / composite_video_name(key, output_suffix(settings.codec))
            writers[key] = stack.enter_context(writer(result.videos[key]))
        mask_writer = None
        if settings.save_masks:
            result.masks_video = out_dir / masks_video_name(output_suffix(settings.codec))
            mask_writer = stack.enter_context(writer(result.masks_video))

        index = -1
        for frame in progress.track(reader, n_frames, "composite", "frame"):
            index = frame.index
            if whole_video and index >= n_frames:
                raise InputError(f"composite: {source_video} has more frames than the {n_frames} aligned ones; "
                                 "run the align stage again")
            full_depth = frame.image
            image = to_uint8(full_depth) if deep else full_depth
            outs = {key: image for key in keys}
            masks = []
            for layer in loaded:
                local = index - layer.start
                if not (0 <= local < layer.n_frames and layer.face_found[local]):
                    continue
                layout = layer.layout
                blend_mask = C.make_blend_mask(
                    image.shape[:2], layer.boxes[local], layout.resolution, landmarks=layer.landmarks[local],
                    expand=layout.expand, mask=settings.mask, feather_px=settings.feather_px,
                    grow_forehead=settings.grow_forehead)
                masks.append(blend_mask)
                result.n_composited += 1
                measure = settings.seam_every > 0 and (result.n_composited - 1) % settings.seam_every == 0
                if measure:
                    source_energy = C.seam_energy(image[blend_mask.roi.slices], blend_mask.alpha, blend_mask.seam_sigma)
                left, right, top, bottom = layout.expand
                expected_hw = (top + layout.resolution + bottom, left + layout.resolution + right)
                for key in keys:
                    path = layer.render_dir / key / frame_name(local)
                    render = _read_png(path)
                    if render.shape[:2] != expected_hw:
                        raise InputError(f"composite: {path} is {render.shape[1]}x{render.shape[0]}, expected "
                                         f"{expected_hw[1]}x{expected_hw[0]} (see {RENDER_INFO})")
                    outs[key] = C.composite_frame(outs[key], render, layer.boxes[local], layout.resolution, blend_mask,
                                                  expand=layout.expand, color_match=settings.color_match)
                    if measure:
                        tally = tallies[key]
                        tally.composite += C.seam_energy(outs[key][blend_mask.roi.slices], blend_mask.alpha,
                                                         blend_mask.seam_sigma)
                        tally.source += source_energy
                        tally.frames += 1
            for key in keys:
                out = outs[key]
                if deep:
                    out = full_depth
                    for blend_mask in masks:
                        out = _at_source_depth(out, outs[key], blend_mask)
                writers[key].write(out, pts=frame.pts)
            if mask_writer is not None:
                alpha = np.zeros(image.shape[:2])
                for blend_mask in masks:
                    alpha = np.maximum(alpha, blend_mask.full(image.shape[:2]))
                grey = np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)
                grey = grey.astype(np.uint16) * 257 if deep else grey
                mask_writer.write(np.repeat(grey[..., None], 3, axis=2), pts=frame.pts)
        if whole_video and index + 1 != n_frames:
            raise InputError(f"composite: {source_video} has {index + 1} frames but {n_frames} were aligned; "
                             "run the align stage again")
        result.n_frames = index + 1

    result.seam_factor = {key: tally.factor() for key, tally in tallies.items()}
    first = loaded[0].layout
    result.stats = records.CompositeInfo(
        n_frames=result.n_frames, n_composited=result.n_composited, size=list(size), resolution=first.resolution,
        expand=list(first.expand), keys=keys, tracks=len(loaded),
        seam_factor={k: (None if not np.isfinite(v) else round(v, 4)) for k, v in result.seam_factor.items()},
        seam_frames={k: t.frames for k, t in tallies.items()}, settings=asdict(settings),
        audio_copied=audio is not None).save(out_dir)
    for key, factor in result.seam_factor.items():
        log.info("composite: %s seam factor %.3f over %d frames", key, factor, tallies[key].frames)
    return result
