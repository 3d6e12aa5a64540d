"""`videdit directions styleclip` and `videdit directions fit`."""
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
    from videdit.progress import Reporter, reporting

    with reporting(Reporter(quiet=quiet)):  # bars on stderr (plain lines off a terminal)
        result = compute_styleclip_directions(G, clip_model, out, samples, stats_samples=stats_samples,
                                              strength=strength, truncation_psi=truncation, seed=seed,
                                              batch_size=batch_size, quiet=quiet)
    click.echo(f"wrote {result.delta_i_c} and {result.s_stats} ({result.chunks_computed} chunks computed, {result.chunks_reused} reused)")


@directions.command("fit")
@click.option("--positive", type=click.Path(path_type=Path), default=None,
              help="Folder (or file) of face images / videos WITH the attribute.")
@click.option("--negative", type=click.Path(path_type=Path), default=None,
              help="Folder (or file) of face images / videos WITHOUT it.")
@click.option("--latents", type=click.Path(path_type=Path), default=None,
              help="Instead: latents .npy [n, num_ws, 512] or [n, 512] (InterFaceGAN's recipe, with --scores).")
@click.option("--scores", type=click.Path(path_type=Path), default=None, help="With --latents: one attribute score per latent (.npy).")
@click.option("--fraction", type=float, default=0.02, show_default=True,
              help="With --scores: the top and bottom fraction become the two classes (0.02 as published).")
@click.option("--space", type=click.Choice(["w", "wplus"]), default="w", show_default=True,
              help="Fit in W (the mean over W+) or on the whole W+ code (a direction per layer).")
@click.option("--classifier", type=click.Choice(["svm", "logistic"]), default="svm", show_default=True,
              help="Linear SVM (as InterFaceGAN) or logistic regression.")
@click.option("--conditional", "conditional", multiple=True, type=click.Path(path_type=Path),
              help="A direction .npy to project out (InterFaceGAN's conditional manipulation); repeatable.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="OUT.npy (and OUT.json beside it).")
@click.option("--stand-ins", is_flag=True, help="Encode with the random stand-in networks (tests; the direction means nothing).")
@click.option("--per-video", type=int, default=8, show_default=True, help="Frames taken from each video.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--weights-dir", type=click.Path(path_type=Path), default=None)
@click.option("--seed", type=int, default=0, show_default=True)
def directions_fit(positive, negative, latents, scores, fraction, space, classifier, conditional, out, stand_ins,
                   per_video, device, weights_dir, seed):
    """A W+ edit direction from your own examples (a unit .npy that `videdit run --edit OUT.npy` takes)."""
    import numpy as np

    from videdit.directions_fit import FitSettings, classes_from_scores, face_latents, fit_direction, media_files, write_direction
    from videdit.edits import load_direction
    from videdit.errors import InputError

    settings = FitSettings(space=space, classifier=classifier, fraction=fraction, seed=seed)
    examples = positive is not None or negative is not None
    if examples == (latents is not None) or (latents is None) != (scores is None) or (examples and None in (positive, negative)):
        raise click.UsageError("give --positive DIR --negative DIR, or --latents L.npy --scores S.npy")
    how: dict = {"conditional_files": [str(c) for c in conditional]}
    if examples:
        from videdit.models import PretrainedModels, StandInModels
        from videdit.weights import resolve_weights_dir

        models = StandInModels() if stand_ins else PretrainedModels(resolve_weights_dir(weights_dir))
        from videdit.progress import Reporter, reporting

        files = {name: media_files(folder) for name, folder in (("positive", positive), ("negative", negative))}
        with reporting(Reporter()):  # a bar per folder's faces and encoding on stderr (plain lines off a terminal)
            pos, neg = (face_latents(files[name], models, device=device, per_video=per_video)
                        for name in ("positive", "negative"))
        how.update(source="examples", models=models.name, positive=[str(p) for p in files["positive"]],
                   negative=[str(p) for p in files["negative"]])
        if stand_ins:
            how["note"] = "stand-in networks: random encoder and generator, the direction means nothing"
    else:
        try:
            codes, values = np.load(latents, allow_pickle=False), np.load(scores, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read {latents} or {scores}: {err}") from None
        pos, neg = classes_from_scores(codes, values, fraction)
        how.update(source="scores", latents=str(latents), scores=str(scores), n_latents=len(codes))
    w_dim = pos.shape[-1]
    conds = [load_direction(c, w_dim) for c in conditional]
    result = fit_direction(pos, neg, settings, conds)
    npy, info = write_direction(out, result, how)
    counts = ", ".join(f"{n} {name}" for name, n in result.counts.items())
    click.echo(f"{counts}; cross-validated accuracy {result.accuracy:.3f} ({result.record['folds']} folds, {classifier}, "
               f"space {space})")
    click.echo(f"wrote {npy} and {info}; use it with: videdit run VIDEO --edit {npy}")
