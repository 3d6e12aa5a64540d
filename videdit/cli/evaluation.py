"""`videdit eval`: metrics of finished runs."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import click

@click.command("eval")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--against", type=click.Path(path_type=Path), default=None, help="Compare the final videos with this input video.")
@click.option("--max-frames", type=int, default=None, help="Evaluate only the first N frames (written to RUN/eval/first_N/, beside the whole run's).")
@click.option("--identity-model", type=click.Choice(["auto", "dlib", "arcface"]), default="auto", show_default=True)
@click.option("--pixel-metrics-for-edits", is_flag=True, help="Also compute L2/LPIPS/MS-SSIM for edited outputs.")
@click.option("--no-plots", is_flag=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--weights-dir", type=click.Path(path_type=Path), default=None)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write the evaluation here instead of RUN/eval/ (e.g. a read-only run folder); one subfolder per run when several.")
@click.option("--stand-ins", "stand_ins", is_flag=True,
              help="Offline: LPIPS on a random-weight AlexNet (its values are meaningless), identity by dlib.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def eval_cmd(runs, against, max_frames, identity_model, pixel_metrics_for_edits, no_plots, device, weights_dir, out,
             stand_ins, as_json):
    """Reconstruction, identity and temporal-consistency metrics of one run, or several side by side."""
    from videdit import weights as W
    from videdit.evaluate import EvalSettings, compare_runs, evaluate_run, format_summary, load_models, metrics_to_json
    from videdit.evaluate.report import evaluation_folder

    settings = EvalSettings(identity_model="dlib" if stand_ins else identity_model, weights_dir=W.resolve_weights_dir(weights_dir),
                            pixel_metrics_for_edits=pixel_metrics_for_edits, max_frames=max_frames,
                            plots=not no_plots, device=device, lpips_random_backbone=stand_ins)
    each = [dataclasses.replace(settings, out=None if out is None else out / Path(r).resolve().name if len(runs) > 1
                                else out) for r in runs]
    for r, run_settings in zip(runs, each):
        evaluation_folder(r, against, run_settings)  # every output folder checked before any model is loaded
    if stand_ins:
        click.echo("videdit: stand-ins: LPIPS on an AlexNet with random weights (its values are meaningless) and "
                   "identity by dlib's ResNet, instead of the released AlexNet and ArcFace weights", err=True)
    from videdit.progress import Reporter, reporting

    models = load_models(settings)  # once, shared by every run
    with reporting(Reporter()):  # a bar per run on stderr (plain lines off a terminal); --json's stdout stays clean
        results = [evaluate_run(r, against=against, settings=s, models=models) for r, s in zip(runs, each)]
    from videdit.records_view import ViewFolder
    from videdit.report_html import write_run_page

    for run_dir in runs:  # the run's page shows the new metrics and plots
        if ViewFolder(run_dir).page.is_file():
            write_run_page(run_dir)
    if as_json:
        click.echo(metrics_to_json(results if len(results) > 1 else results[0]))
    elif len(results) == 1:
        click.echo(format_summary(results[0]))
    else:
        click.echo(compare_runs(results))
