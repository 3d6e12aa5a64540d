"""The interface every tuner implements, the typed inputs it gets and the typed result it returns.

A tuner fits a generator to one video. It gets a `TuneInputs` (built by `load_tune_inputs` from an
align folder and a latents file: the one place those are read for tuning), an output folder and its
settings dataclass, and writes `generator.safetensors` there (plus, for some, `offsets.safetensors`,
checkpoints and a small JSON record). The registry (`videdit.tuning.TUNERS`) maps names to tuners;
the pipeline and the CLI read it.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from videdit.lazy import lazy_module
from videdit.device import resolve_device
from videdit.errors import InputError
from videdit.layout import TUNER_INFO
from videdit.records import CHECKPOINTS, GENERATOR, UNALIGNED, AlignRecord, TuneNotes, load_latents
from videdit.tuning.data import CHECKPOINT_NAME, CropFrames, inverse_transforms, private_generator

torch = lazy_module("torch")  # settings are read without loading torch (start-up)


@dataclass
class TuneInputs:
    """What every tuner gets. generator: a private frozen copy (eval) on `device`; the caller's is untouched."""

    generator: torch.nn.Module
    latents: np.ndarray  # float32 [N, num_ws, w_dim]: each frame's pivot latent
    inv_transforms: torch.Tensor  # float32 [N, 3, 3] (CPU): what G.synthesis takes for each frame
    face_found: np.ndarray  # bool [N]
    crops_dir: Path  # the unaligned crops (the targets), %06d.png
    device: torch.device
    generator_file: Path | None = None  # where the generator was read from, when it was a file

    @property
    def num_frames(self) -> int:
        return int(self.latents.shape[0])

    def crops(self, cache_bytes: int = 0) -> CropFrames:
        return CropFrames(self.crops_dir, self.num_frames, int(self.generator.img_resolution), cache_bytes)

    def pool(self) -> np.ndarray:
        """The frames to tune on: those with a face (all, when none has one)."""
        return np.flatnonzero(self.face_found) if self.face_found.any() else np.arange(self.num_frames)

    def ws(self) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.latents, dtype=np.float32))


def load_tune_inputs(align_dir: str | PathLike, latents_path: str | PathLike, generator,
                     device: torch.device | str = "cpu") -> TuneInputs:
    """TuneInputs of an align folder, a latents file and a generator (a module or a checkpoint path)."""
    align_dir = Path(align_dir)
    record = AlignRecord.load(align_dir)
    latents = np.asarray(load_latents(latents_path), dtype=np.float32)
    if len(record.matrix) != latents.shape[0]:
        raise InputError(f"tune: {latents.shape[0]} latents but {len(record.matrix)} transforms")
    device = resolve_device(device)
    G = private_generator(generator, device)
    if latents.shape[1] != G.num_ws:
        raise InputError(f"tune: latents have shape {list(latents.shape)}, generator wants [N, {G.num_ws}, w_dim]")
    source = Path(generator) if isinstance(generator, (str, PathLike)) else None
    return TuneInputs(generator=G, latents=latents, inv_transforms=inverse_transforms(record.matrix),
                      face_found=record.face_found, crops_dir=align_dir / UNALIGNED, device=device,
                      generator_file=source)


@dataclass
class TuneResult:
    """What every tuner returns (fields an algorithm has no use for keep their defaults)."""

    generator_path: Path
    num_frames: int
    seconds: float
    steps_done: int = 0  # optimisation steps; HyperStyle: refinement iterations
    resumed_from_step: int = 0  # 0 for a fresh run
    stopped_early: bool = False
    final_loss: float = float("nan")  # mean over the early-stop window (nan if no step ran)
    lpips_used: bool = False
    offsets_path: Path | None = None  # HyperStyle's per-frame offsets


class Tuner:
    """One tuning algorithm. Subclasses set the class attributes and implement `tune`.

    name: the registry name; settings_class: its settings dataclass, built from preset section `section`;
    record_name: the JSON record it writes beside the generator.
    """

    name: ClassVar[str]
    settings_class: ClassVar[type]
    section: ClassVar[str]
    record_name: ClassVar[str] = TUNER_INFO
    # Settings that change speed, display or where files are, never the result: not in the cache key.
    runtime_fields: ClassVar[tuple[str, ...]] = ("device", "progress")
    # Settings naming files the tuner reads (digested by content for the cache key).
    file_fields: ClassVar[tuple[str, ...]] = ()

    def check(self, settings) -> None:
        """Raise InputError on settings that cannot run (before any input is read)."""

    def tune(self, inputs: TuneInputs, out_dir: Path, settings, **models) -> TuneResult:
        raise NotImplementedError

    def cache_params(self, settings) -> dict[str, Any]:
        """The settings that determine the result (the tune stage's cache key)."""
        return {k: v for k, v in dataclasses.asdict(settings).items() if k not in self.runtime_fields}

    def input_files(self, settings) -> dict[str, Path]:
        """Extra files it reads (hypernetwork, discriminator), to be digested by content."""
        return {k: Path(getattr(settings, k)) for k in self.file_fields if getattr(settings, k, None)}

    def with_generator_file(self, settings, generator_file: str | PathLike | None):
        """Settings completed from the generator's file (the local tweak reads D from an NVIDIA .pkl)."""
        return settings

    def run(self, align_dir, latents_path, generator, out_dir, settings=None, **models) -> TuneResult:
        """Read the inputs (load_tune_inputs) and tune; writes out_dir/generator.safetensors."""
        settings = settings if settings is not None else self.settings_class()
        self.check(settings)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        inputs = load_tune_inputs(align_dir, latents_path, generator, getattr(settings, "device", "cpu"))
        return self.tune(inputs, out_dir, settings, **models)


def checkpoint_path(out_dir: Path) -> Path:
    return Path(out_dir) / CHECKPOINTS / CHECKPOINT_NAME


def write_generator(G: torch.nn.Module, out_dir: Path) -> Path:
    from videdit.checkpoints import save_generator

    G.requires_grad_(False)
    return save_generator(G, Path(out_dir) / GENERATOR)


def write_record(out_dir: Path, name: str, record: dict[str, Any]) -> Path:
    return TuneNotes(record, name).save(out_dir)


def elapsed(t_start: float) -> float:
    return time.perf_counter() - t_start
