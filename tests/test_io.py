"""videdit.io: probing, streaming reads, H.264 writing with copied audio, timestamps, image folders.

Input clips are written by tests/clips.py with PyAV directly, not by the code under test.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tests.clips import make_audio_clip, make_image_folder, make_photo_clip
from videdit.errors import InputError
from videdit.io import VideoReader, VideoWriter, probe_video, read_frames

av = pytest.importorskip("av")


def audio_packets(path):
    """(payload bytes, pts in seconds, duration in seconds) of every audio packet of a file."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return [(bytes(p), Fraction(p.pts) * p.time_base, Fraction(p.duration) * p.time_base)
                for p in container.demux(stream) if p.size]


def frame_times(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [Fraction(f.pts) * stream.time_base for f in container.decode(stream)]


@pytest.fixture(scope="module")
def clip_with_audio(tmp_path_factory):
    folder = tmp_path_factory.mktemp("io")
    return make_photo_clip(folder / "clip.mp4", n_frames=10, size=(160, 120), fps=Fraction(30000, 1001),
                           rotations_deg=np.linspace(0, 9, 10), audio=True, scale=0.5)


def test_probe_describes_clip(clip_with_audio):
    info = probe_video(clip_with_audio.path)
    assert (info.width, info.height) == (160, 120)
    assert info.fps == Fraction(30000, 1001)
    assert info.n_frames == 10 and not info.n_frames_is_estimate
    assert info.rotation_deg == 0
    assert info.audio is not None and info.audio.codec == "aac" and info.audio.sample_rate == 44100
    assert not info.is_image_folder


def test_reader_streams_frames_with_timestamps(clip_with_audio):
    frames = list(VideoReader(clip_with_audio.path))
    assert len(frames) == clip_with_audio.n_frames
    assert [f.index for f in frames] == list(range(10))
    assert all(f.image.dtype == np.uint8 and f.image.shape == (120, 160, 3) for f in frames)
    times = np.array([f.time_s for f in frames])
    np.testing.assert_allclose(times, clip_with_audio.timestamps_s, atol=1e-3)
    # read_frames is the same stream; a reader can be iterated again (second pass)
    again = [f.pts for f in read_frames(clip_with_audio.path)]
    assert again == [f.pts for f in frames]
    # the photo content is there, not a flat frame (the clip rotates the photo)
    assert frames[0].image.std() > 20
    assert np.abs(frames[0].image.astype(int) - frames[-1].image.astype(int)).mean() > 3


def test_round_trip_keeps_frames_timestamps_and_audio_packets(clip_with_audio, tmp_path):
    reader = VideoReader(clip_with_audio.path)
    info = reader.info
    out = tmp_path / "out.mp4"
    with VideoWriter(out, info.fps, info.size, audio_from=clip_with_audio.path, time_base=info.time_base,
                     timestamps=reader.timestamps(), crf=10) as writer:
        originals = []
        for frame in reader:
            writer.write(frame.image)
            originals.append(frame.image)
    assert frame_times(out) == frame_times(clip_with_audio.path)
    assert audio_packets(out) == audio_packets(clip_with_audio.path)
    assert audio_packets(out) == audio_packets(clip_with_audio.audio_path)  # the tone as first encoded
    decoded = [f.image for f in VideoReader(out)]
    assert len(decoded) == len(originals)
    error = np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(decoded, originals)])
    assert error < 2.0  # crf 10: near lossless
    out_info = probe_video(out)
    assert out_info.fps == info.fps and out_info.n_frames == info.n_frames


def test_variable_frame_rate_survives(tmp_path):
    times = [0.0, 0.04, 0.08, 0.2, 0.24, 0.5, 0.52]
    clip = make_photo_clip(tmp_path / "vfr.mp4", n_frames=len(times), size=(96, 64), timestamps_s=times, scale=0.3)
    reader = VideoReader(clip.path)
    np.testing.assert_allclose([f.time_s for f in reader], times, atol=1e-6)
    out = tmp_path / "vfr_out.mp4"
    with VideoWriter(out, reader.info.fps, reader.info.size, time_base=reader.info.time_base,
                     timestamps=reader.timestamps()) as writer:
        for frame in reader:
            writer.write(frame.image)
    np.testing.assert_allclose([f.time_s for f in VideoReader(out)], times, atol=1e-6)


