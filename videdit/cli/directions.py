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
@click.option("--samples", type=click.IntRange(1, 100_000), default=300, show_default=True, help="Sampled latents per channel push (300 in the paper).")
@click.option("--stats-samples", type=click.IntRange(1, 10_000_000), default=100_000, show_default=True, help="Latents for the S mean/std.")
@click.option("--strength", type=click.FloatRange(-100, 100), default=5.0, show_default=True, help="Push in std units (5 for faces, 10 for other domains).")
@click.option("--truncation", type=click.FloatRange(0, 1), default=0.7, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=8, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--weights-dir", type=click.Path(path_type=Path), default=None)
@click.option("-q", "--quiet", is_flag=True)
def directions_styleclip(generator, clip_path, out, samples, stats_samples, strength, truncation, seed, batch_size,
                         device, weights_dir, quiet):
    """StyleCLIP global-direction files (delta_i_c.npy, s_stats) for any generator, so text edits work on it."""
    from videdit import weights as W
    from videdit.errors import MissingWeightsError

    # Every missing file at once, then the generator's header, before CLIP or the generator is loaded.
    missing = [] if generator.is_file() else [f"  - generator {generator} (--generator): no such file"]
    if clip_path is None:
        try:
            clip_path = W.require(["clip_vit_b32"], W.resolve_weights_dir(weights_dir))["clip_vit_b32"]
        except MissingWeightsError as err:
            missing += str(err).splitlines()[1:]
    elif not clip_path.is_file():
        missing.append(f"  - CLIP weights {clip_path} (--clip): no such file")
    if missing:
        raise MissingWeightsError("\n".join([f"{len(missing)} file(s) missing:", *missing]))
    from videdit.checkpoints import load_generator
    from videdit.checkpoints.stylegan import generator_kwargs
    from videdit.styleclip import compute_styleclip_directions, load_clip

    generator_kwargs(generator)  # one line for a file that is not a generator, nothing built
    clip_model = load_clip(clip_path, device)
    G = load_generator(generator, device)
    channels = sum(G.synthesis.style_widths().values())
    if not quiet:  # the cost, in units that do not depend on the machine
        click.echo(f"{channels} style channels x 2 pushes x {samples} samples = {2 * channels * samples:,} renders "
                   f"and CLIP encodes at {G.img_resolution}px, plus {stats_samples:,} mapping + affine passes", err=True)
    result = compute_styleclip_directions(G, clip_model, out, samples, stats_samples=stats_samples, strength=strength,
                                          truncation_psi=truncation, seed=seed, batch_size=batch_size, quiet=quiet)
    click.echo(f"wrote {result.delta_i_c} and {result.s_stats} ({result.chunks_computed} chunks computed, {result.chunks_reused} reused)")
