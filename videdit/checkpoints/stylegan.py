"""Load and save StyleGAN3 generators and discriminators (and, through `save_network` /
`load_network`, any videdit network).

Our format is one `.safetensors` file: the official state dict plus string metadata
`{"format": "videdit.stylegan3", "kind": "generator", "class": "videdit.networks.stylegan3.Generator",
"init_kwargs": "<JSON of the constructor kwargs>"}`. The loaders also read, by content rather than
by file extension:

* a plain state dict saved with `torch.save` (e.g. stylegan3-editing's `sg3-r-ffhq-1024.pt`), read
  with `torch.load(weights_only=True)`; generator kwargs are read off the state dict's layer names and
  shapes (they agree with StyleGAN3-R 1024 for the published file), or given by the caller;
* NVIDIA snapshot pickles, read by `safe_pickle` without running any code from the file.

Before anything is built, the constructor kwargs are checked against bounds and the shapes they
would create (computed without allocating, see `plans.py`) against the file's tensors, so a crafted
file cannot decide how much memory is allocated. Loaded networks are returned in eval mode with
`requires_grad` off; turn it on for what you tune.
"""
from __future__ import annotations

import importlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from videdit.checkpoints.safe_pickle import (
    PersistentRecord,
    load_nvidia_pickle,
    record_init_kwargs,
    record_state_dict,
    to_plain_python,
    torch_load_plain,
)
from videdit.checkpoints.plans import (
    DISCRIMINATOR_CLASS,
    GENERATOR_CLASS,
    planned_shapes,
    validate_init_kwargs,
)
from videdit.errors import CheckpointError, MissingWeightsError

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "R1024_KWARGS",
    "NetworkCheckpoint",
    "read_checkpoint",
    "build_network",
    "save_network",
    "load_network",
    "save_generator",
    "load_generator",
    "save_discriminator",
    "load_discriminator",
    "convert_checkpoint",
    "infer_generator_kwargs",
]

FORMAT = "videdit.stylegan3"

_DEFAULT_CLASS = {"generator": GENERATOR_CLASS, "discriminator": DISCRIMINATOR_CLASS}
_PICKLE_KEY = {"generator": "G_ema", "discriminator": "D"}
# Positional constructor arguments of the official classes, for pickles whose _init_args is not empty.
_POSITIONAL = {
    "generator": ["z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"],
    "discriminator": ["c_dim", "img_resolution", "img_channels"],
}

# The aligned FFHQ StyleGAN3-R 1024 generator as NVIDIA trained it (and stylegan3-editing republished it).
R1024_KWARGS: dict[str, Any] = {
    "z_dim": 512,
    "c_dim": 0,
    "w_dim": 512,
    "img_resolution": 1024,
    "img_channels": 3,
    "channel_base": 65536,
    "channel_max": 1024,
    "conv_kernel": 1,
    "use_radial_filters": True,
    "magnitude_ema_beta": 0.5 ** (32 / 20000),
    "mapping_kwargs": {"num_layers": 2},
}

_TRANSFORM_KEY = "synthesis.input.transform"
_SAFETENSORS = "safetensors"
_TORCH = "torch"
_PICKLE = "nvidia-pickle"
# torch.save's legacy (non-zip) format pickles this magic number first: PROTO 2, LONG1 of 10 bytes.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


@dataclass
class NetworkCheckpoint:
    """A network's weights as read from a file, before a module is built from them."""

    path: Path
    source: str  # "safetensors", "torch" or "nvidia-pickle"
    kind: str  # "generator", "discriminator", "encoder", ...
    class_path: str  # e.g. "videdit.networks.stylegan3.Generator"
    init_kwargs: dict[str, Any] | None  # None: the file does not say (plain state dicts)
    state_dict: dict[str, torch.Tensor] = field(repr=False)


# ----------------------------------------------------------------------------------------------
# Reading


