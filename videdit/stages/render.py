"""Rendering (stage `render`): every frame from the tuned generator at its smoothed transform.

Field-of-view expansion: `expand = (left, right, top, bottom)` render pixels. Besides the frame's own
view (the centre tile) the generator renders shifted views: a shift S = make_transform((dx, dy), 0) in
image widths is composed after the frame's inverse transform, `inv(M) @ inv(S)`, which moves the image
content by (dx, dy); the left tile, for example, is rendered with dx = +left / res and shows what lies
left of the frame. Tiles are joined on a (top + res + bottom) x (left + res + right) canvas whose
unexpanded part sits at (left, top). Instead of the published hard paste the seams are blended with
linear ramps `feather` pixels wide: corners are painted first, then the side tiles (ramped towards
the corners), then the centre tile (ramped towards every side that has an expansion). Inside the
ramps the centre tile is pasted unchanged, so away from its border the expanded render equals the
unexpanded one exactly; with feather = 0 the whole centre does.

With the HyperStyle tuner, `offsets` (tune/offsets.safetensors) makes every frame render with its own
weight offsets instead of the tuned generator's mean ones.

Outputs in out_dir: `<key>/%06d.png` (lossless frames, read by the composite stage), `<key>.mp4`
(the reconstruction's video is `reconstruction.mp4`), `side_by_side.mp4` (input crop | reconstruction
| each edit) and `render.json`. Videos carry the source's fps and audio. Frames are rendered, written
and dropped batch by batch, so memory does not grow with the video's length.
"""
from __future__ import annotations

import dataclasses
import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from os import PathLike
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from videdit.lazy import lazy_module, no_grad
from videdit.errors import InputError
from videdit import layout, progress, records
from videdit.io.color import to_uint8
from videdit.layout import RECONSTRUCTION_KEY, RECONSTRUCTION_VIDEO, SIDE_BY_SIDE_VIDEO  # noqa: F401  (part of the API)

torch = lazy_module("torch")  # settings are read without loading torch (start-up)

log = logging.getLogger("videdit")

DEFAULT_FPS = Fraction(25)


@dataclass
class RenderSettings:
    """expand: extra field of view (left, right, top, bottom) in render pixels, each at most res - feather.
    feather: width in render pixels of the linear blend across tile seams (0 = hard paste).
    """

    expand: tuple[int, int, int, int] = (0, 0, 0, 0)
    feather: int = 16
    batch_size: int = 4
    fit_memory: bool = True  # lower batch_size to what one probe frame says fits in free memory
    crf: int = 18
    side_by_side: bool = True
    png_compress_level: int = 1  # lossless either way; 1 is the fast end


@dataclass
class RenderResult:
    frames_dirs: dict[str, Path] = field(default_factory=dict)
    videos: dict[str, Path] = field(default_factory=dict)
    side_by_side: Path | None = None
    num_frames: int = 0
    fps: Fraction = DEFAULT_FPS
    size: tuple[int, int] = (0, 0)  # (width, height) of a rendered frame


# --------------------------------------------------------------------------------------------------
# Canvas layout


@dataclass(frozen=True)
class Tile:
    x0: int  # canvas position of the tile's top-left pixel
    y0: int
    shift: tuple[float, float]  # content shift (dx, dy) in image widths
    alpha: torch.Tensor  # [1, 1, res, res] blend weight, painted in list order


