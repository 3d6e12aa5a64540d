"""What a run shows while it works: stage k of n as it starts, a bar for every long loop, a whole-run ETA.

The pipeline installs a `Reporter` for the duration of a run (`with reporting(reporter):`, a context
variable, so threads and tasks see their own); stages wrap their long loops in `track(...)` or open a
`bar(...)`, and stay silent when no reporter is installed (library use, tests). Three looks:

* TTY: tqdm bars with rate and ETA, on stderr;
* not a TTY (logs, CI): plain lines, at most one per `interval` seconds per loop, never bar noise;
* quiet: nothing.

Everything goes to stderr, so `--json` output on stdout stays clean. The clock and the stream are
injectable so the behaviour is testable.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")

_current: ContextVar["Reporter | None"] = ContextVar("videdit_progress", default=None)


def format_duration(seconds: float | None) -> str:
    """'?' for unknown, else 45s / 3m05s / 2h10m."""
    if seconds is None:
        return "?"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Reporter:
    """Announces stages and drives loop bars for one run.

    estimates: expected seconds per stage (videdit.estimate), used for the whole-run ETA; it is
    corrected by how the finished stages compared with their own estimates.
    """

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, interval: float = 30.0):
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.clock = clock
        self.interval = interval
        self.estimates: dict[str, float] = {}
        self.done: dict[str, float] = {}  # stage -> seconds it took (ran stages only)
        self.stages: list[str] = []
        self.current: str | None = None
        self.stage_started = 0.0

    # ---- text out

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    # ---- stages

    def plan(self, stages: list[str], estimates: dict[str, float] | None = None) -> None:
        self.stages = list(stages)
        self.estimates = dict(estimates or {})

    def _scale(self) -> float:
        """How the finished stages compared with their estimates (1 before any has run)."""
        measured = [s for s in self.done if self.estimates.get(s)]
        return (sum(self.done[s] for s in measured) / sum(self.estimates[s] for s in measured)) if measured else 1.0

    def stages_left(self) -> list[str]:
        """The stages not yet done, the one running excluded."""
        return [s for s in self.stages if s not in self.done and s != self.current]

    def run_eta(self) -> float | None:
        """Seconds left for the stages not yet done (the running one excluded), from the estimates scaled by
        how the done ones went."""
        left = self.stages_left()
        if not self.estimates or any(s not in self.estimates for s in left):
            return None
        return self._scale() * sum(self.estimates[s] for s in left)

    def stage_start(self, name: str) -> None:
        self.current = name
        self.stage_started = self.clock()
        k = self.stages.index(name) + 1 if name in self.stages else len(self.done) + 1
        n = len(self.stages) or k
        self.say(f"[{k}/{n}] {name} ...{self._expected(name)}")

    def _expected(self, name: str) -> str:
        """' (about 2m10s, then about 40s more for the 3 stages after it)': this stage's own estimate, then
        what the stages after it add; '' when there is no estimate."""
        parts = []
        own = self.estimates.get(name)
        if own:
            parts.append(f"about {format_duration(self._scale() * own)}")
        rest, n_rest = self.run_eta(), len(self.stages_left())
        if rest:
            after = "the stage" if n_rest == 1 else f"the {n_rest} stages"
            parts.append(f"then about {format_duration(rest)} more for {after} after it")
        return f" ({', '.join(parts)})" if parts else ""

    def stage_end(self, name: str, status: str, seconds: float | None = None) -> None:
        """seconds: how long it ran (default: measured on this reporter's clock since stage_start)."""
        if seconds is None and status == "ran" and self.current == name:
            seconds = self.clock() - self.stage_started
        seconds = seconds or 0.0
        if status == "ran":
            self.done[name] = seconds
        else:
            self.done[name] = 0.0
            self.estimates[name] = 0.0  # a cached stage cost nothing, and says nothing about the scale
        self.current = None
        k = self.stages.index(name) + 1 if name in self.stages else len(self.done)
        n = len(self.stages) or k
        self.say(f"[{k}/{n}] {name} {status}" + (f" in {format_duration(seconds)}" if status == "ran" else ""))

    # ---- loops

    def bar(self, total: int | None, desc: str, unit: str = "it", initial: int = 0) -> "Bar":
        if self.quiet:
            return Bar(None, desc, unit, total, initial, self)
        if self.tty:
            import shutil

            from tqdm import tqdm

            # A fixed width from $COLUMNS or the terminal (a pty of size 0, e.g. under `script`, gets 100).
            width = shutil.get_terminal_size((100, 24)).columns or 100
            inner = tqdm(total=total, initial=initial, desc=f"  {desc}", unit=unit, file=self.stream,
                         ncols=min(width, 120), leave=True)
            return Bar(inner, desc, unit, total, initial, self)
        return Bar(None, desc, unit, total, initial, self, plain=True)


class Bar:
    """The part of tqdm's interface the stages use: update, set_postfix, close (and a context manager)."""

    def __init__(self, inner, desc: str, unit: str, total: int | None, initial: int, reporter: Reporter,
                 plain: bool = False):
        self.inner, self.desc, self.unit, self.total, self.n = inner, desc, unit, total, initial
        self.reporter, self.plain = reporter, plain
        self.start = reporter.clock()
        self.start_n = initial
        self.last_line = self.start
        self.postfix = ""

    def rate(self) -> float | None:
        elapsed = self.reporter.clock() - self.start
        done = self.n - self.start_n
        return done / elapsed if elapsed > 0 and done > 0 else None

    def eta(self) -> float | None:
        rate = self.rate()
        return (self.total - self.n) / rate if rate and self.total is not None else None

    def line(self) -> str:
        total = f"/{self.total}" if self.total is not None else ""
        rate = self.rate()
        speed = (f", {rate:.2f} {self.unit}/s" if rate >= 1 else f", {1 / rate:.1f} s/{self.unit}") if rate else ""
        eta = self.eta()
        extra = f", {self.postfix}" if self.postfix else ""
        return f"  {self.desc}: {self.n}{total} {self.unit}{speed}" + (f", ETA {format_duration(eta)}" if eta is not None else "") + extra

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.inner is not None:
            self.inner.update(n)
        elif self.plain:
            now = self.reporter.clock()
            if now - self.last_line >= self.reporter.interval:
                self.last_line = now
                self.reporter.say(self.line())

    def set_postfix(self, values: dict | None = None, refresh: bool = True, **kwargs) -> None:
        values = dict(values or {}, **kwargs)
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())
        if self.inner is not None:
            self.inner.set_postfix(values, refresh=refresh)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
            self.inner = None

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Silent(Bar):
    def __init__(self, total, desc, unit, initial):
        self.inner, self.plain, self.n, self.total, self.desc, self.unit, self.postfix = None, False, initial, total, desc, unit, ""

    def update(self, n: int = 1) -> None:
        self.n += n


