"""The run folder's names: the stages in order and every file and folder they write. No heavy imports (the
CLI reads this to list stage names). Nothing else in videdit spells a run-folder file name
(tests/test_architecture.py checks it); the typed readers and writers of those files are `videdit.records`.
"""
from __future__ import annotations

STAGE_ORDER = ("align", "encode", "tune", "edit", "smooth", "stitch", "render", "composite")
RECONSTRUCTION_KEY = "recon"  # key of the unedited latents
RUN_SUFFIX = ".videdit"  # a video's run folder: <video file name>.videdit/ (beside it, or in --out)

# RUN/: the run as a whole.
SETTINGS = "settings.toml"  # every resolved setting of the run (videdit.records.save_settings_text)
LOG = "log.txt"  # stage events, warnings, failures (videdit.runlog)
LOCK = ".lock"  # held (flock) by the run using the folder (videdit.runfolder)
DIGESTS = ".digests.json"  # input files' digests by size and mtime (videdit.runner.DigestCache)
RAY_TASK = ".ray_task.json"  # the latest Ray attempt at this video (videdit.engines.ray_engine)
RAY_PART = ".ray_part.json"  # in a part's folder: the Ray attempt computing it (videdit.engines.ray_shards)
TRACKS = "tracks.json"  # the shots and face tracks of the video (videdit.records.TracksRecord)
TRACKS_KEY = "tracks.key"  # digest of the video and tracking settings tracks.json was found with
TRACKS_DIR = "tracks"  # RUN/tracks/<track id>/: one folder per face track, each with its own stages
TRACK_ARRAYS = "track.npz"  # RUN/tracks/<id>/track.npz: the track's per-frame arrays
PEOPLE_SHEET = "people.png"  # a labelled thumbnail per person (videdit faces)
EVAL_DIR = "eval"  # RUN/eval/: `videdit eval`'s metrics and plots
METRICS = "metrics.json"
METRICS_PLOT = "metrics_per_frame.png"
TRANSFORMS_PLOT = "transforms.png"
LATENT_PLOT = "latent_pca.png"
# RUN/: what a person looks at (videdit.compare, videdit.report_html, videdit.preview).
INDEX_PAGE = "index.html"  # RUN/ and RUN/preview/: a static page of the outputs
COMPARE_KEY = "compare"  # RUN/<video stem>.compare.mp4: the input and every edit side by side (not an edit's key)
PREVIEW_DIR = "preview"  # RUN/preview/: `videdit preview`
KEYFRAMES_DIR = "keyframes"  # preview/keyframes/000000.png ...: the key frames (an image folder, the preview's input)
KEYFRAMES_INFO = "keyframes.json"  # preview/: the video's digest, its shots and the key frames picked from them
PREVIEW_RUN_DIR = "run"  # preview/run/: the key frames' own run folder (align ... composite, cached per stage)
PREVIEW_SHEET = "sheet.png"  # preview/: the labelled contact sheet
DEMO_SOURCE_DIR = "source"  # `videdit demo`: its generated clip, inside the demo's run folder
DEMO_CLIP = "astronaut.mp4"

# RUN/<stage>/: in every stage folder (videdit.runner).
MANIFEST = "manifest.json"  # input digests, settings digest, every output file's size, sha256, mtime
STAGE_KEY = ".stage_key.json"  # in RUN/<stage>.partial/ while the stage runs: what it is computing
PARTIAL_SUFFIX = ".partial"  # RUN/<stage>.partial/: the work folder, renamed to RUN/<stage>/ when complete
CHECKPOINTS = "checkpoints"  # a stage's private resumption state (not part of its output digest)
CHECKPOINT = "latest.pt"  # checkpoints/<this>: the loop's latest state
PARTS = "parts"  # RUN/<stage>.partial/parts/<start>-<end>/: a frame-sharded stage's finished parts
SHARD_FRAMES = "frames.json"  # composite's part: per frame its pts and seam energies
MASKS_DIR = "masks"  # composite's part (save_masks): the blend masks' frames
DEEP_FRAME_FORMAT = "{:06d}.npy"  # composite's part: frame i of a 10/12-bit source (uint16, lossless)

# File and folder names inside the stage folders.
TRANSFORMS = "transforms.npz"  # align/, smooth/ (videdit.records.TransformsRecord, AlignRecord)
ALIGNED = "aligned"
UNALIGNED = "unaligned"
ALIGN_GEOMETRY = "crop_geometry.npz"  # align.partial/ of a sharded align only: the float64 quads the parts cut with
VIDEO_INFO = "video.json"  # align/: VideoInfo of the source
ALIGN_INFO = "align.json"  # align/: the landmark backend and the frame counts (videdit.records.AlignInfo)
PREVIEW = "preview.mp4"  # align/, encode/
LATENTS = "latents.npy"  # encode/
GENERATOR = "generator.safetensors"  # tune/
OFFSETS = "offsets.safetensors"  # tune/ (HyperStyle)
TUNE_INFO = "tune.json"  # tune/: PTI's account (steps, losses)
TUNER_INFO = "tuner.json"  # tune/: the other tuners' account
SMOOTH_INFO = "smooth.json"
STITCH_INFO = "stitch.json"
RENDER_INFO = "render.json"
RECONSTRUCTION_VIDEO = "reconstruction.mp4"  # render/: the reconstruction's crop video
SIDE_BY_SIDE_VIDEO = "side_by_side.mp4"  # render/: input crop | reconstruction | each edit
MASKS_VIDEO = "masks.mp4"  # composite/ (save_masks)
COMPOSITE_INFO = "composite.json"