def _sniff_format(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(16)
    size = path.stat().st_size
    if len(head) >= 9 and head[8:9] == b"{":
        return _SAFETENSORS
    if head.startswith(b"PK\x03\x04"):
        return _TORCH  # torch.save zip archive
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return _TORCH
    if head[:1] == b"\x80":
        return _PICKLE
    if size == 0:
        raise CheckpointError(f"{path}: file is empty")
    raise CheckpointError(
        f"{path}: not a checkpoint videdit can read (expected .safetensors, a torch .pt or an NVIDIA .pkl)"
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        detail = _first_line(err)
        raise CheckpointError(f"{path}: unreadable safetensors file (truncated or corrupt: {detail})") from None
    return metadata, tensors


def _is_state_dict(obj: Any) -> bool:
    if not isinstance(obj, dict) or not obj:
        return False
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _read_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    obj = torch_load_plain(path)
    if _is_state_dict(obj):
        return dict(obj)
    # A few repositories wrap the state dict in a dict.
    for key in ("state_dict", "G_ema", "g_ema", "generator"):
        if isinstance(obj, dict) and _is_state_dict(obj.get(key)):
            return dict(obj[key])
    raise CheckpointError(f"{path}: expected a state dict (names -> tensors), found {type(obj).__name__}")


def read_checkpoint(
    path: str | os.PathLike, *, kind: str | None = "generator", pickle_key: str | None = None
) -> NetworkCheckpoint:
    """Read the weights of one network from `path` (safetensors, torch .pt or NVIDIA .pkl).

    `kind` is what the caller wants ("generator", "discriminator", ...); a safetensors file of another
    kind is refused. For pickles, `pickle_key` picks the network ('G_ema' for generators, 'D' for
    discriminators by default; 'G' is the non-averaged generator).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"checkpoint not found: {path}")
    source = _sniff_format(path)

    if source == _SAFETENSORS:
        metadata, tensors = _read_safetensors(path)
        if not str(metadata.get("format", "")).startswith("videdit."):
            found = metadata.get("format")
            raise CheckpointError(f"{path}: safetensors file without videdit metadata (format={found!r})")
        file_kind = metadata.get("kind", "")
        if kind is not None and file_kind != kind:
            raise CheckpointError(f"{path}: holds a {file_kind or 'network of unknown kind'}, not a {kind}")
        try:
            init_kwargs = json.loads(metadata["init_kwargs"])
        except (KeyError, json.JSONDecodeError):
            raise CheckpointError(f"{path}: metadata 'init_kwargs' is missing or not JSON") from None
        class_path = metadata.get("class") or _DEFAULT_CLASS.get(file_kind, "")
        return NetworkCheckpoint(path, source, file_kind, class_path, init_kwargs, tensors)

    if kind is None:
        kind = "generator"
    if kind not in _DEFAULT_CLASS:
        raise CheckpointError(f"{path}: only videdit .safetensors files can hold a {kind}")

    if source == _TORCH:
        return NetworkCheckpoint(path, source, kind, _DEFAULT_CLASS[kind], None, _read_torch_state_dict(path))

    return network_from_snapshot(path, load_nvidia_pickle(path), kind, pickle_key)


def network_from_snapshot(
    path: Path, snapshot: dict[str, Any], kind: str, pickle_key: str | None = None
) -> NetworkCheckpoint:
    """One network ('G_ema', 'D', ...) of an NVIDIA snapshot loaded by `load_nvidia_pickle`."""
    key = pickle_key or _PICKLE_KEY[kind]
    record = snapshot.get(key)
    if record is None:
        present = ", ".join(sorted(str(k) for k, v in snapshot.items() if isinstance(v, PersistentRecord))) or "none"
        raise CheckpointError(f"{path}: the pickle has no '{key}' network (networks present: {present})")
    if not isinstance(record, PersistentRecord):
        raise CheckpointError(f"{path}: '{key}' in the pickle is a {type(record).__name__}, not a network")
    state = record_state_dict(record, where=f"{path} ['{key}']")
    init_kwargs = record_init_kwargs(record, _POSITIONAL[kind])
    return NetworkCheckpoint(path, _PICKLE, kind, _DEFAULT_CLASS[kind], init_kwargs, state)


# ----------------------------------------------------------------------------------------------
# Generator kwargs from a bare state dict

_LAYER_NAME = re.compile(r"^synthesis\.L(\d+)_(\d+)_(\d+)\.")


def infer_generator_kwargs(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Constructor kwargs of the StyleGAN3 generator a state dict came from, read off names and shapes.

    The layer names L<i>_<size>_<channels> give the resolution, channel counts and layer count; the
    first layer's weight gives the kernel size and its down filter whether filters are radial. What a
    state dict cannot tell (the EMA decay, filter design constants) keeps NVIDIA's training values.
    """
    try:
        return _infer_generator_kwargs(state_dict)
    except (IndexError, KeyError) as err:
        detail = _first_line(err)
        raise CheckpointError(f"cannot read the generator configuration off the state dict ({detail}); pass init_kwargs") from None


def _infer_generator_kwargs(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    layers: dict[int, tuple[str, int, int]] = {}
    for key in state_dict:
        match = _LAYER_NAME.match(key)
        if match:
            index, size, channels = (int(g) for g in match.groups())
            layers[index] = (key.split(".")[1], size, channels)
    needed = ["synthesis.input.affine.weight", "mapping.fc0.weight"]
    if not layers or any(k not in state_dict for k in needed):
        raise CheckpointError("not a StyleGAN3 generator state dict (no synthesis layers / mapping network found)")

    last = max(layers)  # the ToRGB layer
    _, img_resolution, img_channels = layers[last]
    _, _, critical_channels = layers[last - 1]  # cutoff = resolution / 2, so channels = channel_base / resolution
    first_name = layers[min(layers)][0]
    conv_kernel = int(state_dict[f"synthesis.{first_name}.weight"].shape[-1])
    down_filter = state_dict.get(f"synthesis.{first_name}.down_filter")
    use_radial = down_filter is not None and down_filter.ndim == 2

    mapping_layers = sum(1 for k in state_dict if re.fullmatch(r"mapping\.fc\d+\.weight", k))
    w_dim = int(state_dict["synthesis.input.affine.weight"].shape[1])
    embed = state_dict.get("mapping.embed.weight")
    c_dim = int(embed.shape[1]) if embed is not None else 0
    embed_features = int(embed.shape[0]) if embed is not None else 0
    z_dim = int(state_dict["mapping.fc0.weight"].shape[1]) - embed_features

    kwargs: dict[str, Any] = {
        "z_dim": z_dim,
        "c_dim": c_dim,
        "w_dim": w_dim,
        "img_resolution": img_resolution,
        "img_channels": img_channels,
        "mapping_kwargs": {"num_layers": mapping_layers},
        "channel_base": critical_channels * img_resolution,
        "channel_max": max(channels for _, _, channels in layers.values()),
        "magnitude_ema_beta": R1024_KWARGS["magnitude_ema_beta"],
    }
    if conv_kernel != 3:
        kwargs["conv_kernel"] = conv_kernel
    if use_radial:
        kwargs["use_radial_filters"] = True
    if last != 14:
        kwargs["num_layers"] = last
    return kwargs


# ----------------------------------------------------------------------------------------------
# Building a module


def _resolve_class(class_path: str, where: Path) -> type:
    # Only our own network classes: a file must never make us import arbitrary modules.
    module_name, _, class_name = class_path.rpartition(".")
    if not module_name.startswith("videdit.networks.") or not class_name.isidentifier():
        raise CheckpointError(f"{where}: refusing network class {class_path!r} (not a videdit network)")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise CheckpointError(f"{where}: unknown network class {class_path!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise CheckpointError(f"{where}: {class_path!r} is not a network class")
    return cls


def _tolerate_transform(state: dict[str, torch.Tensor], where: Path) -> None:
    # Tuned generators save whatever per-batch value the input transform buffer held last.
    value = state.get(_TRANSFORM_KEY)
    if value is not None and value.ndim == 3 and tuple(value.shape[1:]) == (3, 3):
        log.debug("%s: %s holds a %s batch value; reset to identity", where, _TRANSFORM_KEY, list(value.shape))
        state[_TRANSFORM_KEY] = torch.eye(3, dtype=value.dtype)


def _list_keys(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value)


def check_state_dict(
    expected: dict[str, Any], given: dict[str, torch.Tensor], where: str, hint: str = ""
) -> None:
    """Raise a one-line CheckpointError naming the first missing, misshaped or unexpected keys.

    `expected` maps names to tensors or to shapes (a plan from `plans.planned_shapes`).
    """
    missing = [k for k in expected if k not in given]
    misshaped = [k for k in expected if k in given and _shape(given[k]) != _shape(expected[k])]
    unexpected = [k for k in given if k not in expected]
    suffix = f" ({hint})" if hint else ""
    if missing:
        raise CheckpointError(f"{where}: missing key(s) {_list_keys(missing)}{suffix}")
    if misshaped:
        k = misshaped[0]
        more = f" (and {len(misshaped) - 1} more misshaped)" if len(misshaped) > 1 else ""
        raise CheckpointError(
            f"{where}: key '{k}' has shape {list(_shape(given[k]))}, expected {list(_shape(expected[k]))}{more}{suffix}"
        )
    if unexpected:
        raise CheckpointError(f"{where}: unexpected key(s) {_list_keys(unexpected)}{suffix}")


def checked_kwargs(
    checkpoint: NetworkCheckpoint, init_kwargs: dict[str, Any] | None = None
) -> tuple[type, dict[str, Any], dict[str, torch.Tensor]]:
    """The class, constructor kwargs and state dict of a checkpoint, checked before anything is built.

    The kwargs (given, recorded, or read off a generator's state dict) are checked against the class's
    bounds, and the shapes they would create (computed without allocating) against the file's tensors,
    so a file can never make videdit allocate more than the file itself holds.
    """
    where = checkpoint.path
    cls = _resolve_class(checkpoint.class_path, where)
    kwargs = init_kwargs if init_kwargs is not None else checkpoint.init_kwargs
    hint = ""
    if kwargs is None:
        if checkpoint.kind != "generator":
            raise CheckpointError(f"{where}: the file does not record constructor arguments; pass init_kwargs")
        try:
            kwargs = infer_generator_kwargs(checkpoint.state_dict)
        except CheckpointError as err:
            raise CheckpointError(f"{where}: {err}") from None
        hint = "the generator configuration was guessed from the state dict; pass init_kwargs if it differs"
    validate_init_kwargs(checkpoint.class_path, kwargs, where)
    state = dict(checkpoint.state_dict)
    if checkpoint.kind == "generator":
        _tolerate_transform(state, where)
    plan = planned_shapes(checkpoint.class_path, kwargs, where)
    check_state_dict(plan, state, str(where), hint)
    _check_plan_fits_file(plan, where)
    return cls, kwargs, state


def _check_plan_fits_file(plan: dict[str, tuple[int, ...]], path: Path) -> None:
    # A pickled tensor may view a tiny storage with zero strides, so matching shapes alone do not bound
    # what building allocates; the file's size does. Twice the size allows float16 files.
    planned = 4 * sum(math.prod(shape) for shape in plan.values())
    try:
        size = Path(path).stat().st_size
    except OSError:
        return
    if planned > 2 * size + (1 << 20):
        raise CheckpointError(
            f"{path}: its tensors' shapes make {planned / 2**20:.0f} MiB of weights but the file holds "
            f"{size / 2**20:.1f} MiB (tensors repeating one storage?); refusing to build it"
        )


def build_network(
    checkpoint: NetworkCheckpoint, device: str | torch.device = "cpu", init_kwargs: dict[str, Any] | None = None
) -> torch.nn.Module:
    """Construct the checkpoint's network class and load its state strictly.

    `init_kwargs` overrides the file's kwargs; plain generator state dicts without either get kwargs
    inferred from the state dict (see `infer_generator_kwargs`). Nothing is built before
    `checked_kwargs` has matched the kwargs' shape plan with the file.
    """
    cls, kwargs, state = checked_kwargs(checkpoint, init_kwargs)
    # Built on the CPU with its random initialisation, then overwritten. Building on the meta device
    # instead (load_state_dict(assign=True)) makes repeated loads 4x faster, but its first use in a
    # process imports torch._dynamo, which costs more than it saves for the usual one or two loads.
    try:
        with torch.device("cpu"):
            net = cls(**kwargs)
    except (TypeError, ValueError, AssertionError, KeyError) as err:
        detail = _first_line(err)
        where = checkpoint.path
        raise CheckpointError(f"{where}: cannot build {cls.__name__} from the recorded arguments ({detail})") from None
    check_state_dict(net.state_dict(), state, str(checkpoint.path))  # the plan and the class must agree
    net.load_state_dict(state, strict=True)
    return net.to(device).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# Public load / save


def load_network(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    *,
    kind: str | None = None,
    pickle_key: str | None = None,
    init_kwargs: dict[str, Any] | None = None,
) -> torch.nn.Module:
    """Load any videdit network saved by `save_network` (the file names its class), or a generator /
    discriminator from a torch .pt or NVIDIA .pkl (then `kind` says which; default generator)."""
    checkpoint = read_checkpoint(path, kind=kind, pickle_key=pickle_key)
    return build_network(checkpoint, device, init_kwargs)


def load_generator(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    *,
    init_kwargs: dict[str, Any] | None = None,
    network: str = "G_ema",
) -> torch.nn.Module:
    """Load a StyleGAN3 generator from our .safetensors, a plain-state-dict .pt or an NVIDIA .pkl.

    `network` picks 'G_ema' (default) or 'G' from a pickle. `init_kwargs` are needed only for a .pt
    whose configuration cannot be read off its state dict.
    """
    return load_network(path, device, kind="generator", pickle_key=network, init_kwargs=init_kwargs)


def generator_kwargs(path: str | os.PathLike) -> dict[str, Any]:
    """A generator file's constructor kwargs, checked against its tensors, without building the network (the
    checks before any work read the layer table and widths from them: plans.generator_style_widths)."""
    return checked_kwargs(read_checkpoint(path, kind="generator"))[1]


def load_discriminator(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load the StyleGAN2 discriminator from our .safetensors or from an NVIDIA .pkl's 'D'."""
    return load_network(path, device, kind="discriminator")


def _kind_of(net: torch.nn.Module) -> str:
    class_path = f"{type(net).__module__}.{type(net).__qualname__}"
    for kind, known in _DEFAULT_CLASS.items():
        if class_path == known:
            return kind
    raise ValueError(f"cannot tell the kind of {class_path}; pass kind=")


def save_network(
    net: torch.nn.Module, path: str | os.PathLike, *, kind: str | None = None, format: str | None = None
) -> Path:
    """Write `net`'s state dict and constructor kwargs (`net.init_kwargs`) to a .safetensors file.

    The metadata names the class, so `load_network` rebuilds the right network. The file is written
    next to its destination and renamed into place, so a crash never leaves a half-written file.
    """
    path = Path(path)
    class_path = f"{type(net).__module__}.{type(net).__qualname__}"
    if not class_path.startswith("videdit.networks."):
        raise ValueError(f"save_network saves videdit networks only, not {class_path}")
    init_kwargs = getattr(net, "init_kwargs", None)
    if not isinstance(init_kwargs, dict):
        raise ValueError(f"{class_path} has no init_kwargs dict; cannot record how to rebuild it")
    kind = kind or _kind_of(net)
    metadata = {
        "format": format or (FORMAT if kind in _DEFAULT_CLASS else "videdit.network"),
        "kind": kind,
        "class": class_path,
        "init_kwargs": json.dumps(to_plain_python(init_kwargs), sort_keys=True),
    }
    # clone(): safetensors refuses tensors that share storage, and wants them contiguous on the CPU.
    tensors = {name: value.detach().to("cpu").contiguous().clone() for name, value in net.state_dict().items()}
    return save_safetensors_atomic(tensors, path, metadata)


def save_safetensors_atomic(tensors: dict, path: Path, metadata: dict) -> Path:
    """Write a .safetensors file under a temporary name and rename it into place (complete or absent)."""
    from videdit.fileio import save_safetensors

    return save_safetensors(tensors, path, metadata)


def save_generator(G: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Save a generator in our format (see the module docstring)."""
    return save_network(G, path, kind="generator")


def save_discriminator(D: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Save a discriminator in our format."""
    return save_network(D, path, kind="discriminator")


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    kind: str = "generator",
    pickle_key: str | None = None,
    init_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Convert an NVIDIA .pkl or a plain .pt into our .safetensors (for `videdit weights convert`).

    The network is built and loaded strictly before writing, so a file that would not load is never
    written.
    """
    net = load_network(src, "cpu", kind=kind, pickle_key=pickle_key, init_kwargs=init_kwargs)
    return save_network(net, dst, kind=kind)