class CountingReporter(Reporter):
    """Where the parts of a sharded stage run: the stage's bar (desc == stage; stage None: every bar) counts
    into `count(n)` (the driver's one bar for the stage, directly or through a Ray actor); nothing is printed here."""

    def __init__(self, stage: str | None, count: Callable[[int], None]):
        super().__init__(quiet=True)
        self.stage, self.count = stage, count

    def bar(self, total: int | None, desc: str, unit: str = "it", initial: int = 0) -> "Bar":
        return _Counting(total, desc, unit, initial, self.count if self.stage in (None, desc) else None)


class _Counting(_Silent):
    def __init__(self, total, desc, unit, initial, count):
        super().__init__(total, desc, unit, initial)
        self.count = count

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.count is not None:
            self.count(n)


@contextmanager
def reporting(reporter: Reporter | None) -> Iterator[Reporter | None]:
    """Install `reporter` for the code inside the block (None: silence)."""
    token = _current.set(reporter)
    try:
        yield reporter
    finally:
        _current.reset(token)


def current() -> Reporter | None:
    return _current.get()


def bar(total: int | None, desc: str, unit: str = "it", initial: int = 0, enabled: bool = True) -> Bar:
    """A progress bar under the current reporter; silent without one (or with enabled=False)."""
    reporter = _current.get()
    if reporter is None or not enabled:
        return _Silent(total, desc, unit, initial)
    return reporter.bar(total, desc, unit, initial)


def track(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
    """Iterate with a bar under the current reporter."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with bar(total, desc, unit) as b:
        for item in iterable:
            yield item
            b.update(1)
