"""Where the networks come from: the released checkpoints (PretrainedModels) or small random stand-ins
(StandInModels, for the demo and the tests). `identity()` strings go into the stage cache keys.

How the generator runs is the run's `compile` (see `apply_compile`) and `precision` (see `run_precision`,
`apply_precision`, `tf32_switches`):
fp32 (default, as the published video code forces), tf32 (float32 with TF32 matmuls and convolutions),
fp16 (NVIDIA's mixed precision: the num_fp16_res highest-resolution layers in float16, with conv_clamp).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

from videdit import weights as W
from videdit.edits import single_edits
from videdit.errors import VideditError
from videdit.layout import STAGE_ORDER
from videdit.settings import PRECISIONS, TEXT_EDIT_FILES, EncodeChoice, ResolvedSettings
from videdit.tuning import PTI

log = logging.getLogger(__name__)


def run_precision(requested: str, device: str) -> str:
    """The precision a run on `device` uses: tf32 and fp16 are CUDA features, so elsewhere fp32 (one warning)."""
    if requested not in PRECISIONS:
        raise VideditError(f"precision {requested!r}: use one of {', '.join(PRECISIONS)}")
    if requested != "fp32" and not str(device).startswith("cuda"):
        log.warning(f"{requested} runs on CUDA only; this run uses float32 on the {str(device).upper()}")
        return "fp32"
    return requested


def apply_precision(G, precision: str):
    """G with its synthesis network's default force_fp32 set for `precision` (fp16: the use_fp16 layers
    run float16 on CUDA); returns G. An explicit force_fp32 keyword in a call still wins."""
    G.synthesis.force_fp32 = precision != "fp16"
    return G


def apply_compile(G, enabled: bool, backend: "str | object" = "inductor", mode: str | None = None):
    """G with its synthesis network's layers run through torch.compile when enabled (compiled at the first
    call; where that fails, one warning and eager from then on), eager otherwise; returns G. mode: torch.compile's
    (inductor only), e.g. "reduce-overhead" for CUDA graphs."""
    if not enabled:
        G.synthesis.compiled_render = None
        return G
    import torch

    options = {"mode": mode} if mode else {}
    G.synthesis.compiled_render = torch.compile(type(G.synthesis).render_layers, backend=backend, **options)
    return G


@contextmanager
def tf32_switches(precision: str):
    """torch's TF32 switches (matmul and cuDNN) ON for tf32 and explicitly OFF otherwise (cuDNN's default
    is on, which would lower fp32's fidelity), put back as they were afterwards. No effect on the CPU."""
    import torch

    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    allow = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


class ModelSource:
    """Provides the networks; `identity()` strings go into the stage cache keys."""

    name = "abstract"

    def required_weights(self, settings: ResolvedSettings, stages: tuple[str, ...] = STAGE_ORDER) -> list[str]:
        """Registry names of the files the given stages need."""
        return []

    def generator_identity(self) -> str: ...

    def encoder_identity(self) -> str: ...

    def load_generator(self, device: str): ...

    def generator_kwargs(self) -> dict:
        """The generator's constructor kwargs, read without building it (the checks before any work)."""
        raise NotImplementedError

    def load_encoder(self, device: str):
        """-> (encoder, latent_avg [512] tensor)"""

    def edit_direction(self, name_or_path: str):
        """-> (numpy float32 [512], identity string)"""


