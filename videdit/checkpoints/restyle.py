"""Released ReStyle checkpoints (`restyle_e4e_ffhq.pt`, `restyle_pSp_ffhq.pt`) and our encoder format.

A released file is a `torch.save` dict: `state_dict` (keys `encoder.*` and `decoder.*`), `latent_avg`
[512] and `opts` (the training options; its path values are pathlib objects). It is read with
`weights_only=True`; the only classes allowed beyond tensors and containers are the pathlib path
classes, which are rebuilt as *pure* paths (no filesystem access, and a Windows path loads on Linux).
Everything else in the file (optimizer and discriminator states of e4e training) is ignored.

Our format is one `.safetensors` file with the encoder's state dict plus `latent_avg` and string
metadata naming the class and its constructor kwargs; the generator goes through `save_generator`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any, NamedTuple

import torch

from videdit.errors import CheckpointError, MissingWeightsError

__all__ = [
    "RestyleCheckpoint",
    "load_restyle_checkpoint",
    "save_restyle_encoder",
    "convert_restyle_checkpoint",
    "check_restyle_file",
    "ENCODER_FORMAT",
]

ENCODER_FORMAT = "videdit.restyle_encoder"
ENCODER_CLASS = "videdit.networks.encoders.ReStyleEncoder"
_TRANSFORM_KEY = "synthesis.input.transform"
_LATENT_AVG = "latent_avg"

# The only non-tensor classes a released file pickles: paths inside `opts`. The names cover how
# Python <= 3.12 and 3.13+ (pathlib._local) record them; all are rebuilt as pure paths.
_PATH_GLOBALS = [
    (PurePosixPath, "pathlib.PosixPath"),
    (PureWindowsPath, "pathlib.WindowsPath"),
    (PurePosixPath, "pathlib.PurePosixPath"),
    (PureWindowsPath, "pathlib.PureWindowsPath"),
    (PurePosixPath, "pathlib._local.PosixPath"),
    (PureWindowsPath, "pathlib._local.WindowsPath"),
    (PurePosixPath, "pathlib._local.PurePosixPath"),
    (PureWindowsPath, "pathlib._local.PureWindowsPath"),
]


class RestyleCheckpoint(NamedTuple):
    """What a ReStyle checkpoint provides. Unpacks as (encoder, generator, latent_avg, opts)."""

    encoder: torch.nn.Module  # ReStyleEncoder, eval mode, on the CPU
    generator: Any  # a Generator (eval mode) when built, else its state dict; None for an encoder-only file
    latent_avg: torch.Tensor  # [512] float32 (as released; [num_ws, 512] also accepted)
    opts: dict[str, Any]  # training options, paths as strings


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _plain_opts(value: Any) -> Any:
    """The options with paths as strings, so they can go into manifests and JSON."""
    if isinstance(value, dict):
        return {str(k): _plain_opts(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_opts(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    return value


def _read_released(path: Path) -> dict[str, Any]:
    from videdit.checkpoints.safe_pickle import torch_load_plain

    if not hasattr(torch.serialization, "safe_globals"):
        raise CheckpointError(f"{path}: reading ReStyle checkpoints safely needs torch >= 2.6 (found {torch.__version__})")
    # mmap: the e4e file also carries optimizer state that is never touched, so never read.
    obj = torch_load_plain(path, allowed=tuple(_PATH_GLOBALS), mmap=True)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a ReStyle checkpoint dict, found {type(obj).__name__}")
    missing = [k for k in ("state_dict", "latent_avg", "opts") if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: not a ReStyle checkpoint (no {', '.join(repr(k) for k in missing)} entry)")
    if not isinstance(obj["state_dict"], dict) or not isinstance(obj["opts"], dict):
        raise CheckpointError(f"{path}: 'state_dict' and 'opts' must be dicts")
    return obj


def _split_prefix(state: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _latent_avg(value: Any, where: Path) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise CheckpointError(f"{where}: 'latent_avg' is not a float tensor")
    if value.ndim == 2 and value.shape[0] == 1:
        value = value[0]
    # [512] as released; a per-ws [num_ws, 512] average also works with restyle_invert.
    if value.ndim not in (1, 2) or value.shape[-1] != 512:
        raise CheckpointError(f"{where}: 'latent_avg' has shape {list(value.shape)}, expected [512]")
    return value.to(torch.float32, copy=True)


def _checked_meta_encoder(
    state: dict[str, torch.Tensor], kind: str, backbone: str, where: Path, prefix: str, **kwargs: Any
) -> torch.nn.Module:
    """The encoder the kwargs describe, on the meta device, after its bounds and the file's shapes are checked."""
    from videdit.checkpoints.plans import ENCODER_CLASS as PLANNED_CLASS
    from videdit.checkpoints.plans import validate_init_kwargs
    from videdit.checkpoints.stylegan import check_state_dict
    from videdit.networks.encoders import build_encoder_on_meta

    validate_init_kwargs(PLANNED_CLASS, {"kind": kind, "backbone": backbone, **kwargs}, where)
    encoder = build_encoder_on_meta(kind, backbone, **kwargs)
    expected = {prefix + k: v for k, v in encoder.state_dict().items()}
    check_state_dict(expected, {prefix + k: v for k, v in state.items()}, str(where),
                     f"expected a {encoder.encoder_type} encoder")
    return encoder


