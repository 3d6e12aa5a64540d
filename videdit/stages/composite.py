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

import json
import logging
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np

from videdit import progress, records
from videdit.errors import InputError
from videdit.layout import (MASKS_DIR, RENDER_INFO, SHARD_FRAMES, composite_video_name, deep_frame_name, frame_name,
                            masks_video_name, output_suffix)

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
    frames: tuple[int, int] | None = None,
) -> CompositeResult | None:
    """Composite render_dir/<key>/%06d.png into the frames of source_video for each key (None = all).

    Writes out_dir/<key>.mp4 at the source's size, fps, timestamps and audio (and masks.mp4 with
    settings.save_masks). Frames where align found no face are copied unchanged. `segments` (shots)
    bound the mask landmarks' smoothing.

    frames: only frames [start, end) (a part of a sharded run): the composited frames (lossless), their
    timestamps and seam measurements go to out_dir, and merge_composite_parts encodes the videos once
    from the parts, so the video encoder sees what the unsharded run gives it.
    """
    layer = FaceLayer(Path(align_dir), Path(render_dir), 0, segments)
    if frames is None:
        return run_composite_layers(source_video, [layer], keys, out_dir, settings, whole_video=True)
    job = _Job(source_video, [layer], keys, settings, whole_video=True)
    part = _PartWriter(Path(out_dir), job.keys, job.settings.save_masks)
    for out in job.frames(*frames):
        part.write(out)
    part.close()
    return None


def merge_composite_parts(source_video: str | PathLike, align_dir: str | PathLike, render_dir: str | PathLike,
                          keys: Sequence[str] | None, part_dirs: Sequence[str | PathLike], out_dir: str | PathLike,
                          settings: CompositeSettings | None = None, *,
                          segments: Sequence[tuple[int, int]] | None = None) -> CompositeResult:
    """The composite stage's outputs from the parts of a sharded run, in frame order: one encode of the
    parts' frames at their timestamps, the seam sums added up frame by frame as the unsharded run does."""
    job = _Job(source_video, [FaceLayer(Path(align_dir), Path(render_dir), 0, segments)], keys, settings,
               whole_video=True)
    return job.write(Path(out_dir), (out for part in part_dirs for out in _read_part(Path(part), job.keys,
                                                                                     job.settings.save_masks)))


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
    job = _Job(source_video, layers, keys, settings, whole_video=whole_video)
    return job.write(Path(out_dir), job.frames())


@dataclass
class _FrameOut:
    """One composited frame: what each key's video (and the mask video) gets, and the seam energies
    (composite, source) of every layer measured on it, per key."""

    index: int
    pts: int | None
    images: dict[str, np.ndarray]
    mask: np.ndarray | None
    composited: int  # layers pasted into this frame
    energies: dict[str, list[list[float]]]


