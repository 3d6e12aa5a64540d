"""Pure functions that put a rendered face crop back into its source frame.

Geometry (the pixel-centre convention, shared with `videdit.face.alignment`):

* Source pixel coordinates are continuous (x, y) with the centre of pixel (column c, row r) at
  (c, r): the convention of the landmark detectors and of the FFHQ quads.
* The crop of a quad [TL, BL, BR, TR] is the square image whose pixel (column j, row i) has its
  centre at the normalised crop coordinates (u, v) = ((j + 0.5) / S, (i + 0.5) / S) in [0, 1]^2, and
  (u, v) maps onto the quad by  p = TL + u * (TR - TL) + v * (BL - TL)  (affine: the quad is a square).
* A render of generator resolution R expanded by (left, right, top, bottom) render pixels is a
  (top + R + bottom) x (left + R + right) image whose unexpanded part sits at offset (left, top); its
  pixel (j, i) has its centre at u = (j - left + 0.5) / R, v = (i - top + 0.5) / R.

Everything per frame is computed only inside the region of interest (ROI): the frame pixels the
(expanded) quad covers, so cost depends on the face size, not on the frame size.

Images are numpy uint8 / float32 HWC RGB; torch is used for resampling only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# 68-point landmark indices (iBUG / dlib order).
JAW = slice(0, 17)
BROWS = slice(17, 27)
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
MOUTH_CORNERS = (48, 54)
CHIN = 8

Expand = tuple[int, int, int, int]  # (left, right, top, bottom) in render pixels

# The render is prefiltered down to this many samples per frame pixel before it is sampled.
ANTIALIAS_OVERSAMPLING = 2.0
# ... when that shrinks it by more than this (below, the little extra detail costs less than the filter).
ANTIALIAS_MIN_SHRINK = 1.25


# ----------------------------------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True)
class CropGeometry:
    """The affine map from normalised crop coordinates (u, v) to source pixels, p = origin + u*axis_u + v*axis_v."""

    origin: np.ndarray  # [2] top-left corner of the quad (an edge, not a pixel centre, of the crop)
    axis_u: np.ndarray  # [2] top-left -> top-right
    axis_v: np.ndarray  # [2] top-left -> bottom-left

    @classmethod
    def from_quad(cls, quad: np.ndarray, tolerance: float = 1e-3) -> "CropGeometry":
        """From an FFHQ-order quad [TL, BL, BR, TR]; it must be a parallelogram (the box quads are squares)."""
        quad = np.asarray(quad, dtype=np.float64).reshape(4, 2)
        top_left, bottom_left, bottom_right, top_right = quad
        axis_u = top_right - top_left
        axis_v = bottom_left - top_left
        side = max(np.linalg.norm(axis_u), np.linalg.norm(axis_v))
        if side <= 0 or not np.isfinite(quad).all():
            raise ValueError(f"degenerate crop quad {quad.tolist()}")
        if np.linalg.norm(top_left + axis_u + axis_v - bottom_right) > tolerance * side:
            raise ValueError(f"crop quad is not a parallelogram: {quad.tolist()}")
        if abs(_cross(axis_u, axis_v)) < 1e-9 * side * side:
            raise ValueError(f"degenerate crop quad {quad.tolist()}")
        return cls(top_left, axis_u, axis_v)

    @property
    def side_px(self) -> float:
        """Mean side length of the quad in source pixels."""
        return 0.5 * float(np.linalg.norm(self.axis_u) + np.linalg.norm(self.axis_v))

    def to_source(self, uv: np.ndarray) -> np.ndarray:
        """Normalised crop coordinates [..., 2] -> source pixel coordinates [..., 2]."""
        uv = np.asarray(uv, dtype=np.float64)
        return self.origin + uv[..., :1] * self.axis_u + uv[..., 1:2] * self.axis_v

    def to_crop(self, xy: np.ndarray) -> np.ndarray:
        """Source pixel coordinates [..., 2] -> normalised crop coordinates [..., 2]."""
        basis = np.stack([self.axis_u, self.axis_v], axis=1)  # columns: p - origin = basis @ (u, v)
        return (np.asarray(xy, dtype=np.float64) - self.origin) @ np.linalg.inv(basis).T

    def render_quad(self, resolution: int, expand: Expand = (0, 0, 0, 0)) -> np.ndarray:
        """The quad [TL, BL, BR, TR] in source pixels that an (expanded) render of `resolution` covers."""
        left, right, top, bottom = expand
        u0, u1 = -left / resolution, 1.0 + right / resolution
        v0, v1 = -top / resolution, 1.0 + bottom / resolution
        corners_uv = np.array([[u0, v0], [u0, v1], [u1, v1], [u1, v0]])
        return self.to_source(corners_uv)


@dataclass(frozen=True)
class Roi:
    """A rectangle of frame pixels: rows y0:y1, columns x0:x1."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def empty(self) -> bool:
        return self.x1 <= self.x0 or self.y1 <= self.y0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    def pixel_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Source coordinates (x [1,w], y [h,1]) of the ROI's pixel centres, broadcastable."""
        xs = np.arange(self.x0, self.x1, dtype=np.float64)[None, :]
        ys = np.arange(self.y0, self.y1, dtype=np.float64)[:, None]
        return xs, ys


