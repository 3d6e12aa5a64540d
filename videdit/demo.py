"""`videdit demo`: the whole pipeline on a clip made from a real photo, on a fresh machine, offline.

What is real: the clip (a real photograph moved by a known camera path, with audio), the landmark
model (dlib's, shipped on PyPI), alignment, transforms, smoothing, tuning, rendering, compositing and
the video files. What is not, unless the checkpoints are present: the generator and the encoder are
small randomly initialised stand-ins, so the rendered face is meaningless. The demo says which is which.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from videdit import layout, records
from videdit import weights as W
from videdit.errors import MissingWeightsError, VideditError
from videdit.layout import DEMO_CLIP, DEMO_SOURCE_DIR


def _lines(title: str, items: list[str]) -> str:
    return "\n".join([title] + [f"  - {i}" for i in items])


def run_demo(out: Path | None = None, n_frames: int = 24, weights_dir: Path | None = None, quiet: bool = False,
             video: Path | None = None, overrides: dict | None = None) -> int:
    """The whole pipeline on a generated clip, or on the user's `video`, with the released checkpoints when they
    are all present and the stand-in networks otherwise (said plainly). Returns the run's exit code."""
    from videdit.engines import format_summary, run_many
    from videdit.pipeline import Pipeline, StandInModels
    from videdit.synthetic import make_clip

    echo = (lambda s: None) if quiet else (lambda s: click.echo(s, err=True))
    t0 = time.perf_counter()
    if video is not None:  # the user's own clip: same run folder and outputs as `videdit run`
        clip_path = Path(video)
        out = Path(out) if out is not None else clip_path.with_name(layout.run_folder_name(clip_path.name))
    else:
        out = Path(out) if out is not None else Path("videdit-demo")
        (out / DEMO_SOURCE_DIR).mkdir(parents=True, exist_ok=True)
        clip_path = out / DEMO_SOURCE_DIR / DEMO_CLIP
    if video is None:
        from videdit.fileio import remove_stale_temporaries

        remove_stale_temporaries(clip_path)  # what a demo killed while writing its clip (kill -9) left
    if video is None and not clip_path.exists():
        from videdit.fileio import atomic_path

        with atomic_path(clip_path) as tmp:  # a kill while writing leaves no half clip to trip later demos
            clip = make_clip(tmp, n_frames=n_frames)
        echo(f"made {clip_path}: {clip.n_frames} frames {clip.size[0]}x{clip.size[1]} @ {clip.fps} fps with audio, "
             f"from scikit-image's astronaut photo rotated up to ±{abs(clip.camera.rotation_deg).max():.0f}° and shifted")

    wdir = W.resolve_weights_dir(weights_dir)
    overrides = dict(overrides or {})
    real = Pipeline.from_preset("fast", overrides={"edit.direction": "age", "edit.strengths": [5.0], **overrides},
                                weights_dir=wdir, quiet=quiet)
    try:
        real.check_weights()
        pipe, used_real = real, True
    except MissingWeightsError as missing:
        used_real = False
        pipe = Pipeline.from_preset("demo", overrides=overrides, weights_dir=wdir, quiet=quiet,
                                    models=StandInModels(resolution=64))
        missing_text = str(missing)

    [result] = run_many(pipe, clip_path, out=out)
    click.echo(format_summary([result]))
    if result.status != "ok":
        return 1

    from videdit.losses import find_lpips_backbone

    real_parts = [
        (f"the clip: your video {clip_path}" if video is not None else
         "the clip: a real photograph (scikit-image's astronaut) moved by a known camera path, with a tone as audio"),
        *what_ran(result.run_dir),
    ]
    stand_in = []
    if used_real:
        real_parts.append("generator and ReStyle-e4e encoder from the released checkpoints; InterFaceGAN age direction")
    else:
        stand_in += [
            "generator: a 64 px StyleGAN3-T with random weights (real: the 1024 px FFHQ StyleGAN3-R inside restyle_e4e_ffhq.pt)",
            "encoder: a ReStyle-e4e (ResNet34) with random weights, so the latents are meaningless",
            "edit direction: a random unit vector named 'age' (real: age_boundary.npy)",
        ]
    if find_lpips_backbone("alex", wdir) is None:
        stand_in.append("tuning loss: L2 only, since LPIPS's AlexNet weights (alexnet-owt-7be5be79.pth) are absent")
    echo("")
    echo(_lines("Real in this run:", real_parts))
    if stand_in:
        echo(_lines("Stand-ins (the rendered face is meaningless):", stand_in))
        echo("For real results get the checkpoints (`videdit weights list`):\n" + ("" if used_real else missing_text))
    seams = _seam_factors(result.run_dir)
    if seams:
        echo("Seam visibility (gradient energy on the mask border / same in the source; 1 = invisible): "
             + ", ".join(f"{k} {v:.2f}" for k, v in seams.items()))
    echo(f"\nRun folder: {result.run_dir}  ({time.perf_counter() - t0:.0f}s)")
    for p in result.outputs:
        echo(f"  {p}")
    return 0


def _seam_factors(run_dir: Path) -> dict[str, float]:
    info = _record(records.CompositeInfo, run_dir, "composite")
    return info.seam_factor if info is not None else {}


def _record(cls, run_dir: Path, stage: str):
    """The stage's record of what it did, or None when absent or unreadable (the demo only reports it)."""
    try:
        return cls.load(records.RunFolder(run_dir).stage(stage))
    except VideditError:
        return None


def what_ran(run_dir: Path) -> list[str]:
    """The real parts of a finished run, as its records say: the landmark backend align used, and whether
    composite copied the source's audio."""
    align = _record(records.AlignInfo, run_dir, "align")
    composite = _record(records.CompositeInfo, run_dir, "composite")
    backend = align.backend if align is not None else f"not recorded (no {layout.ALIGN_INFO}; rerun align)"
    if composite is None or composite.audio_copied is None:
        audio = f"audio not recorded (no {layout.COMPOSITE_INFO} saying; rerun composite)"
    else:
        audio = "the source audio copied" if composite.audio_copied else "no audio (the source has none)"
    return [f"landmarks: {backend}" + (" (model files ship with pip)" if backend == "dlib" else ""),
            "alignment crops, eye-based transforms, smoothing, rendering at the smoothed transforms, compositing into "
            f"the full frame, output video with {audio}"]


if __name__ == "__main__":
    sys.exit(run_demo(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("videdit-demo")))
