"""Composite (stage `composite`): the rendered face crops back in the whole source frames.

For every frame with a face, the render of each key (RUN/render/<key>/%06d.png, expanded or not) is
warped back through the inverse of the fixed unaligned box (align/transforms.npz `box_quad`) and blended
into the source frame with a soft mask (`videdit.compositing`): the landmark face region or the whole
box, feathered; optionally the render's low frequencies are matched to the frame's around the mask
border. Frames without a face are copied unchanged. Frames are read, composited, encoded and dropped one
at a time, so memory does not depend on the video's length.

Outputs in out_dir: `<key>.mp4` (source size, fps, timestamps and audio), `masks.mp4` when asked
(the blend mask as grey levels), and `composite.json` (counts, settings and the measured seam factor:
gradient energy across the mask border in the composite over the same in the source, on sampled
frames; 1 means no visible seam added).
"""
from __future__ import annotations

import json
import logging
import shutil
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np

from videdit.errors import InputError

log = logging.getLogger("videdit")

MASKS_VIDEO = "masks.mp4"
STATS_FILE = "composite.json"
RENDER_INFO = "render.json"


@dataclass
class CompositeSettings:
    """mask: "landmarks" (face region from the frame's landmarks) or "box" (the whole render).
    feather_px: width of the soft mask edge in frame pixels (None: 6 % of the box side).
    grow_forehead: how far the brows are copied upward, in brow-to-chin distances.
    mask_smoothing: the landmarks that shape the mask are averaged over this many frames (centred,
    frames with a face only; 1 = off), so detector jitter does not make the seam flicker.
    color_match: match the render's low frequencies to the frame's around the mask border.
    save_masks: also write masks.mp4. crf: H.264 quality of the outputs.
    stitch: STIT-style stitching tuning of the generator before compositing (run_composite needs the
    generator and the smooth folder then); stitch_steps / stitch_lr: its Adam steps and learning rate.
    seam_every: measure the seam factor on every n-th composited frame (0 = never).
    """

    mask: str = "landmarks"
    feather_px: float | None = None
    grow_forehead: float = 0.5
    mask_smoothing: int = 3
    color_match: bool = True
    save_masks: bool = False
    crf: int = 18
    stitch: bool = False
    stitch_steps: int = 100
    stitch_lr: float = 3e-4
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


@dataclass(frozen=True)
class RenderLayout:
    """How the render stage laid out its frames: generator resolution and field-of-view expansion."""

    resolution: int
    expand: tuple[int, int, int, int]
    keys: tuple[str, ...]


def read_render_layout(render_dir: Path) -> RenderLayout:
    """Resolution, expansion and keys from render_dir/render.json; without it, square unexpanded PNGs."""
    info_path = render_dir / RENDER_INFO
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        return RenderLayout(int(info["resolution"]), tuple(int(v) for v in info.get("expand", (0, 0, 0, 0))),
                            tuple(info.get("keys", ())))
    keys = tuple(sorted(p.name for p in render_dir.iterdir() if p.is_dir() and (p / "000000.png").is_file()))
    if not keys:
        raise InputError(f"composite: no rendered frames in {render_dir}")
    width, height = _png_size(render_dir / keys[0] / "000000.png")
    if width != height:
        raise InputError(f"composite: {render_dir} has {width}x{height} renders but no {RENDER_INFO} saying how "
                         "they were expanded")
    return RenderLayout(width, (0, 0, 0, 0), keys)


