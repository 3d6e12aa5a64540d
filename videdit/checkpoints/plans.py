"""What a checkpoint's constructor arguments would build, checked before anything is allocated.

A checkpoint names a network class and its constructor kwargs (safetensors metadata, a pickle's
`_init_kwargs`, or kwargs read off a state dict's layer names). Building the network first and
comparing shapes afterwards lets the file decide how much memory is allocated: a crafted
`channel_base=2**40` asks for terabytes. So loaders call, in this order:

1. `validate_init_kwargs`: every key known, every value of the right type and within bounds;
2. `planned_shapes`: the state-dict shapes those kwargs would create, computed without allocating
   (analytically for the StyleGAN3 generator, on the `meta` device for the other networks);
3. `stylegan.check_state_dict` against the file's tensors,

and build the real network only when the file's tensors are exactly what it will hold.

Bounds. The official values (NVIDIA stylegan3 `train.py`, configs T and R; ReStyle / HyperStyle
releases) and our tiny test configs sit well inside them; the upper ends allow 4x the official channel
counts and 4x the largest official resolution. They are sanity limits, not a memory budget: the
shape plan compared with the file is what bounds memory.

| argument | official | tiny tests | accepted |
|---|---|---|---|
| img_resolution | 256, 512, 1024 | 16, 32, 64 | power of two, 8..4096 |
| img_channels | 3 | 3 | 1..4 |
| z_dim, w_dim | 512 | 8..512 | 1..4096 |
| c_dim | 0 (FFHQ) | 0, 5 | 0..10000 |
| channel_base | 32768 (T), 65536 (R) | 128..2048 | 1..2**20 |
| channel_max | 512 (T), 1024 (R) | 8..64 | 1..4096 |
| num_layers (synthesis) | 14 | 4, 14 | 1..64 |
| mapping num_layers | 2 (SG3), 8 (SG2) | 1, 2 | 1..16 |
| conv_kernel | 3 (T), 1 (R) | 1, 3 | 1..7 |
| filter_size, lrelu_upsampling | 6, 2 | same | 1..32, 1..8 |
| first_cutoff, first_stopband, last_stopband_rel | 2, 2**2.1, 2**0.3 | same | 0.5..64, 0.5..128, 1/16..16 |
| ReStyle n_styles, in_channels | 16 (18 for SG2), 6 | 16 | 1..64, 1..16 |
| HyperStyle tuned layers, rank, input_size | - | 2..6, 16, 64..256 | 1..64, 1..512, 16..1024 |
"""
from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, Callable

from videdit.errors import CheckpointError

__all__ = [
    "GENERATOR_CLASS",
    "DISCRIMINATOR_CLASS",
    "ENCODER_CLASS",
    "HYPERNETWORK_CLASS",
    "validate_init_kwargs",
    "planned_shapes",
]

GENERATOR_CLASS = "videdit.networks.stylegan3.Generator"
DISCRIMINATOR_CLASS = "videdit.networks.discriminator.Discriminator"
ENCODER_CLASS = "videdit.networks.encoders.ReStyleEncoder"
HYPERNETWORK_CLASS = "videdit.networks.hyperstyle.HyperNetwork"

MAX_CHANNELS = 4096
MAX_RESOLUTION = 4096

