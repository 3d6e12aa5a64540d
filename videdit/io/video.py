"""Reading and writing videos with PyAV, and folders of images read as videos.

Reading streams frames as they decode (the whole video is never in memory) and applies the
container's rotation metadata, so frames come out as a player shows them. The Y'CbCr -> RGB conversion
uses the video's own matrix and range (videdit.io.color); frames are uint8 HWC RGB, or with
`VideoReader(..., rgb="source")` uint16 (0..65535) for sources deeper than 8 bits.

Writing encodes with `EncoderSettings` (H.264, HEVC or lossless FFV1; "auto" matches the `source`
VideoInfo: bit depth, chroma subsampling, range, matrix, primaries, transfer, size) at the source
frame rate and timestamps, copies the source's audio packets unchanged, and gives byte-identical
files for identical input (see docs/video-io.md for what made encodes differ and the fix).
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from videdit.errors import InputError, VideditError
from videdit.io.color import (
    HDR_TRANSFERS,
    MATRIX_NAMES,
    PRIMARIES_NAMES,
    RANGE_NAMES,
    SUPPORTED_MATRICES,
    TRC_NAMES,
    YuvLayout,
    assumed_matrix,
    code_of,
    name_of,
    rgb_to_yuv,
    yuv_layout,
    yuv_to_rgb,
)

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
    # pixel format and colour, as the decoder reports them for the first frame (FFmpeg's names)
    pix_fmt: str = "yuv420p"
    bit_depth: int = 8
    chroma: str = "4:2:0"  # "4:2:0", "4:2:2", "4:4:4", ...; "rgb" for RGB sources
    color_range: str = "unknown"  # "tv" (limited), "pc" (full), "unknown" (read as tv)
    color_space: str = "unknown"  # the Y'CbCr matrix: "bt709", "bt2020nc", "smpte170m", ...
    color_primaries: str = "unknown"
    color_trc: str = "unknown"  # transfer: "bt709", "smpte2084" (PQ), "arib-std-b67" (HLG), ...

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), the order VideoWriter takes."""
        return (self.width, self.height)

    @property
    def is_hdr(self) -> bool:
        """PQ or HLG transfer: frames are read and written as the coded signal, not tone-mapped."""
        return self.color_trc in HDR_TRANSFERS

    @property
    def full_range(self) -> bool:
        return self.color_range == "pc"

    @property
    def matrix(self) -> str:
        """The matrix the reader converts with: the tagged one, else what players assume for the size."""
        return _conversion_matrix(self.color_space, self.width, self.height)

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


def _conversion_matrix(tagged: str, width: int, height: int) -> str:
    if tagged in SUPPORTED_MATRICES:
        return tagged
    return assumed_matrix(min(width, height))


def _pixel_description(frame) -> dict:
    """VideoInfo's pixel format and colour fields for a decoded frame."""
    name = frame.format.name
    layout = yuv_layout(name)
    if layout is not None:
        depth, chroma = layout.bit_depth, layout.chroma
    else:
        depth = max(int(c.bits) for c in frame.format.components)
        chroma = "rgb" if frame.format.is_rgb else "other"
    color_range = name_of(RANGE_NAMES, frame.color_range)
    if color_range == "unknown" and name.startswith("yuvj"):
        color_range = "pc"  # the deprecated full-range formats carry the range in their name
    return dict(pix_fmt=name, bit_depth=depth, chroma=chroma, color_range=color_range,
                color_space=name_of(MATRIX_NAMES, frame.colorspace),
                color_primaries=name_of(PRIMARIES_NAMES, frame.color_primaries),
                color_trc=name_of(TRC_NAMES, frame.color_trc))


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
            **_pixel_description(first),
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
        pix_fmt="rgb24",
        chroma="rgb",
        color_range="pc",
        color_space="gbr",
        color_primaries="bt709",
        color_trc="iec61966-2-1",  # image files are sRGB
    )


# ----------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class DecodeProblem:
    """Something in the file that did not decode, found while reading: after which frame, where, what."""

    after_frame: int  # index of the last good frame before it (-1: before the first)
    time_s: float | None  # the packet's time, when it has one
    reason: str


