"""`videdit preview`: an edit on a few key frames, in seconds, before the whole run."""
from __future__ import annotations

import json
from pathlib import Path

import click

from videdit.cli.run import pipeline_overrides, say_stand_ins


@click.command("preview")
@click.argument("video", type=click.Path(path_type=Path))
@click.option("--frames", default="auto", show_default=True, metavar="auto|I,J,...",
              help="Key frames: auto (the middle frame of each shot, at most 6) or frame numbers.")
@click.option("--edit", "edit", multiple=True, metavar="EDIT", help="As for run; repeat for several.")
@click.option("--strength", default=None, help="Strength of W+ and channel edits, or a comma list (one row each).")
@click.option("--alpha", default=None, help="Strength of text edits, or a comma list.")
@click.option("--faces", default=None, metavar="WHO", help="Whom to edit, as for run (main, all, p1,p3).")
@click.option("--tune-steps", type=int, default=0, show_default=True,
              help="0: the untuned generator; N: a quick PTI of N steps on the key frames first.")
@click.option("--preset", default=None, help="Preset, as for run [default; demo with --stand-ins].")
@click.option("--stand-ins", "stand_ins", is_flag=True,
              help="Random-weight stand-in networks instead of the checkpoints (offline; the faces are meaningless).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder (default: VIDEO.videdit/); the preview goes into its preview/ folder.")
@click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE", help="Any preset option, as for run.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--weights-dir", type=click.Path(path_type=Path), default=None)
@click.option("--no-estimate", is_flag=True, help="Skip the full run's estimate (one probe pass per network).")
@click.option("--wait", is_flag=True, help="If a run holds the run folder, wait for it instead of failing.")
@click.option("-q", "--quiet", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="Print what the preview made as JSON.")
def preview_cmd(video, frames, edit, strength, alpha, faces, tune_steps, preset, stand_ins, out, sets, device,
                weights_dir, no_estimate, wait, quiet, as_json):
    """See the edits on the key frames of VIDEO (RUN/preview/sheet.png, index.html) before a whole run."""
    from videdit.pipeline import Pipeline
    from videdit.preview import run_preview

    overrides = pipeline_overrides(edit=edit, strength=strength, alpha=alpha, faces=faces, sets=sets)
    say_stand_ins(stand_ins)
    pipe = Pipeline.for_command(preset, overrides, stand_ins=stand_ins, weights_dir=weights_dir, device=device,
                                quiet=quiet or as_json, wait=wait)
    result = run_preview(pipe, video, out, frames=frames, tune_steps=tune_steps, estimate=not no_estimate)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
        return
    click.echo(result.describe())
    click.echo(f"wrote {result.sheet} and {result.page}")
