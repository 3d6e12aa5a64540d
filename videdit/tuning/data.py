"""What every tuning algorithm shares below the loop: target crops, batch order, which parameters are
tuned, content fingerprints and the checkpoint file.

Nothing here knows an algorithm; nothing here imports a stage.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
from os import PathLike
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from videdit.lazy import lazy_module
from videdit.fileio import atomic_save
from videdit.layout import CHECKPOINT
from videdit.records import frame_paths, inverse_matrices

torch = lazy_module("torch")  # settings are read without loading torch (start-up)

log = logging.getLogger("videdit")

CHECKPOINT_NAME = CHECKPOINT  # checkpoints/<this>
# 2: one payload layout for every loop (the state objects under "state"); files of version 1 are ignored.
CHECKPOINT_VERSION = 2


def inverse_transforms(matrix: np.ndarray) -> torch.Tensor:
    """float32 [N,3,3] inverses (what G.synthesis takes) of the make_transform matrices, inverted in float64."""
    return torch.from_numpy(inverse_matrices(matrix))


class CropFrames:
    """The unaligned crops of an align folder as [-1, 1] NCHW tensors at the generator's resolution.

    Frames are decoded on demand; up to `cache_bytes` of decoded uint8 frames are kept.
    """

    def __init__(self, folder: Path, count: int, resolution: int, cache_bytes: int = 0):
        self.paths = frame_paths(folder, count)
        self.resolution = resolution
        self.cache_bytes = cache_bytes
        self._cache: dict[int, torch.Tensor] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.paths)

    def _uint8(self, index: int) -> torch.Tensor:
        if index in self._cache:
            return self._cache[index]
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            frame = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()
        if self._cached_bytes + frame.numel() <= self.cache_bytes:
            self._cache[index] = frame
            self._cached_bytes += frame.numel()
        return frame

    def batch(self, indices, device: torch.device) -> torch.Tensor:
        images = torch.stack([self._uint8(int(i)) for i in indices]).to(device=device, dtype=torch.float32)
        images = images / 127.5 - 1.0
        if images.shape[-1] != self.resolution or images.shape[-2] != self.resolution:
            images = torch.nn.functional.interpolate(images, size=(self.resolution, self.resolution),
                                                     mode="bilinear", align_corners=False, antialias=True)
        return images


def batch_indices(step: int, pool: np.ndarray, batch_size: int, seed: int) -> np.ndarray:
    """Frames of batch `step`: consecutive slices of a stream of per-epoch shuffles of `pool`.

    A pure function of its arguments (each epoch's permutation comes from its own seeded generator),
    so a resumed run draws exactly the batches an uninterrupted one would.
    """
    n = len(pool)
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    out = np.empty(batch_size, dtype=np.int64)
    perms: dict[int, np.ndarray] = {}
    for j, pos in enumerate(positions):
        epoch, offset = divmod(int(pos), n)
        if epoch not in perms:
            perms[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        out[j] = pool[perms[epoch][offset]]
    return out


# --------------------------------------------------------------------------------------------------
# Which parameters are tuned


def frozen_parameter_names(G: torch.nn.Module) -> list[str]:
    """The mapping network and the Fourier-feature input layer: never tuned (the transforms keep their meaning)."""
    return [name for name, _ in G.named_parameters() if name.startswith(("mapping.", "synthesis.input."))]


def trainable_parameters(G: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    frozen = set(frozen_parameter_names(G))
    return [(name, p) for name, p in G.named_parameters() if name.startswith("synthesis.") and name not in frozen]


def unfreeze_synthesis(G: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Freeze all of G, then let the tunable synthesis parameters learn; returns them (for the optimizer)."""
    G.requires_grad_(False)
    params = [p for _, p in trainable_parameters(G)]
    for p in params:
        p.requires_grad_(True)
    return params


def private_generator(generator, device: torch.device) -> torch.nn.Module:
    """A frozen copy in eval mode on `device` of a generator module or checkpoint path (the caller's stays as it was)."""
    from videdit.checkpoints import load_generator

    if isinstance(generator, (str, PathLike)):
        G = load_generator(generator, device=device)
    else:
        G = copy.deepcopy(generator).to(device)
    return G.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------
# Fingerprints: what determines a run's trajectory, so a checkpoint of another run is never resumed


def settings_fingerprint(settings: Mapping[str, Any], *, ignore: Iterable[str] = ()) -> "hashlib._Hash":
    ignored = set(ignore)
    relevant = {k: v for k, v in settings.items() if k not in ignored}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode())


def update_with_module(h, net: torch.nn.Module | None) -> None:
    """Feed a network's state into the hash (the generator's input transform is passed per call: skipped)."""
    if net is None:
        return
    for name, value in sorted(net.state_dict().items()):
        if name == "synthesis.input.transform":
            continue
        h.update(name.encode())
        h.update(value.detach().to("cpu").contiguous().numpy().tobytes())


def update_with_files(h, paths: Iterable[Path]) -> None:
    """Name and size of each file: cheap, and what a changed input folder changes."""
    for p in paths:
        h.update(f"{p.name}:{p.stat().st_size}".encode())


# --------------------------------------------------------------------------------------------------
# Checkpoint files


def save_checkpoint(path: Path, payload: dict) -> None:
    """torch.save through an atomic rename: never a half-written checkpoint, even after SIGKILL."""
    atomic_save(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: Path) -> dict | None:
    """The payload, or None when there is none, it is unreadable or of another format (the run starts over)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unreadable: start over rather than fail the stage
        log.warning("ignoring unreadable checkpoint %s (%s)", path, type(err).__name__)
        return None
    if not isinstance(payload, dict) or payload.get("version") != CHECKPOINT_VERSION:
        log.warning("ignoring checkpoint %s of another format", path)
        return None
    return payload
