"""The `videdit` command line. Thin: parses options, calls the library, prints results. One module per verb
group (run.py: run, demo, presets; preview.py; weights.py; train.py; directions.py; faces.py; evaluation.py (eval); doctor.py; app.py).

Heavy packages (torch, av, dlib...) are imported inside the commands, so `videdit --help` is instant.
Every VideditError becomes one line on stderr and a non-zero exit; never a traceback.
"""
from __future__ import annotations

import sys

import click

from videdit import __version__
from videdit.cli import app, directions, doctor, evaluation, faces, preview, run, train, weights
from videdit.cli.common import fail
from videdit.errors import MissingWeightsError, Terminated, VideditError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="videdit")
def cli() -> None:
    """Edit faces in real videos with StyleGAN3.

    \b
    Quick start (no weights needed):  videdit demo
    Real run:                         videdit weights list; videdit run talk.mp4 --edit age
    """



for command in (run.run, run.demo, weights.weights, train.train, directions.directions, faces.faces_cmd,
                run.presets_cmd, evaluation.eval_cmd, doctor.doctor_cmd, preview.preview_cmd, app.app_cmd):
    cli.add_command(command)


def _terminate(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)  # stop as on Ctrl-C: cleanup, the run's log, one line
    try:
        cli.main(args=argv, prog_name="videdit", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:  # click turns Ctrl-C (and Terminated) into Abort
        if isinstance(exc, Terminated) or isinstance(exc.__cause__ or exc.__context__, Terminated):
            fail("terminated (SIGTERM); run the same command again to continue where it stopped", 143)
        fail("interrupted; run the same command again to continue where it stopped", 130)
    except click.exceptions.UsageError as exc:  # a bad flag or argument: one line, as every other error
        where = exc.ctx.command_path if exc.ctx is not None else "videdit"
        fail(f"{exc.format_message()} (see `{where} --help`)", exc.exit_code)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except MissingWeightsError as exc:
        click.echo(f"videdit: {exc}", err=True)
        sys.exit(3)
    except VideditError as exc:
        fail(str(exc))
    except OSError as exc:
        from videdit.fileio import full_disk_line

        line = full_disk_line(exc, "output")
        if line:
            fail(line)
        raise


if __name__ == "__main__":
    main()
