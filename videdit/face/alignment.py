"""Alignment geometry: FFHQ-style quads, cropping a quad to a square, and crop <-> source mappings,
and the per-frame transforms (rotation, translation) that carry an aligned crop onto the unaligned one.

Coordinates
-----------
Points (landmarks, quads) are (x, y) in *pixel-centre* coordinates: (0, 0) is the centre of the
top-left pixel, x to the right, y down. This is what the landmark detectors return.

A quad is float[4, 2]: the source-image positions of the crop's corners, in the order
top-left, bottom-left, bottom-right, top-right (as the crop is displayed). The crop's square spans
the quad exactly: the outer corner of crop pixel (0, 0) is quad[0], of the last pixel is quad[2].
With `size` the crop side, a point p of the crop maps to the source as

    source = crop_to_source_matrix(quad, size) @ [p_x, p_y, 1]

and back with source_to_crop_matrix. Both matrices are 3x3 affine, in pixel-centre coordinates on
both sides, so they compose with other pixel-space matrices directly. (To use them with
torch.grid_sample(align_corners=False) or PIL, which count from the pixel's outer corner, add 0.5 to
both sides: see `to_edge_coordinates`.)

Transforms
----------
`frame_transform` follows the official stylegan3-editing convention: eye centres are the means of
landmarks 36-41 (left eye, as displayed) and 42-47; r is the angle (degrees, counter-clockwise as
displayed positive, in (-180, 180]) that turns the aligned crop's eye line onto the unaligned crop's;
t = (left eye in the unaligned crop - the aligned crop's left eye rotated by r about the crop centre)
/ crop size, x right and y down; matrix = make_transform(t, r) = [[c, s, tx], [-s, c, ty], [0, 0, 1]].
The rotation is a signed atan2 (no arccos, so no NaN for parallel eye lines) and everything is
computed from the landmarks and the crop geometry (no re-detection on rotated crops).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
MOUTH_LEFT, MOUTH_RIGHT = 48, 54


# ----------------------------------------------------------------------------------------------
# quads


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) eye centres (as displayed) of 68-point landmarks [..., 68, 2]."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    return landmarks[..., LEFT_EYE, :].mean(axis=-2), landmarks[..., RIGHT_EYE, :].mean(axis=-2)


def ffhq_quad(landmarks: np.ndarray, rule: str = "eyes") -> np.ndarray:
    """FFHQ-style alignment quad float[4, 2] from 68 landmarks.

    The quad is a square centred a tenth of the way from the eyes' midpoint to the mouth, turned so
    that its x axis follows the eye line bent by the eye-mouth direction. Its half side is
    2 * eye distance for rule "eyes" (stylegan3-editing's video code), or
    max(2 * eye distance, 1.8 * eye-to-mouth distance) for rule "ffhq" (the FFHQ data set).
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    eye_left, eye_right = eye_centres(landmarks)
    eye_mid = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_mid = (landmarks[MOUTH_LEFT] + landmarks[MOUTH_RIGHT]) / 2
    eye_to_mouth = mouth_mid - eye_mid

    # x: the eye line, averaged with the eye-mouth direction turned a quarter to the right.
    x = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    x /= np.hypot(*x)
    half_side = 2.0 * np.hypot(*eye_to_eye)
    if rule == "ffhq":
        half_side = max(half_side, 1.8 * np.hypot(*eye_to_mouth))
    elif rule != "eyes":
        raise ValueError(f"unknown quad rule {rule!r} (eyes, ffhq)")
    x *= half_side
    y = np.array([-x[1], x[0]])  # x turned a quarter clockwise as displayed: points down the face
    centre = eye_mid + 0.1 * eye_to_mouth
    return np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])


def quad_side(quad: np.ndarray) -> float:
    """Mean side length of a quad, in source pixels."""
    quad = np.asarray(quad, dtype=np.float64)
    return float((np.hypot(*(quad[3] - quad[0])) + np.hypot(*(quad[1] - quad[0]))) / 2)


def quad_centre(quad: np.ndarray) -> np.ndarray:
    return np.asarray(quad, dtype=np.float64).mean(axis=0)


# ----------------------------------------------------------------------------------------------
# crop <-> source


def to_edge_coordinates(matrix: np.ndarray) -> np.ndarray:
    """The same mapping as `matrix` (pixel-centre coordinates on both sides) for coordinates that
    count from the pixel's outer corner (PIL, grid_sample with align_corners=False)."""
    shift = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    unshift = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
    return shift @ np.asarray(matrix, dtype=np.float64) @ unshift


