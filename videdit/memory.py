"""Memory that fits by itself: measure what one sample costs, then pick the batch that fits.

Before a batched loop (encode, tune, render), one probe call at batch 1 measures the peak memory it adds
(CPU: the process's resident high-water mark, VmHWM, restarted just before; CUDA: max allocated), and
`fit_batch` picks the largest batch up to the configured one that fits in the free memory with a margin.
When that lowers the batch it is said in one line; an explicit `--batch-size` is used as given.

`$VIDEDIT_MEMORY_BUDGET` (e.g. "6GB", "512MB") caps the memory videdit plans with, below what the
machine reports free (shared machines, containers whose limits /proc does not show).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Callable

from videdit.errors import VideditError

log = logging.getLogger("videdit.memory")

BUDGET_ENV = "VIDEDIT_MEMORY_BUDGET"
MARGIN = 0.15  # of the free memory, kept back for everything the probe does not see (allocator slack, PNG threads)
_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "M": 2**20, "MB": 2**20, "G": 2**30, "GB": 2**30, "T": 2**40, "TB": 2**40}


def parse_size(text: str) -> int:
    """'6GB', '512 MB', '1.5G', '1000000' -> bytes; one line for anything else."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?B?)\s*", str(text).upper())
    if not match:
        raise VideditError(f"${BUDGET_ENV}={text!r}: expected a size such as 6GB or 512MB")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def current_rss() -> int:
    """Resident bytes of this process now (0 where /proc is absent)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def reset_peak_rss() -> bool:
    """Restart the resident high-water mark (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """Peak resident bytes since start or the last reset (0 where /proc is absent)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def free_memory(device: str = "cpu") -> int:
    """Bytes this process may still use: CUDA free memory, or MemAvailable; capped by $VIDEDIT_MEMORY_BUDGET
    (the budget counts this process's current use too)."""
    device = str(device)
    if device.startswith("cuda"):
        import torch

        free = int(torch.cuda.mem_get_info(torch.device(device))[0])
        used = int(torch.cuda.memory_allocated(torch.device(device)))
    else:
        free, used = 0, current_rss()
        try:
            with open("/proc/meminfo") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        free = int(line.split()[1]) * 1024
                        break
        except OSError:
            free = 1 << 62  # unknown: do not limit
    budget = os.environ.get(BUDGET_ENV)
    if budget:
        free = min(free, max(0, parse_size(budget) - used))
    return free


def measure_peak(fn: Callable[[], object], device: str = "cpu") -> int:
    """Peak bytes `fn()` adds above what was in use when it started."""
    device = str(device)
    if device.startswith("cuda"):
        import torch

        dev = torch.device(device)
        torch.cuda.synchronize(dev)
        before = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        fn()
        torch.cuda.synchronize(dev)
        return max(0, int(torch.cuda.max_memory_allocated(dev)) - before)
    before = current_rss()
    if not reset_peak_rss():
        fn()
        return max(0, current_rss() - before)
    fn()
    return max(0, peak_rss() - before)


@dataclass
class BatchChoice:
    batch_size: int
    configured: int
    per_sample: int  # bytes, measured
    free: int  # bytes, when measured
    forced: bool = False

    @property
    def lowered(self) -> bool:
        return self.batch_size < self.configured

    def message(self, what: str) -> str:
        gib = 2**30
        return (f"{what}: batch {self.configured} would need about {self.configured * self.per_sample / gib:.1f} GB "
                f"but {self.free / gib:.1f} GB is free; using batch {self.batch_size} "
                f"(set the batch size to force one)")


def fit_batch(configured: int, probe: Callable[[], object], *, device: str = "cpu", what: str = "batch",
              forced: bool = False, margin: float = MARGIN) -> BatchChoice:
    """The largest batch <= configured whose measured per-sample cost fits the free memory with a margin.

    probe: one call at batch 1 (its peak above the current use is taken as the cost of one sample: an
    overestimate of the marginal cost, which is the safe side). forced: the user set the batch; it is
    kept as given and nothing is probed.
    """
    configured = max(1, int(configured))
    if forced or configured == 1:
        return BatchChoice(configured, configured, 0, 0, forced=forced)
    per_sample = max(1, measure_peak(probe, device))
    free = free_memory(device)
    fits = int(free * (1 - margin) // per_sample)
    choice = BatchChoice(max(1, min(configured, fits)), configured, per_sample, free)
    if choice.lowered:
        log.warning(choice.message(what))
    return choice