# Containers that are a plain byte stream (no index): a damaged tail is skipped silently by the
# demuxer, so the reader compares how far the packets reached with the file size.
_STREAM_FORMATS = ("mpegts", "h264", "hevc", "mpeg", "mpegvideo")


def _plane_array(plane, dtype: np.dtype) -> np.ndarray:
    """One plane of a frame as a [height, width] array (the row padding dropped)."""
    row = plane.line_size // dtype.itemsize
    return np.frombuffer(plane, dtype=dtype).reshape(plane.height, row)[:, :plane.width]


def frame_to_rgb(frame, out_dtype=np.uint8) -> np.ndarray:
    """A decoded PyAV frame as [H, W, 3] RGB of out_dtype, converted with the frame's own matrix and
    range (untagged: what players assume for the size). Formats other than planar Y'CbCr (RGB,
    grey, the semi-planar nv12/p010 of hardware decoders) go through swscale."""
    layout = yuv_layout(frame.format.name)
    description = _pixel_description(frame)
    matrix = _conversion_matrix(description["color_space"], frame.width, frame.height)
    if layout is None:
        return frame.to_ndarray(format="rgb24" if np.dtype(out_dtype) == np.uint8 else "rgb48le")
    planes = tuple(_plane_array(p, layout.dtype) for p in frame.planes[:3])
    return yuv_to_rgb(planes, layout, matrix, description["color_range"] == "pc", out_dtype)


class _LibavErrors:
    """FFmpeg's error-level log lines while a file is read (decoders report damaged data there, not
    with an exception). PyAV forwards nothing unless a level is set, so the level is raised for the
    duration and put back."""

    def __init__(self):
        self._capture = None
        self._logs: list = []
        self._previous = None
        self._seen = 0

    def __enter__(self) -> "_LibavErrors":
        av = _import_av()
        self._previous = av.logging.get_level()
        if self._previous is None or self._previous < av.logging.ERROR:  # keep a more verbose level
            av.logging.set_level(av.logging.ERROR)
        self._capture = av.logging.Capture(local=False)  # decoder threads log from their own threads
        self._logs = self._capture.__enter__()
        return self

    def new_messages(self) -> list[str]:
        av = _import_av()
        logs = self._logs
        fresh = [" ".join(str(message).split()) for level, _name, message in logs[self._seen:]
                 if level <= av.logging.ERROR]
        self._seen = len(logs)
        return fresh

    def __exit__(self, *exc) -> None:
        av = _import_av()
        try:
            self._capture.__exit__(*exc)
        finally:
            av.logging.set_level(self._previous)


class VideoReader:
    """Streams the frames of a video file or an image folder.

    >>> reader = VideoReader("clip.mp4")
    >>> reader.info.fps, reader.info.size
    >>> for frame in reader:          # Frame(index, image uint8 HWC RGB, pts, time_s)
    ...     ...
    >>> reader.n_frames_read, reader.decode_problems

    Each iteration opens the file again, so a reader can be iterated several times (two passes over
    a long video cost no memory). Frames whose decoder gives no timestamp get one from their index.

    rgb: "uint8" (default) gives uint8 frames whatever the source; "source" gives uint8 for 8-bit
    sources and uint16 (0..65535) for deeper ones, for writing back at the source's depth
    (`videdit.io.color.to_uint8` reduces such a frame for the networks).

    Damaged data: a file whose first frame cannot be decoded raises InputError; after that, packets
    that fail, frames the decoder marks corrupt, FFmpeg's error messages and an undecodable tail of a
    stream file (.ts) are recorded in `decode_problems` (one warning per pass) and reading goes on.
    `n_frames_read` is the number of frames the last complete pass yielded (the truth, where
    VideoInfo.n_frames may be a container estimate).
    """

    def __init__(self, path: str | Path, *, autorotate: bool = True,
                 image_folder_fps: Fraction = DEFAULT_IMAGE_FOLDER_FPS, threads: int = 0, rgb: str = "uint8"):
        if rgb not in ("uint8", "source"):
            raise ValueError(f"rgb must be 'uint8' or 'source', not {rgb!r}")
        self.path = Path(path)
        self.info = probe_video(self.path, image_folder_fps=image_folder_fps)
        self.autorotate = autorotate
        self.threads = threads  # 0: let FFmpeg choose
        self.rgb = rgb
        self.decode_problems: list[DecodeProblem] = []
        self.n_frames_read: int | None = None  # set when a pass reaches the end

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the frames this reader yields."""
        deep = self.rgb == "source" and self.info.bit_depth > 8
        return np.dtype(np.uint16 if deep else np.uint8)

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def frames(self, indices: Iterable[int] | None = None) -> Iterator[Frame]:
        """The frames in order; with `indices`, only those (the others are decoded but not converted, and
        reading stops after the last of them): a second pass that needs a few frames costs no conversions."""
        wanted = None if indices is None else frozenset(int(i) for i in indices)
        if wanted is not None and not wanted:
            return iter(())
        if self.info.is_image_folder:
            return self._iter_images(wanted)
        return self._iter_video(wanted)

    def _iter_images(self, wanted: frozenset[int] | None = None) -> Iterator[Frame]:
        expected = (self.info.height, self.info.width)
        last_wanted = max(wanted) if wanted is not None else None
        index = 0
        for index, file in enumerate(list_images(self.path)):
            if wanted is not None and index not in wanted:
                if index > last_wanted:
                    return
                continue
            image = read_image(file)
            if image.shape[:2] != expected:
                raise InputError(
                    f"{file}: image size {image.shape[1]}x{image.shape[0]} differs from the first image's "
                    f"{expected[1]}x{expected[0]}")
            yield Frame(index=index, image=image, pts=index, time_s=float(index / self.info.fps))
            index += 1
        self.n_frames_read = index

    def _iter_video(self, wanted: frozenset[int] | None = None) -> Iterator[Frame]:
        av = _import_av()
        last_wanted = max(wanted) if wanted is not None else None
        time_base = self.info.time_base
        frame_step = 1 / (self.info.fps * time_base)  # one frame duration in pts units
        problems: list[DecodeProblem] = []
        self.decode_problems = problems
        self.n_frames_read = None
        index = 0
        with av.open(str(self.path)) as container, _LibavErrors() as libav:
            stream = _video_stream(container)
            stream.thread_type = "AUTO"
            if self.threads:
                stream.codec_context.thread_count = self.threads
            last_pts = None
            packet_end = last_size = 0  # how far into the file the video packets reached
            packet = decoded_frames = decoded = None
            try:
                for packet in container.demux(stream):
                    packet_time = float(packet.pts * packet.time_base) if packet.pts is not None else None
                    if packet.size and packet.pos is not None and packet.pos >= 0:
                        packet_end, last_size = max(packet_end, packet.pos + packet.size), packet.size
                    try:
                        decoded_frames = packet.decode()
                    except (av.error.FFmpegError, OSError) as error:
                        if index == 0:
                            raise InputError(f"{self.path}: decoding failed at frame 0 ({type(error).__name__}); "
                                             "the file is damaged or truncated") from None
                        problems.append(DecodeProblem(index - 1, packet_time, f"packet not decodable ({type(error).__name__})"))
                        continue
                    if packet.is_corrupt:  # the container's checks (e.g. a broken .ts continuity counter)
                        problems.append(DecodeProblem(index - 1, packet_time, "damaged packet"))
                    for message in libav.new_messages():
                        problems.append(DecodeProblem(index - 1, packet_time, message))
                    for decoded in decoded_frames:
                        if decoded.is_corrupt:
                            problems.append(DecodeProblem(index - 1, packet_time, "the decoder marked the frame corrupt"))
                        pts = decoded.pts
                        if pts is None:
                            pts = (last_pts + frame_step) if last_pts is not None else self.info.start_pts
                            pts = int(round(pts))
                        if wanted is not None and index not in wanted:
                            last_pts = pts
                            index += 1
                            if index > last_wanted:
                                return
                            continue
                        image = frame_to_rgb(decoded, self.dtype)
                        if self.autorotate:
                            turns = _rotation_of(decoded) // 90
                            if turns:
                                image = np.ascontiguousarray(np.rot90(image, turns))
                        yield Frame(index=index, image=image, pts=int(pts), time_s=float(pts * time_base))
                        last_pts = pts
                        index += 1
                if container.format.name in _STREAM_FORMATS:
                    unread = self.path.stat().st_size - packet_end
                    if unread > 4096 + last_size // 16:  # more than the last packet's container overhead
                        problems.append(DecodeProblem(index - 1, None, f"the last {unread} bytes hold no readable video"))
            finally:
                # A consumer that stops early (next(iter(reader)), a break) closes this generator here: drop the
                # packets and frames, then flush the threaded decoder, before the container goes. Freeing a
                # frame-threaded decoder from a packet's destructor afterwards can deadlock inside FFmpeg.
                packet = decoded_frames = decoded = None
                try:
                    stream.codec_context.flush_buffers()
                except Exception:  # noqa: BLE001 - a decoder in an error state still gets closed below
                    pass
        if index == 0:
            raise InputError(f"{self.path}: no frame could be decoded; the file is damaged or truncated")
        self.n_frames_read = index
        if problems:
            first = problems[0]
            log.warning("%s: %d decoding problem(s), %d frames read; first after frame %d: %s", self.path,
                        len(problems), index, first.after_frame, first.reason)

    def timestamps(self) -> list[int]:
        """pts of every frame, by decoding the whole video (in the stream's time base)."""
        return [frame.pts for frame in self]


def read_frames(path: str | Path, **kwargs) -> Iterator[Frame]:
    """Shorthand for iterating VideoReader(path)."""
    return iter(VideoReader(path, **kwargs))


# ----------------------------------------------------------------------------------------------
# writing


_CODEC_ALIASES = {"h264": "libx264", "avc": "libx264", "libx264": "libx264", "hevc": "libx265", "h265": "libx265",
                  "libx265": "libx265", "ffv1": "ffv1"}
_SOURCE_CODECS = {"h264": "libx264", "hevc": "libx265", "ffv1": "ffv1"}  # decoder name -> encoder that matches
_DEFAULT_CRF = {"libx264": 18, "libx265": 20}  # visually near-transparent for each (x265's scale runs ~2 higher)
_DEFAULT_PRESET = {"libx264": "medium", "libx265": "fast"}  # x265 "medium" is ~2x slower for little gain here
_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
_LOSSLESS_SUFFIXES = (".mkv", ".avi", ".nut")  # containers that hold FFV1
# x264's bitstream depends on its frame-thread count (and the count is in its SEI), so the count is
# fixed here instead of following the machine's cores; 4 keeps a few cores busy.
X264_FRAME_THREADS = 4


@dataclass(frozen=True)
class EncoderSettings:
    """How VideoWriter encodes; every "auto" matches the `source` VideoInfo (or, without one, H.264
    yuv420p BT.709 limited range).

    codec: "auto", "h264" (libx264), "hevc" (libx265) or "ffv1" (lossless, .mkv). crf: "auto" (18 for
    H.264, 20 for HEVC) or 0..51; ignored by FFV1. preset: "auto" (medium for H.264, fast for HEVC) or
    an x264/x265 preset name. pix_fmt: "auto" (the source's, 4:4:4 of its depth when the size is odd
    and the codec needs even sizes for subsampled chroma) or an FFmpeg planar YUV name.
    """

    codec: str = "auto"
    crf: int | str = "auto"
    preset: str = "auto"
    pix_fmt: str = "auto"


@dataclass(frozen=True)
class ResolvedEncoder:
    """EncoderSettings with every "auto" decided, plus the size and colour tags written."""

    codec: str  # FFmpeg encoder name
    crf: int | None
    preset: str | None
    pix_fmt: str
    encoded_size: tuple[int, int]
    color_range: str
    color_space: str
    color_primaries: str
    color_trc: str

    @property
    def layout(self) -> YuvLayout:
        return yuv_layout(self.pix_fmt)


def _codec_formats(codec: str) -> list[str]:
    av = _import_av()
    return [f.name for f in av.Codec(codec, "w").video_formats]


def _yuv_name(chroma: str, depth: int) -> str:
    base = "yuv" + chroma.replace(":", "") + "p"
    return base if depth <= 8 else f"{base}{depth}le"


def _odd_for(layout: YuvLayout, size: tuple[int, int]) -> bool:
    """True if the size is not a whole number of chroma samples (x264/x265 refuse it)."""
    return bool(size[0] % (1 << layout.shift_x) or size[1] % (1 << layout.shift_y))


def resolve_encoder(settings: EncoderSettings, size: tuple[int, int], source: VideoInfo | None,
                    suffix: str) -> ResolvedEncoder:
    """Decide codec, crf, preset, pixel format, encoded size and colour tags; one VideditError line
    for a setting that cannot work."""
    if source is not None and source.is_image_folder:
        source = None  # RGB images: nothing to match but the size
    suffix = suffix.lower()
    depth = source.bit_depth if source is not None else 8

    if settings.codec == "auto":
        codec = _SOURCE_CODECS.get(source.codec, "") if source is not None else ""
        if codec == "ffv1" and suffix not in _LOSSLESS_SUFFIXES:
            codec = ""  # a lossless source written to .mp4: the best lossy match instead
        codec = codec or ("libx265" if depth > 8 else "libx264")
    else:
        codec = _CODEC_ALIASES.get(str(settings.codec).lower())
        if codec is None:
            raise VideditError(f"unknown codec {settings.codec!r} (auto, h264, hevc, ffv1)")
        if codec == "ffv1" and suffix not in _LOSSLESS_SUFFIXES:
            raise VideditError(f"FFV1 needs a .mkv output, not {suffix or 'no suffix'}")
    formats = _codec_formats(codec)

    if settings.pix_fmt == "auto":
        wanted = source.pix_fmt.replace("yuvj", "yuv") if source is not None else "yuv420p"
        layout = yuv_layout(wanted)
        if layout is None:  # RGB / grey / semi-planar sources: the Y'CbCr format of the same depth
            layout = yuv_layout(_yuv_name("4:4:4" if source is not None and source.chroma == "rgb" else "4:2:0",
                                          min(max(depth, 8), 10)))
        if layout.pix_fmt not in formats:  # e.g. 12-bit into x264: the deepest it takes
            for candidate_depth in (min(layout.bit_depth, 10), 8):
                name = _yuv_name(layout.chroma, candidate_depth)
                if name in formats:
                    layout = yuv_layout(name)
                    break
            else:
                layout = yuv_layout("yuv420p")
        if codec != "ffv1" and _odd_for(layout, size):
            layout = yuv_layout(_yuv_name("4:4:4", layout.bit_depth))  # odd sizes need full-resolution chroma
        pix_fmt = layout.pix_fmt
    else:
        pix_fmt = settings.pix_fmt
        layout = yuv_layout(pix_fmt)
        if layout is None or pix_fmt not in formats:
            choices = ", ".join(f for f in formats if yuv_layout(f) is not None)
            raise VideditError(f"pixel format {pix_fmt!r} is not one {codec} writes here ({choices})")
    encoded = size
    if codec != "ffv1" and _odd_for(layout, size):
        encoded = (size[0] + size[0] % 2, size[1] + size[1] % 2)
        log.warning("%s cannot hold an odd size %dx%d: the last column/row is repeated (%dx%d); "
                    "pix_fmt auto keeps the size with 4:4:4", pix_fmt, size[0], size[1], *encoded)

    crf = None
    if codec in _DEFAULT_CRF:
        crf = _DEFAULT_CRF[codec] if settings.crf == "auto" else settings.crf
        if not isinstance(crf, (int, np.integer)) or isinstance(crf, bool) or not 0 <= int(crf) <= 51:
            raise VideditError(f"crf must be a whole number 0..51 or 'auto', not {settings.crf!r}")
        crf = int(crf)
    preset = None
    if codec in _DEFAULT_PRESET:
        preset = _DEFAULT_PRESET[codec] if settings.preset == "auto" else settings.preset
        if preset not in _PRESETS:
            raise VideditError(f"unknown preset {settings.preset!r} ({', '.join(_PRESETS)})")

    if source is None:
        color_range, primaries, trc = "tv", "bt709", "bt709"
        matrix = "bt709"
    else:
        color_range = source.color_range if source.color_range != "unknown" else "tv"
        matrix = _conversion_matrix(source.color_space, source.width, source.height)
        primaries, trc = source.color_primaries, source.color_trc
    return ResolvedEncoder(codec, crf, preset, pix_fmt, encoded, color_range, matrix, primaries, trc)


def _encoder_options(encoder: ResolvedEncoder, threads: int) -> tuple[dict, str, int]:
    """(codec options, thread_type, thread_count) that make the bitstream a function of the frames
    and settings only, whatever the machine or `threads`."""
    if encoder.codec == "libx264":
        # mbtree=0: x264's macroblock-tree with B-frames reads memory it never wrote (its output
        # follows glibc's MALLOC_PERTURB_; docs/video-io.md), so the same frames encoded twice differ.
        options = {"crf": str(encoder.crf), "preset": encoder.preset, "x264-params": "mbtree=0"}
        return options, "FRAME", X264_FRAME_THREADS
    if encoder.codec == "libx265":
        # one frame thread (its count changes the bitstream); the wavefront pool only changes speed;
        # info=0 drops the SEI that records the pool size; log-level keeps its banner off stderr.
        params = "log-level=error:info=0:frame-threads=1"
        if threads:
            params += f":pools={threads}"
        return {"crf": str(encoder.crf), "preset": encoder.preset, "x265-params": params}, "SLICE", 0
    # FFV1 level 3, a fixed slice count (threads only spread the slices), every frame a keyframe
    return {"level": "3", "slices": "4", "slicecrc": "1", "g": "1"}, "SLICE", threads


def _fill_plane(plane, values: np.ndarray) -> None:
    """Copy a [h, w] array into a frame plane, zeroing the row padding (left as it is, it would be
    whatever the allocator had there)."""
    row = plane.line_size // values.dtype.itemsize
    padded = np.zeros((plane.height, row), values.dtype)
    padded[:, :plane.width] = values
    plane.update(padded)


class VideoWriter:
    """Encodes RGB frames (uint8, or uint16 0..65535) and copies the audio of another file unchanged.

    >>> with VideoWriter("out.mp4", fps=info.fps, size=info.size, audio_from="in.mp4", source=info,
    ...                  time_base=info.time_base, timestamps=pts_list) as writer:
    ...     for frame in frames:
    ...         writer.write(frame)           # (H, W, 3) RGB, H, W = size[1], size[0]

    Format: `settings` (EncoderSettings; the crf/preset/codec/pix_fmt keywords override its fields)
    with "auto" matching `source` (a VideoInfo, usually the input's): codec family, bit depth, chroma
    subsampling, colour range, matrix, primaries and transfer, which are written as tags and used
    for the RGB -> Y'CbCr conversion. `encoder` says what was decided.

    Timestamps: without `timestamps` frame i is shown at i / fps; with them (in `time_base` units,
    e.g. the pts a VideoReader yielded) every frame keeps its own time, so variable frame rate and a
    non-zero start survive. `write(image, pts=...)` sets one frame's time explicitly.

    Odd sizes: kept (pix_fmt auto picks 4:4:4 for H.264/HEVC; FFV1 takes odd 4:2:0). An explicit
    subsampled pix_fmt gets its last row/column repeated once (`encoded_size`, with a warning).

    Reproducible: the same frames and settings give the same bytes, in one process or several, for
    any `threads` (which only sets how many threads HEVC's wavefronts and FFV1's slices may use).

    Audio: the first audio stream of `audio_from` is copied packet by packet (bit-identical),
    interleaved with the video by time. A codec an .mp4 cannot hold is re-encoded to AAC (logged).
    If the block raises, the partial output file is deleted.
    """

    def __init__(self, path: str | Path, fps: Fraction | float, size: tuple[int, int], *,
                 audio_from: str | Path | None = None, time_base: Fraction | None = None,
                 timestamps: Sequence[int] | None = None, crf: int | None = None, preset: str | None = None,
                 codec: str | None = None, pix_fmt: str | None = None, settings: EncoderSettings | None = None,
                 source: VideoInfo | None = None, threads: int = 0):
        av = _import_av()
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        self.size = (int(size[0]), int(size[1]))
        if self.size[0] <= 0 or self.size[1] <= 0:
            raise ValueError(f"bad frame size {size}")
        overrides = {k: v for k, v in dict(crf=crf, preset=preset, codec=codec, pix_fmt=pix_fmt).items() if v is not None}
        self.settings = replace(settings or EncoderSettings(), **overrides)
        self.encoder = resolve_encoder(self.settings, self.size, source, self.path.suffix)
        self.encoded_size = self.encoder.encoded_size
        self._layout = self.encoder.layout
        self._full_range = self.encoder.color_range == "pc"
        self.time_base = Fraction(time_base) if time_base is not None else 1 / self.fps
        self.timestamps = list(timestamps) if timestamps is not None else None
        self.n_written = 0
        self._last_pts: int | None = None
        self._closed = False
        self._tags = dict(color_range=code_of(RANGE_NAMES, self.encoder.color_range),
                          colorspace=code_of(MATRIX_NAMES, self.encoder.color_space),
                          color_primaries=code_of(PRIMARIES_NAMES, self.encoder.color_primaries),
                          color_trc=code_of(TRC_NAMES, self.encoder.color_trc))

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        try:
            # bitexact: no library version string in the container (same bytes across FFmpeg builds
            # as far as the codec allows)
            self._container.flags = self._container.flags | av.container.Flags.bitexact.value
            stream = self._container.add_stream(self.encoder.codec, rate=self.fps)
            stream.width, stream.height = self.encoded_size
            stream.pix_fmt = self.encoder.pix_fmt
            stream.time_base = self.time_base
            context = stream.codec_context
            context.time_base = self.time_base
            for key, value in self._tags.items():
                setattr(context, key, value)
            if self.encoder.codec == "libx265" and self.path.suffix.lower() in (".mp4", ".mov"):
                context.codec_tag = "hvc1"  # the tag Apple players require for HEVC
            options, thread_type, thread_count = _encoder_options(self.encoder, threads)
            stream.options = options
            context.thread_type = thread_type
            context.thread_count = thread_count
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

    def _video_frame(self, image: np.ndarray):
        av = _import_av()
        planes = rgb_to_yuv(image, self._layout, self.encoder.color_space, self._full_range)
        frame = av.VideoFrame(self.encoded_size[0], self.encoded_size[1], self.encoder.pix_fmt)
        for plane, values in zip(frame.planes, planes):
            _fill_plane(plane, values)
        for key, value in self._tags.items():
            setattr(frame, key, value)
        return frame

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        """Encode one HWC RGB frame (uint8, or uint16 0..65535) of the writer's size."""
        image = np.asarray(image)
        width, height = self.size
        if image.dtype not in (np.uint8, np.uint16) or image.shape != (height, width, 3):
            raise ValueError(f"expected uint8 or uint16 frame of shape {(height, width, 3)}, "
                             f"got {image.dtype} {image.shape}")
        if self.encoded_size != self.size:
            image = np.pad(image, ((0, self.encoded_size[1] - height), (0, self.encoded_size[0] - width), (0, 0)),
                           mode="edge")
        pts = self._next_pts() if pts is None else int(pts)
        if self._last_pts is not None and pts <= self._last_pts:
            # H.264 needs strictly increasing timestamps; a repeated one moves by one tick.
            log.warning("frame %d: timestamp %d not after %d; using %d", self.n_written, pts, self._last_pts,
                        self._last_pts + 1)
            pts = self._last_pts + 1
        frame = self._video_frame(image)
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
