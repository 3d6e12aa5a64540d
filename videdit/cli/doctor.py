"""`videdit doctor`: what this environment can run."""
from __future__ import annotations

import json
from pathlib import Path

import click

@click.command("doctor")
@click.option("--build", is_flag=True, help="Also build the native kernels and, on a GPU, self-check them (minutes).")
@click.option("--weights-dir", type=click.Path(path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor_cmd(build, weights_dir, as_json):
    """What this environment can run: torch/CUDA, GPUs, native kernels, codecs, landmarks, weights."""
    from videdit.doctor import collect, format_report

    report = collect(build=build, weights_dir=weights_dir)
    click.echo(json.dumps(report, indent=1) if as_json else format_report(report))
