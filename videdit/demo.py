"""`videdit demo`: `videdit run --stand-ins` on a clip made from a real photo (or on the user's clip), offline.

What is real: the clip (a real photograph moved by a known camera path, with audio), the landmark model
(dlib's, shipped on PyPI), alignment, transforms, smoothing, tuning, rendering, compositing and the video
files. What is not: the generator, the encoder and the edit direction are small randomly initialised
stand-ins (videdit.models.StandInModels), so the rendered face is meaningless. The run itself is the one
`videdit run` makes (videdit.cli.run.execute_run); this module makes the clip and says which is which.
"""
from __future__ import annotations

from pathlib import Path

import click

from videdit import layout, records
from videdit.errors import VideditError
from videdit.layout import DEMO_CLIP, DEMO_SOURCE_DIR


def _lines(title: str, items: list[str]) -> str:
    return "\n".join([title] + [f"  - {i}" for i in items])


def make_demo_clip(out: Path, n_frames: int = 24, quiet: bool = False) -> Path:
    """OUT/source/astronaut.mp4: the demo's clip, made once (a kill while writing leaves no half clip)."""
    from videdit.fileio import atomic_path
    from videdit.synthetic import make_clip

    from videdit.fileio import remove_stale_temporaries

    clip_path = Path(out) / DEMO_SOURCE_DIR / DEMO_CLIP
    remove_stale_temporaries(clip_path)  # what a demo killed while writing its clip (kill -9) left
    if clip_path.exists():
        return clip_path
    clip_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(clip_path) as tmp:
        clip = make_clip(tmp, n_frames=n_frames)
    if not quiet:
        click.echo(f"made {clip_path}: {clip.n_frames} frames {clip.size[0]}x{clip.size[1]} @ {clip.fps} fps with "
                   f"audio, from scikit-image's astronaut photo rotated up to ±{abs(clip.camera.rotation_deg).max():.0f}° "
                   "and shifted", err=True)
    return clip_path


def report(result, own_clip: bool, weights_dir: Path | None = None) -> None:
    """What was real and what was a stand-in in the demo's run `result` (a VideoResult), on stderr."""
    from videdit.losses import find_lpips_backbone
    from videdit.weights import resolve_weights_dir

    echo = lambda s: click.echo(s, err=True)  # noqa: E731
    real_parts = [
        (f"the clip: your video {result.input}" if own_clip else
         "the clip: a real photograph (scikit-image's astronaut) moved by a known camera path, with a tone as audio"),
        *what_ran(result.run_dir),
    ]
    stand_in = [
        "generator: a 64 px StyleGAN3-T with random weights (real: the 1024 px FFHQ StyleGAN3-R inside restyle_e4e_ffhq.pt)",
        "encoder: a ReStyle-e4e (ResNet34) with random weights, so the latents are meaningless",
        "edit direction: a random unit vector named 'age' (real: age_boundary.npy)",
    ]
    if find_lpips_backbone("alex", resolve_weights_dir(weights_dir)) is None:
        stand_in.append("tuning loss: L2 only, since LPIPS's AlexNet weights (alexnet-owt-7be5be79.pth) are absent")
    echo("")
    echo(_lines("Real in this run:", real_parts))
    echo(_lines("Stand-ins (the rendered face is meaningless):", stand_in))
    echo("For real results get the checkpoints (`videdit weights list`) and run `videdit run VIDEO` without --stand-ins.")
    seams = _seam_factors(result.run_dir)
    if seams:
        echo("Seam visibility (gradient energy on the mask border / same in the source; 1 = invisible): "
             + ", ".join(f"{k} {v:.2f}" for k, v in seams.items() if v is not None))
    echo(f"\nRun folder: {result.run_dir}  ({result.seconds:.0f}s)")
    for p in result.outputs:
        echo(f"  {p}")


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