def _ramp(res: int, feather: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1-D weights over res pixels, rising linearly over `feather` pixels from the requested ends."""
    w = torch.ones(res, dtype=torch.float32)
    if feather <= 0:
        return w
    rise = ((torch.arange(feather, dtype=torch.float32) + 0.5) / feather)
    if at_start:
        w[:feather] = torch.minimum(w[:feather], rise)
    if at_end:
        w[res - feather:] = torch.minimum(w[res - feather:], rise.flip(0))
    return w


def canvas_tiles(res: int, expand: Sequence[int], feather: int) -> tuple[list[Tile], tuple[int, int]]:
    """The tiles of an expanded render in paint order, and the canvas size (width, height)."""
    left, right, top, bottom = (int(v) for v in expand)
    if min(left, right, top, bottom) < 0 or feather < 0:
        raise InputError(f"render: expand and feather must be >= 0, got expand={list(expand)} feather={feather}")
    if max(left, right, top, bottom) > res - feather:
        raise InputError(f"render: each expansion must be at most {res - feather} px (resolution {res} minus "
                         f"feather {feather}), got {list(expand)}")
    columns = [c for c, on in ((-1, left), (0, 1), (1, right)) if on]
    rows = [r for r, on in ((-1, top), (0, 1), (1, bottom)) if on]
    x_of = {-1: 0, 0: left, 1: left + right}
    y_of = {-1: 0, 0: top, 1: top + bottom}
    tiles: list[tuple[int, Tile]] = []
    for r in rows:
        for c in columns:
            x0, y0 = x_of[c], y_of[r]
            if r == 0 and c == 0:  # centre: ramp on every side that has a neighbour
                ramp_x = _ramp(res, feather, left > 0, right > 0)
                ramp_y = _ramp(res, feather, top > 0, bottom > 0)
                order = 2
            elif r == 0:  # left/right tile: ramp towards the corners above and below it
                ramp_x = _ramp(res, 0, False, False)
                ramp_y = _ramp(res, feather, top > 0, bottom > 0)
                order = 1
            elif c == 0:  # top/bottom tile: ramp towards the corners beside it
                ramp_x = _ramp(res, feather, left > 0, right > 0)
                ramp_y = _ramp(res, 0, False, False)
                order = 1
            else:  # corner: painted first, fully
                ramp_x = ramp_y = _ramp(res, 0, False, False)
                order = 0
            alpha = (ramp_y[:, None] * ramp_x[None, :])[None, None]
            tiles.append((order, Tile(x0, y0, ((left - x0) / res, (top - y0) / res), alpha)))
    tiles.sort(key=lambda item: item[0])
    return [t for _, t in tiles], (left + res + right, top + res + bottom)


def shift_inverse(shift: tuple[float, float]) -> torch.Tensor:
    """inv(make_transform(shift, 0)): a translation by -shift."""
    m = torch.eye(3, dtype=torch.float64)
    m[0, 2], m[1, 2] = -shift[0], -shift[1]
    return m


@no_grad
def render_expanded(G, ws: torch.Tensor, inv_transforms: torch.Tensor, tiles: list[Tile],
                    canvas_size: tuple[int, int], deltas: dict[str, torch.Tensor] | None = None,
                    styles: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """[B, 3, H, W] float canvas: each tile rendered at inv(M) @ inv(S) and painted in order.

    deltas: per-sample weight offsets {layer: [B, C_out, C_in]} (HyperStyle), W' = W (1 + Delta).
    styles: render from StyleSpace (S edits) instead of ws; the transforms apply as usual.
    """
    from videdit.networks.hyperstyle import synthesize

    res = G.img_resolution
    width, height = canvas_size
    canvas = torch.zeros(ws.shape[0], G.img_channels, height, width, device=ws.device)
    inv64 = inv_transforms.to(torch.float64)
    for tile in tiles:
        inv = (inv64 @ shift_inverse(tile.shift).to(inv64.device)).to(torch.float32)
        image = synthesize(G, None if styles is not None else ws, inv, deltas, styles).to(torch.float32)
        region = canvas[:, :, tile.y0:tile.y0 + res, tile.x0:tile.x0 + res]
        alpha = tile.alpha.to(image.device)
        if bool((alpha == 1).all()):
            region.copy_(image)
        else:
            region.copy_(alpha * image + (1 - alpha) * region)
    return canvas


# --------------------------------------------------------------------------------------------------
# The stage


def _video_timing(source_video, align_dir: Path | None):
    """(fps, audio source, VideoInfo or None) of the source video; fps from align/video.json when no source
    is given. The crop videos follow the source's bit depth and colour tags through its VideoInfo."""
    if source_video is not None:
        from videdit.io.probe import probe_video

        info = probe_video(source_video)
        return info.fps, (Path(source_video) if getattr(info, "audio", None) is not None else None), info
    info = records.load_video_info(align_dir) if align_dir is not None else None
    if info is not None and info.fps > 0:
        return info.fps, None, None
    return DEFAULT_FPS, None, None


def _input_crop(align_dir: Path, index: int, res: int, canvas_size, expand) -> np.ndarray:
    """The frame's unaligned crop at render resolution, on a black canvas of the render's size."""
    from PIL import Image

    with Image.open(align_dir / records.UNALIGNED / records.frame_name(index)) as image:
        image = image.convert("RGB")
        if image.size != (res, res):
            image = image.resize((res, res), Image.LANCZOS)
        crop = np.asarray(image)
    width, height = canvas_size
    out = np.zeros((height, width, 3), np.uint8)
    out[expand[2]:expand[2] + res, expand[0]:expand[0] + res] = crop
    return out


def run_render(
    generator,
    smooth_dir: str | PathLike,
    keys: Sequence[str] | None,
    out_dir: str | PathLike,
    settings: RenderSettings | None = None,
    *,
    source_video: str | PathLike | None = None,
    align_dir: str | PathLike | None = None,
    offsets: str | PathLike | None = None,
    device: str = "cpu",
    frames: tuple[int, int] | None = None,
) -> RenderResult:
    """Render smooth_dir/latents_<key>.npy at smooth_dir/transforms.npz for each key (None = all found); an S
    edit's key (smooth_dir/styles_<key>.safetensors) renders the styles of its W+ latents (a combined edit's) or of
    the reconstruction's plus its offsets.

    generator: a module or a checkpoint path. source_video gives the fps and the audio; align_dir the
    input crops for the side-by-side video (left out when absent). offsets: the HyperStyle tuner's
    per-frame weight offsets (`tune/offsets.safetensors`, a `FrameOffsets` file or object): the offset
    layers get back their stored original weights and frame i is rendered with W (1 + Delta_i), every
    output (reconstruction and edits) with the frame's own offsets, as HyperStyle edits.

    frames: only frames [start, end) (a part of a sharded run): their PNGs and render.json, no videos;
    merge_render_parts joins the parts and writes the videos from the PNGs. Batches are counted from
    `start`, so a part that starts on a multiple of batch_size renders the unsharded run's batches.
    """
    from videdit.io.writer import VideoWriter

    settings = settings or RenderSettings()
    smooth_dir, out_dir = Path(smooth_dir), Path(out_dir)
    align_dir = Path(align_dir) if align_dir is not None else None
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)

    if isinstance(generator, (str, PathLike)):
        from videdit.checkpoints import load_generator

        G = load_generator(generator, device=dev)
    elif offsets is not None:  # the offset layers' weights are replaced below: leave the caller's module alone
        import copy

        G = copy.deepcopy(generator).to(dev)
    else:
        G = generator.to(dev)
    G.eval()
    res = G.img_resolution

    inv_all = torch.from_numpy(records.TransformsRecord.load(smooth_dir / records.TRANSFORMS).inverse(np.float64))
    n = inv_all.shape[0]
    frame_offsets = None
    if offsets is not None:
        from videdit.networks.hyperstyle import FrameOffsets

        frame_offsets = offsets if isinstance(offsets, FrameOffsets) else FrameOffsets.load(offsets)
        frame_offsets.use_base_weights(G, num_frames=n)
    keys = list(records.output_keys(smooth_dir) if keys is None else keys)
    if not keys:
        raise InputError(f"render: no latents in {smooth_dir}")
    # Reconstruction first: it is the second column of the side-by-side video.
    keys.sort(key=lambda k: k != RECONSTRUCTION_KEY)
    latents, style_offsets = {}, {}
    for key in keys:
        styles_path = smooth_dir / records.styles_name(key)
        if styles_path.is_file():  # an S edit: the reconstruction's styles plus these (smoothed) offsets
            from videdit.stylespace import load_styles

            style_offsets[key] = load_styles(styles_path, G.synthesis.style_widths())
        path = smooth_dir / records.latents_name(key)
        if key in style_offsets and not path.is_file():  # an S edit alone: added to the reconstruction's styles
            path = smooth_dir / records.latents_name(RECONSTRUCTION_KEY)
        latents[key] = records.load_latents(path, mmap=True)  # read per batch: memory independent of length
        if latents[key].shape[0] != n or latents[key].shape[1] != G.num_ws:
            raise InputError(f"render: {path.name} has shape {list(latents[key].shape)}; expected [{n}, {G.num_ws}, w_dim]")

    expand = tuple(int(v) for v in settings.expand)
    tiles, canvas_size = canvas_tiles(res, expand, settings.feather)
    fps, audio, source_info = _video_timing(source_video, align_dir)
    with_inputs = settings.side_by_side and align_dir is not None and (align_dir / records.UNALIGNED).is_dir()

    start, end = (0, n) if frames is None else (int(frames[0]), int(frames[1]))
    if not 0 <= start < end <= n:
        raise InputError(f"render: frames {start}-{end} outside the video's {n}")
    videos = frames is None
    result = RenderResult(num_frames=n, fps=fps, size=canvas_size)
    for key in keys:
        result.frames_dirs[key] = out_dir / key
        result.frames_dirs[key].mkdir(parents=True, exist_ok=True)
        result.videos[key] = out_dir / layout.render_video_name(key)

    from PIL import Image

    with ExitStack() as stack:
        writers, side = {}, None
        if videos:
            writers, side = _video_writers(stack, result, keys, with_inputs, settings, audio, source_info)
        bar = stack.enter_context(progress.bar(end - start, "render", "frame"))
        batch_size = max(1, settings.batch_size)
        if settings.fit_memory and batch_size > 1:
            from videdit.memory import fit_batch

            probe_ws = torch.from_numpy(np.array(latents[keys[0]][:1], dtype=np.float32)).to(dev)
            probe_deltas = None if frame_offsets is None else frame_offsets.deltas(np.arange(1), dev)
            batch_size = fit_batch(batch_size, lambda: render_expanded(
                G, probe_ws, inv_all[:1].to(dev), tiles, canvas_size, probe_deltas), device=str(dev), what="render").batch_size
        for lo in range(start, end, batch_size):
            idx = np.arange(lo, min(lo + batch_size, end))
            inv = inv_all[idx].to(dev)
            deltas = None if frame_offsets is None else frame_offsets.deltas(idx, dev)
            batch_frames = {}
            for key in keys:
                ws = torch.from_numpy(np.asarray(latents[key][idx], dtype=np.float32)).to(dev)
                styles = None
                if key in style_offsets:
                    base = G.synthesis.w_to_s(ws)
                    styles = {k: base[k] + style_offsets[key][k][idx].to(dev) for k in base}
                frames = to_uint8(render_expanded(G, ws, inv, tiles, canvas_size, deltas, styles))
                for j, frame in enumerate(frames):
                    Image.fromarray(frame).save(result.frames_dirs[key] / records.frame_name(int(idx[j])),
                                                compress_level=settings.png_compress_level)
                    if videos:
                        writers[key].write(frame)
                batch_frames[key] = frames
            if side is not None:
                for j, i in enumerate(idx):
                    side.write(_side_by_side_frame([batch_frames[key][j] for key in keys], align_dir, int(i), res,
                                                   canvas_size, expand, with_inputs))
            bar.update(len(idx))
    records.RenderInfo(
        num_frames=n, fps=str(fps), resolution=res, expand=list(expand), feather=settings.feather,
        canvas_size=list(canvas_size), keys=keys,
        weight_offsets=None if frame_offsets is None else {"kind": "hyperstyle per-frame", "layers": frame_offsets.layers},
        side_by_side_columns=(["input"] if with_inputs else []) + keys if settings.side_by_side else []).save(out_dir)
    return result


