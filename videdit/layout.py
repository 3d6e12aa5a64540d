"""The run folder's names: the stages in order and the files they write. No heavy imports (the CLI reads
this to list stage names); the typed readers and writers of those files are `videdit.records`."""
from __future__ import annotations

STAGE_ORDER = ("align", "encode", "tune", "edit", "smooth", "stitch", "render", "composite")

# File and folder names inside the stage folders.
TRANSFORMS = "transforms.npz"
ALIGNED = "aligned"
UNALIGNED = "unaligned"
VIDEO_INFO = "video.json"
PREVIEW = "preview.mp4"
LATENTS = "latents.npy"
GENERATOR = "generator.safetensors"
OFFSETS = "offsets.safetensors"
CHECKPOINTS = "checkpoints"
RENDER_INFO = "render.json"
RECONSTRUCTION_KEY = "recon"  # key of the unedited latents
STYLESPACE_SUFFIX = ".stylespace.json"  # sidecar of an edited latents file: StyleSpace offsets
TRACKS = "tracks.json"  # RUN/tracks.json: the shots and face tracks of the video (videdit.records.TracksRecord)
TRACKS_DIR = "tracks"  # RUN/tracks/<track id>/: one folder per face track
PEOPLE_SHEET = "people.png"  # RUN/people.png: a labelled thumbnail per person (videdit faces)


def frame_name(index: int) -> str:
    return f"{index:06d}.png"


def latents_name(key: str) -> str:
    return f"latents_{key}.npy"


def styles_name(key: str) -> str:
    """Per-frame StyleSpace offsets of an S edit (edit/ and smooth/)."""
    return f"styles_{key}.safetensors"


def stitched_generator_name(key: str) -> str:
    """stitch/<this>: the generator stitching-tuned for the latents of `key` (render reads it for that key)."""
    return f"generator_{key}.safetensors"
