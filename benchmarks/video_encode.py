"""Per-frame cost of writing video at 1080p: 10-bit HEVC against 8-bit H.264, in one run.

    python benchmarks/video_encode.py [--frames 8] [--size 1920x1080]

Both go through VideoWriter with their default settings (H.264: crf 18 medium; HEVC: crf 20 fast), so
the times include the RGB -> Y'CbCr conversion. Printed: seconds per frame for each, the HEVC/H.264
ratio (the number to compare between machines; absolute times depend on the load), the conversion
alone, decoding (VideoReader) for scale, and what x264's macroblock tree (off for reproducibility)
would save in size at the same crf. Absolute times on a shared machine are not to be trusted; the
ratios are measured in the same run.
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout


def _frames(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    """The astronaut photo moving across a 1080p frame (real image content, not noise)."""
    from videdit.synthetic import CameraPath, astronaut, place_photo

    centre = (255.0, 200.0)
    camera = CameraPath.gentle(n, centre, max_rotation=4.0, max_shift=30.0, scale=size[1] / 512)
    photo = astronaut()
    return [place_photo(photo, size, float(camera.rotation_deg[i]), tuple(camera.shift_px[i]), centre, camera.scale)
            for i in range(n)]


def _encode(path: Path, frames: list[np.ndarray], source_like, **kwargs) -> float:
    from videdit.io.writer import VideoWriter

    size = (frames[0].shape[1], frames[0].shape[0])
    start = time.perf_counter()
    with VideoWriter(path, 25, size, source=source_like, **kwargs) as writer:
        for frame in frames:
            writer.write(frame)
    return (time.perf_counter() - start) / len(frames)


def _decode(path: Path) -> float:
    from videdit.io.reader import VideoReader

    reader = VideoReader(path, rgb="source")
    start = time.perf_counter()
    n = sum(1 for _ in reader)
    return (time.perf_counter() - start) / n


def _mbtree_size_ratio(frames: list[np.ndarray]) -> float:
    """x264 bytes with mbtree=0 over mbtree=1 at crf 18 medium (PyAV directly; same threads)."""
    import av

    sizes = []
    for mbtree in ("0", "1"):
        buffer = io.BytesIO()
        with av.open(buffer, "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
            stream.options = {"crf": "18", "preset": "medium", "x264-params": f"mbtree={mbtree}"}
            stream.codec_context.thread_type, stream.codec_context.thread_count = "FRAME", 4
            for i, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = i
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        sizes.append(len(buffer.getvalue()))
    return sizes[0] / sizes[1]


def main(argv=None) -> None:
    from videdit.io.color import rgb_to_yuv, to_uint16, yuv_layout
    from videdit.io.probe import VideoInfo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", default="1920x1080")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    frames8 = _frames(args.frames, (width, height))
    frames16 = [to_uint16(f) for f in frames8]

    def source(codec, pix_fmt, depth, chroma="4:2:0"):  # what a phone clip of that kind probes as
        return VideoInfo(path="", width=width, height=height, fps=25, time_base=1 / 25, n_frames=args.frames,
                         n_frames_is_estimate=False, duration_s=args.frames / 25, rotation_deg=0, codec=codec,
                         pix_fmt=pix_fmt, bit_depth=depth, chroma=chroma, color_range="tv", color_space="bt709",
                         color_primaries="bt709", color_trc="bt709")

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        h264, hevc = folder / "h264.mp4", folder / "hevc10.mp4"
        t_h264 = _encode(h264, frames8, source("h264", "yuv420p", 8))
        t_hevc = _encode(hevc, frames16, source("hevc", "yuv420p10le", 10))
        start = time.perf_counter()
        for frame in frames16:
            rgb_to_yuv(frame, yuv_layout("yuv420p10le"), "bt709", False)
        t_convert = (time.perf_counter() - start) / len(frames16)
        d_h264, d_hevc = _decode(h264), _decode(hevc)
        sizes = h264.stat().st_size, hevc.stat().st_size
    mbtree = _mbtree_size_ratio(frames8)

    print(f"video encode, {width}x{height}, {args.frames} frames (seconds per frame; ratios from this run)")
    print(f"  H.264  8-bit yuv420p     crf 18 medium : {t_h264:.3f} s/frame  ({sizes[0] / 1024:.0f} KiB)")
    print(f"  HEVC  10-bit yuv420p10le crf 20 fast   : {t_hevc:.3f} s/frame  ({sizes[1] / 1024:.0f} KiB)")
    print(f"  ratio HEVC-10 / H.264-8                : {t_hevc / t_h264:.2f}")
    print(f"  RGB->Y'CbCr 10-bit conversion alone    : {t_convert:.3f} s/frame ({t_convert / t_hevc:.0%} of HEVC)")
    print(f"  decode (VideoReader, rgb=source)       : H.264 {d_h264:.3f}, HEVC-10 {d_hevc:.3f} s/frame")
    print(f"  x264 size with mbtree off / on         : {mbtree:.3f}")


if __name__ == "__main__":
    main()
