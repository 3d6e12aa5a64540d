"""Compatibility: every public name `videdit.io.video` held before it was split into one module per job.

New code imports from the homes: `videdit.io.probe` (VideoInfo, probe_video), `videdit.io.images` (image
files), `videdit.io.reader` (VideoReader), `videdit.io.encoding` (EncoderSettings) and `videdit.io.writer`
(VideoWriter).
"""
from videdit.io.encoding import X264_FRAME_THREADS, EncoderSettings, ResolvedEncoder, resolve_encoder
from videdit.io.images import IMAGE_SUFFIXES, list_images, read_image
from videdit.io.probe import DEFAULT_IMAGE_FOLDER_FPS, AudioInfo, VideoInfo, probe_video
from videdit.io.reader import DecodeProblem, Frame, VideoReader, frame_to_rgb, read_frames
from videdit.io.writer import VideoWriter

__all__ = ["DEFAULT_IMAGE_FOLDER_FPS", "IMAGE_SUFFIXES", "X264_FRAME_THREADS", "AudioInfo", "DecodeProblem",
           "EncoderSettings", "Frame", "ResolvedEncoder", "VideoInfo", "VideoReader", "VideoWriter", "frame_to_rgb",
           "list_images", "probe_video", "read_frames", "read_image", "resolve_encoder"]
