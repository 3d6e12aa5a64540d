"""Stitching tuning (after STIT, Tzaban et al., "Stitch it in Time"): a short further tuning of the
generator so that an edited render agrees with the original frame just outside the face mask, while
inside the mask it stays what the edit made. The composite's feathered seam then blends two images that
already agree, so no seam shows even where the edit changes colours near the border.

Per batch of frames, with the edited latents w and the frame transforms:
    boundary loss:  D(G(w) * B, crop * B)      B: a ring just outside the face polygon
    inside loss:    D(G(w) * I, G0(w) * I)      I: the face well inside the polygon; G0 the generator
                                                before stitching (its renders are the edit to keep)
    total = boundary_weight * boundary + inside_weight * inside
D is L2 by default, or any `loss(pred, target) -> (total, parts)` such as
`videdit.losses.make_reconstruction_loss` (L2 + LPIPS). The masks come from the frame's landmarks in
crop coordinates (`videdit.face.paste.face_polygon`, the rule the composite uses). As in PTI the mapping
and the Fourier-feature input layer stay frozen (`videdit.tuning.data.trainable_parameters`).

Unlike STIT, which tunes a copy of the generator for every frame, one generator is tuned per edit over
the whole clip (batches drawn across frames): N times cheaper, and the frames stay consistent.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from videdit.lazy import lazy_module
from videdit.face import paste as C
from videdit.errors import InputError
from videdit.tuning.data import unfreeze_synthesis
from videdit.tuning.loop import LoopConfig, StepOutput, run_loop

torch = lazy_module("torch")  # settings are read without loading torch (start-up)

log = logging.getLogger("videdit")


@dataclass
class StitchSettings:
    """steps / lr / batch_size: Adam on the synthesis network (input layer frozen).
    band: width of the boundary ring outside the face polygon, and of the margin inside it that is left
    free to change, as fractions of the crop side (the composite's default feather is 0.06).
    """

    steps: int = 100
    lr: float = 3e-4
    batch_size: int = 4
    boundary_weight: float = 1.0
    inside_weight: float = 1.0
    band: float = 0.06
    grow_forehead: float = 0.5
    seed: int = 0
    device: str = "cpu"
    progress: bool = False


@dataclass
class StitchResult:
    generator: torch.nn.Module  # the tuned copy (the input generator is left unchanged)
    losses: list[dict[str, float]] = field(default_factory=list)  # per step: total, boundary, inside


def stitch_masks(landmarks_crop: np.ndarray, resolution: int, band: float = 0.06,
                 grow_forehead: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(boundary, inside) float32 [R, R] masks of one frame, from its 68 landmarks in crop pixel coordinates.

    boundary: 1 on a ring `band * R` wide just outside the face polygon (where the composite shows the
    source, or blends it in); inside: 1 deeper than `band * R / 2` inside the polygon (pure render).
    """
    polygon = C.face_polygon(landmarks_crop, grow_forehead)
    centres = np.arange(resolution, dtype=np.float64)
    distance = C.signed_distance_convex(polygon, centres[None, :], centres[:, None], exact_within=2 * band * resolution)
    width = band * resolution
    boundary = ((distance < 0) & (distance > -width)).astype(np.float32)
    inside = (distance > 0.5 * width).astype(np.float32)
    return boundary, inside


def landmarks_in_crop(landmarks: np.ndarray, boxes: np.ndarray, resolution: int) -> np.ndarray:
    """Landmarks [N, 68, 2] in source pixels -> pixel-centre coordinates of each frame's box crop at
    `resolution`. boxes: [4, 2] (one box) or [N, 4, 2] (each frame's)."""
    landmarks = np.asarray(landmarks, np.float64)
    boxes = np.asarray(boxes, np.float64)
    if boxes.ndim == 2:
        return C.CropGeometry.from_quad(boxes).to_crop(landmarks) * resolution - 0.5
    out = np.empty_like(landmarks)
    for box in np.unique(boxes.reshape(len(boxes), -1), axis=0):  # one geometry per shot
        frames = np.all(boxes.reshape(len(boxes), -1) == box, axis=1)
        out[frames] = C.CropGeometry.from_quad(box.reshape(4, 2)).to_crop(landmarks[frames]) * resolution - 0.5
    return out


def _masked_l2(pred: torch.Tensor, target: torch.Tensor):
    loss = torch.mean((pred - target) ** 2)
    return loss, {"l2": loss.detach()}


def _masked_mean_loss(loss_fn, pred, target, mask):
    """loss_fn on masked images, rescaled by the mask's area so small rings weigh like whole images."""
    area = mask.mean().clamp_min(1e-6)
    total, _ = loss_fn(pred * mask, target * mask)
    return total / area


def stitch_tune(
    G: torch.nn.Module,
    ws: np.ndarray | torch.Tensor,
    inv_transforms: np.ndarray | torch.Tensor,
    targets: Callable[[Sequence[int]], torch.Tensor],
    landmarks_crop: np.ndarray,
    settings: StitchSettings | None = None,
    *,
    loss: Callable | None = None,
    frames: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[int, dict], None] | None = None,
) -> StitchResult:
    """Tune a copy of G so that G(ws[i], inv_transforms[i]) matches targets([i]) outside the face of frame i.

    ws: [N, num_ws, w_dim] edited latents; inv_transforms: [N, 3, 3] (what G.synthesis takes);
    targets(indices) -> [B, 3, R, R] in [-1, 1]: the frames' unaligned crops (e.g.
    `videdit.tuning.data.CropFrames(...).batch`); landmarks_crop: [N, 68, 2] in crop pixel coordinates
    (`landmarks_in_crop`); frames: which frames to use (default all; pass those with a face).
    progress(step, losses) runs after every step (steps counted from 0). Runs on the shared loop,
    without checkpoints (a few hundred steps at most).
    """
    settings = settings or StitchSettings()
    device = torch.device(device)
    loss_fn = loss or _masked_l2

    def as_tensor(value) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value.detach().to(torch.float32)
        return torch.from_numpy(np.array(value, dtype=np.float32))  # a copy: memory maps are read-only

    ws, inv = as_tensor(ws), as_tensor(inv_transforms)
    n = ws.shape[0]
    if inv.shape[0] != n or len(landmarks_crop) != n:
        raise InputError(f"stitch: {n} latents but {inv.shape[0]} transforms and {len(landmarks_crop)} landmark sets")
    pool = np.arange(n) if frames is None else np.asarray(list(frames), dtype=np.int64)
    if len(pool) == 0:
        raise InputError("stitch: no frames to tune on")

    reference = copy.deepcopy(G).to(device).eval().requires_grad_(False)
    tuned = copy.deepcopy(G).to(device).train()
    optimizer = torch.optim.Adam(unfreeze_synthesis(tuned), lr=settings.lr)
    resolution = int(tuned.img_resolution)
    mask_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def masks(index: int):
        if index not in mask_cache:
            boundary, inside = stitch_masks(landmarks_crop[index], resolution, settings.band, settings.grow_forehead)
            mask_cache[index] = (torch.from_numpy(boundary), torch.from_numpy(inside))
        return mask_cache[index]

    # Batches are drawn in sequence (not a function of the step): stitching has no checkpoint to resume.
    rng = np.random.default_rng(settings.seed)
    batch_size = max(1, min(settings.batch_size, len(pool)))

    def step(_: int) -> StepOutput:
        index = rng.choice(pool, size=batch_size, replace=False)
        w = ws[index].to(device)
        transform = inv[index].to(device)
        boundary = torch.stack([masks(int(i))[0] for i in index])[:, None].to(device)
        inside = torch.stack([masks(int(i))[1] for i in index])[:, None].to(device)
        target = targets(index).to(device=device, dtype=torch.float32)
        with torch.no_grad():
            edit = reference.synthesis(w, transform=transform)
        pred = tuned.synthesis(w, transform=transform)
        boundary_loss = _masked_mean_loss(loss_fn, pred, target, boundary)
        inside_loss = _masked_mean_loss(loss_fn, pred, edit, inside)
        total = settings.boundary_weight * boundary_loss + settings.inside_weight * inside_loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        return StepOutput(total.item(), {"boundary": boundary_loss.item(), "inside": inside_loss.item()})

    result = StitchResult(tuned)

    def record(steps_done: int, out: StepOutput) -> None:
        losses = {"total": out.loss, **out.parts}
        result.losses.append(losses)
        if progress is not None:
            progress(steps_done - 1, losses)

    run_loop(step, {}, LoopConfig("stitch", settings.steps, seed=settings.seed, progress=settings.progress),
             on_step=record, device=device)
    tuned.eval().requires_grad_(False)
    log.info("stitch: %d steps, boundary loss %.4f -> %.4f", settings.steps,
             result.losses[0]["boundary"] if result.losses else float("nan"),
             result.losses[-1]["boundary"] if result.losses else float("nan"))
    return result


from videdit.layout import stitched_generator_name  # noqa: E402,F401  (the file name lives with the run folder's)
