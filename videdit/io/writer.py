"""Writing videos with PyAV: VideoWriter encodes RGB frames with `EncoderSettings` (H.264, HEVC or lossless
FFV1; "auto" matches the `source` VideoInfo: bit depth, chroma subsampling, range, matrix, primaries,
transfer, size) at the source frame rate and timestamps, copies the source's audio packets unchanged,
and gives byte-identical files for identical input (see docs/video-io.md for what made encodes differ
and the fix).
"""
from __future__ import annotations

import logging
import math
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from videdit.io.color import MATRIX_NAMES, PRIMARIES_NAMES, RANGE_NAMES, TRC_NAMES, code_of, rgb_to_yuv
from videdit.io.encoding import EncoderSettings, encoder_options, resolve_encoder
from videdit.io.probe import VideoInfo, import_av, open_media

log = logging.getLogger(__name__)

# Audio codecs an .mp4/.mov file can hold as they are; anything else is re-encoded to AAC.
_MP4_AUDIO_CODECS = {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}


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
        av = import_av()
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
            options, thread_type, thread_count = encoder_options(self.encoder, threads)
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
        av = import_av()
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
        self._input = None
        self._output = output
        self._packets = None
        self._pending = None
        self._transcode = None
        self.stream = None
        if source.is_dir():  # an image folder has no audio
            return
        self._input = open_media(source)
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
