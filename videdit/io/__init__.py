"""Video input and output: streaming PyAV reader, H.264 writer with copied audio, image folders, PNG."""
from videdit.io.png import encode_png, write_png
from videdit.io.video import (
    AudioInfo,
    Frame,
    VideoInfo,
    VideoReader,
    VideoWriter,
    list_images,
    probe_video,
    read_frames,
    read_image,
)

__all__ = ["AudioInfo", "Frame", "VideoInfo", "VideoReader", "VideoWriter", "encode_png", "list_images",
           "probe_video", "read_frames", "read_image", "write_png"]