def _video_writers(stack: ExitStack, result: RenderResult, keys: Sequence[str], with_inputs: bool,
                   settings: RenderSettings, audio, source_info):
    """The crop videos' writers by key and the side-by-side one (or None), entered on `stack`: one place, so
    the unsharded render and the merge of a sharded one encode with the same settings."""
    from videdit.io.writer import VideoWriter

    fps, canvas_size = result.fps, result.size
    writers = {key: stack.enter_context(VideoWriter(result.videos[key], fps, canvas_size, audio_from=audio,
                                                    crf=settings.crf, source=source_info))
               for key in keys}
    side = None
    if settings.side_by_side:
        columns = len(keys) + int(with_inputs)
        result.side_by_side = result.videos[keys[0]].parent / SIDE_BY_SIDE_VIDEO
        side = stack.enter_context(VideoWriter(result.side_by_side, fps, (canvas_size[0] * columns, canvas_size[1]),
                                               audio_from=audio, crf=settings.crf, source=source_info))
    return writers, side


def _side_by_side_frame(frames: list[np.ndarray], align_dir, index: int, res: int, canvas_size, expand,
                        with_inputs: bool) -> np.ndarray:
    parts = [_input_crop(align_dir, index, res, canvas_size, expand)] if with_inputs else []
    return np.concatenate(parts + frames, axis=1)


