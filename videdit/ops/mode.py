"""The ops mode: which op implementations run (`--ops`, $VIDEDIT_OPS), as a context variable.

    with use_ops("torch"):          # "auto" (default) | "cuda" | "cpp" | "torch"
        img = G.synthesis(ws)

A leaf module (imports nothing from videdit), so the op dispatcher (backend) and the kernels
(native) can both read the mode without importing each other.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Optional

MODES = ("auto", "cuda", "cpp", "torch")
ENV_VAR = "VIDEDIT_OPS"

_mode: ContextVar[Optional[str]] = ContextVar("videdit_ops_mode", default=None)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"ops mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def current_mode() -> str:
    """The mode in effect: the innermost use_ops(), else $VIDEDIT_OPS, else 'auto'."""
    mode = _mode.get()
    if mode is None:
        mode = os.environ.get(ENV_VAR) or "auto"
        if mode not in MODES:  # a bad environment value must not break every op
            mode = "auto"
    return mode


@contextmanager
def use_ops(mode: str):
    """Select the op implementations for the code inside the block (per thread / asyncio task; nests)."""
    token = _mode.set(check_mode(mode))
    try:
        yield
    finally:
        _mode.reset(token)