class _Job:
    """The layers read in and the source opened: frames() composites, write() encodes and sums up."""

    def __init__(self, source_video, layers: Sequence[FaceLayer], keys, settings: CompositeSettings | None,
                 whole_video: bool):
        from videdit.io.reader import VideoReader

        self.settings = settings or CompositeSettings()
        self.source_video = Path(source_video)
        self.loaded = sorted((_load_layer(layer, self.settings) for layer in layers), key=lambda l: l.face_size)
        if not self.loaded:
            raise InputError("composite: no face track to paste")
        self.keys = list(keys) if keys is not None else list(self.loaded[0].layout.keys)
        if not self.keys:
            raise InputError(f"composite: no keys to composite in {self.loaded[0].render_dir}")
        for layer in self.loaded:
            for key in self.keys:
                if not (layer.render_dir / key).is_dir():
                    raise InputError(f"composite: no rendered frames for {key!r} in {layer.render_dir}")
        self.reader = VideoReader(self.source_video, rgb="source")
        self.info = self.reader.info
        self.whole_video = whole_video
        self.n_frames = self.loaded[0].n_frames if whole_video else self.info.n_frames
        self.deep = self.reader.dtype == np.uint16  # 10/12-bit source: composite at 8 bits, keep the source's bits elsewhere

    def frames(self, start: int = 0, end: int | None = None):
        """The composited frames [start, end) (None: to the end of the source) in order."""
        from videdit.face import paste as C
        from videdit.io.color import to_uint8

        settings, keys, loaded, n_frames = self.settings, self.keys, self.loaded, self.n_frames
        if end is not None and not 0 <= start < end <= n_frames:
            raise InputError(f"composite: frames {start}-{end} outside the video's {n_frames}")
        # Which frames get their seam measured counts composited frames from the start of the video.
        n_composited = sum(int(np.count_nonzero(layer.face_found[:max(0, start - layer.start)])) for layer in loaded)
        last = self.whole_video and (end is None or end >= n_frames)
        wanted = None if end is None else range(start, end + 1 if last else end)  # one past the end: more frames?
        index = start - 1
        for frame in progress.track(self.reader.frames(wanted), (end or n_frames) - start, "composite", "frame"):
            index = frame.index
            if self.whole_video and index >= n_frames:
                raise InputError(f"composite: {self.source_video} has more frames than the {n_frames} aligned ones; "
                                 "run the align stage again")
            full_depth = frame.image
            image = to_uint8(full_depth) if self.deep else full_depth
            outs = {key: image for key in keys}
            masks = []
            energies: dict[str, list[list[float]]] = {key: [] for key in keys}
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
                n_composited += 1
                measure = settings.seam_every > 0 and (n_composited - 1) % settings.seam_every == 0
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
                        energies[key].append([float(C.seam_energy(outs[key][blend_mask.roi.slices], blend_mask.alpha,
                                                                  blend_mask.seam_sigma)), float(source_energy)])
            images = {}
            for key in keys:
                out = outs[key]
                if self.deep:
                    out = full_depth
                    for blend_mask in masks:
                        out = _at_source_depth(out, outs[key], blend_mask)
                images[key] = out
            grey = None
            if settings.save_masks:
                alpha = np.zeros(image.shape[:2])
                for blend_mask in masks:
                    alpha = np.maximum(alpha, blend_mask.full(image.shape[:2]))
                grey = np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)
                grey = np.repeat((grey.astype(np.uint16) * 257 if self.deep else grey)[..., None], 3, axis=2)
            yield _FrameOut(index, frame.pts, images, grey, len(masks), energies)
        expected_last = (n_frames if end is None or last else end) - 1
        if self.whole_video and index != expected_last:
            raise InputError(f"composite: {self.source_video} has {index + 1} frames but {n_frames} were aligned; "
                             "run the align stage again")

    def write(self, out_dir: Path, frames) -> CompositeResult:
        """Encode `frames` (composited _FrameOuts in order) into out_dir's videos; composite.json."""
        from videdit.io.encoding import EncoderSettings
        from videdit.io.writer import VideoWriter

        settings, keys, info = self.settings, self.keys, self.info
        out_dir.mkdir(parents=True, exist_ok=True)
        encoder = EncoderSettings(codec=settings.codec, crf=settings.crf, preset=settings.preset, pix_fmt=settings.pix_fmt)
        audio = None if info.is_image_folder or info.audio is None else self.source_video
        result = CompositeResult(n_frames=self.n_frames, size=info.size)
        tallies = {key: _SeamTally() for key in keys}

        def writer(path: Path) -> VideoWriter:
            return VideoWriter(path, info.fps, info.size, audio_from=audio, time_base=info.time_base, settings=encoder,
                               source=info)

        n_written = 0
        with ExitStack() as stack:
            writers = {}
            for key in keys:
                result.videos[key] = out_dir / composite_video_name(key, output_suffix(settings.codec))
                writers[key] = stack.enter_context(writer(result.videos[key]))
            mask_writer = None
            if settings.save_masks:
                result.masks_video = out_dir / masks_video_name(output_suffix(settings.codec))
                mask_writer = stack.enter_context(writer(result.masks_video))
            for out in frames:
                result.n_composited += out.composited
                for key in keys:
                    writers[key].write(out.images[key], pts=out.pts)
                    for composite_energy, source_energy in out.energies[key]:  # summed in frame order, as measured
                        tallies[key].composite += composite_energy
                        tallies[key].source += source_energy
                        tallies[key].frames += 1
                if mask_writer is not None:
                    mask_writer.write(out.mask, pts=out.pts)
                n_written += 1
        result.n_frames = n_written

        result.seam_factor = {key: tally.factor() for key, tally in tallies.items()}
        first = self.loaded[0].layout
        result.stats = records.CompositeInfo(
            n_frames=result.n_frames, n_composited=result.n_composited, size=list(info.size), resolution=first.resolution,
            expand=list(first.expand), keys=keys, tracks=len(self.loaded),
            seam_factor={k: (None if not np.isfinite(v) else round(v, 4)) for k, v in result.seam_factor.items()},
            seam_frames={k: t.frames for k, t in tallies.items()}, settings=asdict(settings),
            audio_copied=audio is not None).save(out_dir)
        for key, factor in result.seam_factor.items():
            log.info("composite: %s seam factor %.3f over %d frames", key, factor, tallies[key].frames)
        return result


def _frame_file(folder: Path, index: int, deep: bool) -> Path:
    return folder / (deep_frame_name(index) if deep else frame_name(index))


class _PartWriter:
    """A part's composited frames on disk, lossless: <key>/ (and masks/) PNGs, or .npy for 16-bit frames,
    and frames.json with each frame's index, pts, layers pasted and seam energies."""

    def __init__(self, folder: Path, keys: list[str], masks: bool):
        self.folder, self.keys, self.masks = folder, keys, masks
        self.rows: list[dict] = []
        for key in keys + ([MASKS_DIR] if masks else []):
            (folder / key).mkdir(parents=True, exist_ok=True)

    def _save(self, folder: Path, index: int, image: np.ndarray) -> None:
        if image.dtype == np.uint16:
            np.save(_frame_file(folder, index, True), image, allow_pickle=False)
        else:
            from videdit.io.png import write_png

            write_png(_frame_file(folder, index, False), image)

    def write(self, out: _FrameOut) -> None:
        for key in self.keys:
            self._save(self.folder / key, out.index, out.images[key])
        if self.masks:
            self._save(self.folder / MASKS_DIR, out.index, out.mask)
        self.rows.append({"index": out.index, "pts": out.pts, "composited": out.composited, "energies": out.energies})

    def close(self) -> None:
        from videdit.fileio import atomic_write_text

        atomic_write_text(self.folder / SHARD_FRAMES, json.dumps(self.rows))


def _read_part(folder: Path, keys: list[str], masks: bool):
    """A part's frames back as _FrameOuts, in order (JSON floats read back exactly)."""
    from videdit.io.images import read_image

    def load(sub: Path, index: int) -> np.ndarray:
        deep = _frame_file(sub, index, True)
        return np.load(deep, allow_pickle=False) if deep.is_file() else read_image(_frame_file(sub, index, False))

    for row in json.loads((folder / SHARD_FRAMES).read_text()):
        index = row["index"]
        images = {key: load(folder / key, index) for key in keys}
        mask = load(folder / MASKS_DIR, index) if masks else None
        yield _FrameOut(index, row["pts"], images, mask, row["composited"], row["energies"])
