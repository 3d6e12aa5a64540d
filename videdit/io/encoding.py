"""How VideoWriter encodes: EncoderSettings (what the user asks, "auto" by default) resolved against the
source video into a ResolvedEncoder (codec, crf, preset, pixel format, size, colour tags), and the
codec options that make the bitstream a function of the frames and settings only.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from videdit.errors import VideditError
from videdit.io.color import YuvLayout, conversion_matrix, yuv_layout
from videdit.io.probe import VideoInfo, import_av

log = logging.getLogger(__name__)

_CODEC_ALIASES = {"h264": "libx264", "avc": "libx264", "libx264": "libx264", "hevc": "libx265", "h265": "libx265",
                  "libx265": "libx265", "ffv1": "ffv1"}
_SOURCE_CODECS = {"h264": "libx264", "hevc": "libx265", "ffv1": "ffv1"}  # decoder name -> encoder that matches
_DEFAULT_CRF = {"libx264": 18, "libx265": 20}  # visually near-transparent for each (x265's scale runs ~2 higher)
_DEFAULT_PRESET = {"libx264": "medium", "libx265": "fast"}  # x265 "medium" is ~2x slower for little gain here
ENCODER_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
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
    av = import_av()
    return [f.name for f in av.Codec(codec, "w").video_formats]


def writable_pix_fmts() -> list[str]:
    """The pixel formats some encoder videdit writes with (x264, x265, FFV1) accepts and videdit converts to:
    what a setting may name before the source says which encoder runs."""
    names = set()
    for codec in sorted(set(_CODEC_ALIASES.values())):
        try:
            names.update(_codec_formats(codec))
        except Exception:  # noqa: BLE001  (an encoder this PyAV build lacks: resolve_encoder says so when chosen)
            continue
    return sorted(n for n in names if yuv_layout(n) is not None)


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
        if preset not in ENCODER_PRESETS:
            raise VideditError(f"unknown preset {settings.preset!r} ({', '.join(ENCODER_PRESETS)})")

    if source is None:
        color_range, primaries, trc = "tv", "bt709", "bt709"
        matrix = "bt709"
    else:
        color_range = source.color_range if source.color_range != "unknown" else "tv"
        matrix = conversion_matrix(source.color_space, source.width, source.height)
        primaries, trc = source.color_primaries, source.color_trc
    return ResolvedEncoder(codec, crf, preset, pix_fmt, encoded, color_range, matrix, primaries, trc)


def encoder_options(encoder: ResolvedEncoder, threads: int) -> tuple[dict, str, int]:
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


