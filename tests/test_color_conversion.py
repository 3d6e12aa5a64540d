"""The strip-wise, table-driven Y'CbCr -> R'G'B' conversion gives the same bits as the plain per-pixel formula."""
import numpy as np
import pytest

from videdit.io.color import _kr_kb, _levels, _rgb_scale, _upsample, yuv_layout, yuv_to_rgb

pytestmark = pytest.mark.numeric


def _per_pixel(planes, layout, matrix, full_range, out_dtype):
    """The conversion written out on whole frames, as the module documents it (the reference)."""
    kr, kb = _kr_kb(matrix)
    y_off, y_scale, c_off, c_scale = _levels(layout.bit_depth, full_range)
    height, width = planes[0].shape
    ey = (planes[0].astype(np.float32) - np.float32(y_off)) / np.float32(y_scale)
    pb, pr = ((p.astype(np.float32) - np.float32(c_off)) / np.float32(c_scale) for p in planes[1:])
    pb, pr = _upsample(pb, layout, height, width), _upsample(pr, layout, height, width)
    r = ey + np.float32(2 * (1 - kr)) * pr
    b = ey + np.float32(2 * (1 - kb)) * pb
    g = (ey - np.float32(kr) * r - np.float32(kb) * b) / np.float32(1 - kr - kb)
    scale = np.float32(_rgb_scale(out_dtype))
    return np.clip(np.rint(np.stack([r, g, b], axis=-1) * scale), 0, scale).astype(out_dtype)


@pytest.mark.parametrize("pix_fmt,height,width", [
    ("yuv420p", 135, 240), ("yuv420p", 17, 33), ("yuv422p10le", 70, 50), ("yuv444p", 65, 21),
    ("yuv420p10le", 129, 64), ("yuv411p", 10, 24), ("yuv444p12le", 66, 9),
])
def test_strip_conversion_equals_per_pixel_formula(pix_fmt, height, width):
    layout = yuv_layout(pix_fmt)
    rng = np.random.default_rng(height * width)
    top = 2 ** layout.bit_depth
    chroma_shape = (-(-height >> layout.shift_y), -(-width >> layout.shift_x))
    planes = (rng.integers(0, top, (height, width)).astype(layout.dtype),
              *(rng.integers(0, top, chroma_shape).astype(layout.dtype) for _ in range(2)))
    for matrix in ("bt709", "smpte170m", "bt2020nc"):
        for full_range in (False, True):
            for out_dtype in (np.uint8, np.uint16):
                fast = yuv_to_rgb(planes, layout, matrix, full_range, out_dtype)
                assert fast.dtype == np.dtype(out_dtype) and fast.shape == (height, width, 3)
                np.testing.assert_array_equal(fast, _per_pixel(planes, layout, matrix, full_range, out_dtype))
