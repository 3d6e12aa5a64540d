"""videdit.io keeps what a video is: bit depth, chroma, colour tags and conversion, odd sizes, frame
times, audio; encodes are byte-identical for identical input; damaged input is reported.

Source clips are written here with PyAV directly from Y'CbCr code values (not with videdit.io), so
the values the tests expect are known exactly.
"""
from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.clips import make_audio_clip
from videdit.errors import VideditError
from videdit.io import VideoReader, VideoWriter, probe_video
from videdit.io.color import to_uint8
from videdit.io.encoding import EncoderSettings
from videdit.io.probe import VideoInfo

av = pytest.importorskip("av")

REPO = Path(__file__).resolve().parents[1]
TIMES_MS = [0, 40, 80, 160, 200, 240, 320, 360]  # variable frame rate
RAMP_ROWS = slice(0, 32)  # grey ramp, the same in every frame
PATCH_ROWS = slice(40, 56)  # a coloured patch that moves


@dataclass(frozen=True)
class ClipSpec:
    name: str
    codec: str
    pix_fmt: str
    size: tuple[int, int]
    color_range: int  # H.273 code points, as PyAV takes them
    matrix: int
    primaries: int
    trc: int
    suffix: str = ".mp4"


SPECS = {
    # a phone's HDR-capable clip: HEVC Main 10, full range, BT.709
    "hevc10_full_709": ClipSpec("hevc10_full_709", "libx265", "yuv420p10le", (128, 96), 2, 1, 1, 1),
    # HLG: BT.2020 matrix and primaries, ARIB STD-B67 transfer, limited range
    "hevc10_hlg_2020": ClipSpec("hevc10_hlg_2020", "libx265", "yuv420p10le", (128, 96), 1, 9, 9, 18),
    # 4:4:4 8-bit H.264 with the BT.601 matrix (what swscale assumes, tagged here)
    "h264_444_601": ClipSpec("h264_444_601", "libx264", "yuv444p", (128, 96), 1, 6, 6, 6),
    # odd size: 4:4:4 is what lets H.264 store it
    "h264_odd": ClipSpec("h264_odd", "libx264", "yuv444p", (321, 257), 1, 1, 1, 1),
    # lossless FFV1 in .mkv, odd 4:2:0 10-bit (FFV1 allows it)
    "ffv1_odd_10": ClipSpec("ffv1_odd_10", "ffv1", "yuv420p10le", (321, 257), 1, 1, 1, 1, ".mkv"),
}


def _depth(pix_fmt: str) -> int:
    return 10 if "10" in pix_fmt else 8