def _encoder_from_state(
    state: dict[str, torch.Tensor], kind: str, backbone: str, where: Path, prefix: str, **kwargs: Any
) -> torch.nn.Module:
    encoder = _checked_meta_encoder(state, kind, backbone, where, prefix, **kwargs)
    # Own copies in float32: the file may be memory-mapped and the values are kept for the session.
    owned = {k: (v.to(torch.float32, copy=True) if v.is_floating_point() else v.clone()) for k, v in state.items()}
    encoder.load_state_dict(owned, strict=True, assign=True)
    return encoder.eval().requires_grad_(False)


def _build_generator(state: dict[str, torch.Tensor], where: Path) -> torch.nn.Module:
    from videdit.checkpoints.stylegan import GENERATOR_CLASS, NetworkCheckpoint, build_network, infer_generator_kwargs

    # Read the configuration off the layer names: the released decoders are StyleGAN3-R 1024
    # (R1024_KWARGS), which is what this gives for them.
    kwargs = infer_generator_kwargs(state)
    checkpoint = NetworkCheckpoint(where, "torch", "generator", GENERATOR_CLASS, kwargs, state)
    return build_network(checkpoint, "cpu")


def _released_parts(path: Path) -> tuple[dict[str, Any], dict[str, Any], str, str]:
    """(file dict, plain opts, encoder kind, backbone) of a released checkpoint, its layout checked."""
    from videdit.networks.encoders import ENCODER_TYPES

    obj = _read_released(path)
    opts = _plain_opts(obj["opts"])
    encoder_type = opts.get("encoder_type")
    if encoder_type not in ENCODER_TYPES:
        known = ", ".join(ENCODER_TYPES)
        raise CheckpointError(f"{path}: opts['encoder_type'] is {encoder_type!r}; videdit reads {known}")
    input_nc = opts.get("input_nc", 6)
    if input_nc != 6:
        raise CheckpointError(f"{path}: opts['input_nc'] is {input_nc!r}; ReStyle encoders take 6 channels")
    if not all(isinstance(v, torch.Tensor) for v in obj["state_dict"].values()):
        raise CheckpointError(f"{path}: 'state_dict' holds values that are not tensors")
    kind, backbone = ENCODER_TYPES[encoder_type]
    return obj, opts, kind, backbone


def check_restyle_file(path: str | os.PathLike) -> None:
    """Check a released ReStyle `.pt` without building anything: the encoder's and the decoder's keys
    and shapes against what their configurations would create, and `latent_avg`. Raises CheckpointError."""
    from videdit.checkpoints.stylegan import GENERATOR_CLASS, NetworkCheckpoint, checked_kwargs

    path = Path(path)
    obj, _, kind, backbone = _released_parts(path)
    state = obj["state_dict"]
    _checked_meta_encoder(_split_prefix(state, "encoder."), kind, backbone, path, "encoder.")
    decoder = _split_prefix(state, "decoder.")
    if not decoder:
        raise CheckpointError(f"{path}: no 'decoder.*' keys: the checkpoint carries no generator")
    checked_kwargs(NetworkCheckpoint(path, "torch", "generator", GENERATOR_CLASS, None, decoder))
    _latent_avg(obj["latent_avg"], path)


def _load_released(path: Path, build_generator: bool) -> RestyleCheckpoint:
    obj, opts, kind, backbone = _released_parts(path)
    state = obj["state_dict"]
    encoder = _encoder_from_state(_split_prefix(state, "encoder."), kind, backbone, path, "encoder.")

    decoder = {k: v.to(torch.float32, copy=True) if v.is_floating_point() else v.clone()
               for k, v in _split_prefix(state, "decoder.").items()}
    if not decoder:
        raise CheckpointError(f"{path}: no 'decoder.*' keys: the checkpoint carries no generator")
    # As published: the stored transform is whatever the last training batch left; start from identity.
    decoder[_TRANSFORM_KEY] = torch.eye(3)
    generator: Any = _build_generator(decoder, path) if build_generator else decoder
    if build_generator and encoder.n_styles != generator.num_ws:
        raise CheckpointError(f"{path}: the encoder predicts {encoder.n_styles} ws but the generator takes {generator.num_ws}")
    return RestyleCheckpoint(encoder, generator, _latent_avg(obj["latent_avg"], path), opts)