def roi_of_polygon(polygon: np.ndarray, frame_hw: tuple[int, int], margin: float = 1.0) -> Roi:
    """The frame pixels whose centres lie within `margin` of the polygon's bounding box, clipped to the frame."""
    polygon = np.asarray(polygon, dtype=np.float64)
    height, width = frame_hw
    x0 = max(0, int(np.floor(polygon[:, 0].min() - margin)))
    y0 = max(0, int(np.floor(polygon[:, 1].min() - margin)))
    x1 = min(width, int(np.ceil(polygon[:, 0].max() + margin)) + 1)
    y1 = min(height, int(np.ceil(polygon[:, 1].max() + margin)) + 1)
    return Roi(x0, y0, max(x0, x1), max(y0, y1))


def warp_render_to_frame(
    render: np.ndarray,
    geometry: CropGeometry,
    resolution: int,
    roi: Roi,
    expand: Expand = (0, 0, 0, 0),
    antialias: bool = True,
) -> np.ndarray:
    """Sample an (expanded) render at the centres of the ROI's frame pixels: float32 [h, w, C] in the render's scale.

    Bicubic interpolation (sharper than bilinear: the crop was already resampled once from the frame).
    When the render has more than twice as many pixels as its footprint in the frame, it is first
    shrunk with an antialiasing bicubic filter to twice the footprint's size: content the frame cannot
    show is removed without the extra blur of filtering all the way down to the frame's rate. The
    resize keeps the normalised coordinates (edges map to edges), so sampling positions do not change.
    Pixels outside the render are filled from its border (the masks give them weight 0).
    """
    import torch
    import torch.nn.functional as F

    if roi.empty:
        return np.zeros((*roi.shape, render.shape[2]), np.float32)
    left, right, top, bottom = expand
    render_h, render_w = render.shape[:2]
    if (render_h, render_w) != (top + resolution + bottom, left + resolution + right):
        raise ValueError(
            f"render is {render_w}x{render_h}, expected {left + resolution + right}x{top + resolution + bottom} "
            f"for resolution {resolution} expanded by {expand}"
        )
    image = torch.from_numpy(np.ascontiguousarray(render, dtype=np.float32)).permute(2, 0, 1)[None]

    shrink = resolution / geometry.side_px / ANTIALIAS_OVERSAMPLING  # > 1: more detail than needed
    if antialias and shrink > ANTIALIAS_MIN_SHRINK:
        size = (max(1, round(render_h / shrink)), max(1, round(render_w / shrink)))
        image = F.interpolate(image, size=size, mode="bicubic", antialias=True, align_corners=False)

    xs, ys = roi.pixel_centres()
    xy = np.stack(np.broadcast_arrays(xs, ys), axis=-1)
    uv = geometry.to_crop(xy)
    # Render edge coordinates (0 .. width) -> grid_sample's [-1, 1] with align_corners=False.
    grid_x = 2.0 * (uv[..., 0] * resolution + left) / render_w - 1.0
    grid_y = 2.0 * (uv[..., 1] * resolution + top) / render_h - 1.0
    grid = torch.from_numpy(np.stack([grid_x, grid_y], axis=-1).astype(np.float32))[None]
    sampled = F.grid_sample(image, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return sampled[0].permute(1, 2, 0).numpy()


def crop_from_frame(frame: np.ndarray, quad: np.ndarray, crop_size: int) -> np.ndarray:
    """Reference crop of a quad (bilinear, no antialias) in this module's convention: float32 [S, S, C].

    Used by tests and benchmarks to check the warp back; the pipeline's crops come from
    `videdit.face.alignment`.
    """
    import torch
    import torch.nn.functional as F

    geometry = CropGeometry.from_quad(quad)
    centres = (np.arange(crop_size, dtype=np.float64) + 0.5) / crop_size
    uv = np.stack(np.meshgrid(centres, centres, indexing="xy"), axis=-1)
    xy = geometry.to_source(uv)
    height, width = frame.shape[:2]
    # Source pixel centre c sits at edge coordinate c + 0.5.
    grid_x = 2.0 * (xy[..., 0] + 0.5) / width - 1.0
    grid_y = 2.0 * (xy[..., 1] + 0.5) / height - 1.0
    grid = torch.from_numpy(np.stack([grid_x, grid_y], axis=-1).astype(np.float32))[None]
    image = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32)).permute(2, 0, 1)[None]
    sampled = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled[0].permute(1, 2, 0).numpy()


