"""`videdit run` and `videdit demo`, and `videdit presets`: the pipeline on videos."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from videdit.cli.common import CRF, fail, int_list, ops_mode
from videdit.layout import STAGE_ORDER
from videdit.setting_rules import BATCH_MAX, PRECISIONS, STEPS_MAX
from videdit.tuning import TUNERS  # the registry's names only: no torch at import

STAGES = STAGE_ORDER
DEMO_RUN = "videdit-demo"  # `videdit demo`'s run folder for its generated clip (in the working folder)

def run_options(command):
    """The options of `videdit run`, shared by `videdit demo` (the same command on a clip of its own)."""
    options = [
        click.option("--edit", "edit", multiple=True, metavar="EDIT",
                     help="age, smile, pose, gender or a .npy file (InterFaceGAN in W+); 'text:a smiling face' (StyleCLIP); "
                          "'s:L6_148_512:501' (one StyleSpace channel); 'age:3+smile:1' (one output); 'p1=age' (one "
                          "person, with --faces). Repeat for several; docs/edits.md."),
        click.option("--strength", default=None,
                     help="Strength of W+ and channel edits: a number, a comma list (one output each), or keyframes "
                          "'0@0s,5@10s' (seconds, 120f frames, end; linear between); docs/edits.md."),
        click.option("--alpha", default=None, help="Strength of text edits (StyleCLIP alpha): as --strength."),
        click.option("--beta", type=float, default=None, help="StyleCLIP's channel threshold for text edits (default 0.13)."),
        click.option("--expand", default=None, metavar="L,R,T,B", help="Extra field of view in pixels at render resolution."),
        click.option("--preset", default=None, help="Preset name (videdit/presets/NAME.toml, or $VIDEDIT_PRESETS/NAME.toml) "
                                                    "or a .toml file [default; demo with --stand-ins]."),
        click.option("--stand-ins", "stand_ins", is_flag=True,
                     help="Random-weight stand-in networks instead of the checkpoints (offline; the faces are meaningless)."),
        click.option("--out", "out", type=click.Path(path_type=Path), default=None, help="Run folder (default: INPUT.videdit/)."),
        click.option("--until", type=click.Choice(STAGES), default=None, help="Stop after this stage."),
        click.option("--from", "from_stage", type=click.Choice(STAGES), default=None, help="Recompute from this stage on."),
        click.option("--force", is_flag=True, help="Recompute every stage."),
        click.option("--verify", is_flag=True, help="Re-hash every cached output (frames too) before reusing it."),
        click.option("--wait", is_flag=True, help="If another run holds the run folder, wait for it instead of failing."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
        click.option("--precision", type=click.Choice(PRECISIONS), default=None,
                     help="How the generator runs on CUDA: fp32 (default), tf32 (TF32 matmuls/convolutions) or fp16 "
                          "(NVIDIA's mixed precision: the highest-resolution layers in float16). CPU runs fp32."),
        click.option("--compile", "compile_synthesis", is_flag=True, default=None,
                     help="Run the synthesis network through torch.compile (for GPUs; eager, with one warning, where it fails)."),
        click.option("--batch-size", type=click.IntRange(1, BATCH_MAX), default=None, help="Frames per batch for encode and render, used as given (default: the preset's, lowered to fit free memory)."),
        click.option("--tuner", type=click.Choice(list(TUNERS)), default=None,
                     help="How to fit the generator to the video (default pti; hyperstyle needs --set hyperstyle.hypernetwork=FILE)."),
        click.option("--steps", type=click.IntRange(0, STEPS_MAX), default=None, help="Tuning steps (overrides the preset)."),
        click.option("--allow-l2-only", is_flag=True, default=None, help="Tune with L2 only when LPIPS weights are absent."),
        click.option("--save-masks", is_flag=True, default=None, help="Also write the composite masks as a video."),
        click.option("--faces", default=None, metavar="WHO",
                     help="Whom to edit: main (the person in the most frames), all, or labels like p1,p3 (see `videdit faces`); "
                          "each person's tracks are processed on their own. Default: follow one face."),
        click.option("--codec", type=click.Choice(["auto", "h264", "hevc", "ffv1"]), default=None,
                     help="Output codec (auto: like the source; ffv1 = lossless in .mkv for grading)."),
        click.option("--crf", type=CRF, default=None, help="Output quality: auto (18 H.264, 20 HEVC) or 0..51 (lower is better)."),
        click.option("--encoder-preset", "encoder_preset", default=None,
                     help="x264/x265 speed preset, e.g. slow (auto: medium / fast); --preset names the pipeline preset."),
        click.option("--pix-fmt", default=None, help="Output pixel format, e.g. yuv420p10le (auto: the source's)."),
        click.option("--recursive", is_flag=True, help="With a folder INPUT: also videos in subfolders."),
        click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE", help="Any preset option, e.g. --set tune.lr=1e-4."),
        click.option("--weights-dir", type=click.Path(path_type=Path), default=None, help="Where checkpoints are (default: $VIDEDIT_WEIGHTS, ./weights, user cache)."),
        click.option("--ops", type=click.Choice(["auto", "cuda", "cpp", "torch"]), default=None,
                     help="Op kernels: auto (CUDA kernels on GPU, fused C++ on CPU where measured faster), or force one (default: $VIDEDIT_OPS or auto)."),
        click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="Run videos here one after another, or one Ray task per video (pip install 'videdit[ray]')."),
        click.option("--address", default=None, help="With --engine ray: 'auto' or HOST:PORT (default: $RAY_ADDRESS, else a new one-machine cluster)."),
        click.option("--gpus-per-video", type=float, default=None, help="With --engine ray: GPUs per video (default: 1 if the cluster has GPUs, else 0)."),
        click.option("--cpus-per-video", type=float, default=None, help="With --engine ray: CPUs (and torch threads) per video [1]."),
        click.option("--max-retries", type=int, default=None, help="With --engine ray: retries of a video whose worker or node was lost [2]."),
        click.option("--shard-frames", default=None,
                     help="Run align's crops, encode, render and composite in parts of N frames ('auto': about one per Ray worker): with "
                          "--engine ray, each part on one of the video's workers across the cluster; locally, a run cut off keeps its finished "
                          "parts. The outputs are the same either way."),
        click.option("-q", "--quiet", is_flag=True, help="No progress output."),
        click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def pipeline_overrides(edit=(), strength=None, alpha=None, beta=None, expand=None, batch_size=None, tuner=None,
                       steps=None, allow_l2_only=None, save_masks=None, faces=None, codec=None, crf=None,
                       encoder_preset=None, pix_fmt=None, precision=None, compile_synthesis=None, sets=()) -> dict:
    """The settings the pipeline options ask for ('SECTION.KEY' or a run-wide key -> value; None: not given)."""
    from videdit.presets import parse_set_option
    from videdit.strengths import strength_options

    overrides = {
        "edit.edits": list(edit) or None,
        "edit.strengths": strength_options(strength),
        "edit.alpha": strength_options(alpha),
        "edit.beta": beta,
        "render.expand": int_list(expand, 4, "--expand"),
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
        "composite.crf": crf,
        "composite.preset": encoder_preset,
        "composite.pix_fmt": pix_fmt,
        "precision": precision,  # run-wide: the top of the preset, not a section
        "compile": compile_synthesis,
    }
    for s in sets:
        key, value = parse_set_option(s)
        overrides[key] = value
    return overrides


def say_stand_ins(stand_ins: bool) -> None:
    """The one plain line every command run on the stand-ins prints (stderr, even with -q)."""
    if stand_ins:
        from videdit.models import STAND_IN_NOTE

        click.echo(f"videdit: {STAND_IN_NOTE}", err=True)


def execute_run(input_path: Path, *, stand_ins: bool, preset, out, until, from_stage, force, verify, wait, device,
                recursive, weights_dir, ops, engine, address, gpus_per_video, cpus_per_video, max_retries, quiet,
                as_json, shard_frames=None, **settings) -> list:
    """`videdit run` (and `videdit demo`): the pipeline on a video or a folder of them; prints the summary, exits
    non-zero on a failure, returns the results."""
    overrides = pipeline_overrides(**settings)
    from videdit.engines import format_summary, run_many
    from videdit.pipeline import Pipeline

    say_stand_ins(stand_ins)
    pipe = Pipeline.for_command(preset, overrides, stand_ins=stand_ins, weights_dir=weights_dir, device=device,
                                quiet=quiet or as_json, verify=verify, wait=wait)
    ray_options = {"address": address, "gpus_per_video": gpus_per_video, "cpus_per_video": cpus_per_video,
                   "max_retries": max_retries}
    ray_options = {k: v for k, v in ray_options.items() if v is not None}
    if ray_options and engine != "ray":
        raise click.UsageError(f"--{next(iter(ray_options)).replace('_', '-')} needs --engine ray")
    if shard_frames is not None:  # a bad value is one line before any video is touched
        from videdit.errors import VideditError
        from videdit.shards import parse_shard_frames

        try:
            parse_shard_frames(shard_frames)
        except VideditError as exc:
            fail(str(exc))
    engine_options = dict(ray_options, **({"shard_frames": shard_frames} if shard_frames is not None else {}))
    with ops_mode(ops):
        results = run_many(pipe, input_path, out=out, until=until, from_stage=from_stage, force=force,
                           recursive=recursive, engine=engine, engine_options=engine_options)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=1))
    single = len(results) == 1 and not input_path.is_dir()
    if single and results[0].status != "ok":
        fail(results[0].error or "failed")
    if not as_json and (not single or not quiet):
        click.echo(format_summary(results))
    if any(r.status != "ok" for r in results):
        sys.exit(1)
    return results


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@run_options
def run(input_path, **options):
    """Run the pipeline on a video, or on every video in a folder."""
    execute_run(input_path, **options)


@click.command()
@click.argument("video", type=click.Path(path_type=Path), required=False)
@click.option("--frames", "clip_frames", type=click.IntRange(2, 10_000), default=24, show_default=True,
              help="Length of the generated clip (without VIDEO).")
@run_options
def demo(video, clip_frames, **options):
    """`videdit run --stand-ins` on VIDEO, or on a clip made from a real photo (in OUT/source/; OUT default
    videdit-demo/): the whole pipeline offline, with random-weight networks, saying plainly which parts are real.
    Takes every option of `run`."""
    from videdit.demo import make_demo_clip, report

    options["stand_ins"] = True
    own_clip = video is not None
    if video is None:
        options["out"] = options["out"] if options["out"] is not None else Path(DEMO_RUN)
        video = make_demo_clip(options["out"], clip_frames, quiet=options["quiet"])
    elif not video.exists():
        fail(f"no such file: {video}")
    results = execute_run(video, **options)
    if not options["quiet"] and not options["as_json"]:
        report(results[0], own_clip=own_clip, weights_dir=options["weights_dir"])


@click.command("presets")
def presets_cmd():
    """List the named presets."""
    from videdit.presets import available_presets, load_preset

    for name in available_presets():
        click.echo(f"{name:10s} {load_preset(name).get('description', '')}")
