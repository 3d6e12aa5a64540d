"""The cache folders videdit reads and writes: its own (weights, built kernels) and torch.hub's.

Computed from the environment at each call (tests and users change it), without importing torch.
"""
from __future__ import annotations

import os
from pathlib import Path


def user_cache_home() -> Path:
    """$XDG_CACHE_HOME, else ~/.cache: the folder every cache here lives under."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()


def user_cache_dir() -> Path:
    """videdit's own cache folder: <user cache home>/videdit."""
    return user_cache_home() / "videdit"


def torch_hub_checkpoints_dir() -> Path:
    """torch.hub's checkpoint folder (where face-alignment caches its models), by torch.hub.get_dir's rule:
    $TORCH_HOME/hub/checkpoints, TORCH_HOME defaulting to <user cache home>/torch."""
    torch_home = os.environ.get("TORCH_HOME")
    base = Path(torch_home).expanduser() if torch_home else user_cache_home() / "torch"
    return base / "hub" / "checkpoints"
