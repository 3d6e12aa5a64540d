"""Is a weights file what its registry entry says? Checks by content, for `videdit weights add/fetch`.

A file that merely exists is not enough: a Google-Drive quota page saved as `restyle_e4e_ffhq.pt`, or
any pickle saved as the StyleGAN3 `.pkl`, would otherwise be accepted and fail much later. Each
entry of `videdit.weights.KNOWN_WEIGHTS` names one of the CONTENT kinds below; `check_weight_file`
reads the file the way videdit will (never running code from it) and checks format, keys and shapes
without building any network. Every failure is one CheckpointError line naming the file.

HTML and other text are recognised from the first bytes (before any parser sees them), so a login or
quota page is named as such instead of as a corrupt or unsafe checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from videdit.errors import CheckpointError

__all__ = ["CONTENT_KINDS", "sniff_text_page", "check_weight_file"]

# kind -> what the file should be, for messages.
CONTENT_KINDS = {
    "stylegan_pickle": "an NVIDIA StyleGAN3 snapshot pickle",
    "generator_state_dict": "a StyleGAN3 generator state dict (.pt)",
    "restyle": "a ReStyle checkpoint (.pt)",
    "boundary": "an InterFaceGAN boundary (.npy)",
    "torch_state_dict": "a torch weights file",
    "clip": "an OpenAI-layout CLIP checkpoint",
    "delta_i_c": "a StyleCLIP delta_i_c array (.npy)",
    "s_stats": "a StyleCLIP s_stats pickle",
}

_SNIFF_BYTES = 1024
_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<title", b"<script", b"<meta", b"<!--")


def sniff_text_page(head: bytes) -> str | None:
    """'HTML' or 'text' when the first bytes are a web page or other text rather than binary weights."""
    if not head:
        return None
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<") and (any(m in text for m in _HTML_MARKERS) or text.startswith(b"<?xml")):
        return "HTML"
    if b"\x00" in head:
        return None
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the end of the sniffed bytes is still text.
        try:
            decoded = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return None
    printable = sum(ch.isprintable() or ch in "\t\r\n" for ch in decoded)
    return "text" if decoded and printable >= 0.95 * len(decoded) else None


def _refuse_text(path: Path, shown: str, what: str) -> None:
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if not head:
        raise CheckpointError(f"{shown}: the file is empty, not {what}")
    page = sniff_text_page(head)
    if page == "HTML":
        raise CheckpointError(f"{shown}: this is an HTML page (a download quota or login page?), not {what}")
    if page == "text":
        first = head.decode("utf-8", "replace").strip().splitlines()[0][:60]
        raise CheckpointError(f"{shown}: this is a text file (it starts {first!r}), not {what}")


def _named(err: CheckpointError, path: Path, shown: str) -> CheckpointError:
    # Messages from the loaders name the path they read; show the name the user knows instead.
    return CheckpointError(str(err).replace(str(path), shown, 1))


def _check_stylegan_pickle(path: Path) -> None:
    from videdit.checkpoints.safe_pickle import PersistentRecord, load_pickle
    from videdit.checkpoints.stylegan import NetworkCheckpoint, checked_kwargs, network_from_snapshot

    with open(path, "rb") as handle:
        if handle.read(1) != b"\x80":
            raise CheckpointError(f"{path}: not a pickle (an NVIDIA .pkl starts with the pickle protocol byte)")
    snapshot = load_pickle(path)  # refuses, by name, any global a snapshot does not need
    if not isinstance(snapshot, dict):
        raise CheckpointError(
            f"{path}: a valid pickle of the wrong kind: it holds a {type(snapshot).__name__}, not a StyleGAN snapshot"
        )
    if not isinstance(snapshot.get("G_ema"), PersistentRecord):
        found = ", ".join(sorted(map(str, snapshot))[:6]) or "nothing"
        raise CheckpointError(
            f"{path}: a valid pickle of the wrong kind: no 'G_ema' network (it holds {found}), not a StyleGAN snapshot"
        )
    for kind, key in (("generator", "G_ema"), ("discriminator", "D")):
        if key in snapshot:  # D is optional here: only the local-tweak tuner needs it
            checkpoint: NetworkCheckpoint = network_from_snapshot(path, snapshot, kind, key)
            checked_kwargs(checkpoint)


def _check_generator_state_dict(path: Path) -> None:
    from videdit.checkpoints.stylegan import checked_kwargs, read_checkpoint

    checked_kwargs(read_checkpoint(path, kind="generator"))


def _check_restyle(path: Path) -> None:
    from videdit.checkpoints.restyle import check_restyle_file

    check_restyle_file(path)


def _check_boundary(path: Path) -> None:
    import numpy as np

    with open(path, "rb") as handle:
        if handle.read(6) != b"\x93NUMPY":
            raise CheckpointError(f"{path}: not a .npy file")
    try:
        value = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: unreadable .npy file ({detail})") from None
    if not isinstance(value, np.ndarray) or value.shape not in ((1, 512), (512,)):
        raise CheckpointError(f"{path}: boundary has shape {list(np.shape(value))}, expected (1, 512) or (512,)")
    if not np.issubdtype(value.dtype, np.floating):
        raise CheckpointError(f"{path}: boundary has dtype {value.dtype}, expected float32")
    if not np.all(np.isfinite(value)):
        raise CheckpointError(f"{path}: boundary holds NaN or infinite values")


def _check_torch_state_dict(path: Path, keys: tuple[str, ...]) -> None:
    import torch

    from videdit.checkpoints.safe_pickle import torch_load_plain

    obj: Any = torch_load_plain(path, mmap=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        found = type(obj).__name__
        raise CheckpointError(f"{path}: a valid torch file of the wrong kind: holds a {found}, not a state dict")
    names = {str(k).removeprefix("module.") for k in obj}
    missing = [k for k in keys if k not in names]
    if missing:
        raise CheckpointError(f"{path}: a valid torch file of the wrong kind: no '{missing[0]}' weights")


def _check_styleclip_file(path: Path, kind: str) -> None:
    """The StyleCLIP files through their own readers (the allow-listed unpickler for s_stats)."""
    from videdit.checkpoints import styleclip_files
    from videdit.errors import VideditError

    try:
        if kind == "clip":
            state = styleclip_files.clip_state_dict(path)
            if "visual.proj" not in state or "text_projection" not in state:
                raise CheckpointError(f"{path}: not an OpenAI-layout CLIP checkpoint (no visual.proj / text_projection)")
        elif kind == "s_stats":
            styleclip_files.read_s_stats(path)
        else:
            import numpy as np

            array = np.load(path, allow_pickle=False)
            if array.ndim != 2 or array.dtype.kind != "f":
                raise CheckpointError(f"{path}: delta_i_c must be a 2-D float array, found {array.dtype} {list(array.shape)}")
    except CheckpointError:
        raise
    except (VideditError, ValueError, OSError, EOFError) as err:
        raise CheckpointError(f"{path}: not {CONTENT_KINDS[kind]} ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None


def check_weight_file(path: str | Path, kind: str, *, keys: tuple[str, ...] = (), shown: str | None = None) -> None:
    """Raise a one-line CheckpointError unless `path` holds `kind` content (see CONTENT_KINDS).

    `keys`: state-dict names a "torch_state_dict" must hold. `shown`: how to name the file in messages
    (e.g. the download's final name rather than its temporary one).
    """
    path = Path(path)
    shown = shown or str(path)
    if kind not in CONTENT_KINDS:
        raise ValueError(f"unknown content kind {kind!r}")
    _refuse_text(path, shown, CONTENT_KINDS[kind])
    try:
        if kind == "stylegan_pickle":
            _check_stylegan_pickle(path)
        elif kind == "generator_state_dict":
            _check_generator_state_dict(path)
        elif kind == "restyle":
            _check_restyle(path)
        elif kind == "boundary":
            _check_boundary(path)
        elif kind in ("clip", "delta_i_c", "s_stats"):
            _check_styleclip_file(path, kind)
        else:
            _check_torch_state_dict(path, keys)
    except CheckpointError as err:
        raise _named(err, path, shown) from None