def crop_to_source_matrix(quad: np.ndarray, size: int) -> np.ndarray:
    """3x3 affine taking crop pixel-centre coordinates (x, y) to source pixel-centre coordinates."""
    quad = np.asarray(quad, dtype=np.float64)
    # In corner-based coordinates the crop square [0, size]^2 maps onto the quad's outer corners,
    # which are quad + 0.5 (the quad is given in pixel-centre coordinates).
    origin = quad[0] + 0.5
    x_axis = (quad[3] - quad[0]) / size
    y_axis = (quad[1] - quad[0]) / size
    edge = np.array([[x_axis[0], y_axis[0], origin[0]],
                     [x_axis[1], y_axis[1], origin[1]],
                     [0.0, 0.0, 1.0]])
    unshift = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
    shift = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    return unshift @ edge @ shift


def source_to_crop_matrix(quad: np.ndarray, size: int) -> np.ndarray:
    """3x3 affine taking source pixel-centre coordinates to crop pixel-centre coordinates."""
    return np.linalg.inv(crop_to_source_matrix(quad, size))


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3x3 affine to points [..., 2]."""
    points = np.asarray(points, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def source_to_crop(points: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """Source points [..., 2] -> their positions in the crop of `quad` at `size`."""
    return apply_matrix(source_to_crop_matrix(quad, size), points)


def crop_to_source(points: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """Crop points [..., 2] -> their positions in the source image."""
    return apply_matrix(crop_to_source_matrix(quad, size), points)


def _pad_softly(region: np.ndarray, pad: tuple[int, int, int, int], quad_px: float) -> np.ndarray:
    """Pad region (left, top, right, bottom) by mirroring, fading the mirrored part towards a blur and
    then the region's median colour with the distance from the real pixels (FFHQ-style padding, so
    that faces near the frame edge get a plausible background instead of black). The blur is 2% of
    the quad's side; it is complete 10% of the side away from the frame, the median colour at 30%."""
    from scipy.ndimage import gaussian_filter

    left, top, right, bottom = pad
    height, width = region.shape[:2]
    mode = "reflect" if min(height, width) > 1 else "edge"
    padded = np.pad(region.astype(np.float32), ((top, bottom), (left, right), (0, 0)), mode=mode)
    ys = np.arange(padded.shape[0], dtype=np.float32)[:, None]
    xs = np.arange(padded.shape[1], dtype=np.float32)[None, :]
    outside = np.maximum(np.maximum(left - xs, xs - (left + width - 1)), np.maximum(top - ys, ys - (top + height - 1)))
    blur_px = max(0.02 * quad_px, 1.0)
    outside = np.maximum(outside, 0.0) / max(0.3 * quad_px, 1.0)
    to_blur = np.clip(outside * 3.0, 0.0, 1.0)[..., None]
    to_median = np.clip(outside, 0.0, 1.0)[..., None]
    blurred = gaussian_filter(padded, sigma=(blur_px, blur_px, 0))
    padded += (blurred - padded) * to_blur
    padded += (np.median(region.reshape(-1, region.shape[2]), axis=0) - padded) * to_median
    return np.clip(np.rint(padded), 0, 255).astype(np.uint8)


