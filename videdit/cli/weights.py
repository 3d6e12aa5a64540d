"""`videdit weights list|fetch|add|convert`."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from videdit.cli.common import fail

@click.group()
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
            fail(f"{len(failures)} of {count} files not {action} (see above)", code)
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
        fail(f"{source} holds no file of `videdit weights list`")
    _report_installed(results, "added")


@weights.command("convert")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
def weights_convert(src, dst):
    """Convert an NVIDIA .pkl or an official .pt generator to videdit's .safetensors (no pickle code runs)."""
    from videdit.checkpoints import convert_checkpoint

    convert_checkpoint(src, dst)
    click.echo(f"wrote {dst}")