# A check returns None when the value is fine, else what the value must be.
Check = Callable[[Any], "str | None"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(lo: int, hi: int) -> Check:
    def check(value: Any) -> str | None:
        return None if _is_int(value) and lo <= value <= hi else f"an integer in [{lo}, {hi}]"
    return check


def _pow2(lo: int, hi: int) -> Check:
    def check(value: Any) -> str | None:
        ok = _is_int(value) and lo <= value <= hi and value & (value - 1) == 0
        return None if ok else f"a power of two in [{lo}, {hi}]"
    return check


def _float(lo: float, hi: float) -> Check:
    def check(value: Any) -> str | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok and lo <= value <= hi else f"a finite number in [{lo:g}, {hi:g}]"
    return check


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _choice(*options: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in options else "one of " + ", ".join(repr(o) for o in options)
    return check


def _optional(inner: Check) -> Check:
    def check(value: Any) -> str | None:
        problem = None if value is None else inner(value)
        return None if problem is None else f"null or {problem}"
    return check


def _number_list(max_len: int) -> Check:
    def check(value: Any) -> str | None:
        ok = isinstance(value, (list, tuple)) and 1 <= len(value) <= max_len
        ok = ok and all(_float(-1e6, 1e6)(v) is None for v in value)
        return None if ok else f"a list of 1..{max_len} finite numbers"
    return check


def _tuned_layers(value: Any) -> str | None:
    # HyperNetwork's [[name, C_out, C_in], ...]: names are synthesis layer names, channels bounded.
    want = f"a list of 1..64 [layer name, C_out, C_in] entries with channels in [1, {MAX_CHANNELS}]"
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= 64:
        return want
    for entry in value:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3 and isinstance(entry[0], str)
                and entry[0].isidentifier() and len(entry[0]) <= 64
                and all(_int(1, MAX_CHANNELS)(c) is None for c in entry[1:])):
            return want
    return None


def _multiple_of_16(lo: int, hi: int) -> Check:
    def check(value: Any) -> str | None:
        ok = _is_int(value) and lo <= value <= hi and value % 16 == 0
        return None if ok else f"a multiple of 16 in [{lo}, {hi}]"
    return check


_ACTIVATIONS = _choice("linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish")
_CHANNELS = _int(1, MAX_CHANNELS)

# Spec: key -> check, or key -> nested spec (a dict argument such as mapping_kwargs).
Spec = dict[str, Any]

_GENERATOR: Spec = {
    "z_dim": _CHANNELS,
    "c_dim": _int(0, 10000),
    "w_dim": _CHANNELS,
    "img_resolution": _pow2(8, MAX_RESOLUTION),
    "img_channels": _int(1, 4),
    "mapping_kwargs": {
        "num_layers": _int(1, 16),
        "lr_multiplier": _float(1e-6, 100.0),
        "w_avg_beta": _float(0.0, 1.0),
    },
    "channel_base": _int(1, 2**20),
    "channel_max": _CHANNELS,
    "num_layers": _int(1, 64),
    "num_critical": _int(0, 63),
    "first_cutoff": _float(0.5, 64.0),
    "first_stopband": _float(0.5, 128.0),
    "last_stopband_rel": _float(1 / 16, 16.0),
    "margin_size": _int(0, 256),
    "output_scale": _float(-100.0, 100.0),
    "num_fp16_res": _int(0, 16),
    "conv_kernel": _int(1, 7),
    "filter_size": _int(1, 32),
    "lrelu_upsampling": _int(1, 8),
    "use_radial_filters": _bool,
    "conv_clamp": _optional(_float(1e-6, 1e6)),
    "magnitude_ema_beta": _float(0.0, 1.0),
}
_GENERATOR_REQUIRED = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")

_DISCRIMINATOR: Spec = {
    "c_dim": _int(0, 10000),
    "img_resolution": _pow2(8, MAX_RESOLUTION),
    "img_channels": _int(1, 4),
    "architecture": _choice("orig", "skip", "resnet"),
    "channel_base": _int(1, 2**20),
    "channel_max": _CHANNELS,
    "num_fp16_res": _int(0, 16),
    "conv_clamp": _optional(_float(1e-6, 1e6)),
    "cmap_dim": _optional(_CHANNELS),
    "block_kwargs": {
        "activation": _ACTIVATIONS,
        "resample_filter": _number_list(16),
        "fp16_channels_last": _bool,
        "freeze_layers": _int(0, 1000),
    },
    "mapping_kwargs": {
        "num_layers": _int(1, 16),
        "embed_features": _optional(_CHANNELS),
        "layer_features": _optional(_CHANNELS),
        "activation": _ACTIVATIONS,
        "lr_multiplier": _float(1e-6, 100.0),
        "freeze_layers": _int(0, 1000),
        "freeze_embed": _bool,
    },
    "epilogue_kwargs": {
        "mbstd_group_size": _optional(_int(1, 1024)),
        "mbstd_num_channels": _int(0, 64),
        "activation": _ACTIVATIONS,
    },
}
_DISCRIMINATOR_REQUIRED = ("c_dim", "img_resolution", "img_channels")

_ENCODER: Spec = {
    "kind": _choice("e4e", "psp"),
    "backbone": _choice("ir_se50", "resnet34"),
    "n_styles": _int(1, 64),
    "in_channels": _int(1, 16),
}

_HYPERNETWORK: Spec = {
    "layers": _tuned_layers,
    "input_size": _multiple_of_16(16, 1024),
    "code_dim": _CHANNELS,
    "inner_channels": _CHANNELS,
    "rank": _int(1, 512),
}

_SPECS: dict[str, tuple[Spec, tuple[str, ...]]] = {
    GENERATOR_CLASS: (_GENERATOR, _GENERATOR_REQUIRED),
    DISCRIMINATOR_CLASS: (_DISCRIMINATOR, _DISCRIMINATOR_REQUIRED),
    ENCODER_CLASS: (_ENCODER, ()),
    HYPERNETWORK_CLASS: (_HYPERNETWORK, ("layers",)),
}


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_spec(kwargs: Any, spec: Spec, prefix: str, where: str, class_name: str) -> None:
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{where}: constructor argument '{prefix.rstrip('.') or 'init_kwargs'}' is not a dict")
    for key, value in kwargs.items():
        name = f"{prefix}{key}"
        rule = spec.get(key)
        if rule is None:
            raise CheckpointError(f"{where}: unknown {class_name} constructor argument '{name}'")
        if isinstance(rule, dict):
            _check_spec(value if value is not None else {}, rule, f"{name}.", where, class_name)
            continue
        problem = rule(value)
        if problem is not None:
            raise CheckpointError(f"{where}: constructor argument '{name}' is {_short(value)}; it must be {problem}")


def validate_init_kwargs(class_path: str, kwargs: Any, where: str | Path) -> None:
    """Raise a one-line CheckpointError unless `kwargs` are known, well-typed and within bounds for the class."""
    class_name = class_path.rpartition(".")[2]
    if class_path not in _SPECS:
        raise CheckpointError(f"{where}: no constructor bounds are known for {class_path!r}; refusing to build it")
    spec, required = _SPECS[class_path]
    _check_spec(kwargs, spec, "", str(where), class_name)
    missing = [k for k in required if k not in kwargs]
    if missing:
        raise CheckpointError(f"{where}: constructor argument '{missing[0]}' of {class_name} is missing")
    if class_path == GENERATOR_CLASS:
        layers = kwargs.get("num_layers", _defaults("SynthesisNetwork")["num_layers"])
        critical = kwargs.get("num_critical", _defaults("SynthesisNetwork")["num_critical"])
        if critical >= layers:
            raise CheckpointError(
                f"{where}: constructor argument 'num_critical' is {critical}; it must be below num_layers ({layers})"
            )


# ----------------------------------------------------------------------------------------------
# Shape plans


def _defaults(class_name: str) -> dict[str, Any]:
    # The defaults come from the network classes themselves, so the plan cannot drift from them.
    from videdit.networks import stylegan3

    signature = inspect.signature(getattr(stylegan3, class_name).__init__)
    return {n: p.default for n, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}


def _generator_shapes(kwargs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The StyleGAN3 generator's state-dict shapes, from the same layer design the network uses."""
    import numpy as np

    from videdit.networks.stylegan3 import layer_design

    synthesis = {k: v for k, v in kwargs.items()
                 if k not in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs")}
    net = {**_defaults("SynthesisNetwork"), **synthesis}
    layer = {**_defaults("SynthesisLayer"), **synthesis}
    mapping = {**_defaults("MappingNetwork"), **dict(kwargs.get("mapping_kwargs") or {})}
    z_dim, c_dim, w_dim = kwargs["z_dim"], kwargs["c_dim"], kwargs["w_dim"]
    num_layers = net["num_layers"]

    d = layer_design(kwargs["img_resolution"], net["channel_base"], net["channel_max"], num_layers,
                     net["num_critical"], net["first_cutoff"], net["first_stopband"], net["last_stopband_rel"],
                     net["margin_size"], kwargs["img_channels"])
    channels = [int(c) for c in d["channels"]]
    rates = [int(r) for r in d["sampling_rates"]]
    sizes = [int(s) for s in d["sizes"]]

    shapes: dict[str, tuple[int, ...]] = {}
    c0 = channels[0]
    shapes.update({
        "synthesis.input.weight": (c0, c0), "synthesis.input.affine.weight": (4, w_dim),
        "synthesis.input.affine.bias": (4,), "synthesis.input.transform": (3, 3),
        "synthesis.input.freqs": (c0, 2), "synthesis.input.phases": (c0,),
    })
    for idx in range(num_layers + 1):
        prev = max(idx - 1, 0)
        is_torgb = idx == num_layers
        critical = idx >= num_layers - net["num_critical"]
        c_in, c_out = channels[prev], channels[idx]
        kernel = 1 if is_torgb else layer["conv_kernel"]
        name = f"synthesis.L{idx}_{sizes[idx]}_{c_out}"
        shapes.update({
            f"{name}.affine.weight": (c_in, w_dim), f"{name}.affine.bias": (c_in,),
            f"{name}.weight": (c_out, c_in, kernel, kernel), f"{name}.bias": (c_out,),
            f"{name}.magnitude_ema": (),
        })
        tmp_rate = max(rates[prev], rates[idx]) * (1 if is_torgb else layer["lrelu_upsampling"])
        up = int(np.rint(tmp_rate / rates[prev]))
        down = int(np.rint(tmp_rate / rates[idx]))
        up_taps = layer["filter_size"] * up if up > 1 and not is_torgb else 1
        down_taps = layer["filter_size"] * down if down > 1 and not is_torgb else 1
        if up_taps > 1:  # a single tap is no filter: the buffer is None and not in the state dict
            shapes[f"{name}.up_filter"] = (up_taps,)
        if down_taps > 1:
            radial = layer["use_radial_filters"] and not critical
            shapes[f"{name}.down_filter"] = (down_taps, down_taps) if radial else (down_taps,)

    features = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * mapping["num_layers"]
    if c_dim > 0:
        shapes.update({"mapping.embed.weight": (w_dim, c_dim), "mapping.embed.bias": (w_dim,)})
    for idx in range(mapping["num_layers"]):
        shapes[f"mapping.fc{idx}.weight"] = (features[idx + 1], features[idx])
        shapes[f"mapping.fc{idx}.bias"] = (features[idx + 1],)
    shapes["mapping.w_avg"] = (w_dim,)
    return shapes


def _meta_shapes(class_path: str, kwargs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    # Construction on the meta device records shapes and allocates no storage.
    import importlib

    import torch

    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    with torch.device("meta"):
        net = cls(**kwargs)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def planned_shapes(class_path: str, kwargs: dict[str, Any], where: str | Path) -> dict[str, tuple[int, ...]]:
    """State-dict shapes (name -> shape) that `class(**kwargs)` would create, without allocating them.

    Call `validate_init_kwargs` first: the bounds keep this computation itself small.
    """
    try:
        if class_path == GENERATOR_CLASS:
            return _generator_shapes(kwargs)
        return _meta_shapes(class_path, kwargs)
    except (TypeError, ValueError, KeyError, ZeroDivisionError, OverflowError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        class_name = class_path.rpartition(".")[2]
        raise CheckpointError(f"{where}: cannot build {class_name} from the recorded arguments ({detail})") from None


def generator_style_widths(kwargs: dict[str, Any]) -> dict[str, int]:
    """`G.synthesis.style_widths()` of the generator `kwargs` build (StyleSpace key -> channels), computed from the
    same layer design without building it: what `s:KEY:CHANNEL` edits are checked against before any work."""
    from videdit.networks.stylegan3 import layer_design

    synthesis = {k: v for k, v in kwargs.items()
                 if k not in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs")}
    net = {**_defaults("SynthesisNetwork"), **synthesis}
    d = layer_design(kwargs["img_resolution"], net["channel_base"], net["channel_max"], net["num_layers"],
                     net["num_critical"], net["first_cutoff"], net["first_stopband"], net["last_stopband_rel"],
                     net["margin_size"], kwargs["img_channels"])
    channels, sizes = [int(c) for c in d["channels"]], [int(s) for s in d["sizes"]]
    widths = {"input": 4}
    for idx in range(net["num_layers"] + 1):
        widths[f"L{idx}_{sizes[idx]}_{channels[idx]}"] = channels[max(idx - 1, 0)]
    return widths
