"""`videdit demo VIDEO`: the whole pipeline on the user's clip with stand-in networks, and the same video out:
size, bit depth, colour tags, frame times and audio packets equal the source's; a 10-bit grey ramp away from
the face keeps its values within one code value."""
from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.clips import make_audio_clip

av = pytest.importorskip("av")
TIMES_MS = [0, 40, 80, 160, 200, 240, 320, 360]  # variable frame rate
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


def _yuv709_full_10bit(rgb):
    y = 0.2126 * rgb[..., 0] + 0.7152 * rgb[..., 1] + 0.0722 * rgb[..., 2]
    cb = (rgb[..., 2] - y) / 1.8556
    cr = (rgb[..., 0] - y) / 1.5748
    luma = np.clip(np.rint(y * 1023), 0, 1023)
    sub = lambda c: np.clip(np.rint((c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2).mean((1, 3))) * 1023 + 512), 0, 1023)
    return [p.astype(np.uint16) for p in (luma, sub(cb), sub(cr))]


def write_phone_clip(folder: Path, size=(256, 256)) -> Path:
    """HEVC Main 10, full range, BT.709 tags, VFR in a 1/1000 time base, with an AAC track."""
    path = folder / "phone.mp4"
    tone = make_audio_clip(folder / "tone.m4a", seconds=0.45)
    with av.open(str(path), "w") as container, av.open(str(tone)) as audio_in:
        stream = container.add_stream("libx265", rate=25)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p10le"
        stream.time_base = Fraction(1, 1000)
        context = stream.codec_context
        context.time_base = Fraction(1, 1000)
        context.color_range, context.colorspace, context.color_primaries, context.color_trc = 2, 1, 1, 1
        stream.options = {"crf": "8", "x265-params": "log-level=error"}
        audio_out = container.add_stream_from_template(audio_in.streams.audio[0])
        for ms, rgb in zip(TIMES_MS, _rgb_frames(size)):
            frame = av.VideoFrame(size[0], size[1], "yuv420p10le")
            for plane, values in zip(frame.planes, _yuv709_full_10bit(rgb)):
                padded = np.zeros((plane.height, plane.line_size // 2), np.uint16)
                padded[:, :plane.width] = values
                plane.update(padded)
            frame.color_range, frame.colorspace, frame.color_primaries, frame.color_trc = 2, 1, 1, 1
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        for packet in audio_in.demux(audio_in.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = audio_out
                container.mux(packet)
    return path


def describe(path: Path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = list(container.decode(video))
        times = [Fraction(f.pts) * video.time_base for f in frames]
        luma = [np.frombuffer(f.planes[0], np.uint16).reshape(f.planes[0].height, -1)[:, :f.width].copy() for f in frames]
        first = frames[0]
    with av.open(str(path)) as container:
        audio = [(bytes(p), Fraction(p.pts) * p.time_base) for p in container.demux(container.streams.audio[0]) if p.size]
    return dict(size=(first.width, first.height), pix_fmt=first.format.name, times=times, audio=audio, luma=luma,
                tags=(int(first.color_range), int(first.colorspace), int(first.color_primaries), int(first.color_trc)))


def test_demo_on_a_10bit_phone_clip_keeps_the_video(tmp_path):
    source = write_phone_clip(tmp_path)
    env = dict(os.environ, VIDEDIT_WEIGHTS=str(tmp_path / "no-weights"))
    proc = subprocess.run([sys.executable, "-m", "videdit", "demo", str(source), "--out", str(tmp_path / "run"),
                           "--crf", "8", "-q"], capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "run" / "phone.recon.mp4"
    assert out.is_file(), proc.stdout
    src, got = describe(source), describe(out)
    assert (got["size"], got["pix_fmt"], got["tags"]) == (src["size"], src["pix_fmt"], src["tags"]) == (
        (256, 256), "yuv420p10le", (2, 1, 1, 1))
    assert got["times"] == src["times"] and got["audio"] == src["audio"]
    worst = max(int(np.abs(a[RAMP_ROWS].astype(int) - b[RAMP_ROWS].astype(int)).max())
                for a, b in zip(src["luma"], got["luma"]))
    assert worst <= 1, f"the ramp moved by {worst} 10-bit code values"
    assert (tmp_path / "run" / "phone.age.mp4").is_file()
