"""The `videdit` command line. Thin: parses options, calls the library, prints results.

Heavy packages (torch, av, dlib...) are imported inside the commands, so `videdit --help` is instant.
Every VideditError becomes one line on stderr and a non-zero exit; never a traceback.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from videdit import __version__
from videdit.errors import MissingWeightsError, VideditError
from videdit.layout import PEOPLE_SHEET, STAGE_ORDER, TRACKS, run_folder_name
from videdit.settings import PRECISIONS
from videdit.tuning import TUNERS  # the registry's names only: no torch at import

STAGES = STAGE_ORDER


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"videdit: error: {message}", err=True)
    sys.exit(code)


def _int_list(text: str | None, n: int | None = None, what: str = "value") -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if n is not None and len(values) != n:
        raise click.BadParameter(f"{what} needs {n} comma-separated integers, got {text!r}")
    return values


def _int_value(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise click.BadParameter(f"{what} expects auto or a whole number, got {text!r}") from None


def _float_list(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def _ops_mode(mode: str | None):
    """Context selecting the op kernels (videdit.ops.backend), or nothing when not given."""
    import contextlib

    if mode is None:
        return contextlib.nullcontext()
    from videdit.ops.backend import use_ops

    return use_ops(mode)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="videdit")
def cli() -> None:
    """Edit faces in real videos with StyleGAN3.

    \b
    Quick start (no weights needed):  videdit demo
    Real run:                         videdit weights list; videdit run talk.mp4 --edit age
    """


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--edit", "edit", multiple=True, metavar="EDIT",
              help="age, smile, pose, gender or a .npy file (InterFaceGAN in W+); 'text:a smiling face' (StyleCLIP); "
                   "'s:L6_148_512:501' (one StyleSpace channel). Repeat for several.")
@click.option("--strength", default=None, help="Strength of W+ and channel edits, or a comma list (one output each).")
@click.option("--alpha", default=None, help="Strength of text edits (StyleCLIP alpha), or a comma list.")
@click.option("--beta", type=float, default=None, help="StyleCLIP's channel threshold for text edits (default 0.13).")
@click.option("--expand", default=None, metavar="L,R,T,B", help="Extra field of view in pixels at render resolution.")
@click.option("--preset", default="default", show_default=True, help="Preset name (videdit/presets/NAME.toml, or $VIDEDIT_PRESETS/NAME.toml) or a .toml file.")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None, help="Run folder (default: INPUT.videdit/).")
@click.option("--until", type=click.Choice(STAGES), default=None, help="Stop after this stage.")
@click.option("--from", "from_stage", type=click.Choice(STAGES), default=None, help="Recompute from this stage on.")
@click.option("--force", is_flag=True, help="Recompute every stage.")
@click.option("--verify", is_flag=True, help="Re-hash every cached output (frames too) before reusing it.")
@click.option("--wait", is_flag=True, help="If another run holds the run folder, wait for it instead of failing.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="How the generator runs on CUDA: fp32 (default), tf32 (TF32 matmuls/convolutions) or fp16 "
                   "(NVIDIA's mixed precision: the highest-resolution layers in float16). CPU runs fp32.")
@click.option("--batch-size", type=int, default=None, help="Frames per batch for encode and render, used as given (default: the preset's, lowered to fit free memory).")
@click.option("--tuner", type=click.Choice(list(TUNERS)), default=None,
              help="How to fit the generator to the video (default pti; hyperstyle needs --set hyperstyle.hypernetwork=FILE).")
@click.option("--steps", type=int, default=None, help="Tuning steps (overrides the preset).")
@click.option("--allow-l2-only", is_flag=True, default=None, help="Tune with L2 only when LPIPS weights are absent.")
@click.option("--save-masks", is_flag=True, default=None, help="Also write the composite masks as a video.")
@click.option("--faces", default=None, metavar="WHO",
              help="Whom to edit: main (the person in the most frames), all, or labels like p1,p3 (see `videdit faces`); "
                   "each person's tracks are processed on their own. Default: follow one face.")
@click.option("--codec", type=click.Choice(["auto", "h264", "hevc", "ffv1"]), default=None,
              help="Output codec (auto: like the source; ffv1 = lossless in .mkv for grading).")
@click.option("--crf", default=None, help="Output quality: auto (18 H.264, 20 HEVC) or 0..51 (lower is better).")
@click.option("--encoder-preset", "encoder_preset", default=None,
              help="x264/x265 speed preset, e.g. slow (auto: medium / fast); --preset names the pipeline preset.")
@click.option("--pix-fmt", default=None, help="Output pixel format, e.g. yuv420p10le (auto: the source's).")
@click.option("--recursive", is_flag=True, help="With a folder INPUT: also videos in subfolders.")
@click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE", help="Any preset option, e.g. --set tune.lr=1e-4.")
@click.option("--weights-dir", type=click.Path(path_type=Path), default=None, help="Where checkpoints are (default: $VIDEDIT_WEIGHTS, ./weights, user cache).")
@click.option("--ops", type=click.Choice(["auto", "cuda", "cpp", "torch"]), default=None,
              help="Op kernels: auto (CUDA kernels on GPU, fused C++ on CPU where measured faster), or force one (default: $VIDEDIT_OPS or auto).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Run videos here one after another, or one Ray task per video (pip install 'videdit[ray]').")
@click.option("--address", default=None, help="With --engine ray: 'auto' or HOST:PORT (default: $RAY_ADDRESS, else a new one-machine cluster).")
@click.option("--gpus-per-video", type=float, default=None, help="With --engine ray: GPUs per video (default: 1 if the cluster has GPUs, else 0).")
@click.option("--cpus-per-video", type=float, default=None, help="With --engine ray: CPUs (and torch threads) per video [1].")
@click.option("--max-retries", type=int, default=None, help="With --engine ray: retries of a video whose worker or node was lost [2].")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
def run(input_path, edit, strength, alpha, beta, expand, preset, out, until, from_stage, force, verify, wait, device, precision, batch_size, tuner, steps,
        allow_l2_only, save_masks, faces, codec, crf, encoder_preset, pix_fmt, recursive, sets, weights_dir, ops, engine, address, gpus_per_video, cpus_per_video,
        max_retries, quiet, as_json):
    """Run the pipeline on a video, or on every video in a folder."""
    from videdit.presets import parse_set_option

    overrides = {
        "edit.edits": list(edit) or None,
        "edit.strengths": _float_list(strength),
        "edit.alpha": _float_list(alpha),
        "edit.beta": beta,
        "render.expand": _int_list(expand, 4, "--expand"),
        "encode.batch_size": batch_size,
        "render.batch_size": batch_size,
        # an explicit --batch-size is used as given, not fitted to the free memory
        "encode.fit_memory": False if batch_size is not None else None,
        "render.fit_memory": False if batch_size is not None else None,
        "tune.tuner": tuner,
        "tune.steps": steps,
        "tune.allow_l2_only": allow_l2_only,
        "composite.save_masks": save_masks,
        "faces.select": faces,
        "composite.codec": codec,
        "composite.crf": (crf if crf in (None, "auto") else _int_value(crf, "--crf")),
        "composite.preset": encoder_preset,
        "composite.pix_fmt": pix_fmt,
        "precision": precision,  # run-wide: the top of the preset, not a section
    }
    for s in sets:
        key, value = parse_set_option(s)
        overrides[key] = value
    from videdit.engines import format_summary, run_many
    from videdit.pipeline import Pipeline

    pipe = Pipeline.from_preset(preset, overrides=overrides, weights_dir=weights_dir, device=device, quiet=quiet or as_json,
                                verify=verify, wait=wait)
    ray_options = {"address": address, "gpus_per_video": gpus_per_video, "cpus_per_video": cpus_per_video,
                   "max_retries": max_retries}
    ray_options = {k: v for k, v in ray_options.items() if v is not None}
    if ray_options and engine != "ray":
        raise click.UsageError(f"--{next(iter(ray_options)).replace('_', '-')} needs --engine ray")
    with _ops_mode(ops):
        results = run_many(pipe, input_path, out=out, until=until, from_stage=from_stage, force=force,
                           recursive=recursive, engine=engine, engine_options=ray_options)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=1))
    single = len(results) == 1 and not input_path.is_dir()
    if single and results[0].status != "ok":
        _fail(results[0].error or "failed")
    if not as_json and (not single or not quiet):
        click.echo(format_summary(results))
    if any(r.status != "ok" for r in results):
        sys.exit(1)


@cli.command()
@click.argument("video", type=click.Path(path_type=Path), required=False)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder (default: videdit-demo/, or VIDEO.videdit/ for your own clip).")
@click.option("--frames", type=int, default=24, show_default=True, help="Length of the generated clip.")
@click.option("--codec", type=click.Choice(["auto", "h264", "hevc", "ffv1"]), default=None, help="Output codec (as for run).")
@click.option("--crf", type=int, default=None, help="Output quality 0..51 (as for run; default: auto).")
@click.option("--weights-dir", type=click.Path(path_type=Path), default=None)
@click.option("-q", "--quiet", is_flag=True)
def demo(video, out, frames, codec, crf, weights_dir, quiet):
    """The whole pipeline on a clip made from a real photo, or on VIDEO (your own clip): with the checkpoints
    when present, else with stand-in networks (offline, no weights), saying plainly which."""
    from videdit.demo import run_demo

    if video is not None and not video.exists():
        _fail(f"no such file: {video}")
    encoder = {k: v for k, v in {"composite.codec": codec, "composite.crf": crf}.items() if v is not None}
    code = run_demo(out, n_frames=frames, weights_dir=weights_dir, quiet=quiet, video=video, overrides=encoder)
    if code:
        sys.exit(code)


@cli.group()
def weights() -> None:
    """List, fetch, add and convert checkpoints."""


@weights.command("list")
@click.option("--weights-dir", type=click.Path(path_type=Path), default=None)
@click.option("--verify", is_flag=True, help="Also compare present files with their pinned or recorded sha256.")
def weights_list(weights_dir, verify):
    """Every file videdit can use: purpose, location, present or not."""
    from videdit import weights as W

    wdir = W.resolve_weights_dir(weights_dir)
    click.echo(f"weights folder: {wdir}")
    for st in W.status(wdir):
        w = st.weight
        if st.path is None:
            state = "missing" + (" (optional)" if w.optional else "")
        else:
            state = "present"
            if verify:
                state += f", sha256 {W.verify(w, st.path, wdir)}"
        click.echo(f"  {w.name:17s} {w.filename:34s} {state}")
        click.echo(f"  {'':17s} {w.purpose}")
        click.echo(f"  {'':17s} -> {st.path or st.expected}" + ("" if st.path else f"  get: {W.fetch_command(w)}"))


def _report_installed(results, action: str) -> None:
    """One line per file on stdout as it is done, one `videdit: error:` line per failure on stderr; exit 4
    when a download failed, 1 when a file was refused."""
    from videdit.errors import DownloadError

    failures, count = [], 0
    for result in results:
        count += 1
        if result.error is None:
            click.echo(f"{result.weight.name}: {result.message} ({result.path})")
        else:
            click.echo(f"videdit: error: {result.error}", err=True)
            failures.append(result.error)
    if failures:
        code = 4 if any(isinstance(err, DownloadError) for err in failures) else 1
        if count > 1:
            _fail(f"{len(failures)} of {count} files not {action} (see above)", code)
        sys.exit(code)


@weights.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--all", "fetch_all", is_flag=True, help="Every file of `videdit weights list`, optional ones included.")
@click.option("--weights-dir", type=click.Path(path_type=Path), default=None)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def weights_fetch(names, fetch_all, weights_dir, quiet):
    """Download NAME... (names or patterns such as 'fan_*') or --all: resumable, checked, digests recorded."""
    from videdit import weights as W
    from videdit.progress import Reporter, reporting

    if bool(names) == fetch_all:
        raise click.UsageError("name the files to fetch (see `videdit weights list`), or pass --all")
    entries = list(W.KNOWN_WEIGHTS) if fetch_all else W.select(names)
    with reporting(Reporter(quiet=quiet)):
        _report_installed(W.fetch_many(entries, W.resolve_weights_dir(weights_dir)), "fetched")


@weights.command("add")
@click.argument("file", type=click.Path(path_type=Path), required=False)
@click.option("--as", "name", default=None, help="Registry name (see `videdit weights list`).")
@click.option("--from", "source", type=click.Path(path_type=Path), default=None,
              help="A folder or zip archive: install every registry file in it.")
@click.option("--replace", is_flag=True, help="Accept a file whose sha256 differs from the one recorded at its first install.")
@click.option("--weights-dir", type=click.Path(path_type=Path), default=None)
def weights_add(file, name, source, replace, weights_dir):
    """Install a checkpoint you already have, or every one in a folder or zip (each checked first)."""
    from videdit import weights as W

    wdir = W.resolve_weights_dir(weights_dir)
    if (file is None) == (source is None) or (source is not None and name is not None):
        raise click.UsageError("give FILE (with --as NAME when its name is not the registry's), or --from DIR|ZIP")
    if file is not None:
        path = W.add(file, wdir, name, replace=replace)
        click.echo(f"added {path}")
        return
    from videdit.weights_bundle import add_from

    results, skipped = add_from(source, wdir, replace=replace)
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        click.echo(f"not registry files, left alone: {shown}")
    if not results:
        _fail(f"{source} holds no file of `videdit weights list`")
    _report_installed(results, "added")


@weights.command("convert")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
def weights_convert(src, dst):
    """Convert an NVIDIA .pkl or an official .pt generator to videdit's .safetensors (no pickle code runs)."""
    from videdit.checkpoints import convert_checkpoint

    convert_checkpoint(src, dst)
    click.echo(f"wrote {dst}")


