"""`videdit app`: the local web app (videdit.app) over the Python API. gradio is imported only when it starts."""
from __future__ import annotations

from pathlib import Path

import click

from videdit.cli.common import fail
from videdit.cli.run import pipeline_overrides, say_stand_ins
from videdit.app import DEFAULT_DEMO_FRAMES, DEFAULT_MAX_UPLOAD_MB, DEMO_DIR  # light: gradio loads when it starts
from videdit.layout import DEMO_CLIP, DEMO_SOURCE_DIR


def _auth(ctx, param, text: str | None) -> tuple[str, str] | None:
    """--auth USER:PASS, checked as the options are read (before anything starts)."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise click.BadParameter(f"expected USER:PASS, got {text!r}")
    return user, password


@click.command("app")
@click.option("--root", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="The folder whose videos the app lists, reads and serves (nothing outside it); uploads go to ROOT/uploads/.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; any but this machine's needs --auth.")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True)
@click.option("--auth", default=None, metavar="USER:PASS", callback=_auth, help="Log-in for the page (needed with another --host).")
@click.option("--stand-ins", "stand_ins", is_flag=True,
              help="Random-weight stand-in networks instead of the checkpoints (offline; the faces are meaningless).")
@click.option("--preset", default=None, help="Pipeline preset, as for run [default; demo with --stand-ins].")
@click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE", help="Any preset option, as for run.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--weights-dir", type=click.Path(path_type=Path), default=None)
@click.option("--max-upload-mb", type=click.FloatRange(min=1), default=DEFAULT_MAX_UPLOAD_MB, show_default=True, help="Largest upload accepted.")
@click.option("--demo-frames", type=click.IntRange(2, 10_000), default=DEFAULT_DEMO_FRAMES, show_default=True,
              help=f"Length of the demo clip the page can make (ROOT/{DEMO_DIR}/{DEMO_SOURCE_DIR}/{DEMO_CLIP}), as `videdit demo --frames`.")
def app_cmd(root, host, port, auth, stand_ins, preset, sets, device, weights_dir, max_upload_mb, demo_frames):
    """A local web page to pick a video, preview edits on its key frames and run them (pip install 'videdit[app]')."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        fail("the app needs gradio: pip install 'videdit[app]'")
    from videdit.app import AppOptions, VideditApp, check_host, serve

    check_host(host, auth)
    overrides = {k: v for k, v in pipeline_overrides(sets=sets).items() if v is not None}
    say_stand_ins(stand_ins)
    app = VideditApp(AppOptions(root, stand_ins=stand_ins, preset=preset, overrides=overrides, weights_dir=weights_dir,
                                device=device, max_upload_mb=max_upload_mb, demo_frames=demo_frames))
    click.echo(f"videdit app: http://{host}:{port} serving videos under {app.root} (Ctrl-C stops it)", err=True)
    serve(app, host=host, port=port, auth=auth)