# ----------------------------------------------------------------------------------------------------
# Masks


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull of 2-D points, counter-clockwise in a y-up frame (clockwise on screen), no repeats."""
    pts = np.unique(np.asarray(points, dtype=np.float64).reshape(-1, 2), axis=0)  # sorted by x, then y
    if len(pts) < 3:
        return pts

    def half(sequence: np.ndarray) -> list[np.ndarray]:
        chain: list[np.ndarray] = []
        for p in sequence:
            while len(chain) >= 2 and _cross(chain[-1] - chain[-2], p - chain[-2]) <= 0:
                chain.pop()
            chain.append(p)
        return chain

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def signed_distance_convex(
    polygon: np.ndarray, xs: np.ndarray, ys: np.ndarray, exact_within: float = np.inf
) -> np.ndarray:
    """Signed Euclidean distance (positive inside) from points (xs, ys, broadcast) to a convex polygon's border.

    Outside points farther than `exact_within` from every edge line get the (smaller) largest edge-line
    distance instead of the exact one: enough for masks that are 0 beyond that distance, and much cheaper.
    """
    polygon = np.asarray(polygon, dtype=np.float64)
    if len(polygon) < 3:
        raise ValueError("a mask polygon needs at least 3 vertices")
    starts, ends = polygon, np.roll(polygon, -1, axis=0)
    edges = ends - starts
    area2 = float(np.sum(starts[:, 0] * ends[:, 1] - ends[:, 0] * starts[:, 1]))
    if abs(area2) < 1e-12:
        raise ValueError("degenerate mask polygon")
    lengths = np.maximum(np.linalg.norm(edges, axis=1), 1e-12)
    # Outward normals: for a positive (x-right, y-down: clockwise on screen) orientation, (dy, -dx).
    normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1) / lengths[:, None]
    if area2 < 0:
        normals = -normals
    # float32 and unbroadcast coordinates (a row of x and a column of y for an image): each edge then
    # costs one full-size add and max. float32 keeps 1e-3 px at 8k-pixel coordinates.
    xs, ys = np.asarray(xs, np.float32), np.asarray(ys, np.float32)
    shape = np.broadcast_shapes(xs.shape, ys.shape)
    max_line = np.full(shape, -np.inf, np.float32)
    for start, normal in zip(starts, normals):
        offset = np.float32(-(start[0] * normal[0] + start[1] * normal[1]))
        np.maximum(max_line, xs * np.float32(normal[0]) + (ys * np.float32(normal[1]) + offset), out=max_line)
    # Inside a convex polygon the distance to the border is the distance to the nearest edge line;
    # outside, it is the distance to the nearest edge segment (>= every edge-line distance).
    signed = np.asarray(-max_line)
    near_outside = (max_line > 0) & (max_line < exact_within)
    if near_outside.any():
        px = np.broadcast_to(xs, shape)[near_outside].astype(np.float64)
        py = np.broadcast_to(ys, shape)[near_outside].astype(np.float64)
        min_segment_sq = np.full(px.shape, np.inf)
        for start, edge, length in zip(starts, edges, lengths):
            dx, dy = px - start[0], py - start[1]
            t = np.clip((dx * edge[0] + dy * edge[1]) / (length * length), 0.0, 1.0)
            min_segment_sq = np.minimum(min_segment_sq, (dx - t * edge[0]) ** 2 + (dy - t * edge[1]) ** 2)
        signed[near_outside] = -np.sqrt(min_segment_sq)
    return signed


def smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def feather(signed_distance: np.ndarray, width: float, inward: bool = False) -> np.ndarray:
    """Soft mask from a signed distance (positive inside): a smoothstep ramp `width` pixels wide.

    Centred on the border by default (0 from width/2 outside, 1 from width/2 inside); `inward` puts the
    whole ramp inside (0 on the border), for the edge of the render's footprint.
    """
    if width <= 0:
        return (signed_distance >= 0).astype(np.float32)
    offset = 0.0 if inward else 0.5 * width
    return smoothstep((signed_distance + offset) / width).astype(np.float32)


def face_polygon(landmarks: np.ndarray, grow_forehead: float = 0.5) -> np.ndarray:
    """Convex hull of the jaw and brows, grown upward to cover the forehead and hair line.

    The brows are copied upward (along the eyes-minus-mouth direction) by `grow_forehead` times the
    brow-to-chin distance: a forehead is about half that high.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    eyes = 0.5 * (landmarks[LEFT_EYE].mean(0) + landmarks[RIGHT_EYE].mean(0))
    mouth = 0.5 * (landmarks[MOUTH_CORNERS[0]] + landmarks[MOUTH_CORNERS[1]])
    up = eyes - mouth
    up /= max(np.linalg.norm(up), 1e-9)
    brows = landmarks[BROWS]
    height = np.linalg.norm(brows.mean(0) - landmarks[CHIN])
    points = np.concatenate([landmarks[JAW], brows, brows + grow_forehead * height * up])
    return convex_hull(points)