def _load_ours(path: Path) -> RestyleCheckpoint:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: unreadable safetensors file (truncated or corrupt: {_first_line(err)})") from None
    if metadata.get("format") != ENCODER_FORMAT:
        raise CheckpointError(f"{path}: not a videdit ReStyle encoder file (format={metadata.get('format')!r})")
    try:
        init_kwargs = json.loads(metadata["init_kwargs"])
        opts = json.loads(metadata.get("opts", "{}"))
        kind, backbone = init_kwargs.pop("kind"), init_kwargs.pop("backbone")
    except (KeyError, json.JSONDecodeError, AttributeError):
        raise CheckpointError(f"{path}: metadata 'init_kwargs' is missing or malformed") from None
    if _LATENT_AVG not in tensors:
        raise CheckpointError(f"{path}: missing key '{_LATENT_AVG}'")
    latent_avg = _latent_avg(tensors.pop(_LATENT_AVG), path)
    try:
        encoder = _encoder_from_state(tensors, kind, backbone, path, "", **init_kwargs)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot build the encoder from its metadata ({_first_line(err)})") from None
    return RestyleCheckpoint(encoder, None, latent_avg, opts)


def load_restyle_checkpoint(path: str | os.PathLike, *, build_generator: bool = True) -> RestyleCheckpoint:
    """Load a released ReStyle `.pt` (encoder + generator + latent_avg + opts) or our encoder `.safetensors`.

    Returns a RestyleCheckpoint (unpacks as `encoder, generator, latent_avg, opts`), all on the CPU.
    The released file's generator is built and loaded strictly (its stored `synthesis.input.transform`
    is reset to identity, as the published code does); with build_generator=False it is returned as a
    state dict. Our safetensors encoder file has no generator (None).
    Raises MissingWeightsError if the file is absent, CheckpointError (one line naming the key or the
    problem) if it is not a loadable ReStyle checkpoint.
    """
    path = Path(path)
    head = _checkpoint_head(path)
    if _is_safetensors(head):
        return _load_ours(path)
    if not head:
        raise CheckpointError(f"{path}: file is empty")
    return _load_released(path, build_generator)


def save_restyle_encoder(
    encoder: torch.nn.Module, latent_avg: torch.Tensor, path: str | os.PathLike, opts: dict[str, Any] | None = None
) -> Path:
    """Write an encoder and its latent_avg to our `.safetensors` format (atomically: temp file + rename)."""
    from videdit.checkpoints.stylegan import save_safetensors_atomic

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in encoder.state_dict().items()}
    if _LATENT_AVG in tensors:
        raise ValueError(f"encoder state dict already has a {_LATENT_AVG!r} key")
    tensors[_LATENT_AVG] = latent_avg.detach().to("cpu", torch.float32).reshape(-1).contiguous().clone()
    metadata = {
        "format": ENCODER_FORMAT,
        "kind": "encoder",
        "class": ENCODER_CLASS,
        "init_kwargs": json.dumps(encoder.init_kwargs, sort_keys=True),
        "opts": json.dumps(_plain_opts(opts or {}), sort_keys=True, default=str),
    }
    return save_safetensors_atomic(tensors, path, metadata)


def convert_restyle_checkpoint(
    src: str | os.PathLike, encoder_dst: str | os.PathLike, generator_dst: str | os.PathLike | None = None
) -> tuple[Path, Path | None]:
    """Convert a released ReStyle `.pt` into our encoder file and (optionally) our generator file."""
    from videdit.checkpoints.stylegan import save_generator

    ckpt = load_restyle_checkpoint(src, build_generator=generator_dst is not None)
    enc_path = save_restyle_encoder(ckpt.encoder, ckpt.latent_avg, encoder_dst, ckpt.opts)
    gen_path = save_generator(ckpt.generator, generator_dst) if generator_dst is not None else None
    return enc_path, gen_path


def _checkpoint_head(path: Path) -> bytes:
    """The first bytes of a ReStyle checkpoint file; MissingWeightsError when it is absent."""
    if not path.is_file():
        raise MissingWeightsError(f"ReStyle checkpoint not found: {path} (see `videdit weights list`)")
    with open(path, "rb") as handle:
        return handle.read(16)


def _is_safetensors(head: bytes) -> bool:
    """Our encoder files are safetensors: an 8-byte header length, then the JSON header."""
    return len(head) >= 9 and head[8:9] == b"{"


def restyle_generator_kwargs(path: str | os.PathLike) -> dict[str, Any] | None:
    """The constructor kwargs of the generator a released ReStyle `.pt` carries, read off its layer names (the
    file is memory-mapped, nothing is built): what the checks before any work compare edits with. None for our
    encoder-only `.safetensors` (it carries no generator)."""
    from videdit.checkpoints.stylegan import infer_generator_kwargs

    path = Path(path)
    if _is_safetensors(_checkpoint_head(path)):
        return None
    decoder = _split_prefix(_released_parts(path)[0]["state_dict"], "decoder.")
    if not decoder:
        raise CheckpointError(f"{path}: no 'decoder.*' keys: the checkpoint carries no generator")
    return infer_generator_kwargs(decoder)