@cli.group()
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


@cli.group()
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
    result = compute_styleclip_directions(G, clip_model, out, samples, stats_samples=stats_samples, strength=strength,
                                          truncation_psi=truncation, seed=seed, batch_size=batch_size, quiet=quiet)
    click.echo(f"wrote {result.delta_i_c} and {result.s_stats} ({result.chunks_computed} chunks computed, {result.chunks_reused} reused)")

def _known(tracks, choice: str) -> list[str]:
    """The people `choice` names that exist (for marking them on the contact sheet)."""
    from videdit.errors import InputError
    from videdit.face.tracks import select_people

    try:
        return select_people(tracks, choice)
    except InputError:
        return []


@cli.command("faces")
@click.argument("video", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help=f"Folder for {TRACKS}, the track arrays and {PEOPLE_SHEET} (default: VIDEO.videdit/, the run folder).")
@click.option("--faces", "choice", default="main", show_default=True,
              help="Whom `videdit run --faces` would edit: main (the person in the most frames), all, or labels like p1,p3.")
@click.option("--min-track-frames", type=int, default=None, help="Shorter tracks pass through unedited [10].")
@click.option("--landmarks", type=click.Choice(["auto", "dlib", "face-alignment"]), default="dlib", show_default=True)
@click.option("--json", "as_json", is_flag=True, help=f"Print {TRACKS}'s content and the chosen people as JSON.")
def faces_cmd(video, out, choice, min_track_frames, landmarks, as_json):
    """List a video's shots and the people in it, with a contact sheet, to choose whom to edit."""
    from videdit.face.tracks import TrackSettings, contact_sheet, describe, find_face_tracks, select_people
    from videdit.fileio import atomic_write_bytes
    from videdit.io.png import encode_png

    settings = TrackSettings() if min_track_frames is None else TrackSettings(min_track_frames=min_track_frames)
    tracks = find_face_tracks(video, landmarks=landmarks, track_settings=settings)
    out = out if out is not None else video.with_name(run_folder_name(video.name))
    # the files first: a wrong --faces still leaves the list and the sheet to pick from
    tracks_path = tracks.save(out)
    sheet_path = atomic_write_bytes(out / PEOPLE_SHEET, encode_png(contact_sheet(tracks, _known(tracks, choice))))
    chosen = select_people(tracks, choice)
    if as_json:
        click.echo(json.dumps(dict(tracks.record().to_json(), chosen=chosen, tracks_json=str(tracks_path),
                                   contact_sheet=str(sheet_path)), indent=1))
        return
    click.echo(describe(tracks, chosen))
    click.echo(f"chosen ({choice}): {', '.join(chosen)}")
    click.echo(f"wrote {tracks_path} and {sheet_path}")


