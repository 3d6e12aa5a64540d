"""Argument parsing shared by the fast, the reference and the native ops (same conventions as NVIDIA's ops)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resample2d:
    """Per-axis resampling of upfirdn2d: factors and padding for x (width) and y (height). With the input
    size and the filter's taps it is the whole plan of a call (out_size; the gradient's plan: transposed)."""

    upx: int
    upy: int
    downx: int
    downy: int
    padx0: int
    padx1: int
    pady0: int
    pady1: int

    def out_size(self, in_w: int, in_h: int, taps_w: int, taps_h: int) -> tuple[int, int]:
        """Output (width, height) for an input of in_w x in_h and a filter of taps_w x taps_h."""
        out_w = (in_w * self.upx + self.padx0 + self.padx1 - taps_w + self.downx) // self.downx
        out_h = (in_h * self.upy + self.pady0 + self.pady1 - taps_h + self.downy) // self.downy
        return out_w, out_h

    def transposed(self, in_w: int, in_h: int, taps_w: int, taps_h: int) -> "Resample2d":
        """The resampling of the gradient of a call on an in_w x in_h input: up and down swapped, padding
        mirrored, so that its output size (from this call's output size) is in_w x in_h."""
        out_w, out_h = self.out_size(in_w, in_h, taps_w, taps_h)
        padx0 = taps_w - 1 - self.padx0
        pady0 = taps_h - 1 - self.pady0
        padx1 = (in_w - 1) * self.upx + taps_w - out_w * self.downx - padx0
        pady1 = (in_h - 1) * self.upy + taps_h - out_h * self.downy - pady0
        return Resample2d(self.downx, self.downy, self.upx, self.upy, padx0, padx1, pady0, pady1)


def parse_scaling(scaling) -> tuple[int, int]:
    """int or [x, y] -> (x, y)."""
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    sx, sy = (int(v) for v in scaling)
    if sx < 1 or sy < 1:
        raise ValueError(f"up/down factors must be >= 1, got {scaling}")
    return sx, sy


def parse_padding(padding) -> tuple[int, int, int, int]:
    """int, [x, y] or [x0, x1, y0, y1] -> (x0, x1, y0, y1). Negative values crop."""
    if isinstance(padding, int):
        padding = [padding, padding]
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) != 4:
        raise ValueError(f"padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding}")
    return tuple(padding)


def parse_resample(up=1, down=1, padding=0) -> Resample2d:
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    return Resample2d(upx, upy, downx, downy, px0, px1, py0, py1)


def conv2d_resample_padding(f, up, down, padding) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1): conv2d_resample's padding for the conv plus what the filter f needs around the
    up- or downsampling, as NVIDIA's op adds it."""
    if not (isinstance(up, int) and isinstance(down, int)):
        raise ValueError("conv2d_resample takes integer up and down factors")
    fw, fh = filter_taps(f)
    px0, px1, py0, py1 = parse_padding(padding)
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    return px0, px1, py0, py1


def filter_taps(f) -> tuple[int, int]:
    """(taps along x, taps along y) of a 1-D (separable) or 2-D filter; None is a single tap."""
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    if f.ndim == 2:
        return f.shape[1], f.shape[0]
    raise ValueError(f"filter must be 1-D or 2-D, got shape {tuple(f.shape)}")


def check_impl(impl: str) -> str:
    if impl not in ("fast", "ref"):
        raise ValueError(f"impl must be 'fast' or 'ref', got {impl!r}")
    return impl