FRAME_FORMAT = "{:06d}.png"  # aligned/, unaligned/, render/<key>/: frame i's PNG
_LATENTS_PREFIX, _NPY = "latents_", ".npy"
_STYLES_PREFIX, _SAFETENSORS = "styles_", ".safetensors"
_VIDEO = ".mp4"
_LOSSLESS_VIDEO = ".mkv"  # FFV1 (codec "ffv1") does not fit in an .mp4
_OUTPUT_SUFFIXES = (_VIDEO, _LOSSLESS_VIDEO)


def output_suffix(codec: str) -> str:
    """The suffix of the composite and published videos for the composite's codec setting."""
    return _LOSSLESS_VIDEO if str(codec).lower() == "ffv1" else _VIDEO


def run_folder_name(video_name: str) -> str:
    """The run folder of the video file `video_name` (talk.mp4 -> talk.mp4.videdit)."""
    return video_name + RUN_SUFFIX


def frame_name(index: int) -> str:
    return FRAME_FORMAT.format(index)


def partial_name(stage: str) -> str:
    """RUN/<this>/: where `stage` runs until it is complete."""
    return stage + PARTIAL_SUFFIX


def part_name(start: int, end: int) -> str:
    """RUN/<stage>.partial/parts/<this>/: the part of a sharded stage over frames [start, end)."""
    return f"{start:06d}-{end:06d}"


def part_range(name: str) -> tuple[int, int] | None:
    """(start, end) of a part folder's name, None for other names (a part still being written, ...)."""
    start, sep, end = name.partition("-")
    if not sep or not start.isdigit() or not end.isdigit():
        return None
    return int(start), int(end)


def deep_frame_name(index: int) -> str:
    return DEEP_FRAME_FORMAT.format(index)


def latents_name(key: str) -> str:
    """edit/ and smooth/: the W+ latents of output `key`."""
    return _LATENTS_PREFIX + key + _NPY


def latents_key(name: str) -> str | None:
    """The key of a latents file name (`latents_age+5.npy` -> `age+5`; encode's `latents.npy` -> the
    reconstruction), None for other names: the one parser of latents_name."""
    if name == LATENTS:
        return RECONSTRUCTION_KEY
    if name.startswith(_LATENTS_PREFIX) and name.endswith(_NPY) and len(name) > len(_LATENTS_PREFIX + _NPY):
        return name[len(_LATENTS_PREFIX):-len(_NPY)]
    return None


def styles_name(key: str) -> str:
    """edit/ and smooth/: per-frame StyleSpace offsets of S edit `key`."""
    return _STYLES_PREFIX + key + _SAFETENSORS


def styles_key(name: str) -> str | None:
    """The key of a styles file name, None for other names."""
    if name.startswith(_STYLES_PREFIX) and name.endswith(_SAFETENSORS) and len(name) > len(_STYLES_PREFIX + _SAFETENSORS):
        return name[len(_STYLES_PREFIX):-len(_SAFETENSORS)]
    return None


def stitched_generator_name(key: str) -> str:
    """stitch/<this>: the generator stitching-tuned for the latents of `key` (render reads it for that key)."""
    return f"generator_{key}{_SAFETENSORS}"


def render_video_name(key: str) -> str:
    """render/<this>: the crop video of `key` (the reconstruction's is reconstruction.mp4)."""
    return RECONSTRUCTION_VIDEO if key == RECONSTRUCTION_KEY else key + _VIDEO


def composite_video_name(key: str, suffix: str = _VIDEO) -> str:
    """composite/<this>: the full-frame video of `key` (suffix: output_suffix of the codec)."""
    return key + suffix


def masks_video_name(suffix: str = _VIDEO) -> str:
    """composite/<this>: the blend masks' video (save_masks), in the outputs' container."""
    return MASKS_VIDEO[:-len(_VIDEO)] + suffix


def video_stem(name: str) -> str | None:
    """The stem of a video file name as the stages write them (<stem>.mp4, or .mkv for FFV1), None for
    other names."""
    for suffix in _OUTPUT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)]
    return None


def composite_key(name: str) -> str | None:
    """The key of a composite/ video file name (the masks' video is none), None for other names."""
    stem = video_stem(name)
    return stem if stem is not None and name not in (masks_video_name(s) for s in _OUTPUT_SUFFIXES) else None


def published_name(video_stem: str, key: str, suffix: str = _VIDEO) -> str:
    """RUN/<this>: the final full-frame video of `key` for the input video named `video_stem` (suffix:
    output_suffix of the codec)."""
    return f"{video_stem}.{key}{suffix}"


def published_key(name: str, source_stem: str) -> str | None:
    """The key of a published video's file name for input `source_stem`, None for other names (and for the
    comparison video, which is not an output of its own)."""
    prefix = source_stem + "."
    stem = video_stem(name) if name.startswith(prefix) else None
    key = stem[len(prefix):] if stem is not None and len(stem) > len(prefix) else None
    return key if key != COMPARE_KEY else None


def compare_name(video_stem: str) -> str:
    """RUN/<this>: the input and every output side by side (videdit.compare)."""
    return published_name(video_stem, COMPARE_KEY)


def is_compare_name(name: str) -> bool:
    """Whether a file name is a comparison video's (whatever the input was called)."""
    return name.endswith("." + COMPARE_KEY + _VIDEO)


def is_run_folder(folder) -> bool:
    """Whether `folder` is a run folder, whatever its name: named *.videdit, or holding what a run writes (its
    settings.toml beside the lock or the log, or a completed stage's manifest). Its files are never new inputs."""
    from pathlib import Path

    folder = Path(folder)
    if folder.name.endswith(RUN_SUFFIX):
        return True
    if (folder / SETTINGS).is_file() and ((folder / LOCK).exists() or (folder / LOG).is_file()):
        return True
    return any((folder / stage / MANIFEST).is_file() for stage in STAGE_ORDER)