def test_writer_default_timing_and_odd_size(tmp_path):
    rng = np.random.default_rng(0)
    # grey blocks: no colour edges, so yuv420's halved chroma costs nothing
    base = np.kron(rng.integers(0, 255, (11, 17, 1)), np.ones((11, 10, 3))).astype(np.uint8)[:121, :161]
    out = tmp_path / "odd.mp4"
    # the odd size is kept: pix_fmt auto turns 4:2:0 into 4:4:4, which H.264 stores at any size
    with VideoWriter(out, Fraction(24), (161, 121), crf=4) as writer:
        assert writer.encoded_size == (161, 121) and writer.encoder.pix_fmt == "yuv444p"
        for i in range(5):
            writer.write(np.roll(base, i * 3, axis=1))
    frames = list(VideoReader(out))
    assert len(frames) == 5
    np.testing.assert_allclose([f.time_s for f in frames], np.arange(5) / 24, atol=1e-6)
    assert frames[0].image.shape == (121, 161, 3)
    assert np.abs(frames[2].image.astype(int) - np.roll(base, 6, axis=1)).mean() < 4
    # an explicit 4:2:0 cannot be odd: the last column / row is repeated
    padded = tmp_path / "padded.mp4"
    with VideoWriter(padded, Fraction(24), (161, 121), crf=4, pix_fmt="yuv420p") as writer:
        assert writer.encoded_size == (162, 122)
        writer.write(base)
    frame = next(iter(VideoReader(padded))).image
    assert frame.shape == (122, 162, 3)
    assert np.abs(frame[:121, 161].astype(int) - frame[:121, 160]).mean() < 4


def test_writer_rejects_wrong_frames_and_discards_on_error(tmp_path):
    out = tmp_path / "bad.mp4"
    with pytest.raises(ValueError):
        with VideoWriter(out, 25, (32, 32)) as writer:
            writer.write(np.zeros((32, 32, 3), np.uint8))
            writer.write(np.zeros((30, 32, 3), np.uint8))
    assert not out.exists()


def test_writer_transcodes_audio_an_mp4_cannot_hold(tmp_path):
    wav = make_audio_clip(tmp_path / "tone.wav", seconds=0.5, codec="pcm_s16le")
    out = tmp_path / "with_wav.mp4"
    with VideoWriter(out, 25, (32, 32), audio_from=wav) as writer:
        for i in range(12):
            writer.write(np.full((32, 32, 3), 20 * i, np.uint8))
    info = probe_video(out)
    assert info.audio is not None and info.audio.codec == "aac"
    assert len(audio_packets(out)) > 10


def test_writer_without_audio_source_stream(tmp_path, clip_with_audio):
    silent = make_photo_clip(tmp_path / "silent.mp4", n_frames=3, size=(64, 48), scale=0.2)
    out = tmp_path / "o.mp4"
    with VideoWriter(out, 25, (64, 48), audio_from=silent.path) as writer:
        for frame in VideoReader(silent.path):
            writer.write(frame.image)
    assert probe_video(out).audio is None


def test_writer_audio_from_image_folder_or_bad_file(tmp_path):
    folder = make_image_folder(tmp_path / "frames", n_frames=2, size=(64, 48), scale=0.2)
    out = tmp_path / "from_folder.mp4"
    with VideoWriter(out, 25, (64, 48), audio_from=folder.path) as writer:
        for frame in VideoReader(folder.path):
            writer.write(frame.image)
    assert probe_video(out).audio is None and probe_video(out).n_frames == 2
    text = tmp_path / "text.mp4"
    text.write_text("no media here\n" * 10)
    with pytest.raises(InputError):
        VideoWriter(tmp_path / "never.mp4", 25, (64, 48), audio_from=text)
    assert not (tmp_path / "never.mp4").exists()


