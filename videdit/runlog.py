"""RUN/log.txt through the standard `logging` machinery: stage events, every warning and error (with
its traceback and the stage it came from), versions, device and the settings digest.

Line format (the events tests and `read_log_events` parse; detail lines such as tracebacks are indented):

    2026-12-03T04:01:02 <stage> <event> <detail>

Stage events are written by `StageLog.write`; records of the `videdit` loggers and Python warnings raised
while `StageLog.capture()` is active become `<stage> warning|error|info <message>` lines, with the stage
that was running (`log_stage`). Warnings are also shown on the terminal through the run's reporter.
"""
from __future__ import annotations

import logging
import re
import time
import traceback
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Iterator

from videdit.layout import LOG

_stage: ContextVar[str] = ContextVar("videdit_log_stage", default="run")

EVENT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d \S+ \S+")


@contextmanager
def log_stage(name: str) -> Iterator[None]:
    """Records logged inside the block are attributed to stage `name`; so is an exception leaving it (the
    failure or interruption is logged once the stage has been left: `stage_of`)."""
    token = _stage.set(name)
    try:
        yield
    except BaseException as err:
        if not hasattr(err, _STAGE_ATTR):
            try:
                setattr(err, _STAGE_ATTR, name)
            except AttributeError:  # an exception type that takes no attributes: attributed to the run
                pass
        raise
    finally:
        _stage.reset(token)


_STAGE_ATTR = "videdit_stage"


def stage_of(error: BaseException) -> str:
    """The stage an exception came from (the innermost `log_stage` it left), else the current one."""
    return getattr(error, _STAGE_ATTR, None) or _stage.get()


class RunLogHandler(logging.Handler):
    """Appends one line per record to a run's log.txt (opened per record: a run folder may move or vanish)."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None = None):
        super().__init__(logging.INFO)
        self.path = Path(path)
        self.echo = echo  # terminal echo of warnings and errors

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stage = getattr(record, "stage", None) or _stage.get()
            event = getattr(record, "event", None) or record.levelname.lower()
            message = record.getMessage().strip()
            first, _, rest = message.partition("\n")
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
            lines = [f"{stamp} {stage} {event}{(' ' + first) if first else ''}"]
            detail = rest
            if record.exc_info:
                detail = (detail + "\n" if detail else "") + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            lines += [f"    {line}" for line in detail.splitlines()]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write("\n".join(lines) + "\n")
            if self.echo and record.levelno >= logging.WARNING and not hasattr(record, "event"):
                self.echo(f"  {stage}: {record.levelname.lower()}: {first}")
        except OSError:
            pass  # the log must never be the reason a run fails


class StageLog:
    """A run's log.txt: stage events (`write`), failures (`failure`), and, inside `capture()`, every
    record of the `videdit` loggers and every Python warning."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.handler = RunLogHandler(self.path, echo)
        # A private logger (not in logging's registry): one per run, gone with it.
        self.logger = logging.Logger(f"videdit.run.{self.path}")
        self.logger.addHandler(self.handler)
        self.logger.propagate = False

    def write(self, stage: str, event: str, detail: str = "") -> None:
        self.logger.info(detail, extra={"stage": stage, "event": event})

    def failure(self, error: BaseException) -> None:
        """Record a failed run: one event line naming the stage it failed in, and the traceback (indented), for
        the errors raised on purpose too: where one was raised is what a bug report needs."""
        from videdit.runfolder import RunFolderError

        if isinstance(error, RunFolderError):  # not this run's folder to write in (or not writable)
            return
        first = (str(error).strip().splitlines() or [""])[0]
        self.logger.error(f"{type(error).__name__}: {first}", exc_info=(type(error), error, error.__traceback__),
                          extra={"stage": stage_of(error), "event": "failed"})

    def interrupted(self, error: BaseException) -> None:
        """Record a run stopped by Ctrl-C or SIGTERM, with the stage it stopped in."""
        how = "SIGTERM" if type(error).__name__ == "Terminated" else "Ctrl-C"
        self.write(stage_of(error), "interrupted", f"by {how}; finished stages are kept, the same command resumes")

    @contextmanager
    def capture(self, level: int = logging.INFO) -> Iterator["StageLog"]:
        """Route the `videdit` loggers and Python warnings into this log while the block runs."""
        package = logging.getLogger("videdit")
        warnings_logger = logging.getLogger("py.warnings")
        previous_level = package.level
        package.setLevel(min(level, package.getEffectiveLevel()))
        package.addHandler(self.handler)
        warnings_logger.addHandler(self.handler)
        logging.captureWarnings(True)
        try:
            yield self
        finally:
            logging.captureWarnings(False)
            warnings_logger.removeHandler(self.handler)
            package.removeHandler(self.handler)
            package.setLevel(previous_level)


def read_log_events(run_dir: Path) -> list[tuple[str, str]]:
    """[(stage, event), ...] from RUN/log.txt."""
    path = Path(run_dir) / LOG
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if EVENT_LINE.match(line):  # tracebacks and other detail lines are indented
            parts = line.split()
            out.append((parts[1], parts[2]))
    return out


def environment_line(device: str, with_torch: bool = True) -> str:
    """Versions and device, for the first line of a run's log (torch's only with_torch: a run of align alone
    does not load it)."""
    import platform

    from videdit import __version__

    parts = [f"videdit {__version__}", f"python {platform.python_version()}"]
    if with_torch:
        try:
            import torch

            parts.append(f"torch {torch.__version__}")
            parts.append(f"cuda {torch.version.cuda or 'none'}")
            if str(device).startswith("cuda") and torch.cuda.is_available():
                parts.append(f"gpu {torch.cuda.get_device_name(0)}")
        except ImportError:
            pass
    try:
        import av

        parts.append(f"pyav {av.__version__}")
        ffmpeg = av.library_versions.get("libavcodec")
        if ffmpeg:
            parts.append("libavcodec " + ".".join(map(str, ffmpeg)))
    except ImportError:
        pass
    parts.append(f"device {device}")
    return ", ".join(parts)