def quad_to_crop(frame: np.ndarray, quad: np.ndarray, size: int, exact_shrink: bool = False,
                 fast_warp: bool = False) -> np.ndarray:
    """Crop the quad of a uint8 HWC frame to a size x size uint8 image (bilinear, antialiased).

    A quad much larger than the output is first shrunk by an integer factor with an area filter, as
    the FFHQ script does, so the bilinear warp never skips source pixels. With exact_shrink, any quad
    larger than the output is shrunk by the exact factor (PIL's antialiased bilinear resize) instead:
    for crops far smaller than the face (the encoder's 256 px), where the integer rule would leave up to
    2x to a plain bilinear warp. Parts of the quad outside the frame are filled by mirroring the frame,
    fading to a blur (see _pad_softly). The final bilinear warp is PIL's (as the published code cuts), or
    with fast_warp OpenCV's: about 7x faster at 1024 px, within one 8-bit step of PIL's (fixed-point
    weights, positions to 1/32 px; measured mean 0.39 steps on a 1080p face).
    """
    from PIL import Image

    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = frame[..., None].repeat(3, axis=2)
    quad = np.asarray(quad, dtype=np.float64)
    height, width = frame.shape[:2]

    # Work on the quad's bounding box plus a little margin for the bilinear footprint; whatever of
    # it lies outside the frame is padded.
    lo = np.floor(quad.min(axis=0)).astype(int) - 2
    hi = np.ceil(quad.max(axis=0)).astype(int) + 3
    x0, y0 = min(max(lo[0], 0), width - 1), min(max(lo[1], 0), height - 1)
    x1, y1 = max(min(hi[0], width), x0 + 1), max(min(hi[1], height), y0 + 1)
    region = frame[y0:y1, x0:x1]
    pad = (max(x0 - lo[0], 0), max(y0 - lo[1], 0), max(hi[0] - x1, 0), max(hi[1] - y1, 0))
    if max(pad) > 0:
        region = _pad_softly(region, tuple(int(p) for p in pad), quad_px=quad_side(quad))
    quad_local = quad - np.array([x0 - pad[0], y0 - pad[1]], dtype=np.float64)

    image = Image.fromarray(np.ascontiguousarray(region))
    ratio = quad_side(quad) / size
    shrink = ratio if exact_shrink else math.floor(ratio)
    if shrink > 1:
        small = (max(1, round(image.width / shrink)), max(1, round(image.height / shrink)))
        factors = np.array([small[0] / image.width, small[1] / image.height])
        image = image.resize(small, Image.BILINEAR if exact_shrink else Image.BOX)
        # Corner-based coordinates scale directly; convert the centre-based quad through them.
        quad_local = (quad_local + 0.5) * factors - 0.5

    if fast_warp:
        import cv2

        # OpenCV's inverse map (output -> input) takes pixel-centre coordinates on both sides, as
        # crop_to_source_matrix gives them; outside the region is 0 as in PIL (the margin keeps the footprint in).
        return cv2.warpAffine(np.ascontiguousarray(np.asarray(image)), crop_to_source_matrix(quad_local, size)[:2],
                              (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    # PIL's AFFINE takes the inverse map (output -> input) in corner-based coordinates.
    inverse = to_edge_coordinates(crop_to_source_matrix(quad_local, size))
    coefficients = tuple(inverse[:2].reshape(-1))
    crop = image.transform((size, size), Image.AFFINE, coefficients, resample=Image.BILINEAR)
    return np.asarray(crop)


# How the aligned crop (the encoder's input) is cut: see docs/deviations.md.
ENCODER_INPUTS = ("direct", "published")
PUBLISHED_ALIGNED_SIZE = 1024  # stylegan3-editing's align_face always cuts (and saves) the aligned crop at 1024


def encoder_crop(frame: np.ndarray, quad: np.ndarray, size: int, encoder_input: str) -> np.ndarray:
    """The aligned crop the encoder reads, size x size uint8.

    "direct": cut at `size` in one warp, after an antialiased shrink by the exact factor when the quad is
    larger (quad_to_crop's exact_shrink). "published": stylegan3-editing's path, a 1024 px crop resized to
    `size` by its encoder transform `transforms.Resize((256, 256))` on a PIL image, which is PIL's bilinear
    resize (antialiased: the filter widens with the shrink factor).
    """
    if encoder_input == "direct":
        return quad_to_crop(frame, quad, size, exact_shrink=True)
    if encoder_input != "published":
        raise ValueError(f"unknown encoder_input {encoder_input!r} ({', '.join(ENCODER_INPUTS)})")
    from PIL import Image

    big = quad_to_crop(frame, quad, PUBLISHED_ALIGNED_SIZE)
    if size == PUBLISHED_ALIGNED_SIZE:
        return big
    return np.asarray(Image.fromarray(big).resize((size, size), Image.BILINEAR))


# ----------------------------------------------------------------------------------------------
# transforms


def make_transform_matrix(translation, rotation_deg: float) -> np.ndarray:
    """numpy twin of the official make_transform: [[c, s, tx], [-s, c, ty], [0, 0, 1]]."""
    angle = math.radians(float(rotation_deg))
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, s, float(translation[0])], [-s, c, float(translation[1])], [0.0, 0.0, 1.0]])


def rotate_about(points: np.ndarray, centre: np.ndarray, rotation_deg: float) -> np.ndarray:
    """Rotate image points counter-clockwise as displayed (y down) by rotation_deg about centre."""
    angle = math.radians(rotation_deg)
    c, s = math.cos(angle), math.sin(angle)
    # Counter-clockwise on screen with y pointing down is [[c, s], [-s, c]], make_transform's block.
    rotation = np.array([[c, s], [-s, c]])
    return (np.asarray(points, dtype=np.float64) - centre) @ rotation.T + centre