def smooth_landmarks(landmarks: np.ndarray, found: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of landmarks [N, 68, 2] over `window` frames, using frames with a face only.

    The window shrinks symmetrically at the ends of each run of found frames, so the first and last
    frames stay anchored; frames without a face keep their values.
    """
    landmarks = np.asarray(landmarks, np.float64)
    out = landmarks.copy()
    half = max(int(window), 1) // 2
    if half == 0:
        return out
    found = np.asarray(found, bool)
    n = len(found)
    for i in np.flatnonzero(found):
        reach = 0
        while reach < half and i - reach - 1 >= 0 and i + reach + 1 < n and found[i - reach - 1] and found[i + reach + 1]:
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


def run_composite(
    source_video: str | PathLike,
    align_dir: str | PathLike,
    render_dir: str | PathLike,
    keys: Sequence[str] | None,
    out_dir: str | PathLike,
    settings: CompositeSettings | None = None,
    *,
    generator=None,
    smooth_dir: str | PathLike | None = None,
    device: str = "cpu",
) -> CompositeResult:
    """Composite render_dir/<key>/%06d.png into the frames of source_video for each key (None = all).

    Writes out_dir/<key>.mp4 at the source's size, fps, timestamps and audio (and masks.mp4 with
    settings.save_masks). Frames where align found no face are copied unchanged.

    With settings.stitch, the generator (module or checkpoint path, the tuned one) is first
    stitching-tuned per key (`videdit.stages.stitch.run_stitch`, latents and transforms from
    smooth_dir) and the stitched renders are composited instead; their crop videos stay in
    out_dir/stitched/.
    """
    from videdit import compositing as C
    from videdit.io.video import VideoReader, VideoWriter

    settings = settings or CompositeSettings()
    source_video, align_dir, render_dir, out_dir = (Path(p) for p in (source_video, align_dir, render_dir, out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    stitched_dir = None
    if settings.stitch:
        if generator is None or smooth_dir is None:
            raise InputError("composite: stitch=true needs the tuned generator and the smooth folder")
        # Interim, until stitch runs as its own stage before render: tune, then re-render with each key's generator.
        from videdit.stages.render import RenderSettings, run_render
        from videdit.stages.stitch import StitchSettings, run_stitch

        layout = read_render_layout(render_dir)
        layout_keys = list(keys) if keys is not None else list(layout.keys)
        stitched_dir = out_dir / "stitched"
        stitched = run_stitch(align_dir, smooth_dir, None, stitched_dir,
                              StitchSettings(steps=settings.stitch_steps, lr=settings.stitch_lr, device=device),
                              layout_keys, generator=generator)
        info = json.loads((render_dir / "render.json").read_text()) if (render_dir / "render.json").is_file() else {}
        render_settings = RenderSettings(expand=tuple(layout.expand),
                                         feather=int(info.get("feather", RenderSettings.feather)), side_by_side=False)
        for key in layout_keys:
            run_render(stitched.generators[key], smooth_dir, [key], stitched_dir, render_settings, device=device)
        info = json.loads((stitched_dir / "render.json").read_text())  # one render.json naming every key
        info["keys"] = layout_keys
        (stitched_dir / "render.json").write_text(json.dumps(info, indent=1))
        render_dir = stitched_dir

    transforms_path = align_dir / "transforms.npz"
    if not transforms_path.is_file():
        raise InputError(f"composite: {transforms_path} not found; run the align stage first")
    with np.load(transforms_path) as t:
        box_quad = np.asarray(t["box_quad"], np.float64)
        face_found = np.asarray(t["face_found"], bool)
        landmarks = np.asarray(t["landmarks"], np.float64)
    n_frames = len(face_found)
    if settings.mask == "landmarks":
        landmarks = smooth_landmarks(landmarks, face_found, settings.mask_smoothing)

    layout = read_render_layout(render_dir)
    keys = list(keys) if keys is not None else list(layout.keys)
    if not keys:
        raise InputError(f"composite: no keys to composite in {render_dir}")
    for key in keys:
        if not (render_dir / key).is_dir():
            raise InputError(f"composite: no rendered frames for {key!r} in {render_dir}")

    left, right, top, bottom = layout.expand
    expected_render_hw = (top + layout.resolution + bottom, left + layout.resolution + right)

    reader = VideoReader(source_video)
    info = reader.info
    size = info.size
    audio = None if info.is_image_folder or info.audio is None else source_video
    result = CompositeResult(n_frames=n_frames, size=size)
    tallies = {key: _SeamTally() for key in keys}

    def writer(path: Path) -> VideoWriter:
        return VideoWriter(path, info.fps, size, audio_from=audio, time_base=info.time_base, crf=settings.crf)

    with ExitStack() as stack:
        writers = {}
        for key in keys:
            result.videos[key] = out_dir / f"{key}.mp4"
            writers[key] = stack.enter_context(writer(result.videos[key]))
        mask_writer = None
        if settings.save_masks:
            result.masks_video = out_dir / MASKS_VIDEO
            mask_writer = stack.enter_context(writer(result.masks_video))

        index = -1
        for frame in reader:
            index = frame.index
            if index >= n_frames:
                raise InputError(f"composite: {source_video} has more frames than the {n_frames} aligned ones; "
                                 "run the align stage again")
            image = frame.image
            blend_mask = None
            if face_found[index]:
                blend_mask = C.make_blend_mask(
                    image.shape[:2], box_quad, layout.resolution, landmarks=landmarks[index], expand=layout.expand,
                    mask=settings.mask, feather_px=settings.feather_px, grow_forehead=settings.grow_forehead)
                result.n_composited += 1
            measure = (blend_mask is not None and settings.seam_every > 0
                       and (result.n_composited - 1) % settings.seam_every == 0)
            if measure:
                source_energy = C.seam_energy(image[blend_mask.roi.slices], blend_mask.alpha, blend_mask.seam_sigma)
            for key in keys:
                out = image
                if blend_mask is not None:
                    path = render_dir / key / f"{index:06d}.png"
                    render = _read_png(path)
                    if render.shape[:2] != expected_render_hw:
                        raise InputError(f"composite: {path} is {render.shape[1]}x{render.shape[0]}, expected "
                                         f"{expected_render_hw[1]}x{expected_render_hw[0]} (see {RENDER_INFO})")
                    out = C.composite_frame(image, render, box_quad, layout.resolution, blend_mask,
                                            expand=layout.expand, color_match=settings.color_match)
                    if measure:
                        tally = tallies[key]
                        tally.composite += C.seam_energy(out[blend_mask.roi.slices], blend_mask.alpha,
                                                         blend_mask.seam_sigma)
                        tally.source += source_energy
                        tally.frames += 1
                writers[key].write(out, pts=frame.pts)
            if mask_writer is not None:
                alpha = blend_mask.full(image.shape[:2]) if blend_mask is not None else np.zeros(image.shape[:2])
                grey = np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)
                mask_writer.write(np.repeat(grey[..., None], 3, axis=2), pts=frame.pts)
        if index + 1 != n_frames:
            raise InputError(f"composite: {source_video} has {index + 1} frames but {n_frames} were aligned; "
                             "run the align stage again")

    if stitched_dir is not None:  # the stitched frames were only needed here; their videos stay
        for key in keys:
            shutil.rmtree(stitched_dir / key, ignore_errors=True)
    result.seam_factor = {key: tally.factor() for key, tally in tallies.items()}
    result.stats = out_dir / STATS_FILE
    result.stats.write_text(json.dumps({
        "n_frames": n_frames, "n_composited": result.n_composited, "size": list(size),
        "resolution": layout.resolution, "expand": list(layout.expand), "keys": keys,
        "seam_factor": {k: (None if not np.isfinite(v) else round(v, 4)) for k, v in result.seam_factor.items()},
        "seam_frames": {k: t.frames for k, t in tallies.items()},
        "settings": asdict(settings),
    }, indent=1) + "\n")
    for key, factor in result.seam_factor.items():
        log.info("composite: %s seam factor %.3f over %d frames", key, factor, tallies[key].frames)
    return result