def merge_render_parts(part_dirs: Sequence[str | PathLike], out_dir: str | PathLike, settings: RenderSettings | None = None,
                       *, source_video: str | PathLike | None = None, align_dir: str | PathLike | None = None,
                       device: str = "cpu") -> RenderResult:
    """The render stage's outputs from the parts of a sharded run (in frame order): every part's frames
    linked into out_dir/<key>/, then the videos encoded once from those lossless frames (the pixels the
    unsharded render encodes, so the same bytes), render.json as the parts wrote it. device: unused (the
    same keyword arguments as run_render)."""
    from videdit.fileio import link_or_copy

    settings = settings or RenderSettings()
    out_dir, align_dir = Path(out_dir), Path(align_dir) if align_dir is not None else None
    part_dirs = [Path(d) for d in part_dirs]
    info = records.RenderInfo.load(part_dirs[0]) if part_dirs else None
    if info is None:
        raise InputError(f"render: no {layout.RENDER_INFO} in the parts to merge")
    keys = list(info.keys)
    for key in keys:
        (out_dir / key).mkdir(parents=True, exist_ok=True)
        for part in part_dirs:
            for frame in sorted((part / key).iterdir()):
                link_or_copy(frame, out_dir / key / frame.name)
    info.save(out_dir)
    fps, audio, source_info = _video_timing(source_video, align_dir)
    canvas_size = tuple(info.canvas_size)
    result = RenderResult(num_frames=info.num_frames, fps=fps, size=canvas_size)
    for key in keys:
        result.frames_dirs[key] = out_dir / key
        result.videos[key] = out_dir / layout.render_video_name(key)
    with_inputs = bool(info.side_by_side_columns) and info.side_by_side_columns[0] == "input"
    from PIL import Image

    with ExitStack() as stack:
        writers, side = _video_writers(stack, result, keys, with_inputs, settings, audio, source_info)
        for i in range(info.num_frames):
            frames = []
            for key in keys:
                with Image.open(result.frames_dirs[key] / records.frame_name(i)) as image:
                    frames.append(np.asarray(image.convert("RGB")))
                writers[key].write(frames[-1])
            if side is not None:
                side.write(_side_by_side_frame(frames, align_dir, i, info.resolution, canvas_size, tuple(info.expand),
                                               with_inputs))
    return result


