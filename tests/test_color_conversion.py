"""The strip-wise, table-driven Y'CbCr -> R'G'B' conversion gives the same bits as the plain per-pixel formula."""
import numpy as np
import pytest

from videdit.io.color import _kr_kb, _levels, _rgb_scale, _upsample, to_uint8, yuv_layout, yuv_to_rgb

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


# ----------------------------------------------------------------------------------------------
# to_uint8: every form of pixels to 8 bits, one rounding (nearest level, halves up, clamped)


def test_to_uint8_rounds_deep_frames_to_the_nearest_level():
    deep = np.arange(65536, dtype=np.uint16).reshape(256, 256, 1).repeat(3, axis=2)
    got = to_uint8(deep).astype(np.int64)
    # v / 257 is never a half (257 is odd), so "nearest" is unambiguous: within half a level of v.
    assert (np.abs(got * 257 - deep.astype(np.int64)) * 2 <= 257).all()
    frame = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    assert to_uint8(frame) is frame
    with pytest.raises(ValueError):
        to_uint8(deep.astype(np.float32))


def test_to_uint8_of_generator_images_rounds_to_the_nearest_level_and_clamps():
    torch = pytest.importorskip("torch")
    # v = m / 256: v * 127.5 and the + 128 are exact in float32 (at most 18 significant bits), so the
    # levels are exact: (v + 1) * 127.5 rounded, halves up (v = 0 is the half 127.5 -> 128), clamped.
    # Truncating (stylegan3-editing's tensor2im) fails here, e.g. m = 1: 127.998 -> 127 instead of 128.
    m = torch.arange(-300, 301, dtype=torch.float64)
    exact = m / 256
    images = exact.float().reshape(1, 1, 1, -1).expand(2, 3, 1, -1).contiguous()
    got = to_uint8(images)
    assert got.shape == (2, 1, m.numel(), 3) and got.dtype == np.uint8
    want = ((exact + 1) * 127.5 + 0.5).floor().clamp(0, 255).numpy().astype(np.uint8)
    assert np.array_equal(got[0, 0, :, 0], want)
    assert np.array_equal(got[0], got[1]) and (got[..., 0] == got[..., 2]).all()
    # Any float32 inside the range: within half a level of (v + 1) * 127.5, up to float32 round-off of
    # v * 127.5 (<= 127.5 * 2**-24) and of the + 128 (<= 2**-17): 1.6e-5 levels in all.
    values = torch.rand([1, 3, 64, 64], generator=torch.Generator().manual_seed(0)) * 2 - 1
    levels = (values.double() + 1) * 127.5
    got = to_uint8(values)[0].transpose(2, 0, 1).astype(np.float64)
    assert np.abs(got - levels[0].numpy()).max() <= 0.5 + 1.6e-5
    with pytest.raises(ValueError):
        to_uint8(torch.zeros([3, 4, 4], dtype=torch.uint8))
