"""Video input and output: streaming PyAV reader and writer that keep the source's depth, chroma and colour,
copied audio, reproducible encodes, image folders, PNG."""
from videdit.io.color import to_uint8
from videdit.io.encoding import EncoderSettings
from videdit.io.images import IMAGE_SUFFIXES, list_images, read_image
from videdit.io.png import encode_png, write_png
from videdit.io.probe import VIDEO_SUFFIXES, AudioInfo, VideoInfo, probe_video
from videdit.io.reader import DecodeProblem, Frame, VideoReader, read_frames
from videdit.io.writer import VideoWriter

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "AudioInfo", "DecodeProblem", "EncoderSettings", "Frame", "VideoInfo",
           "VideoReader", "VideoWriter", "encode_png", "list_images", "probe_video", "read_frames", "read_image",
           "to_uint8", "write_png"]
