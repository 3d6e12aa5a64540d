"""The encode stage: invert every aligned crop into W+ with the ReStyle iteration.

Input: the align stage's folder (`aligned/%06d.png`, `transforms.npz`, optionally `unaligned/` and
`video.json`). Output, inside `out_dir`:

    latents.npy    float32 [N, num_ws, 512]: the final ReStyle codes of every frame, in frame order
    preview.mp4    (save_preview) per frame: aligned input | reconstruction of every iteration
                   (the last one unaligned, with the frame's transform) | unaligned input

Frames are processed in batches; each batch's latents go straight into a memory-mapped .npy, so
memory does not grow with the video's length. The average image is rendered once.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from videdit import progress, records
from videdit.device import resolve_device
from videdit.errors import InputError, VideditError
from videdit.io.color import to_uint8

log = logging.getLogger(__name__)

__all__ = ["EncodeSettings", "EncodeResult", "run_encode", "merge_encode_parts", "load_aligned_batch"]

DEFAULT_PREVIEW_FPS = Fraction(25)


@dataclass
class EncodeSettings:
    """Settings of the encode stage (the [encode] section of a preset)."""

    n_iters: int = 3  # ReStyle iterations (3 as released)
    batch_size: int = 4  # frames per encoder/generator batch (memory vs speed; results do not depend on it)
    fit_memory: bool = True  # lower batch_size to what one probe frame says fits in free memory
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", or "auto"
    save_preview: bool = False  # write preview.mp4 with every iteration's reconstruction
    input_size: int = 256  # encoder input resolution (256 for the released encoders)


@dataclass
class EncodeResult:
    latents_path: Path
    n_frames: int
    preview_path: Path | None = None


def load_aligned_batch(paths: list[Path], size: int):
    """Crops as a float32 [B, 3, size, size] tensor in [-1, 1] (antialiased bilinear resize on the CPU).

    The released encoders were trained on PIL bilinear (antialiased) 256 resizes of the crops.
    """
    import torch
    import torch.nn.functional as F

    from videdit.io.images import read_image

    images = []
    for path in paths:
        pixels = torch.from_numpy(read_image(path).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        if pixels.shape[-2:] != (size, size):
            pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        images.append(pixels)
    return torch.cat(images)


def _preview_fps(align_dir: Path) -> Fraction:
    try:
        info = records.load_video_info(align_dir)
    except InputError:  # the preview only: any frame rate will do
        info = None
    return info.fps if info is not None and info.fps > 0 else DEFAULT_PREVIEW_FPS


def run_encode(align_dir: Path, out_dir: Path, encoder, generator, latent_avg, settings: EncodeSettings | None = None,
               frames: tuple[int, int] | None = None) -> EncodeResult:
    """Encode every aligned crop of `align_dir` into out_dir/latents.npy (float32 [N, num_ws, 512]).

    frames: only frames [start, end) (a part of a sharded run: latents.npy then holds end - start rows,
    merge_encode_parts joins the parts). Batches are counted from `start`, so a part that starts on a
    multiple of batch_size runs exactly the unsharded run's batches. No preview in a part.

    encoder: a ReStyleEncoder (any module mapping [B, 6, S, S] to [B, num_ws, 512] works); generator:
    a StyleGAN3 generator (`synthesis(ws, transform=...)`, `num_ws`); latent_avg: [512] tensor. Both
    networks are moved to settings.device and put in eval mode.
    """
    import torch

    from videdit.networks.encoders import average_image, restyle_invert

    settings = settings or EncodeSettings()
    if settings.n_iters < 1 or settings.batch_size < 1 or settings.input_size < 16:
        raise VideditError(f"encode: n_iters and batch_size must be >= 1 and input_size >= 16 "
                           f"(got {settings.n_iters}, {settings.batch_size}, {settings.input_size})")
    align_dir, out_dir = Path(align_dir), Path(out_dir)
    transforms = records.TransformsRecord.load(align_dir / records.TRANSFORMS).require("matrix")
    n_frames = transforms.n_frames
    if transforms.matrix.ndim != 3 or transforms.matrix.shape[1:] != (3, 3) or n_frames == 0:
        raise InputError(f"{align_dir}: 'matrix' has shape {list(transforms.matrix.shape)}, expected [N, 3, 3] with N >= 1")
    aligned = records.frame_paths(align_dir / records.ALIGNED, n_frames)
    n_found = len(list((align_dir / records.ALIGNED).glob("*.png")))
    if n_found != n_frames:
        raise InputError(f"{align_dir}: {n_found} aligned crops but {records.TRANSFORMS} describes {n_frames} frames")
    start, end = (0, n_frames) if frames is None else (int(frames[0]), int(frames[1]))
    if not 0 <= start < end <= n_frames:
        raise InputError(f"encode: frames {start}-{end} outside the video's {n_frames}")
    save_preview = settings.save_preview and frames is None
    unaligned = None
    if save_preview and (align_dir / records.UNALIGNED).is_dir():
        unaligned = records.frame_paths(align_dir / records.UNALIGNED, n_frames)

    device = resolve_device(settings.device)
    encoder = encoder.to(device).eval()
    generator = generator.to(device).eval()
    latent_avg = latent_avg.to(device=device, dtype=torch.float32)
    num_ws = int(generator.num_ws)
    synthesis_transforms = torch.from_numpy(transforms.inverse())

    out_dir.mkdir(parents=True, exist_ok=True)
    latents_path = out_dir / records.LATENTS
    latents = np.lib.format.open_memmap(latents_path, mode="w+", dtype=np.float32, shape=(end - start, num_ws, latent_avg.shape[-1]))
    size = settings.input_size
    avg = average_image(generator, latent_avg, size)
    batch_size = settings.batch_size
    if settings.fit_memory and batch_size > 1:
        from videdit.memory import fit_batch

        first = load_aligned_batch(aligned[start:start + 1], size).to(device)
        batch_size = fit_batch(batch_size, lambda: restyle_invert(
            encoder, generator, first, latent_avg, n_iters=settings.n_iters, avg_image=avg,
            synthesis_transforms=synthesis_transforms[start:start + 1], input_size=size, render_final=False),
            device=str(device), what="encode").batch_size
    batches = [list(range(i, min(i + batch_size, end))) for i in range(start, end, batch_size)]

    preview_path = out_dir / records.PREVIEW if save_preview else None
    writer = None
    if preview_path is not None:
        from videdit.io.writer import VideoWriter

        panels = 1 + settings.n_iters + (1 if unaligned else 0)
        writer = VideoWriter(preview_path, _preview_fps(align_dir), (size * panels, size))

    def load(batch: list[int]):
        images = load_aligned_batch([aligned[i] for i in batch], size)
        extra = load_aligned_batch([unaligned[i] for i in batch], size) if unaligned else None
        return images, extra

    try:
        # Crops of the next batch are decoded in a thread while this one runs.
        with ThreadPoolExecutor(max_workers=1) as pool, progress.bar(end - start, "encode", "frame") as bar:
            pending = pool.submit(load, batches[0])
            for index, batch in enumerate(batches):
                images, unaligned_images = pending.result()
                if index + 1 < len(batches):
                    pending = pool.submit(load, batches[index + 1])
                out = restyle_invert(
                    encoder, generator, images, latent_avg, n_iters=settings.n_iters, avg_image=avg,
                    synthesis_transforms=synthesis_transforms[batch[0]:batch[-1] + 1], input_size=size,
                    render_final=writer is not None,
                )
                latents[batch[0] - start:batch[-1] + 1 - start] = out.codes.to("cpu").numpy()
                if writer is not None:
                    rows = [images] + [p.to("cpu") for p in out.pooled_per_iter]
                    if unaligned_images is not None:
                        rows.append(unaligned_images)
                    for frame in to_uint8(torch.cat(rows, dim=3)):
                        writer.write(frame)
                del out
                bar.update(len(batch))
                log.debug("encode: frames %d-%d of %d", batch[0], batch[-1], n_frames)
        if writer is not None:
            writer.close()
            writer = None
        latents.flush()
    finally:
        if writer is not None:
            writer.close(discard=True)
        del latents
    return EncodeResult(latents_path=latents_path, n_frames=end - start, preview_path=preview_path)


def merge_encode_parts(part_dirs: list[Path], out_dir: Path) -> EncodeResult:
    """out_dir/latents.npy from the parts' latents.npy, in the given (frame) order: the unsharded file's bytes
    (the same header, written the same way, and the same rows)."""
    parts = [records.load_latents(Path(d) / records.LATENTS, mmap=True) for d in part_dirs]
    if not parts:
        raise InputError("encode: no parts to merge")
    n_frames = sum(len(p) for p in parts)
    out_dir = Path(out_dir)
    latents_path = out_dir / records.LATENTS
    latents = np.lib.format.open_memmap(latents_path, mode="w+", dtype=np.float32, shape=(n_frames, *parts[0].shape[1:]))
    row = 0
    for part in parts:
        latents[row:row + len(part)] = part
        row += len(part)
    latents.flush()
    del latents
    return EncodeResult(latents_path=latents_path, n_frames=n_frames)