def test_display_rotation_is_applied(tmp_path):
    upright = make_photo_clip(tmp_path / "upright.mp4", n_frames=2, size=(96, 64), scale=0.3)
    turned = make_photo_clip(tmp_path / "turned.mp4", n_frames=2, size=(96, 64), scale=0.3, display_rotation=90)
    info = probe_video(turned.path)
    assert info.rotation_deg == 90 and info.size == (96, 64)
    a = next(iter(VideoReader(upright.path))).image.astype(int)
    b = next(iter(VideoReader(turned.path))).image.astype(int)
    assert b.shape == a.shape
    assert np.abs(a - b).mean() < 4
    raw = next(iter(VideoReader(turned.path, autorotate=False))).image
    assert raw.shape == (96, 64, 3)


def test_image_folder_reads_like_a_video(tmp_path):
    from PIL import Image

    truth = make_image_folder(tmp_path / "frames", n_frames=3, size=(80, 60), scale=0.3)
    (tmp_path / "frames" / "notes.txt").write_text("not an image")
    info = probe_video(truth.path)
    assert info.is_image_folder and info.n_frames == 3 and info.size == (80, 60) and info.fps == 25
    frames = list(VideoReader(truth.path))
    assert len(frames) == 3 and [f.pts for f in frames] == [0, 1, 2]
    expected = np.asarray(Image.open(tmp_path / "frames" / "frame_001.png").convert("RGB"))
    np.testing.assert_array_equal(frames[1].image, expected)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "frames" / "frame_003.png")
    with pytest.raises(InputError, match="differs"):
        list(VideoReader(truth.path))


def _single_line(error: Exception) -> str:
    message = str(error)
    assert message and "\n" not in message
    return message


def test_probe_rejects_bad_inputs(tmp_path, clip_with_audio):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    truncated = tmp_path / "truncated.mp4"
    data = clip_with_audio.path.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    audio_only = make_audio_clip(tmp_path / "tone.m4a", seconds=0.3)
    with_cover = make_audio_clip(tmp_path / "song.m4a", seconds=0.3, cover_picture=True)
    empty_folder = tmp_path / "nothing"
    empty_folder.mkdir()
    cases = {empty: "empty", text: "not a readable video", truncated: "not a readable video",
             audio_only: "no video stream", with_cover: "no video stream", tmp_path / "missing.mp4": "no such file",
             empty_folder: "no images"}
    for path, words in cases.items():
        with pytest.raises(InputError) as caught:
            probe_video(path)
        assert words in _single_line(caught.value), (path, caught.value)
        assert str(path) in str(caught.value)


def test_truncated_faststart_file_fails_cleanly_or_reads_a_prefix(tmp_path, clip_with_audio):
    """A file cut in the middle of its frames (header first): either rejected with one line, or the
    frames that are there come out; never a raw FFmpeg exception."""
    source = clip_with_audio.path
    moved = tmp_path / "faststart.mp4"
    with av.open(str(source)) as src, av.open(str(moved), "w", options={"movflags": "faststart"}) as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams if s.type in ("video", "audio")}
        for packet in src.demux():
            if packet.dts is None or packet.stream.index not in streams:
                continue
            packet.stream = streams[packet.stream.index]
            dst.mux(packet)
    data = moved.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    try:
        frames = list(VideoReader(cut))
    except InputError as error:
        _single_line(error)
    else:
        assert 0 < len(frames) <= clip_with_audio.n_frames


@pytest.mark.parametrize("shape", [(37, 53, 3), (20, 31), (16, 9, 4), (5, 7, 1), (9, 4, 2)])
def test_png_writer_is_lossless_and_readable(tmp_path, shape):
    from PIL import Image

    from videdit.io.png import write_png

    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    noise = rng.integers(0, 256, shape, dtype=np.uint8)
    ramp = (np.add.outer(np.arange(shape[0]), np.arange(shape[1])) * 7 % 256).astype(np.uint8)
    smooth = np.broadcast_to(ramp.reshape(ramp.shape + (1,) * (len(shape) - 2)), shape).copy()
    for name, image in [("noise", noise), ("smooth", smooth)]:
        path = tmp_path / f"{name}.png"
        write_png(path, image, level=1)
        with Image.open(path) as decoded:
            back = np.asarray(decoded)
        np.testing.assert_array_equal(back.reshape(image.shape), image)
    with pytest.raises(ValueError):
        write_png(tmp_path / "bad.png", noise.astype(np.float32))
