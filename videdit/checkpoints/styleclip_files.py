"""Readers of the StyleCLIP files (CLIP weights, s_stats) that run no code from them. Below `videdit.styleclip`
and `videdit.weights` alike (the weights' content checks use them), so they import neither."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from videdit.checkpoints.safe_pickle import SafeUnpickler, load_pickle
from videdit.errors import CheckpointError


def read_clip_state(path: Path) -> Any:
    import zipfile

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            torchscript = any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in archive.namelist())
        if torchscript:  # OpenAI's release is a TorchScript archive: only its tensors are read, none of its code runs
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
                return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    return torch.load(str(path), map_location="cpu", weights_only=True)


def clip_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = read_clip_state(path)
    except Exception as err:  # torch and safetensors raise many types for unreadable or unsafe files
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable CLIP checkpoint ({detail})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a CLIP state dict, found {type(state).__name__}")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


@dataclass(frozen=True)
class SStats:
    """The released `s_stats`: mean pose of the input layer and per-channel S mean and std (float32 arrays)."""

    transform: dict[str, float]
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]


def _core_function(module: str, name: str) -> Callable:
    import importlib

    for prefix in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{prefix}.{module}"), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {module}.{name}")


def _float_only(make: Callable, dtype_position: int) -> Callable:
    """Wrap a numpy constructor so that it builds float values only (no object arrays from a hostile file)."""
    def build(*args):
        dtype = args[dtype_position] if len(args) > dtype_position else None
        if not isinstance(dtype, np.dtype) or dtype.kind != "f":
            raise CheckpointError(f"refused a non-float numpy value ({dtype}) in s_stats")
        return make(*args)
    return build


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    # Protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1'); no other codec is needed.
    if encoding != "latin1" or not isinstance(text, str):
        raise CheckpointError("refused a _codecs.encode call that is not latin1 text in s_stats")
    return text.encode("latin1")


class SStatsUnpickler(SafeUnpickler):
    """Allow-list for `s_stats`: lists, dicts, floats and numpy float arrays/scalars; every other global refused."""

    def __init__(self, file, *, source: str = "s_stats") -> None:
        super().__init__(file, source=source)
        self._allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                         ("_codecs", "encode"): _latin1}
        for prefix in ("numpy._core", "numpy.core"):
            self._allowed[(f"{prefix}.multiarray", "_reconstruct")] = _core_function("multiarray", "_reconstruct")
            self._allowed[(f"{prefix}.multiarray", "scalar")] = _float_only(_core_function("multiarray", "scalar"), 0)
            self._allowed[(f"{prefix}.numeric", "_frombuffer")] = _float_only(_core_function("numeric", "_frombuffer"), 1)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        raise CheckpointError(f"{self._source}: refused to load global '{module}.{name}' (s_stats holds only numbers; the file may be unsafe)")


def _float_vector(value: Any, where: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.ndim != 1:
        raise CheckpointError(f"{where} must be a 1-D float array, found {type(value).__name__} {getattr(value, 'dtype', '')}")
    return value.astype(np.float32)


def read_s_stats(path: str | os.PathLike) -> SStats:
    """Read a released (or our) `s_stats` pickle `[transform, s_mean, s_std]` without running any code from it."""
    path = Path(path)
    data = load_pickle(path, unpickler=SStatsUnpickler)
    if not (isinstance(data, (list, tuple)) and len(data) == 3 and all(isinstance(d, dict) for d in data)):
        raise CheckpointError(f"{path}: expected s_stats as [transform, s_mean, s_std] (three dicts)")
    transform, mean, std = data
    if list(mean) != list(std) or not mean:
        raise CheckpointError(f"{path}: s_mean and s_std have different keys")
    try:
        transform = {str(k): float(v) for k, v in transform.items()}
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: the transform entry must hold numbers") from None
    mean = {str(k): _float_vector(v, f"{path}: s_mean[{k!r}]") for k, v in mean.items()}
    std = {str(k): _float_vector(v, f"{path}: s_std[{k!r}]") for k, v in std.items()}
    if any(mean[k].shape != std[k].shape for k in mean):
        raise CheckpointError(f"{path}: s_mean and s_std differ in channel counts")
    return SStats(transform, mean, std)
