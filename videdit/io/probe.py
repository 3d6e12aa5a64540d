"""What a video file (or an image folder) holds, learnt from its header and first frame: VideoInfo.

Also the PyAV plumbing the reader and the writer share: opening a file with one-line errors, the first
real video stream, a frame's display rotation and pixel format.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from videdit.errors import InputError
from videdit.io.color import (
    HDR_TRANSFERS,
    MATRIX_NAMES,
    PRIMARIES_NAMES,
    RANGE_NAMES,
    TRC_NAMES,
    conversion_matrix,
    name_of,
    yuv_layout,
)
from videdit.io.images import IMAGE_SUFFIXES, list_images, read_image

# The file names `videdit run` (a folder of videos) and `videdit eval --against` take for videos.
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".gif")
DEFAULT_IMAGE_FOLDER_FPS = Fraction(25)


def is_video_name(path: Path) -> bool:
    """Whether the file's name says video (VIDEO_SUFFIXES, any case); the content is probe_video's job."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


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
        return conversion_matrix(self.color_space, self.width, self.height)

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


# ----------------------------------------------------------------------------------------------
# PyAV, shared with the reader and the writer


def import_av():
    import av  # imported here so that importing videdit.io stays cheap

    return av


def _unreadable(path: Path, error: Exception) -> InputError:
    """The one-line error for a file PyAV cannot open or decode."""
    # FFmpeg's own message repeats the path; its strerror is the short reason.
    reason = getattr(error, "strerror", None) or type(error).__name__
    reason = " ".join(str(reason).split())  # one line, whatever the library put in it
    return InputError(f"{path}: not a readable video ({reason}); is the file complete and really a video?")


def open_media(path: Path):
    """A PyAV container of the file, for reading; one InputError line when it is missing, empty or not media."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes)")
    av = import_av()
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as error:
        raise _unreadable(path, error) from None


def rotation_of(frame) -> int:
    """Counter-clockwise display rotation of a decoded frame, a multiple of 90 in [0, 360)."""
    try:
        angle = frame.rotation or 0
    except Exception:  # no display matrix side data
        angle = 0
    return int(round(angle / 90.0)) % 4 * 90


def video_stream(container):
    """The first real video stream: cover art (an "attached picture", as in music files) is not video."""
    av = import_av()
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def pixel_description(frame) -> dict:
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


# ----------------------------------------------------------------------------------------------
# probing


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
    if path.is_dir():
        return _probe_image_folder(path, image_folder_fps)
    av = import_av()
    with open_media(path) as container:
        stream = video_stream(container)
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
            raise _unreadable(path, error) from None
        if first is None:
            raise InputError(f"{path}: the video stream has no decodable frame (truncated file?)")
        rotation = rotation_of(first)
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
            **pixel_description(first),
        )


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