def signed_angle_deg(from_vector: np.ndarray, to_vector: np.ndarray) -> float:
    """Angle in (-180, 180] turning from_vector onto to_vector, counter-clockwise as displayed
    (image y down) positive."""
    dot = float(np.dot(from_vector, to_vector))
    cross = float(from_vector[0] * to_vector[1] - from_vector[1] * to_vector[0])
    # With y down, a counter-clockwise turn on screen has a negative cross product.
    angle = math.degrees(math.atan2(-cross, dot)) + 0.0  # + 0.0 turns -0.0 into 0.0
    return 180.0 if angle <= -180.0 else angle


@dataclass
class FrameTransform:
    """The transform carrying one frame's aligned crop onto its unaligned crop."""

    rotation_deg: float
    translation: np.ndarray  # (tx, ty), in crop widths
    matrix: np.ndarray  # 3x3, make_transform(translation, rotation_deg)


def frame_transform(landmarks: np.ndarray, aligned_quad: np.ndarray, box_quad: np.ndarray,
                    size: int) -> FrameTransform:
    """Rotation and translation from a frame's aligned crop to its unaligned (fixed box) crop.

    landmarks: float[68, 2] in source pixels; aligned_quad: that frame's alignment quad; box_quad: the
    fixed unaligned box; size: the crop side (the same for both crops).
    """
    eyes = np.stack(eye_centres(landmarks))  # [2, 2]: left, right
    eyes_aligned = source_to_crop(eyes, aligned_quad, size)
    eyes_unaligned = source_to_crop(eyes, box_quad, size)
    rotation = signed_angle_deg(eyes_aligned[1] - eyes_aligned[0], eyes_unaligned[1] - eyes_unaligned[0])
    centre = np.full(2, (size - 1) / 2.0)  # the crop centre in pixel-centre coordinates
    left_rotated = rotate_about(eyes_aligned[0], centre, rotation)
    translation = (eyes_unaligned[0] - left_rotated) / size
    return FrameTransform(rotation, translation, make_transform_matrix(translation, rotation))


def aligned_to_unaligned_matrix(aligned_quad: np.ndarray, box_quad: np.ndarray, size: int) -> np.ndarray:
    """Exact 3x3 map from aligned-crop pixels to unaligned-crop pixels of the same frame (both
    pixel-centre coordinates). frame_transform's r and t describe this similarity when the quads are
    squares; this matrix is the general form (useful to check or to warp images)."""
    return source_to_crop_matrix(box_quad, size) @ crop_to_source_matrix(aligned_quad, size)


# ----------------------------------------------------------------------------------------------
# over a video


def fill_missing(values: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Fill the entries of values[N, ...] where found[N] is False: linear interpolation between the
    nearest found neighbours, the nearest found value at the ends. Needs at least one found entry."""
    values = np.asarray(values, dtype=np.float64).copy()
    found = np.asarray(found, dtype=bool)
    known = np.flatnonzero(found)
    if known.size == 0:
        raise ValueError("no entry to interpolate from")
    missing = np.flatnonzero(~found)
    if missing.size == 0:
        return values
    flat = values.reshape(len(values), -1)
    for column in range(flat.shape[1]):
        # np.interp holds the end values constant outside the known range: nearest at the ends.
        flat[missing, column] = np.interp(missing, known, flat[known, column])
    return flat.reshape(values.shape)


def smooth_quads(quads: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of quads[N, 4, 2] over `window` frames (odd; 0 or 1: unchanged).
    The window shrinks symmetrically at the ends so that the first and last frames stay anchored."""
    quads = np.asarray(quads, dtype=np.float64)
    if window <= 1 or len(quads) < 2:
        return quads.copy()
    half = window // 2
    out = np.empty_like(quads)
    for i in range(len(quads)):
        reach = min(half, i, len(quads) - 1 - i)
        out[i] = quads[i - reach:i + reach + 1].mean(axis=0)
    return out


def covering_box(quads: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """A square box turned like `reference` that contains every quad of quads[N, 4, 2]: one fixed
    unaligned box that keeps the face inside over the whole clip."""
    reference = np.asarray(reference, dtype=np.float64)
    x_axis = reference[3] - reference[0]
    x_axis /= np.hypot(*x_axis)
    y_axis = np.array([-x_axis[1], x_axis[0]])
    corners = np.asarray(quads, dtype=np.float64).reshape(-1, 2)
    u, v = corners @ x_axis, corners @ y_axis
    centre_u, centre_v = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
    half = max(u.max() - u.min(), v.max() - v.min()) / 2
    centre = centre_u * x_axis + centre_v * y_axis
    x, y = half * x_axis, half * y_axis
    return np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])
