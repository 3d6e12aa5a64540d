"""Y'CbCr <-> R'G'B' conversion with an explicit matrix, range and bit depth (ITU-T H.273 names).

Why not swscale: its default matrix is BT.601 whatever the tags say, and a 10-bit full-range grey
goes through rgb48 and back off by up to 3 code values (measured with ACCURATE_RND|BITEXACT). Here
the maths is the standard's, in float32 element-wise numpy (no BLAS, no threads), so the same input
gives the same bytes everywhere and a grey ramp survives the round trip exactly.

RGB pixels are uint8 (0..255) or uint16 scaled to the full 0..65535 (like a 16-bit PNG), whatever the
video's bit depth; `to_uint8` turns either (and the generator's float images) into uint8, rounded.
Transfer functions (BT.709, PQ, HLG) are not applied: R'G'B' stays the non-linear signal the video carries.

Chroma siting follows the H.264/HEVC default (chroma_sample_loc_type 0): horizontally co-sited with
the even luma columns, vertically between two luma rows. Upsampling is linear across (the odd column
is the mean of its neighbours) and a repeat down (both rows are equally near); downsampling takes the
co-sited column and averages the row pair. Each downsampling undoes its upsampling exactly, so a frame
read and written back unedited keeps its chroma codes (no softening on every pass).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from videdit.errors import VideditError

# H.273 code points <-> FFmpeg's names (what ffprobe prints).
RANGE_NAMES = {0: "unknown", 1: "tv", 2: "pc"}
MATRIX_NAMES = {0: "gbr", 1: "bt709", 2: "unknown", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
                8: "ycgco", 9: "bt2020nc", 10: "bt2020c", 11: "smpte2085", 12: "chroma-derived-nc",
                13: "chroma-derived-c", 14: "ictcp"}
PRIMARIES_NAMES = {1: "bt709", 2: "unknown", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
                   8: "film", 9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213"}
TRC_NAMES = {1: "bt709", 2: "unknown", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m", 8: "linear",
             9: "log100", 10: "log316", 11: "iec61966-2-4", 12: "bt1361e", 13: "iec61966-2-1", 14: "bt2020-10",
             15: "bt2020-12", 16: "smpte2084", 17: "smpte428", 18: "arib-std-b67"}
HDR_TRANSFERS = ("smpte2084", "arib-std-b67")  # PQ and HLG

# (Kr, Kb) of the non-constant-luminance matrices; BT.2020 constant luminance is converted as
# non-constant (close, not exact: documented).
_MATRIX_KR_KB = {"bt709": (0.2126, 0.0722), "bt470bg": (0.299, 0.114), "smpte170m": (0.299, 0.114),
                 "fcc": (0.30, 0.11), "smpte240m": (0.212, 0.087), "bt2020nc": (0.2627, 0.0593),
                 "bt2020c": (0.2627, 0.0593)}
SUPPORTED_MATRICES = tuple(_MATRIX_KR_KB)


def code_of(names: dict[int, str], name: str) -> int:
    """H.273 code point of an FFmpeg colour name (`unknown` -> the table's unspecified value)."""
    for code, known in names.items():
        if known == name:
            return code
    raise VideditError(f"unknown colour value {name!r} (one of {', '.join(sorted(set(names.values())))})")


def name_of(names: dict[int, str], code) -> str:
    return names.get(int(code or 0) if code is not None else 0, "unknown")


def assumed_matrix(height: int) -> str:
    """The matrix players assume for an untagged video: BT.709 for HD, BT.601 (smpte170m) up to 576 lines."""
    return "bt709" if height > 576 else "smpte170m"


def conversion_matrix(tagged: str, width: int, height: int) -> str:
    """The matrix a width x height video is converted with: its tagged one, else what players assume."""
    if tagged in SUPPORTED_MATRICES:
        return tagged
    return assumed_matrix(min(width, height))


@dataclass(frozen=True)
class YuvLayout:
    """A planar Y'CbCr pixel format: bit depth and chroma subsampling shifts (log2)."""

    pix_fmt: str
    bit_depth: int
    shift_x: int
    shift_y: int

    @property
    def chroma(self) -> str:
        return {(0, 0): "4:4:4", (1, 0): "4:2:2", (1, 1): "4:2:0", (0, 1): "4:4:0", (2, 0): "4:1:1",
                (2, 2): "4:1:0"}.get((self.shift_x, self.shift_y), f"shift {self.shift_x},{self.shift_y}")

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.bit_depth <= 8 else np.dtype("<u2")


def yuv_layout(pix_fmt: str) -> YuvLayout | None:
    """The layout of a planar little-endian YUV format (yuvj* counts as yuv), None for anything else
    (RGB, packed, semi-planar, alpha, big-endian, grey)."""
    import av

    try:
        fmt = av.VideoFormat(pix_fmt, 64, 64)
    except (ValueError, av.error.FFmpegError):
        return None
    comps = fmt.components
    if (fmt.is_rgb or not fmt.is_planar or fmt.is_big_endian or len(comps) != 3 or pix_fmt.startswith(("nv", "p0", "p2"))
            or len({c.bits for c in comps}) != 1):
        return None
    shift_x = int(round(np.log2(64 / comps[1].width)))
    shift_y = int(round(np.log2(64 / comps[1].height)))
    return YuvLayout(pix_fmt, int(comps[0].bits), shift_x, shift_y)


def _kr_kb(matrix: str) -> tuple[float, float]:
    try:
        return _MATRIX_KR_KB[matrix]
    except KeyError:
        raise VideditError(f"colour matrix {matrix!r} is not supported (supported: "
                           f"{', '.join(sorted(_MATRIX_KR_KB))})") from None


def _levels(bit_depth: int, full_range: bool) -> tuple[float, float, float, float]:
    """(luma offset, luma scale, chroma offset, chroma scale) mapping E'Y in [0,1], E'Pb in [-.5,.5] to codes."""
    if full_range:
        top = float(2 ** bit_depth - 1)
        return 0.0, top, float(2 ** (bit_depth - 1)), top
    unit = float(2 ** (bit_depth - 8))
    return 16.0 * unit, 219.0 * unit, 128.0 * unit, 224.0 * unit


def _rgb_scale(dtype) -> float:
    return 255.0 if np.dtype(dtype) == np.uint8 else 65535.0


# chroma resampling (co-sited horizontally, centred vertically) ----------------------------------


def _upsample_x(c: np.ndarray, width: int) -> np.ndarray:
    out = np.empty((c.shape[0], 2 * c.shape[1]), np.float32)
    right = np.concatenate([c[:, 1:], c[:, -1:]], axis=1)
    out[:, 0::2] = c
    out[:, 1::2] = 0.5 * (c + right)
    return out[:, :width]


def _upsample_y(c: np.ndarray, height: int) -> np.ndarray:
    return np.repeat(c, 2, axis=0)[:height]


def _downsample_x(c: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(c[:, 0::2])  # the co-sited columns (an odd width keeps its last one)


def _downsample_y(c: np.ndarray) -> np.ndarray:
    if c.shape[0] % 2:
        c = np.concatenate([c, c[-1:]], axis=0)
    return 0.5 * (c[0::2] + c[1::2])


def _upsample(c: np.ndarray, layout: YuvLayout, height: int, width: int) -> np.ndarray:
    for step in range(layout.shift_x):
        c = _upsample_x(c, -(-width // 2 ** (layout.shift_x - step - 1)))
    for step in range(layout.shift_y):
        c = _upsample_y(c, -(-height // 2 ** (layout.shift_y - step - 1)))
    return c


def _downsample(c: np.ndarray, layout: YuvLayout) -> np.ndarray:
    for _ in range(layout.shift_x):
        c = _downsample_x(c)
    for _ in range(layout.shift_y):
        c = _downsample_y(c)
    return c


# conversions -------------------------------------------------------------------------------------


# Frames are converted in strips of this many chroma rows (times the vertical subsampling): each strip's
# float32 temporaries stay in the CPU cache, about 2x faster at 1080p than whole-frame arrays.
_STRIP_ROWS = 32


def _code_table(dtype: np.dtype, offset: float, scale: float) -> np.ndarray:
    """(code - offset) / scale in float32 for every value of the code dtype: a lookup gives the same bits
    as computing it per pixel, faster."""
    codes = np.arange(np.iinfo(dtype).max + 1, dtype=np.float32)
    return (codes - np.float32(offset)) / np.float32(scale)


def yuv_to_rgb(planes: tuple[np.ndarray, np.ndarray, np.ndarray], layout: YuvLayout, matrix: str, full_range: bool,
               out_dtype=np.uint8) -> np.ndarray:
    """Y', Cb, Cr code planes -> [H, W, 3] R'G'B' of out_dtype (uint8 0..255 or uint16 0..65535).

    Per pixel: E'Y, E'Pb, E'Pr from the codes and levels, chroma upsampled, then R = Y + 2(1-Kr) Pr,
    B = Y + 2(1-Kb) Pb, G = (Y - Kr R - Kb B) / Kg, scaled, rounded and clipped, all in float32."""
    kr, kb = _kr_kb(matrix)
    kg = 1.0 - kr - kb
    y_off, y_scale, c_off, c_scale = _levels(layout.bit_depth, full_range)
    luma = planes[0]
    height, width = luma.shape
    luma_table = _code_table(luma.dtype, y_off, y_scale)
    chroma_table = _code_table(planes[1].dtype, c_off, c_scale)
    out = np.empty((height, width, 3), np.dtype(out_dtype))
    scale = np.float32(_rgb_scale(out_dtype))
    cr_gain, cb_gain = np.float32(2 * (1 - kr)), np.float32(2 * (1 - kb))
    shift_y = layout.shift_y
    rows = _STRIP_ROWS << shift_y
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        ey = np.take(luma_table, luma[top:bottom])
        # the chroma rows under these luma rows (each covers 2**shift_y of them), upsampled to the strip
        chroma_top, chroma_bottom = top >> shift_y, -(-bottom >> shift_y)
        pb, pr = (_upsample(np.take(chroma_table, plane[chroma_top:chroma_bottom]), layout,
                            (chroma_bottom - chroma_top) << shift_y, width)[:bottom - top] for plane in planes[1:])
        r = ey + cr_gain * pr
        b = ey + cb_gain * pb
        g = (ey - np.float32(kr) * r - np.float32(kb) * b) / np.float32(kg)
        for channel, values in enumerate((r, g, b)):
            np.multiply(values, scale, out=values)
            np.rint(values, out=values)
            np.clip(values, 0, scale, out=values)
            out[top:bottom, :, channel] = values
    return out


def rgb_to_yuv(rgb: np.ndarray, layout: YuvLayout, matrix: str, full_range: bool) -> tuple[np.ndarray, ...]:
    """[H, W, 3] R'G'B' (uint8 or uint16 scaled to 65535) -> Y', Cb, Cr code planes of the layout."""
    if rgb.dtype not in (np.uint8, np.uint16) or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 or uint16 [H, W, 3] RGB, got {rgb.dtype} {rgb.shape}")
    kr, kb = _kr_kb(matrix)
    kg = 1.0 - kr - kb
    y_off, y_scale, c_off, c_scale = _levels(layout.bit_depth, full_range)
    values = rgb.astype(np.float32) / np.float32(_rgb_scale(rgb.dtype))
    r, g, b = values[..., 0], values[..., 1], values[..., 2]
    ey = np.float32(kr) * r + np.float32(kg) * g + np.float32(kb) * b
    pb = _downsample((b - ey) / np.float32(2 * (1 - kb)), layout)
    pr = _downsample((r - ey) / np.float32(2 * (1 - kr)), layout)
    top = 2 ** layout.bit_depth - 1

    def quantise(signal, offset, scale):
        return np.clip(np.rint(signal * np.float32(scale) + np.float32(offset)), 0, top).astype(layout.dtype)

    return quantise(ey, y_off, y_scale), quantise(pb, c_off, c_scale), quantise(pr, c_off, c_scale)


def to_uint8(pixels) -> np.ndarray:
    """8-bit RGB from pixels in any form videdit holds them, each value rounded to the nearest of the 256
    levels (halves up) and clamped:

    * uint8 (numpy): returned as it is;
    * uint16 (numpy, 0..65535: deep video frames): value / 257, in exact integer arithmetic;
    * a float torch tensor [N, 3, H, W] in the generator's [-1, 1] scale: (value + 1) * 127.5, converted
      on the tensor's device and returned as numpy [N, H, W, 3] (the layout of frames and files).

    NVIDIA's `(x * 127.5 + 128).clamp(0, 255).to(uint8)` for the float case: the +128 is +127.5 plus the
    half that makes the truncation a rounding (stylegan3-editing truncates instead: 0.5 level darker).
    """
    if isinstance(pixels, np.ndarray):
        if pixels.dtype == np.uint8:
            return pixels
        if pixels.dtype != np.uint16:
            raise ValueError(f"expected uint8 or uint16 pixels, got {pixels.dtype}")
        return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    import torch  # only reached with a tensor, so torch is loaded already

    if not torch.is_floating_point(pixels) or pixels.ndim != 4:
        raise ValueError(f"expected a float tensor [N, 3, H, W], got {pixels.dtype} {tuple(pixels.shape)}")
    levels = (pixels.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return levels.permute(0, 2, 3, 1).cpu().numpy()


def to_uint16(image: np.ndarray) -> np.ndarray:
    """uint16 RGB (0..65535) from uint8 or uint16 pixels (x * 257 keeps 0 and 255 at the ends)."""
    if image.dtype == np.uint16:
        return image
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 or uint16 pixels, got {image.dtype}")
    return image.astype(np.uint16) * 257