def run_render_per_key(
    generators: Mapping[str, str | PathLike],
    smooth_dir: str | PathLike,
    out_dir: str | PathLike,
    settings: RenderSettings | None = None,
    *,
    load_generator: Callable[[Path], object] | None = None,
    **kwargs,
) -> RenderResult:
    """Each key drawn with its own generator file (the stitch stage's per key), in the mapping's order:
    one run_render per key, no side-by-side video (its columns would come from different generators),
    one render.json naming every key. load_generator: how a file becomes the module to draw with (one at a
    time; None: run_render loads it in float32). kwargs: run_render's source_video, align_dir, device."""
    settings = dataclasses.replace(settings or RenderSettings(), side_by_side=False)
    keys = list(generators)
    if not keys:
        raise InputError(f"render: no keys to render from {smooth_dir}")
    result = RenderResult()
    for key in keys:
        path = Path(generators[key])
        one = run_render(load_generator(path) if load_generator is not None else path, smooth_dir, [key], out_dir,
                         settings, **kwargs)
        result.frames_dirs.update(one.frames_dirs)
        result.videos.update(one.videos)
        result.num_frames, result.fps, result.size = one.num_frames, one.fps, one.size
    info = records.RenderInfo.load(out_dir)
    info.keys = keys  # each call wrote its own key
    info.save(out_dir)
    return result
