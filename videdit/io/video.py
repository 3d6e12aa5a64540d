"""Reading and writing videos with PyAV, and folders of images read as videos.

Reading streams frames as they decode (the whole video is never in memory) and applies the
container's rotation metadata, so frames come out as a player shows them. Writing encodes H.264
(yuv420p) at the source frame rate and timestamps, and copies the source's audio packets unchanged.

Frames are uint8 HWC RGB numpy arrays everywhere.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from videdit.errors import InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_IMAGE_FOLDER_FPS = Fraction(25)

# Audio codecs an .mp4/.mov file can hold as they are; anything else is re-encoded to AAC.
_MP4_AUDIO_CODECS = {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}


@dataclass(frozen=True)
class AudioInfo:
    """The first audio stream of a video."""

    codec: str
    sample_rate: int
    channels: int
    time_base: Fraction
    n_packets: int | None = None  # not counted by probe_video (it would read the whole file)


@dataclass(frozen=True)
class VideoInfo:
    """What probe_video learns about a video file or an image folder.

    width/height are the displayed size (after the rotation metadata is applied), which is the size
    of the frames VideoReader yields. n_frames comes from the container header when it has one and is
    an estimate from duration * fps otherwise (n_frames_is_estimate); the frames actually decoded are
    the truth, and stages count those.
    """

    path: str
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    n_frames: int
    n_frames_is_estimate: bool
    duration_s: float
    rotation_deg: int  # counter-clockwise rotation the reader applies to decoded frames
    codec: str
    start_pts: int = 0
    audio: AudioInfo | None = None
    is_image_folder: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), the order VideoWriter takes."""
        return (self.width, self.height)

    def to_dict(self) -> dict:
        """JSON-friendly dict (fractions as "num/den" strings)."""

        def convert(value):
            if isinstance(value, Fraction):
                return f"{value.numerator}/{value.denominator}"
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            return value

        return convert(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> "VideoInfo":
        data = dict(data)
        audio = data.pop("audio", None)
        for key in ("fps", "time_base"):
            data[key] = Fraction(data[key])
        if audio is not None:
            audio = dict(audio)
            audio["time_base"] = Fraction(audio["time_base"])
            audio = AudioInfo(**audio)
        return cls(audio=audio, **data)

    def save_json(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load_json(cls, path: Path) -> "VideoInfo":
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass
class Frame:
    """One decoded frame: its position, pixels (uint8 HWC RGB) and timestamp.

    pts is in the stream's time base (VideoInfo.time_base); time_s is the same instant in seconds.
    """

    index: int
    image: np.ndarray
    pts: int
    time_s: float


# ----------------------------------------------------------------------------------------------
# probing


def _import_av():
    import av  # imported here so that importing videdit.io stays cheap

    return av


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes)")


def _av_fail(path: Path, error: Exception) -> InputError:
    # FFmpeg's own message repeats the path; its strerror is the short reason.
    reason = getattr(error, "strerror", None) or type(error).__name__
    reason = " ".join(str(reason).split())  # one line, whatever the library put in it
    return InputError(f"{path}: not a readable video ({reason}); is the file complete and really a video?")


def _rotation_of(frame) -> int:
    """Counter-clockwise display rotation of a decoded frame, a multiple of 90 in [0, 360)."""
    try:
        angle = frame.rotation or 0
    except Exception:  # no display matrix side data
        angle = 0
    return int(round(angle / 90.0)) % 4 * 90


def _video_stream(container):
    """The first real video stream: cover art (an "attached picture", as in music files) is not video."""
    av = _import_av()
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _frame_rate(stream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return Fraction(rate)
    return DEFAULT_IMAGE_FOLDER_FPS


def probe_video(path: str | Path, *, image_folder_fps: Fraction = DEFAULT_IMAGE_FOLDER_FPS) -> VideoInfo:
    """Check that `path` is a readable video (or image folder) and describe it.

    Fast: reads the header and decodes the first frame only. Raises InputError with one line for a
    missing, empty, truncated, non-video or audio-only file, or a folder without images.
    """
    path = Path(path)
    _check_file(path)
    if path.is_dir():
        return _probe_image_folder(path, image_folder_fps)
    av = _import_av()
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as error:
        raise _av_fail(path, error) from None
    with container:
        stream = _video_stream(container)
        if stream is None:
            kinds = sorted({s.type for s in container.streams if s not in container.streams.video})
            kinds += ["cover picture"] if container.streams.video else []
            what = f"only {', '.join(kinds)}" if kinds else "no streams"
            raise InputError(f"{path}: has no video stream ({what})")
        fps = _frame_rate(stream)
        time_base = Fraction(stream.time_base) if stream.time_base else 1 / fps
        first = None
        try:
            for first in container.decode(stream):
                break
        except (av.error.FFmpegError, OSError) as error:
            raise _av_fail(path, error) from None
        if first is None:
            raise InputError(f"{path}: the video stream has no decodable frame (truncated file?)")
        rotation = _rotation_of(first)
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width

        if stream.duration is not None and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = 0.0
        n_frames = int(stream.frames or 0)
        estimate = n_frames <= 0
        if estimate:
            n_frames = max(1, int(round(duration * fps)))

        audio = None
        if container.streams.audio:
            a = container.streams.audio[0]
            audio = AudioInfo(
                codec=a.codec_context.name,
                sample_rate=int(a.sample_rate or 0),
                channels=int(a.channels or 0),
                time_base=Fraction(a.time_base) if a.time_base else Fraction(1, int(a.sample_rate or 1)),
            )
        return VideoInfo(
            path=str(path),
            width=width,
            height=height,
            fps=fps,
            time_base=time_base,
            n_frames=n_frames,
            n_frames_is_estimate=estimate,
            duration_s=duration,
            rotation_deg=rotation,
            codec=stream.codec_context.name,
            start_pts=int(first.pts) if first.pts is not None else 0,
            audio=audio,
        )


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder in natural order (frame2 before frame10)."""
    files = [p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_natural_key)


def read_image(path: Path) -> np.ndarray:
    """An image file as uint8 RGB [H, W, 3], upright (EXIF orientation applied); one InputError line
    when it cannot be read."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"{path}: not a readable image ({type(error).__name__})") from None


def _probe_image_folder(folder: Path, fps: Fraction) -> VideoInfo:
    files = list_images(folder)
    if not files:
        raise InputError(f"{folder}: the folder has no images ({', '.join(IMAGE_SUFFIXES)})")
    first = read_image(files[0])
    fps = Fraction(fps)
    return VideoInfo(
        path=str(folder),
        width=first.shape[1],
        height=first.shape[0],
        fps=fps,
        time_base=1 / fps,
        n_frames=len(files),
        n_frames_is_estimate=False,
        duration_s=float(len(files) / fps),
        rotation_deg=0,
        codec="images",
        is_image_folder=True,
    )


# ----------------------------------------------------------------------------------------------
# reading


class VideoReader:
    """Streams the frames of a video file or an image folder.

    >>> reader = VideoReader("clip.mp4")
    >>> reader.info.fps, reader.info.size
    >>> for frame in reader:          # Frame(index, image uint8 HWC RGB, pts, time_s)
    ...     ...

    Each iteration opens the file again, so a reader can be iterated several times (two passes over
    a long video cost no memory). Frames whose decoder gives no timestamp get one from their index.
    A decoding error raises InputError naming the frame.
    """

    def __init__(self, path: str | Path, *, autorotate: bool = True,
                 image_folder_fps: Fraction = DEFAULT_IMAGE_FOLDER_FPS, threads: int = 0):
        self.path = Path(path)
        self.info = probe_video(self.path, image_folder_fps=image_folder_fps)
        self.autorotate = autorotate
        self.threads = threads  # 0: let FFmpeg choose

    def __iter__(self) -> Iterator[Frame]:
        if self.info.is_image_folder:
            return self._iter_images()
        return self._iter_video()

    def _iter_images(self) -> Iterator[Frame]:
        expected = (self.info.height, self.info.width)
        for index, file in enumerate(list_images(self.path)):
            image = read_image(file)
            if image.shape[:2] != expected:
                raise InputError(
                    f"{file}: image size {image.shape[1]}x{image.shape[0]} differs from the first image's "
                    f"{expected[1]}x{expected[0]}")
            yield Frame(index=index, image=image, pts=index, time_s=float(index / self.info.fps))

    def _iter_video(self) -> Iterator[Frame]:
        av = _import_av()
        time_base = self.info.time_base
        frame_step = 1 / (self.info.fps * time_base)  # one frame duration in pts units
        with av.open(str(self.path)) as container:
            stream = _video_stream(container)
            stream.thread_type = "AUTO"
            if self.threads:
                stream.codec_context.thread_count = self.threads
            index = 0
            last_pts = None
            try:
                for decoded in container.decode(stream):
                    pts = decoded.pts
                    if pts is None:
                        pts = (last_pts + frame_step) if last_pts is not None else self.info.start_pts
                        pts = int(round(pts))
                    image = decoded.to_ndarray(format="rgb24")
                    if self.autorotate:
                        turns = _rotation_of(decoded) // 90
                        if turns:
                            image = np.ascontiguousarray(np.rot90(image, turns))
                    yield Frame(index=index, image=image, pts=int(pts), time_s=float(pts * time_base))
                    last_pts = pts
                    index += 1
            except (av.error.FFmpegError, OSError) as error:
                raise InputError(f"{self.path}: decoding failed at frame {index} ({type(error).__name__}); "
                                 "the file is damaged or truncated") from None

    def timestamps(self) -> list[int]:
        """pts of every frame, by decoding the whole video (in the stream's time base)."""
        return [frame.pts for frame in self]


def read_frames(path: str | Path, **kwargs) -> Iterator[Frame]:
    """Shorthand for iterating VideoReader(path)."""
    return iter(VideoReader(path, **kwargs))


# ----------------------------------------------------------------------------------------------
# writing


class VideoWriter:
    """Encodes frames to H.264 (yuv420p) and copies the audio of another file unchanged.

    >>> with VideoWriter("out.mp4", fps=info.fps, size=info.size, audio_from="in.mp4",
    ...                  time_base=info.time_base, timestamps=pts_list) as writer:
    ...     for frame in frames:
    ...         writer.write(frame)           # uint8 (H, W, 3) RGB, H, W = size[1], size[0]

    Timestamps: without `timestamps` frame i is shown at i / fps; with them (in `time_base` units,
    e.g. the pts a VideoReader yielded) every frame keeps its own time, so variable frame rate and a
    non-zero start survive. `write(image, pts=...)` sets one frame's time explicitly.

    Odd sizes: yuv420p needs even width and height, so an odd-sized frame gets its last row/column
    repeated once (`encoded_size` says the size in the file).

    Audio: the first audio stream of `audio_from` is copied packet by packet (bit-identical),
    interleaved with the video by time. A codec an .mp4 cannot hold is re-encoded to AAC (logged).
    If the block raises, the partial output file is deleted.
    """

    def __init__(self, path: str | Path, fps: Fraction | float, size: tuple[int, int], *,
                 audio_from: str | Path | None = None, time_base: Fraction | None = None,
                 timestamps: Sequence[int] | None = None, crf: int = 18, preset: str = "medium",
                 codec: str = "libx264", pix_fmt: str = "yuv420p"):
        av = _import_av()
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        self.size = (int(size[0]), int(size[1]))
        if self.size[0] <= 0 or self.size[1] <= 0:
            raise ValueError(f"bad frame size {size}")
        self.encoded_size = (self.size[0] + self.size[0] % 2, self.size[1] + self.size[1] % 2)
        self.time_base = Fraction(time_base) if time_base is not None else 1 / self.fps
        self.timestamps = list(timestamps) if timestamps is not None else None
        self.n_written = 0
        self._last_pts: int | None = None
        self._closed = False

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        try:
            stream = self._container.add_stream(codec, rate=self.fps)
            stream.width, stream.height = self.encoded_size
            stream.pix_fmt = pix_fmt
            stream.time_base = self.time_base
            stream.codec_context.time_base = self.time_base
            stream.options = {"crf": str(crf), "preset": preset}
            self._video = stream
            self._audio = _AudioCopier(self._container, Path(audio_from)) if audio_from else None
        except Exception:
            self._container.close()
            self.path.unlink(missing_ok=True)
            raise

    # context manager ------------------------------------------------------------------------
    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(discard=exc_type is not None)

    # writing ---------------------------------------------------------------------------------
    def _next_pts(self) -> int:
        if self.timestamps is not None:
            if self.n_written >= len(self.timestamps):
                raise ValueError(f"more frames than timestamps ({len(self.timestamps)})")
            return int(self.timestamps[self.n_written])
        return int(round(self.n_written / (self.fps * self.time_base)))

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        """Encode one uint8 HWC RGB frame of the writer's size."""
        av = _import_av()
        image = np.asarray(image)
        width, height = self.size
        if image.dtype != np.uint8 or image.shape != (height, width, 3):
            raise ValueError(f"expected uint8 frame of shape {(height, width, 3)}, got {image.dtype} {image.shape}")
        if self.encoded_size != self.size:
            image = np.pad(image, ((0, self.encoded_size[1] - height), (0, self.encoded_size[0] - width), (0, 0)),
                           mode="edge")
        pts = self._next_pts() if pts is None else int(pts)
        if self._last_pts is not None and pts <= self._last_pts:
            # H.264 needs strictly increasing timestamps; a repeated one moves by one tick.
            log.warning("frame %d: timestamp %d not after %d; using %d", self.n_written, pts, self._last_pts,
                        self._last_pts + 1)
            pts = self._last_pts + 1
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = pts
        frame.time_base = self.time_base
        for packet in self._video.encode(frame):
            self._container.mux(packet)
        self._last_pts = pts
        self.n_written += 1
        if self._audio is not None:
            self._audio.mux_until(float(pts * self.time_base))

    def close(self, discard: bool = False) -> None:
        """Flush the encoder and the rest of the audio; `discard` deletes the file instead."""
        if self._closed:
            return
        self._closed = True
        try:
            if not discard:
                for packet in self._video.encode(None):
                    self._container.mux(packet)
                if self._audio is not None:
                    self._audio.mux_until(math.inf)
        finally:
            if self._audio is not None:
                self._audio.close()
            self._container.close()
            if discard:
                self.path.unlink(missing_ok=True)


class _AudioCopier:
    """Feeds the audio packets of a source file into an output container, in time order."""

    def __init__(self, output, source: Path):
        av = _import_av()
        self._input = None
        self._output = output
        self._packets = None
        self._pending = None
        self._transcode = None
        self.stream = None
        if source.is_dir():  # an image folder has no audio
            return
        _check_file(source)
        try:
            self._input = av.open(str(source))
        except (av.error.FFmpegError, UnicodeDecodeError, OSError) as error:
            raise _av_fail(source, error) from None
        if not self._input.streams.audio:
            return
        in_stream = self._input.streams.audio[0]
        name = in_stream.codec_context.name
        container_format = output.format.name
        if "mp4" in container_format or "mov" in container_format:
            copyable = name in _MP4_AUDIO_CODECS
        else:
            copyable = True
        if copyable:
            self.stream = output.add_stream_from_template(in_stream)
        else:
            log.warning("audio codec %s cannot go into %s unchanged; re-encoding it to AAC", name, container_format)
            self.stream = output.add_stream("aac", rate=in_stream.sample_rate)
            self._transcode = in_stream
        self._packets = self._input.demux(in_stream)

    def _next(self):
        for packet in self._packets:
            if packet.dts is None and packet.pts is None:
                continue  # the demuxer's end-of-stream marker
            return packet
        return None

    def mux_until(self, time_s: float) -> None:
        if self._packets is None:
            return
        while True:
            if self._pending is None:
                self._pending = self._next()
                if self._pending is None:
                    self._packets = None
                    if self._transcode is not None:
                        for out in self.stream.encode(None):
                            self._output.mux(out)
                    return
            packet = self._pending
            stamp = packet.pts if packet.pts is not None else packet.dts
            if float(stamp * packet.time_base) > time_s:
                return
            self._pending = None
            if self._transcode is not None:
                for decoded in packet.decode():
                    decoded.pts = None
                    for out in self.stream.encode(decoded):
                        self._output.mux(out)
            else:
                packet.stream = self.stream
                self._output.mux(packet)

    def close(self) -> None:
        if self._input is not None:
            self._input.close()
