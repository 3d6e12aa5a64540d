"""Write pickles with the structure of NVIDIA's StyleGAN snapshots, for tests and benchmarks.

Every module whose class is not torch.nn's own is written the way `torch_utils.persistence` writes a
persistent object: a call of the global `torch_utils.persistence._reconstruct_persistent_obj` on
`meta = dict(type='class', version=6, module_src=..., class_name=..., state=__dict__)`, the state
holding `_init_args` and `_init_kwargs` (dicts as `dnnlib.util.EasyDict`, floats as numpy float64, as
NVIDIA's kwargs often are). Tensors and torch.nn modules are pickled by torch's own reducers, so the
storages end up as `torch.storage._load_from_bytes` blobs exactly as in a real snapshot.

The globals are written by name and never imported here. `module_src` is a placeholder (NVIDIA's code
cannot load these files; videdit's safe loader never reads it).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["write_snapshot_pickle", "PLACEHOLDER_SOURCE"]

PLACEHOLDER_SOURCE = "# module source would be here; a safe loader never executes it\n"
PERSISTENCE_VERSION = 6


class _GlobalRef:
    """A `module.name` global to be written into a pickle by name."""

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    def __call__(self, *args: Any) -> Any:  # pickle wants reduce functions to be callable
        raise TypeError(f"{self.module}.{self.name} is only a name written into a pickle")


class _EasyDict(dict):
    """Marks a dict to be written as `dnnlib.util.EasyDict`."""


_RECONSTRUCT = _GlobalRef("torch_utils.persistence", "_reconstruct_persistent_obj")
_EASY_DICT = _GlobalRef("dnnlib.util", "EasyDict")


def _nvidia_style(value: Any) -> Any:
    if isinstance(value, dict):
        return _EasyDict({k: _nvidia_style(v) for k, v in value.items()})
    if isinstance(value, float):
        return np.float64(value)
    return value


class _SnapshotPickler(pickle._Pickler):
    # The pure-Python pickler, because it lets a subclass write globals that are not importable.
    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, module_src: str) -> None:
        super().__init__(file, protocol=4)  # the default protocol of the Pythons NVIDIA trained with
        self.module_src = module_src

    def _save_global_ref(self, ref: _GlobalRef) -> None:
        self.save(ref.module)
        self.save(ref.name)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(ref)

    dispatch[_GlobalRef] = _save_global_ref

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _EasyDict):
            return _EASY_DICT, (), None, None, iter(dict(obj).items())
        if isinstance(obj, torch.nn.Module) and not type(obj).__module__.startswith("torch."):
            state = dict(obj.__dict__)
            state["_init_args"] = ()
            state["_init_kwargs"] = _nvidia_style(dict(getattr(obj, "init_kwargs", None) or {}))
            meta = dict(
                type="class", version=PERSISTENCE_VERSION, module_src=self.module_src,
                class_name=type(obj).__name__, state=state,
            )
            return _RECONSTRUCT, (meta,)
        return NotImplemented


def write_snapshot_pickle(
    path: str | Path,
    networks: dict[str, Any],
    *,
    training_set_kwargs: dict[str, Any] | None = None,
    module_src: str = PLACEHOLDER_SOURCE,
) -> Path:
    """Pickle `{'training_set_kwargs': ..., **networks}` like NVIDIA's training loop does.

    `networks` maps names ('G', 'D', 'G_ema', 'augment_pipe') to modules or any picklable value.
    """
    path = Path(path)
    snapshot: dict[str, Any] = {"training_set_kwargs": dict(training_set_kwargs or {})}
    snapshot.update(networks)
    with open(path, "wb") as handle:
        _SnapshotPickler(handle, module_src).dump(snapshot)
    return path
