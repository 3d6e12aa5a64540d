"""Read NVIDIA StyleGAN snapshot pickles without importing or running any code from them.

An NVIDIA snapshot (`network-snapshot-*.pkl`, `stylegan3-*.pkl`) is a plain pickle of
`{'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}`. Each network is a "persistent object"
of `torch_utils.persistence`: it pickles as a call of `_reconstruct_persistent_obj(meta)` where
`meta = {'type': 'class', 'version', 'module_src', 'class_name', 'state'}` and `state` is the module's
`__dict__` (`_parameters`, `_buffers`, `_modules`, `_init_args`, `_init_kwargs`, ...). Loading it
the usual way executes `module_src`. Tensors inside are pickled the way torch pickles them outside
`torch.save`: `_rebuild_tensor_v2` / `_rebuild_parameter` around a storage that is itself a small
legacy `torch.save` blob (`torch.storage._load_from_bytes`).

`SafeUnpickler` resolves only an allow-list of globals. The persistence hook becomes
`PersistentRecord` (the source text is dropped unread), torch.nn classes become `PlainModuleRecord`,
nested storage blobs are read with `torch.load(weights_only=True)`, and every other global is refused
with a `CheckpointError` that names it.
"""
from __future__ import annotations

import collections
import contextlib
import io
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from videdit.errors import CheckpointError, MissingWeightsError

__all__ = [
    "PersistentRecord",
    "PlainModuleRecord",
    "SafeUnpickler",
    "load_pickle",
    "load_nvidia_pickle",
    "record_state_dict",
    "record_init_kwargs",
    "torch_load_plain",
    "unsafe_torch_file_message",
]


@dataclass
class PersistentRecord:
    """What `torch_utils.persistence` pickled for one network object (its code is not kept)."""

    class_name: str
    version: int | None
    state: dict[str, Any] = field(repr=False)


class PlainModuleRecord:
    """A plain torch.nn module (e.g. ModuleList) met inside a pickle: its class name and `__dict__`.

    The unpickler hands out one subclass per torch.nn class name; NEWOBJ creates it without
    arguments and BUILD passes the module's `__dict__` to `__setstate__`.
    """

    class_path = "torch.nn.Module"

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.state = state or {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}

    def __repr__(self) -> str:
        return f"PlainModuleRecord({self.class_path})"


def _reconstruct_persistent(meta: Any) -> PersistentRecord:
    # Stand-in for torch_utils.persistence._reconstruct_persistent_obj: keep the state, ignore the source.
    if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict):
        raise CheckpointError("persistent object in the pickle has no state dict")
    if meta.get("type", "class") != "class":
        raise CheckpointError(f"unsupported persistent object type {meta.get('type')!r} in the pickle")
    return PersistentRecord(str(meta.get("class_name", "?")), meta.get("version"), meta["state"])


# torch's weights-only refusal names the offending global as "GLOBAL module.name" in its (long) text.
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _refused_globals(err: BaseException) -> str:
    found = sorted(set(_REFUSED_GLOBAL.findall(str(err))))
    return ", ".join(found) or "objects that are not plain data"


def _storage_loader(source: str) -> Any:
    def _storage_from_bytes(blob: bytes) -> Any:
        # Stand-in for torch.storage._load_from_bytes, which calls torch.load(weights_only=False).
        if not isinstance(blob, (bytes, bytearray)):
            raise CheckpointError(f"{source}: tensor storage in the pickle is not a byte string")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
            warnings.filterwarnings("ignore", message=".*Detected pickle protocol.*")
            try:
                return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as err:
                raise CheckpointError(
                    f"{source}: refused an unsafe tensor storage inside the pickle (it pickles {_refused_globals(err)})"
                ) from None
    return _storage_from_bytes


def unsafe_torch_file_message(path: str | Path, err: BaseException, allowed: tuple[str, ...] = ()) -> str:
    """One line for a torch file that `weights_only` loading refused: the file and the globals it pickles.

    torch's own message advises turning the check off; that advice is never passed on.
    """
    try:
        found = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) if g not in allowed]
        unsafe = ", ".join(found) or _refused_globals(err)
    except Exception:  # noqa: BLE001 - legacy (non-zip) files: read the name off torch's message instead
        unsafe = _refused_globals(err)
    return f"{path}: refused to load: the file pickles {unsafe}, which a weights file never needs (it may be unsafe)"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    # Never relay torch's advice to disable the weights-only check.
    return type(err).__name__ if "weights_only" in line else line


