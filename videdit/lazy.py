"""Loading on first use: packages whose public names load their module (PEP 562), modules imported at their
first attribute access, so importing videdit and reading settings stay cheap."""
from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any, Callable, Mapping


def lazy_attributes(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """The module-level `__getattr__` of `package`: name -> getattr(import_module(homes[name]), name)."""

    def __getattr__(name: str) -> Any:
        if name in homes:
            return getattr(importlib.import_module(homes[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def lazy_module(name: str) -> ModuleType:
    """A stand-in for `import name` that imports the module on first attribute access: modules that a run
    may only read settings from (the stages' settings classes) then load no torch (start-up)."""

    class _LazyModule(ModuleType):
        def __getattr__(self, attr: str) -> Any:
            module = importlib.import_module(name)
            self.__dict__.update(module.__dict__)  # later lookups skip this hook
            return getattr(module, attr)

    return _LazyModule(name)


def no_grad(fn: Callable) -> Callable:
    """`@torch.no_grad()` for a module that imports torch lazily: torch is loaded at the first call."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper
