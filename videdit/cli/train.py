"""`videdit train hyperstyle`."""
from __future__ import annotations

from pathlib import Path

import click

@click.group()
def train() -> None:
    """Train auxiliary networks."""


@train.command("hyperstyle")
@click.option("--images", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True, help="Folder of aligned face images.")
@click.option("--generator", type=click.Path(path_type=Path), required=True, help="Generator checkpoint (.pkl/.pt/.safetensors).")
@click.option("--encoder", type=click.Path(path_type=Path), required=True, help="ReStyle checkpoint (restyle_e4e_ffhq.pt or ours).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder (a rerun resumes from its checkpoint).")
@click.option("--steps", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--iters", "n_iters", type=int, default=None, help="Refinement iterations [5].")
@click.option("--allow-l2-only", is_flag=True, default=None, help="Train with L2 only when LPIPS weights are absent.")
def train_hyperstyle_cmd(images, generator, encoder, out, steps, batch_size, lr, n_iters, allow_l2_only):
    """Train a HyperStyle hypernetwork for a StyleGAN3 generator (for `videdit run --tuner hyperstyle`)."""
    from videdit.tuning.train_hyperstyle import HyperStyleTrainSettings, train_hyperstyle

    given = {"steps": steps, "batch_size": batch_size, "lr": lr, "n_iters": n_iters, "allow_l2_only": allow_l2_only}
    settings = HyperStyleTrainSettings(**{k: v for k, v in given.items() if v is not None})
    from videdit.progress import Reporter, reporting

    with reporting(Reporter()):  # its step bar on stderr
        result = train_hyperstyle(images, generator, encoder, out, settings)
    click.echo(f"wrote {result.hypernetwork_path} ({result.steps_done} steps, {result.parameters:,} parameters)")