@cli.command("presets")
def presets_cmd():
    """List the named presets."""
    from videdit.presets import available_presets, load_preset

    for name in available_presets():
        click.echo(f"{name:10s} {load_preset(name).get('description', '')}")


@cli.command("eval")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--against", type=click.Path(path_type=Path), default=None, help="Compare the final videos with this input video.")
@click.option("--max-frames", type=int, default=None, help="Evaluate only the first N frames.")
@click.option("--identity-model", type=click.Choice(["auto", "dlib", "arcface"]), default="auto", show_default=True)
@click.option("--pixel-metrics-for-edits", is_flag=True, help="Also compute L2/LPIPS/MS-SSIM for edited outputs.")
@click.option("--no-plots", is_flag=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--weights-dir", type=click.Path(path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def eval_cmd(runs, against, max_frames, identity_model, pixel_metrics_for_edits, no_plots, device, weights_dir, as_json):
    """Reconstruction, identity and temporal-consistency metrics of one run, or several side by side."""
    from videdit import weights as W
    from videdit.evaluate import EvalSettings, compare_runs, evaluate_run, format_summary, load_models, metrics_to_json

    settings = EvalSettings(identity_model=identity_model, weights_dir=W.resolve_weights_dir(weights_dir),
                            pixel_metrics_for_edits=pixel_metrics_for_edits, max_frames=max_frames,
                            plots=not no_plots, device=device)
    models = load_models(settings)  # once, shared by every run
    results = [evaluate_run(r, against=against, settings=settings, models=models) for r in runs]
    if as_json:
        click.echo(metrics_to_json(results if len(results) > 1 else results[0]))
    elif len(results) == 1:
        click.echo(format_summary(results[0]))
    else:
        click.echo(compare_runs(results))


@cli.command("doctor")
@click.option("--build", is_flag=True, help="Also build the native kernels and, on a GPU, self-check them (minutes).")
@click.option("--weights-dir", type=click.Path(path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor_cmd(build, weights_dir, as_json):
    """What this environment can run: torch/CUDA, GPUs, native kernels, codecs, landmarks, weights."""
    from videdit.doctor import collect, format_report

    report = collect(build=build, weights_dir=weights_dir)
    click.echo(json.dumps(report, indent=1) if as_json else format_report(report))


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="videdit", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("interrupted; run the same command again to continue where it stopped", 130)
    except KeyboardInterrupt:
        _fail("interrupted; run the same command again to continue where it stopped", 130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except MissingWeightsError as exc:
        click.echo(f"videdit: {exc}", err=True)
        sys.exit(3)
    except VideditError as exc:
        _fail(str(exc))
    except OSError as exc:
        if getattr(exc, "errno", None) == 28:  # ENOSPC
            _fail(f"disk full while writing {exc.filename or 'output'}; free space and rerun: finished stages are kept")
        raise


if __name__ == "__main__":
    main()
