"""Temporal consistency: flicker of an output video measured against that of its input.

The optical flow between consecutive *input* frames (OpenCV's Farneback) says where each pixel
should come from; warping the previous *output* frame with it and comparing with the current output
frame gives the warping error (Lai et al., "Learning Blind Video Temporal Consistency", 2018).
The same error of the input itself is the floor set by flow inaccuracy and real change, so the ratio
output / input is the amount of flicker the pipeline adds (1 = none). Errors are mean absolute
differences in 8-bit levels over the pixels the flow can trust (forward-backward consistent, inside
the frame).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass
class Flow:
    """Backward flow of one frame pair, with the mask of pixels it tracks reliably."""

    map_x: np.ndarray  # float32 [H, W]: x in the previous frame of each pixel of the current frame
    map_y: np.ndarray
    valid: np.ndarray  # bool [H, W]


def to_gray(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def resize_to(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize to (width, height) when it differs."""
    if size is None or (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize(tuple(size), Image.BILINEAR))


def farneback(first_gray: np.ndarray, second_gray: np.ndarray) -> np.ndarray:
    """Dense flow f with first(y, x) ~ second(y + f_y, x + f_x)."""
    import cv2

    # Pyramid of 4 levels at half scale copes with ~30 px motion at 256 px; 15 px windows suit faces.
    return cv2.calcOpticalFlowFarneback(first_gray, second_gray, None, 0.5, 4, 15, 3, 5, 1.2, 0)


def backward_flow(previous: np.ndarray, current: np.ndarray) -> Flow:
    """Flow from `current` back to `previous`, masked by a forward-backward consistency check."""
    import cv2

    prev_gray, cur_gray = to_gray(previous), to_gray(current)
    back = farneback(cur_gray, prev_gray)  # current pixel -> position in previous
    forward = farneback(prev_gray, cur_gray)  # previous pixel -> position in current
    height, width = cur_gray.shape
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x, map_y = grid_x + back[..., 0], grid_y + back[..., 1]
    # Following the backward flow and then the forward flow should come home; occlusions do not.
    forward_there = cv2.remap(forward, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    round_trip = back + forward_there
    tolerance = 0.01 * ((back**2).sum(-1) + (forward_there**2).sum(-1)) + 0.5
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    valid = inside & ((round_trip**2).sum(-1) < tolerance)
    return Flow(map_x, map_y, valid)


def warp(image: np.ndarray, flow: Flow) -> np.ndarray:
    import cv2

    return cv2.remap(np.ascontiguousarray(image), flow.map_x, flow.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def warping_error(previous: np.ndarray, current: np.ndarray, flow: Flow) -> float:
    """Mean absolute difference (8-bit levels) between `current` and `previous` warped by `flow`."""
    if not flow.valid.any():
        return float("nan")
    diff = np.abs(current.astype(np.float32) - warp(previous, flow).astype(np.float32)).mean(-1)
    return float(diff[flow.valid].mean())


def frame_difference(previous: np.ndarray, current: np.ndarray) -> float:
    """Mean absolute difference (8-bit levels) between consecutive frames, no motion compensation."""
    return float(np.abs(current.astype(np.float32) - previous.astype(np.float32)).mean())


def local_std(values: np.ndarray) -> float:
    """Frame-to-frame spread: RMS of first differences / sqrt(2).

    Equals the standard deviation for independent per-frame noise, and ignores slow drift (which the
    global standard deviation counts).
    """
    values = np.asarray(values, dtype=np.float64)
    steps = np.diff(values)
    steps = steps[np.isfinite(steps)]
    if steps.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean(steps**2) / 2.0))


def global_std(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.std()) if values.size else float("nan")


def safe_ratio(numerator: float, denominator: float) -> float:
    if not (np.isfinite(numerator) and np.isfinite(denominator)) or denominator <= 1e-9:
        return float("nan")
    return float(numerator / denominator)


def identity_consistency(embeddings: list[np.ndarray | None]) -> dict[str, float]:
    """How steady the identity of one video is, from its per-frame embeddings.

    `adjacent_similarity`: mean cosine similarity of consecutive frames (local);
    `to_mean_std`: standard deviation over the video of each frame's similarity to the mean
    embedding (global), `to_mean_local_std`: the same series' frame-to-frame spread.
    """
    from videdit.evaluate.identity import cosine_similarity

    adjacent = [cosine_similarity(a, b) for a, b in zip(embeddings[:-1], embeddings[1:])]
    present = [e / np.linalg.norm(e) for e in embeddings if e is not None]
    if not present:
        nan = float("nan")
        return {"adjacent_similarity": nan, "to_mean_std": nan, "to_mean_local_std": nan}
    mean = np.mean(present, axis=0)
    to_mean = np.array([cosine_similarity(e, mean) for e in embeddings])
    adjacent = np.array(adjacent, dtype=np.float64)
    return {
        "adjacent_similarity": float(np.nanmean(adjacent)) if np.isfinite(adjacent).any() else float("nan"),
        "to_mean_std": global_std(to_mean),
        "to_mean_local_std": local_std(to_mean),
    }
