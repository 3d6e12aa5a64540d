"""What every benchmark shares: peak memory, timing, child processes, thread setup, ratios, tables.

Peak memory on Linux is the process's resident high-water mark (VmHWM in /proc/self/status), which
`reset_peak_rss` restarts so set-up work is not counted; `RSSPoller` samples the resident size from a
thread instead, for kernels where the reset is not allowed. ru_maxrss is only the fallback: across
exec it carries the parent's peak.
"""
from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from videdit import memory  # noqa: E402  (the one reader of RSS and its peak)

REPO_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------
# Memory


def current_rss_mb() -> float:
    """This process's resident size now (MiB); nan where /proc is absent."""
    rss = memory.current_rss()
    return rss / 2**20 if rss else float("nan")


reset_peak_rss = memory.reset_peak_rss  # the library's: restart the peak-RSS high-water mark


def peak_rss_mb() -> float:
    """This process's peak resident size (MiB) since start or the last `reset_peak_rss`."""
    peak = memory.peak_rss()
    if peak:
        return peak / 2**20
    scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class RSSPoller:
    """Peak resident size above the level at the start of the block, sampled from a thread.

    `increase_mb` is nan where /proc is absent. A spike shorter than the interval (default 5 ms) can
    be missed; `reset_peak_rss` + `peak_rss_mb` is exact where the kernel allows the reset.
    """

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.start_mb = self.peak_mb = float("nan")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, current_rss_mb())

    def __enter__(self) -> "RSSPoller":
        self.start_mb = self.peak_mb = current_rss_mb()
        if not math.isnan(self.start_mb):
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.peak_mb = max(self.peak_mb, current_rss_mb())

    @property
    def increase_mb(self) -> float:
        return self.peak_mb - self.start_mb


def cuda_peak_mb(device) -> float | None:
    """torch's peak CUDA allocation (MiB) on `device`, None on other devices."""
    import torch

    device = torch.device(device)
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


# --------------------------------------------------------------------------------------------------
# Timing and threads


def set_threads(threads: int) -> None:
    """torch CPU threads for the timed work (every benchmark takes --threads)."""
    import torch

    torch.set_num_threads(threads)


def sync(device) -> None:
    """Wait for queued CUDA work, so a timer read after it covers the work (no-op on the CPU)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], Any], repeats: int, *, warmup: bool = False, device=None,
              clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of the fastest of `repeats` calls (on a shared machine the minimum is the cost).

    warmup: one untimed call first (thread pools, caches, per-shape set-up). device: synchronise
    CUDA after each call. clock: time.process_time counts CPU time, steadier on a busy machine.
    """
    if warmup:
        fn()
        if device is not None:
            sync(device)
    best = math.inf
    for _ in range(repeats):
        start = clock()
        fn()
        if device is not None:
            sync(device)
        best = min(best, clock() - start)
    return best


# --------------------------------------------------------------------------------------------------
# Child processes (each measurement in its own process, so its peak memory is its own)


def run_json_child(benchmark: str, flag: str, spec: dict, timeout: float | None = None) -> dict:
    """Run `python -m benchmarks BENCHMARK FLAG SPEC-JSON`; its last stdout line is the JSON result.

    A failed child gives {"error": its last stderr line}. The repository root goes first on the
    child's PYTHONPATH, so this works from any working directory.
    """
    cmd, env = child_command(benchmark, flag, json.dumps(spec))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_env() -> dict[str, str]:
    """This environment with the repository root first on PYTHONPATH: a child can import `benchmarks`."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))


def child_command(benchmark: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """(argv, env) that run `python -m benchmarks BENCHMARK ARGS...` from any working directory."""
    return [sys.executable, "-m", "benchmarks", benchmark, *args], child_env()


# --------------------------------------------------------------------------------------------------
# Printing


def ratio(value: float, baseline: float) -> float:
    """value / baseline, nan when the baseline is zero or missing."""
    if baseline is None or value is None or baseline == 0 or math.isnan(baseline):
        return float("nan")
    return value / baseline


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table (docs/*.md take the printed text as is); cells are str()-ed."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