def _planes(spec: ClipSpec, index: int) -> list[np.ndarray]:
    """Code values of frame `index`: a grey ramp over the legal range on top, a moving patch below."""
    width, height = spec.size
    depth = _depth(spec.pix_fmt)
    unit = 2 ** (depth - 8)
    full = spec.color_range == 2
    low, high = (0, 2 ** depth - 1) if full else (16 * unit, 235 * unit)
    mid = 2 ** (depth - 1)
    luma = np.full((height, width), (low + high) // 2, np.int64)
    luma[RAMP_ROWS] = np.linspace(low, high, width).round().astype(np.int64)[None, :]
    sub_x = 2 if "420" in spec.pix_fmt else 1
    sub_y = 2 if "420" in spec.pix_fmt else 1
    cw, ch = -(-width // sub_x), -(-height // sub_y)
    cb = np.full((ch, cw), mid, np.int64)
    cr = np.full((ch, cw), mid, np.int64)
    x0 = 8 + 4 * index
    rows = slice(PATCH_ROWS.start // sub_y, PATCH_ROWS.stop // sub_y)
    cols = slice(x0 // sub_x, (x0 + 24) // sub_x)
    cb[rows, cols] = mid - 40 * unit
    cr[rows, cols] = mid + 60 * unit
    dtype = np.uint16 if depth > 8 else np.uint8
    return [p.astype(dtype) for p in (luma, cb, cr)]


def _video_frame(spec: ClipSpec, planes: list[np.ndarray]):
    frame = av.VideoFrame(spec.size[0], spec.size[1], spec.pix_fmt)
    for plane, values in zip(frame.planes, planes):
        row = plane.line_size // values.itemsize
        padded = np.zeros((plane.height, row), values.dtype)
        padded[:, :plane.width] = values
        plane.update(padded)
    frame.color_range, frame.colorspace = spec.color_range, spec.matrix
    frame.color_primaries, frame.color_trc = spec.primaries, spec.trc
    return frame


def write_source_clip(folder: Path, spec: ClipSpec, planes=None, times_ms=TIMES_MS) -> Path:
    """The test clip: VFR frames at times_ms (default 8) in a 1/1000 time base, tagged, with an AAC track.
    planes(i) gives frame i's code planes (default: the grey ramp and the moving patch)."""
    planes = planes or (lambda i: _planes(spec, i))
    path = folder / (spec.name + spec.suffix)
    tone = make_audio_clip(folder / (spec.name + ".tone.m4a"), seconds=0.45)
    with av.open(str(path), "w") as container, av.open(str(tone)) as audio_in:
        stream = container.add_stream(spec.codec, rate=25)
        stream.width, stream.height = spec.size
        stream.pix_fmt = spec.pix_fmt
        stream.time_base = Fraction(1, 1000)
        context = stream.codec_context
        context.time_base = Fraction(1, 1000)
        context.color_range, context.colorspace = spec.color_range, spec.matrix
        context.color_primaries, context.color_trc = spec.primaries, spec.trc
        if spec.codec == "libx265":
            stream.options = {"crf": "8", "x265-params": "log-level=error"}
        elif spec.codec == "libx264":
            stream.options = {"crf": "8"}
        audio_out = container.add_stream_from_template(audio_in.streams.audio[0])
        for i, ms in enumerate(times_ms):
            frame = _video_frame(spec, planes(i))
            frame.pts = ms
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        for packet in audio_in.demux(audio_in.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = audio_out
                container.mux(packet)
    return path


def decoded_planes(path: Path) -> list[list[np.ndarray]]:
    """Every frame's code-value planes, read with PyAV directly."""
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            dtype = np.dtype("<u2") if frame.format.components[0].bits > 8 else np.dtype(np.uint8)
            out.append([np.frombuffer(p, dtype).reshape(p.height, p.line_size // dtype.itemsize)[:, :p.width].copy()
                        for p in frame.planes[:3]])
    return out


def describe(path: Path) -> dict:
    """What a player sees, read with PyAV directly: size, format, tags, frame times, audio packets."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = list(container.decode(video))
        first = frames[0]
        times = [Fraction(f.pts) * video.time_base for f in frames]
    with av.open(str(path)) as container:
        audio = [(bytes(p), Fraction(p.pts) * p.time_base) for p in container.demux(container.streams.audio[0])
                 if p.size]
    return dict(size=(first.width, first.height), pix_fmt=first.format.name,
                tags=(int(first.color_range), int(first.colorspace), int(first.color_primaries), int(first.color_trc)),
                times=times, audio=audio)


def round_trip(source: Path, out: Path, **writer_kwargs) -> Path:
    """Read with the source's depth, write back with everything on auto: no edit in between."""
    reader = VideoReader(source, rgb="source")
    info = reader.info
    with VideoWriter(out, info.fps, info.size, audio_from=source, time_base=info.time_base,
                     timestamps=reader.timestamps(), source=info, **writer_kwargs) as writer:
        for frame in reader:
            writer.write(frame.image)
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fidelity")
    return {name: write_source_clip(folder, spec) for name, spec in SPECS.items()}


@pytest.mark.parametrize("name", list(SPECS))
def test_round_trip_keeps_size_depth_tags_times_and_audio(clips, tmp_path, name):
    spec = SPECS[name]
    source = clips[name]
    info = probe_video(source)
    assert info.size == spec.size and info.pix_fmt == spec.pix_fmt and info.bit_depth == _depth(spec.pix_fmt)
    out = round_trip(source, tmp_path / ("out" + spec.suffix))
    before, after = describe(source), describe(out)
    assert after["size"] == before["size"] == spec.size
    assert after["pix_fmt"] == before["pix_fmt"] == spec.pix_fmt
    assert after["tags"] == before["tags"] == (spec.color_range, spec.matrix, spec.primaries, spec.trc)
    assert after["times"] == before["times"]
    # (matroska shifts everything by the AAC priming delay, so only the steps are the written ones)
    assert np.diff(after["times"]).tolist() == [Fraction(b - a, 1000) for a, b in zip(TIMES_MS, TIMES_MS[1:])]
    assert after["audio"] == before["audio"] and len(after["audio"]) > 10
    assert probe_video(out).codec == info.codec
    clean = VideoReader(out)  # a good file reads with no problem reported
    assert sum(1 for _ in clean) == clean.n_frames_read == len(TIMES_MS) and clean.decode_problems == []


@pytest.mark.parametrize("name", ["hevc10_full_709", "hevc10_hlg_2020", "ffv1_odd_10"])
def test_grey_ramp_within_one_10bit_code_value(clips, tmp_path, name):
    spec = SPECS[name]
    source = clips[name]
    # crf 8 (the source's): the encoder's own quantisation stays under a code value, so what is left
    # is the conversion's (at the default crf 20 HEVC alone moves this steep ramp by up to ~12 codes)
    out = round_trip(source, tmp_path / ("ramp" + spec.suffix), settings=EncoderSettings(crf=8))
    for before, after in zip(decoded_planes(source), decoded_planes(out)):
        assert before[0].dtype == after[0].dtype == np.dtype("<u2")
        error = np.abs(before[0][RAMP_ROWS].astype(int) - after[0][RAMP_ROWS].astype(int))
        assert error.max() <= 1, error.max()
    if spec.codec == "ffv1":  # lossless source and output: every plane of every frame comes back exactly
        for before, after in zip(decoded_planes(source), decoded_planes(out)):
            for a, b in zip(before, after):
                np.testing.assert_array_equal(a, b)


def _reference_rgb(planes, kr, kb, depth, full):
    """Straight from the standard's equations (nearest chroma sample), for the patch interior."""
    unit = 2 ** (depth - 8)
    if full:
        top = 2 ** depth - 1
        ey, pb, pr = planes[0] / top, (planes[1] - 2 ** (depth - 1)) / top, (planes[2] - 2 ** (depth - 1)) / top
    else:
        ey = (planes[0] / unit - 16) / 219
        pb, pr = (planes[1] / unit - 128) / 224, (planes[2] / unit - 128) / 224
    r = ey + 2 * (1 - kr) * pr
    b = ey + 2 * (1 - kb) * pb
    g = (ey - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.array([r, g, b]), 0, 1)


@pytest.mark.parametrize("name,kr,kb", [("hevc10_hlg_2020", 0.2627, 0.0593), ("h264_444_601", 0.299, 0.114),
                                        ("hevc10_full_709", 0.2126, 0.0722)])
def test_reader_converts_with_the_source_matrix_and_range(clips, name, kr, kb):
    spec = SPECS[name]
    depth = _depth(spec.pix_fmt)
    frame = next(iter(VideoReader(clips[name], rgb="source")))
    assert frame.image.dtype == (np.uint16 if depth > 8 else np.uint8)
    scale = 65535 if depth > 8 else 255
    planes = decoded_planes(clips[name])[0]
    sub = 2 if "420" in spec.pix_fmt else 1
    y, x = (PATCH_ROWS.start + PATCH_ROWS.stop) // 2, 8 + 12  # the patch centre in frame 0
    codes = [int(planes[0][y, x]), int(planes[1][y // sub, x // sub]), int(planes[2][y // sub, x // sub])]
    expected = _reference_rgb(np.array(codes, float), kr, kb, depth, spec.color_range == 2) * scale
    got = frame.image[y, x].astype(float)
    assert np.abs(got - expected).max() <= 0.01 * scale, (got, expected)
    # the generator path gets 8 bits of the same colour
    assert np.abs(to_uint8(frame.image)[y, x].astype(float) - expected / scale * 255).max() <= 3


def test_hdr_source_is_reported_and_passed_through(clips):
    info = probe_video(clips["hevc10_hlg_2020"])
    assert info.is_hdr and info.color_trc == "arib-std-b67" and info.color_primaries == "bt2020"
    assert info.matrix == "bt2020nc" and info.color_range == "tv"
    assert not probe_video(clips["hevc10_full_709"]).is_hdr and probe_video(clips["hevc10_full_709"]).full_range


def test_uint8_reader_is_the_default_and_untagged_hd_reads_as_bt709(clips, tmp_path):
    frame = next(iter(VideoReader(clips["hevc10_full_709"])))
    assert frame.image.dtype == np.uint8
    # a writer without a source writes BT.709 limited range and says so in the tags
    out = tmp_path / "plain.mp4"
    with VideoWriter(out, 25, (64, 48)) as writer:
        writer.write(np.full((48, 64, 3), (200, 30, 90), np.uint8))
    assert describe_tags(out) == (1, 1, 1, 1)
    back = next(iter(VideoReader(out))).image
    assert np.abs(back[24, 32].astype(int) - (200, 30, 90)).max() <= 3


def describe_tags(path: Path) -> tuple[int, int, int, int]:
    with av.open(str(path)) as container:
        f = next(container.decode(video=0))
        return int(f.color_range), int(f.colorspace), int(f.color_primaries), int(f.color_trc)


def test_encoder_settings_choices_and_errors(clips, tmp_path):
    info = probe_video(clips["hevc10_full_709"])
    with VideoWriter(tmp_path / "a.mp4", 25, info.size, source=info) as writer:
        assert (writer.encoder.codec, writer.encoder.pix_fmt, writer.encoder.crf) == ("libx265", "yuv420p10le", 20)
        writer.write(np.zeros((96, 128, 3), np.uint16))
    settings = EncoderSettings(codec="h264", crf=23, preset="veryfast", pix_fmt="yuv420p")
    with VideoWriter(tmp_path / "b.mp4", 25, info.size, source=info, settings=settings) as writer:
        assert (writer.encoder.codec, writer.encoder.pix_fmt, writer.encoder.crf) == ("libx264", "yuv420p", 23)
        assert writer.encoder.color_range == "pc" and writer.encoder.color_space == "bt709"
        writer.write(np.zeros((96, 128, 3), np.uint8))
    assert probe_video(tmp_path / "b.mp4").bit_depth == 8 and probe_video(tmp_path / "b.mp4").full_range
    with VideoWriter(tmp_path / "c.mkv", 25, (33, 17), codec="ffv1") as writer:
        assert writer.encoder.pix_fmt == "yuv420p" and writer.encoded_size == (33, 17)
        writer.write(np.zeros((17, 33, 3), np.uint8))
    bad = [dict(codec="vp9"), dict(codec="ffv1"), dict(crf=99), dict(preset="fastest"), dict(pix_fmt="rgb24")]
    for kwargs in bad:
        with pytest.raises(VideditError) as caught:
            VideoWriter(tmp_path / "bad.mp4", 25, (32, 32), **kwargs)
        assert "\n" not in str(caught.value)
        assert not (tmp_path / "bad.mp4").exists()


# reproducibility ------------------------------------------------------------------------------------

_ENCODE_SCRIPT = textwrap.dedent("""
    import hashlib, sys
    from pathlib import Path
    import numpy as np
    from videdit.synthetic import make_clip
    from videdit.io.writer import VideoWriter
    out, threads = Path(sys.argv[1]), int(sys.argv[2])
    digests = []
    # make_clip: the astronaut moving, H.264 with an AAC tone (the case measured to differ before)
    clip = make_clip(out / "clip.mp4", n_frames=12, size=(160, 128))
    digests.append(hashlib.sha256(clip.path.read_bytes()).hexdigest())
    rng = np.random.default_rng(7)
    frames = [np.roll(rng.integers(0, 65535, (9, 11, 3)).astype(np.uint16).repeat(8, 0).repeat(8, 1)[:65, :81],
                      i, 1) for i in range(10)]
    for codec, suffix, pix_fmt in (("h264", ".mp4", "auto"), ("hevc", ".mp4", "yuv420p10le"),
                                   ("ffv1", ".mkv", "yuv420p10le")):
        path = out / ("frames_" + codec + suffix)
        with VideoWriter(path, 25, (81, 65), codec=codec, pix_fmt=pix_fmt, threads=threads) as writer:
            for frame in frames:
                writer.write(frame)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    print(" ".join(digests))
""")


def _encode_in_process(folder: Path, threads: int, perturb: str) -> list[str]:
    folder.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), MALLOC_PERTURB_=perturb, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _ENCODE_SCRIPT, str(folder), str(threads)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_same_frames_give_same_bytes_across_processes_and_thread_counts(tmp_path):
    """Two processes, 1 and 2 threads, and different junk in freed memory (glibc's MALLOC_PERTURB_:
    x264's macroblock tree read such memory, which is what made encodes differ)."""
    first = _encode_in_process(tmp_path / "a", threads=1, perturb="0")
    second = _encode_in_process(tmp_path / "b", threads=2, perturb="165")
    assert len(first) == 4
    assert first == second


def test_same_frames_give_same_bytes_in_one_process(tmp_path):
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 255, (48, 64, 3)).astype(np.uint8) for _ in range(6)]
    digests = []
    for attempt in range(2):
        path = tmp_path / f"again{attempt}.mp4"
        with VideoWriter(path, 25, (64, 48)) as writer:
            for frame in frames:
                writer.write(frame)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


# damaged input ---------------------------------------------------------------------------------------


def _h264_ts(path: Path, n_frames: int) -> bytes:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path.read_bytes()


def test_garbage_after_good_frames_is_reported(tmp_path, caplog):
    good = _h264_ts(tmp_path / "good.ts", 5)
    reader = VideoReader(tmp_path / "good.ts")
    assert len(list(reader)) == 5 and reader.n_frames_read == 5 and reader.decode_problems == []
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(good + np.random.default_rng(1).integers(0, 255, len(good), dtype=np.uint8).tobytes())
    reader = VideoReader(damaged)
    with caplog.at_level(logging.WARNING, logger="videdit.io.reader"):
        frames = list(reader)
    assert len(frames) == 5 and reader.n_frames_read == 5
    assert len(reader.decode_problems) == 1
    problem = reader.decode_problems[0]
    assert problem.after_frame == 4 and "bytes" in problem.reason
    assert any("decoding problem" in record.getMessage() for record in caplog.records)


def test_corrupted_middle_is_reported_with_where(tmp_path):
    data = bytearray(_h264_ts(tmp_path / "long.ts", 20))
    rng = np.random.default_rng(2)
    start = len(data) // 2
    data[start:start + 4000] = rng.integers(0, 255, 4000, dtype=np.uint8).tobytes()
    damaged = tmp_path / "middle.ts"
    damaged.write_bytes(bytes(data))
    reader = VideoReader(damaged)
    frames = list(reader)
    assert 0 < len(frames) <= 20
    assert reader.n_frames_read == len(frames)
    assert reader.decode_problems, "a damaged middle must not read as a clean file"
    assert all(0 <= p.after_frame < len(frames) for p in reader.decode_problems)


# conversion and settings without a codec in the loop ---------------------------------------------


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv422p10le", "yuv444p10le", "yuv420p10le", "yuv420p12le"])
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("matrix", ["bt709", "bt2020nc", "smpte170m"])
def test_conversion_round_trip_keeps_every_code(pix_fmt, full, matrix):
    """Y'CbCr codes -> RGB (the reader) -> Y'CbCr (the writer) is exact for in-gamut content, odd
    sizes and subsampled chroma included; 8-bit through uint8 RGB, deeper through uint16."""
    from videdit.io.color import rgb_to_yuv, yuv_layout, yuv_to_rgb

    layout = yuv_layout(pix_fmt)
    rng = np.random.default_rng(len(pix_fmt))
    height, width = 37, 51
    rgb = rng.uniform(0.25, 0.75, (height // 4 + 1, width // 4 + 1, 3)).repeat(4, 0).repeat(4, 1)[:height, :width]
    deep = layout.bit_depth > 8
    rgb = np.rint(rgb * (65535 if deep else 255)).astype(np.uint16 if deep else np.uint8)
    planes = rgb_to_yuv(rgb, layout, matrix, full)  # codes of a real-looking frame
    back = rgb_to_yuv(yuv_to_rgb(planes, layout, matrix, full, rgb.dtype), layout, matrix, full)
    for before, after in zip(planes, back):
        assert before.dtype == after.dtype and before.shape == after.shape
        if deep:
            np.testing.assert_array_equal(before, after)
        else:  # 8-bit RGB cannot hold every 8-bit Y'CbCr triple: within one code
            assert np.abs(before.astype(int) - after.astype(int)).max() <= 1


def _info(codec, pix_fmt, depth, chroma, size=(1280, 720)):
    return VideoInfo(path="x", width=size[0], height=size[1], fps=Fraction(25), time_base=Fraction(1, 25),
                     n_frames=1, n_frames_is_estimate=False, duration_s=0.04, rotation_deg=0, codec=codec,
                     pix_fmt=pix_fmt, bit_depth=depth, chroma=chroma, color_range="tv", color_space="unknown",
                     color_primaries="unknown", color_trc="unknown")


@pytest.mark.parametrize("source,suffix,size,expected", [
    (("hevc", "yuv420p12le", 12, "4:2:0"), ".mp4", (1280, 720), ("libx265", "yuv420p12le")),
    (("h264", "yuv422p10le", 10, "4:2:2"), ".mp4", (1280, 720), ("libx264", "yuv422p10le")),
    (("prores", "yuv422p10le", 10, "4:2:2"), ".mov", (1280, 720), ("libx265", "yuv422p10le")),
    (("ffv1", "yuv420p10le", 10, "4:2:0"), ".mp4", (1280, 720), ("libx265", "yuv420p10le")),
    (("ffv1", "yuv420p10le", 10, "4:2:0"), ".mkv", (321, 257), ("ffv1", "yuv420p10le")),
    (("h264", "yuvj420p", 8, "4:2:0"), ".mp4", (321, 257), ("libx264", "yuv444p")),
    (("hevc", "yuv420p12le", 12, "4:2:0"), ".mp4", (321, 257), ("libx265", "yuv444p12le")),
])
def test_auto_settings_match_the_source(source, suffix, size, expected):
    from videdit.io.encoding import resolve_encoder

    info = _info(*source, size=size)
    encoder = resolve_encoder(EncoderSettings(), size, info, suffix)
    assert (encoder.codec, encoder.pix_fmt) == expected
    assert encoder.encoded_size == size
    # untagged: the matrix players assume for the size, limited range
    assert encoder.color_space == ("bt709" if min(size) > 576 else "smpte170m") and encoder.color_range == "tv"


def test_stopping_early_never_hangs_the_decoder(clips):
    """A consumer that takes a few frames and stops (next(iter(reader)), a break) closes the reader's generator
    mid-stream; freeing a frame-threaded decoder from a packet's destructor used to deadlock in FFmpeg (seen
    within a few dozen tries). In a child process, so a hang is a timeout, not a stuck suite."""
    import subprocess
    import sys

    code = ("import gc, sys; from videdit.io import VideoReader\n"
            "for _ in range(150):\n"
            "    for p in sys.argv[1:]:\n"
            "        next(iter(VideoReader(p, rgb='source'))); gc.collect()\n"
            "print('done')\n")
    paths = [str(clips[n]) for n in ("hevc10_hlg_2020", "h264_444_601", "hevc10_full_709")]
    proc = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=240, cwd=REPO)
    assert proc.stdout.strip() == "done", proc.stderr
