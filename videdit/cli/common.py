"""What the verbs share: the one-line failure and the option parsers."""
from __future__ import annotations

import sys

import click

def fail(message: str, code: int = 1) -> None:
    click.echo(f"videdit: error: {message}", err=True)
    sys.exit(code)


def int_list(text: str | None, n: int | None = None, what: str = "value") -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if n is not None and len(values) != n:
        raise click.BadParameter(f"{what} needs {n} comma-separated integers, got {text!r}")
    return values


def int_value(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise click.BadParameter(f"{what} expects auto or a whole number, got {text!r}") from None


def ops_mode(mode: str | None):
    """Context selecting the op kernels (videdit.ops.backend), or nothing when not given."""
    import contextlib

    if mode is None:
        return contextlib.nullcontext()
    from videdit.ops.backend import use_ops

    return use_ops(mode)
