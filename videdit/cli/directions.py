"""`videdit directions styleclip`."""
from __future__ import annotations

from pathlib import Path

import click

@click.group()
def directions() -> None:
    """Make edit directions for a generator."""


@directions.command("styleclip")
@click.option("--generator", type=click.Path(path_type=Path), required=True, help="Generator checkpoint (.pkl/.pt/.safetensors).")
@click.option("--clip", "clip_path", type=click.Path(path_type=Path), default=None, help="CLIP ViT-B/32 weights [the registry's clip_vit_b32].")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder (delta_i_c.npy, s_stats); a rerun resumes.")
@click.option("--samples", type=int, default=300, show_default=True, help="Sampled latents per channel push (300 in the paper).")
@click.option("--stats-samples", type=int, default=100_000, show_default=True, help="Latents for the S mean/std.")
@click.option("--strength", type=float, default=5.0, show_default=True, help="Push in std units (5 for faces, 10 for other domains).")
@click.option("--truncation", type=float, default=0.7, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--weights-dir", type=click.Path(path_type=Path), default=None)
@click.option("-q", "--quiet", is_flag=True)
def directions_styleclip(generator, clip_path, out, samples, stats_samples, strength, truncation, seed, batch_size,
                         device, weights_dir, quiet):
    """StyleCLIP global-direction files (delta_i_c.npy, s_stats) for any generator, so text edits work on it."""
    from videdit import weights as W

    if clip_path is None:
        clip_path = W.require(["clip_vit_b32"], W.resolve_weights_dir(weights_dir))["clip_vit_b32"]
    from videdit.checkpoints import load_generator
    from videdit.styleclip import compute_styleclip_directions, load_clip

    clip_model = load_clip(clip_path, device)
    G = load_generator(generator, device)
    channels = sum(G.synthesis.style_widths().values())
    if not quiet:  # the cost, in units that do not depend on the machine
        click.echo(f"{channels} style channels x 2 pushes x {samples} samples = {2 * channels * samples:,} renders "
                   f"and CLIP encodes at {G.img_resolution}px, plus {stats_samples:,} mapping + affine passes", err=True)
    from videdit.progress import Reporter, reporting

    with reporting(Reporter(quiet=quiet)):  # bars on stderr (plain lines off a terminal)
        result = compute_styleclip_directions(G, clip_model, out, samples, stats_samples=stats_samples,
                                              strength=strength, truncation_psi=truncation, seed=seed,
                                              batch_size=batch_size, quiet=quiet)
    click.echo(f"wrote {result.delta_i_c} and {result.s_stats} ({result.chunks_computed} chunks computed, {result.chunks_reused} reused)")