# ----------------------------------------------------------------------------------------------------
# Colour matching and blending


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor x factor blocks of an [H, W, C] array (the last partial blocks average what they hold)."""
    height, width = image.shape[:2]
    pad_h, pad_w = -height % factor, -width % factor
    padded = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
    counts = np.pad(np.ones((height, width, 1), image.dtype), ((0, pad_h), (0, pad_w), (0, 0)))
    shape = (padded.shape[0] // factor, factor, padded.shape[1] // factor, factor)
    sums = padded.reshape(*shape, -1).sum(axis=(1, 3))
    return sums / counts.reshape(*shape, 1).sum(axis=(1, 3))


def _linear_taps(n_out: int, n_in: int, factor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D linear interpolation from block centres ((i + 0.5) * factor - 0.5), clamped: (lower, upper, weight of upper)."""
    position = np.clip((np.arange(n_out) + 0.5) / factor - 0.5, 0.0, n_in - 1.0)
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, n_in - 1)
    return lower, upper, (position - lower).astype(np.float32)


def _upsample_bilinear(coarse: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of block means [h, w, C] back to the full grid [H, W, C] (gathers, no BLAS)."""
    coarse = coarse.astype(np.float32)
    lower, upper, weight = _linear_taps(shape[0], coarse.shape[0], factor)
    rows = coarse[lower] + (coarse[upper] - coarse[lower]) * weight[:, None, None]
    lower, upper, weight = _linear_taps(shape[1], coarse.shape[1], factor)
    return rows[:, lower] + (rows[:, upper] - rows[:, lower]) * weight[None, :, None]


def color_correction(
    source: np.ndarray,
    render: np.ndarray,
    weight: np.ndarray,
    sigma_px: float,
) -> np.ndarray:
    """A smooth per-channel offset field that makes the render's low frequencies agree with the source's.

    Normalised convolution of (source - render) over the pixels where `weight` > 0 (a band around the
    mask border): offset = G*(w (s - r)) / G*(w), with a Gaussian G of `sigma_px`, computed on a grid
    about sigma/3 coarser and upsampled. Far from the band it tends to the band's mean offset. Returns
    float32 [h, w, C] to add to the render. (numpy/scipy: these small arrays are faster there than in
    a multi-threaded torch.)
    """
    from scipy.ndimage import gaussian_filter

    height, width = source.shape[:2]
    w = np.asarray(weight, np.float32)[..., None]
    total = float(w.sum())
    if total <= 0:
        return np.zeros(source.shape, np.float32)
    difference = np.asarray(source, np.float32) - np.asarray(render, np.float32)
    mean_offset = (difference * w).sum((0, 1)) / total

    factor = max(1, int(sigma_px / 3))
    stack = np.concatenate([difference * w, w], axis=2)
    coarse = _block_mean(stack, factor) if factor > 1 else stack
    sigma = max(sigma_px / factor, 0.5)
    blurred = gaussian_filter(coarse, sigma=(sigma, sigma, 0), mode="constant", truncate=3.0)
    # A small prior weight pulls the field to the mean offset where the band is far away.
    prior = 1e-3
    offset = (blurred[..., :-1] + prior * mean_offset) / (blurred[..., -1:] + prior)
    if factor > 1:
        offset = _upsample_bilinear(offset, factor, (height, width))
    return offset.astype(np.float32)


def blend(source: np.ndarray, render: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """source + alpha * (render - source), rounded to uint8; where alpha == 0 that is the source, exactly."""
    src = np.asarray(source, np.float32)
    mixed = np.asarray(render, np.float32) - src
    mixed *= np.asarray(alpha, np.float32)[..., None]
    mixed += src
    np.rint(mixed, out=mixed)
    np.clip(mixed, 0, 255, out=mixed)
    return mixed.astype(np.uint8)


def seam_energy(image: np.ndarray, alpha: np.ndarray, sigma_px: float = 0.0,
                low: float = 0.02, high: float = 0.98) -> float:
    """Mean squared colour gradient across the mask border, over the feather band (low < alpha < high).

    "Across" is the direction of the mask's gradient: a visible seam is a step along it. The image is
    first smoothed with a Gaussian of `sigma_px` (the seam is a feature at the feather's scale; image
    texture is not), then differentiated with central differences; the squares are summed over the
    RGB channels. 0 when the band is empty.
    """
    from scipy.ndimage import gaussian_filter

    image = np.asarray(image, np.float32)
    alpha = np.asarray(alpha, np.float32)
    if sigma_px > 0:
        image = gaussian_filter(image, sigma=(sigma_px, sigma_px, 0), mode="nearest")
    ay, ax = np.gradient(alpha)
    norm = np.hypot(ax, ay)
    band = (alpha > low) & (alpha < high) & (norm > 1e-6)
    if not band.any():
        return 0.0
    nx, ny = ax[band] / norm[band], ay[band] / norm[band]
    total = 0.0
    for channel in range(image.shape[2]):
        gy, gx = np.gradient(image[..., channel])
        across = gx[band] * nx + gy[band] * ny
        total += float(np.mean(across.astype(np.float64) ** 2))
    return total


def seam_factor(composite: np.ndarray, source: np.ndarray, alpha: np.ndarray, sigma_px: float = 0.0) -> float:
    """Seam energy of the composite over that of the source on the same band (1 = no added seam)."""
    reference = seam_energy(source, alpha, sigma_px)
    value = seam_energy(composite, alpha, sigma_px)
    if reference <= 0:
        return 1.0 if value <= 0 else float("inf")
    return value / reference


# ----------------------------------------------------------------------------------------------------
# One frame


@dataclass(frozen=True)
class BlendMask:
    """The soft mask of one frame, over its region of interest (the render's footprint)."""

    roi: Roi
    alpha: np.ndarray  # float32 [h, w] in [0, 1]; 0 wherever the source must stay untouched
    match_band: np.ndarray  # bool [h, w]: where the render's colours are matched to the source's
    side_px: float  # side of the crop box in frame pixels (sets the colour-matching scale)
    feather_px: float  # width of the soft edge in frame pixels

    @property
    def seam_sigma(self) -> float:
        """Smoothing scale for measuring the seam: half the feather (at least one pixel)."""
        return max(0.5 * self.feather_px, 1.0)

    def full(self, frame_hw: tuple[int, int]) -> np.ndarray:
        """The mask over the whole frame, float32 [H, W]."""
        out = np.zeros(frame_hw, np.float32)
        out[self.roi.slices] = self.alpha
        return out


def make_blend_mask(
    frame_hw: tuple[int, int],
    quad: np.ndarray,
    resolution: int,
    *,
    landmarks: np.ndarray | None = None,
    expand: Expand = (0, 0, 0, 0),
    mask: str = "landmarks",
    feather_px: float | None = None,
    grow_forehead: float = 0.5,
) -> BlendMask:
    """The blend mask of a frame.

    `mask="landmarks"`: the face polygon of the frame's landmarks (see `face_polygon`), feathered over
    `feather_px` frame pixels centred on its border; `mask="box"`: the whole render footprint. Either
    is multiplied by the footprint of the (expanded) render feathered inward and kept one pixel off its
    edge, so the render is only used where it exists and every pixel outside the mask keeps the
    source's exact value. `feather_px=None`: 6 % of the box side.
    """
    geometry = CropGeometry.from_quad(quad)
    if feather_px is None:
        feather_px = 0.06 * geometry.side_px
    feather_px = float(feather_px)
    footprint = geometry.render_quad(resolution, expand)
    roi = roi_of_polygon(footprint, frame_hw)
    if roi.empty:
        empty = np.zeros(roi.shape, np.float32)
        return BlendMask(roi, empty, empty.astype(bool), geometry.side_px, feather_px)

    xs, ys = roi.pixel_centres()
    band_width = max(feather_px, 2.0)
    # One pixel of margin: bilinear taps at the footprint's edge would reach past the render.
    inside_footprint = signed_distance_convex(footprint, xs, ys, exact_within=0.0) - 1.0
    alpha = feather(inside_footprint, feather_px, inward=True)
    if mask == "landmarks":
        if landmarks is None or not np.isfinite(landmarks).all():
            raise ValueError("mask='landmarks' needs the frame's 68 landmarks")
        polygon = face_polygon(landmarks, grow_forehead)
        face_distance = signed_distance_convex(polygon, xs, ys, exact_within=band_width + 1.0)
        alpha = alpha * feather(face_distance, feather_px)
        # Both sides of the face border, where the render is fully valid.
        match_band = (np.abs(face_distance) <= band_width) & (inside_footprint >= feather_px)
    elif mask == "box":
        match_band = (inside_footprint >= 0.0) & (inside_footprint <= 2.0 * band_width)
    else:
        raise ValueError(f"unknown mask {mask!r}; expected 'landmarks' or 'box'")
    return BlendMask(roi, alpha.astype(np.float32), match_band, geometry.side_px, feather_px)


def composite_frame(
    frame: np.ndarray,
    render: np.ndarray,
    quad: np.ndarray,
    resolution: int,
    blend_mask: BlendMask,
    *,
    expand: Expand = (0, 0, 0, 0),
    color_match: bool = True,
    color_sigma: float = 0.1,
) -> np.ndarray:
    """Blend a rendered crop into its source frame through `blend_mask`: uint8 [H, W, 3].

    With `color_match`, the render first gets the smooth colour offset that makes it agree with the
    source around the mask border (`color_correction`, Gaussian of `color_sigma` times the box side).
    """
    roi = blend_mask.roi
    out = frame.copy()
    if roi.empty or not (blend_mask.alpha > 0).any():
        return out
    geometry = CropGeometry.from_quad(quad)
    source = frame[roi.slices]
    warped = warp_render_to_frame(render, geometry, resolution, roi, expand)
    if color_match and blend_mask.match_band.any():
        warped = warped + color_correction(source, warped, blend_mask.match_band,
                                           sigma_px=color_sigma * blend_mask.side_px)
    out[roi.slices] = blend(source, warped, blend_mask.alpha)
    return out
