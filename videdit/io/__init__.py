"""Video input and output: streaming PyAV reader and writer that keep the source's depth, chroma and colour,
copied audio, reproducible encodes, image folders, PNG."""
from videdit.io.color import to_uint8
from videdit.io.png import encode_png, write_png
from videdit.io.video import (
    AudioInfo,
    DecodeProblem,
    EncoderSettings,
    Frame,
    VideoInfo,
    VideoReader,
    VideoWriter,
    list_images,
    probe_video,
    read_frames,
    read_image,
)

__all__ = ["AudioInfo", "DecodeProblem", "EncoderSettings", "Frame", "VideoInfo", "VideoReader", "VideoWriter",
           "encode_png", "list_images", "probe_video", "read_frames", "read_image", "to_uint8", "write_png"]
