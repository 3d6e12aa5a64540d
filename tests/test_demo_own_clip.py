"""`videdit demo VIDEO`: the whole pipeline on the user's clip with stand-in networks, and the same video out for a
10-bit full-range BT.709 HEVC clip, a BT.2020/HLG one, a 4:4:4 one and an odd-sized one: size, bit depth, colour
tags, frame times and audio packets equal the source's; a 10-bit grey ramp away from the face keeps its values
within one code value.

Each run is the whole demo in a subprocess (about 35 s on a quiet 2-core machine), so the four formats run with
`-m slow`; the default run keeps one: the phone's 10-bit clip, cut to three frames (still variable frame rate).
"""
from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.test_video_fidelity import TIMES_MS, ClipSpec, write_source_clip

av = pytest.importorskip("av")
RAMP_ROWS = slice(0, 24)


def _rgb_frames(size):
    """The astronaut's face low in the frame, a grey ramp along the top; float RGB in [0, 1]."""
    from PIL import Image

    from videdit.synthetic import PHOTO_FACES, load_photo

    width, height = size
    (cx, cy), face = PHOTO_FACES["astronaut"]
    crop = Image.fromarray(load_photo("astronaut")).crop((int(cx - face), int(cy - face), int(cx + face), int(cy + face)))
    patch = np.asarray(crop.resize((120, 120), Image.BICUBIC), np.float64) / 255
    frames = []
    for i in range(len(TIMES_MS)):
        rgb = np.full((height, width, 3), 0.45)
        x0, y0 = 60 + 2 * i, 110
        rgb[y0:y0 + 120, x0:x0 + 120] = patch
        rgb[RAMP_ROWS] = np.linspace(0, 1, width)[None, :, None]
        frames.append(rgb)
    return frames


MATRICES = {1: (0.2126, 0.0722), 9: (0.2627, 0.0593), 6: (0.299, 0.114)}  # H.273 matrix code -> (kr, kb)


def _yuv(rgb, pix_fmt, full, matrix):
    """RGB in [0, 1] -> Y, Cb, Cr code planes for pix_fmt (4:2:0 or 4:4:4, 8 or 10 bit), range and matrix."""
    kr, kb = MATRICES[matrix]
    depth = 10 if "10" in pix_fmt else 8
    unit = 2 ** (depth - 8)
    y = kr * rgb[..., 0] + (1 - kr - kb) * rgb[..., 1] + kb * rgb[..., 2]
    cb = (rgb[..., 2] - y) / (2 * (1 - kb))
    cr = (rgb[..., 0] - y) / (2 * (1 - kr))
    if "420" in pix_fmt:
        cb, cr = (c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2).mean((1, 3)) for c in (cb, cr))
    top = 2 ** depth - 1
    if full:
        planes = (y * top, cb * top + 2 ** (depth - 1), cr * top + 2 ** (depth - 1))
    else:
        planes = ((16 + 219 * y) * unit, (128 + 224 * cb) * unit, (128 + 224 * cr) * unit)
    dtype = np.uint16 if depth > 8 else np.uint8
    return [np.clip(np.rint(p), 0, top).astype(dtype) for p in planes]


# name -> the clip's format (codec, pix_fmt, size, range, matrix, primaries, transfer as H.273 codes)
FORMATS = {
    "hevc10_full_709": ClipSpec("hevc10_full_709", "libx265", "yuv420p10le", (256, 256), 2, 1, 1, 1),  # a phone's clip
    "hevc10_hlg_2020": ClipSpec("hevc10_hlg_2020", "libx265", "yuv420p10le", (256, 256), 1, 9, 9, 18),  # BT.2020, HLG
    "h264_444": ClipSpec("h264_444", "libx264", "yuv444p", (256, 256), 1, 6, 6, 6),  # 4:4:4, BT.601 tags
    "h264_odd": ClipSpec("h264_odd", "libx264", "yuv444p", (257, 255), 1, 1, 1, 1),  # odd size
}


SHORT_TIMES_MS = [0, 40, 160]  # three frames, two frame durations: still a variable frame rate


def write_face_clip(folder: Path, name: str, times_ms=TIMES_MS) -> Path:
    """The face clip in the given format, written by the fidelity tests' writer (tags, VFR times, AAC track)."""
    spec = FORMATS[name]
    frames = _rgb_frames(spec.size)
    return write_source_clip(folder, spec, lambda i: _yuv(frames[i], spec.pix_fmt, spec.color_range == 2, spec.matrix),
                             times_ms=times_ms)


def describe(path: Path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = list(container.decode(video))
        times = [Fraction(f.pts) * video.time_base for f in frames]
        dtype = np.uint16 if "10" in frames[0].format.name else np.uint8
        luma = [np.frombuffer(f.planes[0], dtype).reshape(f.planes[0].height, -1)[:, :f.width].copy() for f in frames]
        first = frames[0]
    with av.open(str(path)) as container:
        audio = [(bytes(p), Fraction(p.pts) * p.time_base) for p in container.demux(container.streams.audio[0]) if p.size]
    return dict(size=(first.width, first.height), pix_fmt=first.format.name, times=times, audio=audio, luma=luma,
                tags=(int(first.color_range), int(first.colorspace), int(first.color_primaries), int(first.color_trc)))


def check_demo_keeps_the_video(tmp_path, name, times_ms):
    source = write_face_clip(tmp_path, name, times_ms)
    env = dict(os.environ, VIDEDIT_WEIGHTS=str(tmp_path / "no-weights"))
    proc = subprocess.run([sys.executable, "-m", "videdit", "demo", str(source), "--out", str(tmp_path / "run"),
                           "--crf", "8", "-q"], capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "run" / f"{name}.recon.mp4"
    assert out.is_file() and (tmp_path / "run" / f"{name}.age.mp4").is_file(), proc.stdout
    src, got = describe(source), describe(out)
    spec = FORMATS[name]
    pix_fmt = spec.pix_fmt
    assert (got["size"], got["pix_fmt"], got["tags"]) == (src["size"], src["pix_fmt"], src["tags"]) == (
        spec.size, pix_fmt, (spec.color_range, spec.matrix, spec.primaries, spec.trc))
    assert got["times"] == src["times"] and got["audio"] == src["audio"]
    if pix_fmt.endswith("10le"):  # away from the face, the 10-bit grey ramp keeps its code values
        worst = max(int(np.abs(a[RAMP_ROWS].astype(int) - b[RAMP_ROWS].astype(int)).max())
                    for a, b in zip(src["luma"], got["luma"]))
        assert worst <= 1, f"the ramp moved by {worst} 10-bit code values"


def test_demo_on_a_short_clip_keeps_the_video(tmp_path):
    check_demo_keeps_the_video(tmp_path, "hevc10_full_709", SHORT_TIMES_MS)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FORMATS))
def test_demo_on_your_clip_keeps_the_video(tmp_path, name):
    check_demo_keeps_the_video(tmp_path, name, TIMES_MS)
