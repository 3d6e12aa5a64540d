"""The one device resolver: `--device auto|cpu|cuda[:N]` -> a torch.device, or one line saying why not."""
from __future__ import annotations

from videdit.errors import InputError


def resolve_device(device: "str | object" = "auto"):
    """'auto' -> cuda when available, else cpu; 'cuda...' without CUDA -> InputError. torch is imported here only."""
    import torch

    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = str(device or "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available here (use --device cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from None
