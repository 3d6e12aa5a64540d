"""Checkpoint I/O: our .safetensors format, plain torch state dicts, NVIDIA pickles (read without
running their code). `restyle.py` reads the released ReStyle encoder files.

Names are resolved lazily so that importing the package does not import torch.
"""
from __future__ import annotations

from videdit.lazy import lazy_attributes

_LAZY = {
    "load_generator": "videdit.checkpoints.stylegan",
    "save_generator": "videdit.checkpoints.stylegan",
    "load_discriminator": "videdit.checkpoints.stylegan",
    "save_discriminator": "videdit.checkpoints.stylegan",
    "load_network": "videdit.checkpoints.stylegan",
    "save_network": "videdit.checkpoints.stylegan",
    "read_checkpoint": "videdit.checkpoints.stylegan",
    "build_network": "videdit.checkpoints.stylegan",
    "convert_checkpoint": "videdit.checkpoints.stylegan",
    "infer_generator_kwargs": "videdit.checkpoints.stylegan",
    "NetworkCheckpoint": "videdit.checkpoints.stylegan",
    "check_weight_file": "videdit.checkpoints.content",
    "validate_init_kwargs": "videdit.checkpoints.plans",
    "planned_shapes": "videdit.checkpoints.plans",
    "R1024_KWARGS": "videdit.checkpoints.stylegan",
    "SafeUnpickler": "videdit.checkpoints.safe_pickle",
    "load_nvidia_pickle": "videdit.checkpoints.safe_pickle",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = list(_LAZY)