class PretrainedModels(ModelSource):
    """The released checkpoints: ReStyle encoder file (its decoder is the generator), boundaries, LPIPS."""

    name = "pretrained"

    def __init__(self, weights_dir: Path, networks: EncodeChoice | None = None):
        self.weights_dir = weights_dir
        networks = networks or EncodeChoice()
        self.encoder_name = "restyle_psp" if networks.encoder == "psp" else "restyle_e4e"
        self.generator_path = networks.generator or None  # optional override: .pkl/.pt/.safetensors
        self._ckpt = None

    def required_weights(self, settings, stages=STAGE_ORDER):
        names = []
        if set(stages) & {"encode", "tune", "render"}:  # the generator comes from the encoder's checkpoint
            names.append(self.encoder_name)
        tune = settings.sections["tune"]
        if "tune" in stages and settings.tuner == PTI and tune.lpips_weight > 0 and not tune.allow_l2_only:
            names.append("lpips_alexnet" if tune.lpips_net == "alex" else "lpips_vgg")
        if "edit" in stages:
            edit = settings.sections["edit"]
            single = single_edits(edit.specs)
            names += [W.EDIT_DIRECTIONS[s.target] for s in single if s.kind == "w" and s.target in W.EDIT_DIRECTIONS]
            if any(s.kind == "text" for s in single):  # StyleCLIP: CLIP, delta_i_c and s_stats, unless given by path
                names += [name for key, name in TEXT_EDIT_FILES.items() if key not in edit.text_files()]
        return names

    def _path(self, name: str) -> Path:
        return W.require([name], self.weights_dir)[name]

    def _file_identity(self, path: Path) -> str:
        st = path.stat()
        return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"

    def encoder_identity(self):
        return self._file_identity(self._path(self.encoder_name))

    def generator_identity(self):
        return self._file_identity(Path(self.generator_path)) if self.generator_path else self.encoder_identity()

    def _checkpoint(self):
        if self._ckpt is None:
            from videdit.checkpoints.restyle import load_restyle_checkpoint

            self._ckpt = load_restyle_checkpoint(self._path(self.encoder_name))
        return self._ckpt

    def generator_kwargs(self):
        if self.generator_path:
            from videdit.checkpoints.stylegan import generator_kwargs

            return generator_kwargs(self.generator_path)
        from videdit.checkpoints.restyle import restyle_generator_kwargs

        kwargs = restyle_generator_kwargs(self._path(self.encoder_name))
        if kwargs is None:
            raise VideditError(f"{self._path(self.encoder_name)} carries no generator: set encode.generator = FILE")
        return kwargs

    def load_encoder(self, device):
        ckpt = self._checkpoint()
        return ckpt.encoder.to(device).eval(), ckpt.latent_avg.to(device)

    def load_generator(self, device):
        if self.generator_path:
            from videdit.checkpoints import load_generator

            return load_generator(self.generator_path, device=device)
        return self._checkpoint().generator.to(device)

    def edit_direction(self, name_or_path):
        path = Path(name_or_path)
        if name_or_path in W.EDIT_DIRECTIONS:
            path = self._path(W.EDIT_DIRECTIONS[name_or_path])
        elif not path.is_file():
            raise VideditError(f"unknown edit {name_or_path!r}: use one of {', '.join(W.EDIT_DIRECTIONS)} or a .npy file")
        from videdit.edits import load_direction

        return load_direction(path, 512), self._file_identity(path)


STAND_IN_PRESET = "demo"  # the preset `--stand-ins` uses unless one is named: made for the stand-ins' size and speed
STAND_IN_RESOLUTION = 64
STAND_IN_NOTE = ("stand-ins: networks with random weights (a 64 px StyleGAN3-T generator, a ReStyle-e4e encoder, "
                 "random edit directions) instead of the released checkpoints; everything else runs for real, "
                 "and the faces they render are meaningless")


def stand_in_overrides(resolution: int = STAND_IN_RESOLUTION) -> dict[str, object]:
    """What any preset needs to run on the stand-ins: crops at their resolution, tuning without LPIPS weights."""
    return {"align.crop_size": resolution, "tune.allow_l2_only": True}


class StandInModels(ModelSource):
    """Small randomly initialised networks for the demo and the tests: the pipeline runs for real, the faces are meaningless."""

    name = "stand-in"

    def __init__(self, resolution: int = 64, seed: int = 0, encoder_backbone: str = "resnet34"):
        self.resolution = resolution
        self.seed = seed
        self.backbone = encoder_backbone

    def generator_identity(self):
        return f"standin-generator:{self.resolution}:{self.seed}"

    def encoder_identity(self):
        return f"standin-encoder:{self.backbone}:{self.seed}"

    def generator_kwargs(self):
        from videdit.networks.stylegan3 import tiny_generator_kwargs

        return tiny_generator_kwargs(self.resolution)

    def load_generator(self, device):
        import torch

        from videdit.networks.stylegan3 import Generator, tiny_generator_kwargs

        torch.manual_seed(self.seed)
        return Generator(**tiny_generator_kwargs(self.resolution)).to(device).eval()

    def load_encoder(self, device):
        import torch

        from videdit.networks.encoders import ReStyleEncoder

        torch.manual_seed(self.seed + 1)
        enc = ReStyleEncoder(kind="e4e", backbone=self.backbone)
        # Shrink the random heads' outputs so the stand-in latents stay near the generator's average.
        with torch.no_grad():
            for name, p in enc.named_parameters():
                if name.startswith("styles.") and ".linear." in name:
                    p.mul_(0.05)
        latent_avg = self.load_generator("cpu").mapping.w_avg.detach().clone()
        return enc.to(device).eval(), latent_avg.to(device)

    def edit_direction(self, name_or_path):
        import numpy as np

        path = Path(name_or_path)
        if path.is_file():
            from videdit.edits import load_direction

            return load_direction(path, 512), f"{path.name}:{path.stat().st_size}"
        import zlib

        rng = np.random.default_rng(zlib.crc32(name_or_path.encode()))
        d = rng.standard_normal(512).astype(np.float32)
        return d / np.linalg.norm(d), f"standin-direction:{name_or_path}"