def torch_load_plain(path: str | Path, *, allowed: tuple[tuple[Any, str], ...] = (), mmap: bool = False) -> Any:
    """`torch.load(weights_only=True)` on the CPU with one-line CheckpointErrors naming the file.

    `allowed`: (class, "module.Name") pairs accepted beyond tensors and containers. `mmap`: map a zip
    file instead of reading it (legacy files are read). Unsafe content is refused by name.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(allowed)) if allowed else contextlib.nullcontext():
            try:
                return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError as err:
                if not mmap or "mmap" not in str(err):
                    raise
                return torch.load(str(path), map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as err:
        raise CheckpointError(unsafe_torch_file_message(path, err, tuple(name for _, name in allowed))) from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError) as err:
        raise CheckpointError(f"{path}: unreadable torch file (truncated or corrupt: {_first_line(err)})") from None


def _no_hooks(hooks: Any) -> None:
    # Tensors in a snapshot carry no backward hooks; a non-empty hook dict could smuggle in callables.
    if hooks:
        raise CheckpointError("refused a tensor with backward hooks inside the pickle")


def _rebuild_tensor(*args: Any) -> torch.Tensor:
    # (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    if len(args) > 5:
        _no_hooks(args[5])
    return torch._utils._rebuild_tensor_v2(*args)


def _rebuild_legacy_tensor(storage: Any, storage_offset: int, size: Any, stride: Any) -> torch.Tensor:
    return torch._utils._rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool, backward_hooks: Any) -> torch.nn.Parameter:
    _no_hooks(backward_hooks)
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


def _torch_dtype(name: str) -> "torch.dtype | None":
    value = getattr(torch, name, None)
    return value if isinstance(value, torch.dtype) else None


# torch.nn classes that may appear as plain (non-persistent) submodules. They are never instantiated.
_TORCH_NN_CLASSES = {
    "torch.nn.modules.module": {"Module"},
    "torch.nn.modules.container": {"Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict"},
    "torch.nn.modules.linear": {"Identity", "Linear"},
    "torch.nn.modules.conv": {"Conv2d"},
    "torch.nn.modules.activation": {"ReLU", "LeakyReLU", "Tanh", "Sigmoid"},
}


def _numpy_multiarray_function(name: str) -> Any:
    # numpy 2 moved numpy.core to numpy._core; pickles written with numpy 1 name the old module.
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    return getattr(multiarray, name)


def _allowed_globals(source: str) -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("torch._utils", "_rebuild_tensor"): _rebuild_legacy_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _storage_loader(source),
        ("torch", "device"): torch.device,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent,
        ("dnnlib.util", "EasyDict"): dict,
        ("dnnlib", "EasyDict"): dict,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "scalar")] = _numpy_multiarray_function("scalar")
        allowed[(module, "_reconstruct")] = _numpy_multiarray_function("_reconstruct")
    return allowed


# Objects that BUILD (the opcode that sets an object's state after creation) may touch: records, dicts and
# numpy values. Anything else -- above all the allow-listed functions and classes themselves -- could
# otherwise be modified in place (e.g. a function's __defaults__) for the rest of the process.
_BUILD_TARGETS = (PlainModuleRecord, dict, np.ndarray, np.dtype, np.generic)


class SafeUnpickler(pickle._Unpickler):
    """An Unpickler that resolves only the globals an NVIDIA snapshot needs; see the module docstring.

    It derives from the pure-Python `pickle._Unpickler` (not the C one) because that one lets us
    restrict BUILD as well as the globals.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO, *, source: str = "the pickle") -> None:
        super().__init__(file)
        self._source = source
        self._allowed = _allowed_globals(source)
        self._stand_ins: dict[str, type] = {}

    def load_build(self) -> None:
        target = self.stack[-2] if len(self.stack) >= 2 else None
        if not isinstance(target, _BUILD_TARGETS):
            raise CheckpointError(
                f"{self._source}: refused to set the state of a {type(target).__name__} (the file may be unsafe)"
            )
        pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in self._allowed:
            return self._allowed[key]
        if module == "torch":
            dtype = _torch_dtype(name)
            if dtype is not None:
                return dtype
        if name in _TORCH_NN_CLASSES.get(module, ()):
            return self._stand_in(f"{module}.{name}")
        raise CheckpointError(
            f"{self._source}: refused to load global '{module}.{name}' "
            "(not needed by a StyleGAN snapshot; the file may be unsafe)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"{self._source}: unexpected persistent id in the pickle (not an NVIDIA snapshot)")

    def _stand_in(self, class_path: str) -> type:
        if class_path not in self._stand_ins:
            short = class_path.rsplit(".", 1)[-1]
            self._stand_ins[class_path] = type(short, (PlainModuleRecord,), {"class_path": class_path})
        return self._stand_ins[class_path]


def load_pickle(file: str | Path | BinaryIO, *, unpickler: type[SafeUnpickler] | None = None) -> Any:
    """Unpickle `file` with `SafeUnpickler` (or a stricter subclass). Truncated or corrupt data raises CheckpointError."""
    if isinstance(file, (str, Path)):
        path = Path(file)
        if not path.is_file():
            raise MissingWeightsError(f"checkpoint not found: {path}")
        with open(path, "rb") as handle:
            return load_pickle_stream(handle, source=str(path), unpickler=unpickler)
    return load_pickle_stream(file, source="the pickle", unpickler=unpickler)


# What the pickle machinery raises on truncated or garbled data (or an allowed call given bad arguments).
_CORRUPT_PICKLE_ERRORS = (
    EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError, RuntimeError,
)


def load_pickle_stream(handle: BinaryIO, *, source: str, unpickler: type[SafeUnpickler] | None = None) -> Any:
    try:
        return (unpickler or SafeUnpickler)(handle, source=source).load()
    except CheckpointError:
        raise
    except _CORRUPT_PICKLE_ERRORS as err:
        detail = _first_line(err)
        raise CheckpointError(f"{source}: not a readable pickle (truncated or corrupt: {detail})") from None


def load_nvidia_pickle(path: str | Path) -> dict[str, Any]:
    """Load an NVIDIA snapshot pickle into a dict of `PersistentRecord`s and plain values."""
    data = load_pickle(path)
    if not isinstance(data, dict):
        found = type(data).__name__
        raise CheckpointError(f"{path}: expected a dict of networks ('G', 'D', 'G_ema', ...), found {found}")
    return data


def _state_dict_of(
    module: Any, prefix: str, out: dict[str, torch.Tensor], where: str, ancestors: tuple[int, ...]
) -> None:
    name_here = prefix.rstrip(".") or "<root>"
    if not isinstance(module, (PersistentRecord, PlainModuleRecord)):
        raise CheckpointError(f"{where}: submodule '{name_here}' is a {type(module).__name__}, not a network record")
    if id(module) in ancestors:  # a pickle can build reference cycles that no real module tree has
        raise CheckpointError(f"{where}: submodule '{name_here}' contains itself")
    state = module.state
    non_persistent = set(state.get("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for name, tensor in (state.get(group) or {}).items():
            if tensor is None or (group == "_buffers" and name in non_persistent):
                continue
            if not isinstance(tensor, torch.Tensor):
                raise CheckpointError(f"{where}: '{prefix}{name}' is a {type(tensor).__name__}, not a tensor")
            out[prefix + name] = tensor.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _state_dict_of(child, f"{prefix}{name}.", out, where, ancestors + (id(module),))


def record_state_dict(record: PersistentRecord, *, where: str = "the pickle") -> dict[str, torch.Tensor]:
    """The `state_dict()` the pickled network would return: parameters and persistent buffers, dotted names."""
    out: dict[str, torch.Tensor] = {}
    _state_dict_of(record, "", out, where, ())
    return out


def to_plain_python(value: Any) -> Any:
    """Numpy scalars/arrays and tuples inside constructor kwargs, as JSON-friendly Python values."""
    if isinstance(value, dict):
        return {str(k): to_plain_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain_python(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def record_init_kwargs(record: PersistentRecord, positional_names: list[str] | None = None) -> dict[str, Any]:
    """The constructor kwargs a persistent object recorded (`_init_kwargs`, plus `_init_args` by name)."""
    state = record.state
    kwargs = dict(state.get("_init_kwargs") or {})
    args = list(state.get("_init_args") or ())
    if args:
        names = positional_names or []
        if len(args) > len(names):
            raise CheckpointError(
                f"{record.class_name} was built with {len(args)} positional arguments; cannot map them to names"
            )
        for name, arg in zip(names, args):
            kwargs.setdefault(name, arg)
    return to_plain_python(kwargs)
