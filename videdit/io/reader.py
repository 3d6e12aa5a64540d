"""Reading videos with PyAV, and image folders as videos: VideoReader streams the frames as they decode.

The whole video is never in memory; the container's rotation metadata is applied, so frames come out
as a player shows them. The Y'CbCr -> RGB conversion uses the video's own matrix and range
(videdit.io.color); frames are uint8 HWC RGB, or with `VideoReader(..., rgb="source")` uint16
(0..65535) for sources deeper than 8 bits.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from videdit.errors import InputError
from videdit.io.color import conversion_matrix, yuv_layout, yuv_to_rgb
from videdit.io.images import list_images, read_image
from videdit.io.probe import (
    DEFAULT_IMAGE_FOLDER_FPS,
    import_av,
    open_media,
    pixel_description,
    probe_video,
    rotation_of,
    video_stream,
)

log = logging.getLogger(__name__)


@dataclass
class Frame:
    """One decoded frame: its position, pixels (uint8 HWC RGB) and timestamp.

    pts is in the stream's time base (VideoInfo.time_base); time_s is the same instant in seconds.
    """

    index: int
    image: np.ndarray
    pts: int
    time_s: float


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
    description = pixel_description(frame)
    matrix = conversion_matrix(description["color_space"], frame.width, frame.height)
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
        av = import_av()
        self._previous = av.logging.get_level()
        if self._previous is None or self._previous < av.logging.ERROR:  # keep a more verbose level
            av.logging.set_level(av.logging.ERROR)
        self._capture = av.logging.Capture(local=False)  # decoder threads log from their own threads
        self._logs = self._capture.__enter__()
        return self

    def new_messages(self) -> list[str]:
        av = import_av()
        logs = self._logs
        fresh = [" ".join(str(message).split()) for level, _name, message in logs[self._seen:]
                 if level <= av.logging.ERROR]
        self._seen = len(logs)
        return fresh

    def __exit__(self, *exc) -> None:
        av = import_av()
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
        av = import_av()
        last_wanted = max(wanted) if wanted is not None else None
        time_base = self.info.time_base
        frame_step = 1 / (self.info.fps * time_base)  # one frame duration in pts units
        problems: list[DecodeProblem] = []
        self.decode_problems = problems
        self.n_frames_read = None
        index = 0
        with open_media(self.path) as container, _LibavErrors() as libav:
            stream = video_stream(container)
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
                            turns = rotation_of(decoded) // 90
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
