"""Video input and output: streaming PyAV reader, H.264 writer with copied audio, image folders."""
from videdit.io.video import (
    AudioInfo,
    Frame,
    VideoInfo,
    VideoReader,
    VideoWriter,
    list_images,
    probe_video,
    read_frames,
)

__all__ = ["AudioInfo", "Frame", "VideoInfo", "VideoReader", "VideoWriter", "list_images", "probe_video",
           "read_frames"]
