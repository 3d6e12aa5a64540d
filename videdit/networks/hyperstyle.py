"""HyperStyle for StyleGAN3: a hypernetwork that predicts channel-wise weight offsets of the generator.

The hypernetwork reads [x, current reconstruction] (6 channels, `input_size`^2, 256 by default) with
the ReStyle ResNet34 backbone (`ReStyleEncoder(..., n_styles=0)`: stem + body, a 512-channel map of
input_size/16 squared) and predicts, for every tuned synthesis layer with weight [C_out, C_in, k, k],
an offset Delta [C_out, C_in] applied to the weight as W' = W * (1 + Delta) (repeated over the kernel).
The latent stays the encoder's; offsets are refined over a few iterations, each one reading the
reconstruction made with the offsets so far, and accumulated.

Structure of one layer's prediction (our own factorisation, chosen to keep the parameter count low):

    features [B, 512, S, S] --LayerHead (per layer: strided convs to 1x1, normalised)--> code c [B, code_dim]
    c --SharedRefinement (one per weight shape (C_out, C_in), shared by all layers of that shape)-->
        rows H = lrelu(U c) reshaped [B, C_out, rank];   Delta = H V^T + b   (V [C_in, rank], b [C_in])

Delta is linear in H, so offsets accumulated over iterations are (sum of H) V^T + (iterations) b: a
frame's offsets are stored in this factored form (`FrameOffsets`), which is ~100x smaller than the
dense offsets and smooths over time exactly like them. V and b start at zero: an untrained
hypernetwork leaves the generator unchanged.

Tuned layers (`default_tuned_layers`): StyleGAN2's coarse layers are those below 16x16 (ws 0..3); a
StyleGAN3 layer whose output cutoff is below 8 cycles per image carries only what a 16 px image can
show, so it counts as coarse. The Fourier input layer and ToRGB are never tuned. For the R-1024
generator this tunes L3..L13 (ws 4..14): L3..L6 share one refinement block (1024 x 1024), the
others have one each.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videdit.networks.encoders import ReStyleEncoder

__all__ = [
    "MEDIUM_CUTOFF", "TunedLayer", "default_tuned_layers", "tuned_layer_specs", "HyperNetwork",
    "HyperStyleOutput", "synthesize", "hyperstyle_invert", "FrameOffsets", "apply_offsets",
    "parameter_count",
]

# Output cutoff (cycles per image width) from which a synthesis layer is "medium or fine".
MEDIUM_CUTOFF = 8.0


@dataclass(frozen=True)
class TunedLayer:
    name: str  # synthesis layer name, e.g. "L3_52_1024"
    out_channels: int
    in_channels: int

    @property
    def shape_key(self) -> str:
        return f"{self.out_channels}x{self.in_channels}"


def default_tuned_layers(synthesis: nn.Module) -> list[str]:
    """Non-ToRGB synthesis layers whose output cutoff is at least MEDIUM_CUTOFF (see the module notes)."""
    names = []
    for name in synthesis.layer_names:
        layer = getattr(synthesis, name)
        if not layer.is_torgb and layer.out_cutoff >= MEDIUM_CUTOFF - 1e-6:
            names.append(name)
    return names


def tuned_layer_specs(G: nn.Module, layers: list[str] | list[int] | None = None) -> list[TunedLayer]:
    """The tuned layers of generator G: `layers` as names or indices into synthesis.layer_names (None = default)."""
    synthesis = G.synthesis
    all_names = list(synthesis.layer_names)
    if layers is None:
        names = default_tuned_layers(synthesis)
    else:
        names = [all_names[i] if isinstance(i, int) else str(i) for i in layers]
    specs = []
    for name in names:
        if name not in all_names:
            raise ValueError(f"no synthesis layer {name!r} (layers: {', '.join(all_names)})")
        layer = getattr(synthesis, name)
        if layer.is_torgb:
            raise ValueError(f"{name} is the ToRGB layer; HyperStyle never tunes it")
        specs.append(TunedLayer(name, int(layer.weight.shape[0]), int(layer.weight.shape[1])))
    if not specs:
        raise ValueError("no synthesis layer to tune")
    return specs


class LayerHead(nn.Module):
    """Per-layer head: 3x3 conv to `inner` channels, stride-2 convs down to 1x1, 1x1 conv to the code."""

    def __init__(self, spatial: int, in_channels: int = 512, inner: int = 128, code_dim: int = 512):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, inner, 3, padding=1), nn.LeakyReLU(0.2)]
        for _ in range(int(round(math.log2(spatial)))):
            layers += [nn.Conv2d(inner, inner, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(inner, code_dim, 1))
        self.convs = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        code = self.convs(features)
        if code.shape[-2:] != (1, 1):
            raise ValueError(f"layer head got a {tuple(features.shape[-2:])} map; it was built for another input size")
        code = code.flatten(1)
        # Unit second moment: the offsets' scale is set by the refinement block, not by the size of
        # the backbone's features (which drift freely while the backbone trains).
        return code * (code.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()


class SharedRefinement(nn.Module):
    """Codes -> offsets for every layer with weight shape (C_out, C_in): rows H = lrelu(U c), Delta = H V^T + b."""

    def __init__(self, out_channels: int, in_channels: int, code_dim: int = 512, rank: int = 16):
        super().__init__()
        self.out_channels, self.in_channels, self.rank = out_channels, in_channels, rank
        self.rows = nn.Linear(code_dim, out_channels * rank)
        nn.init.normal_(self.rows.weight, std=1.0 / math.sqrt(code_dim))
        nn.init.zeros_(self.rows.bias)
        # Zero start: Delta = 0, the untuned generator, until training moves V and b.
        self.cols = nn.Parameter(torch.zeros(in_channels, rank))
        self.bias = nn.Parameter(torch.zeros(in_channels))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        """code [B, code_dim] -> rows [B, C_out, rank]."""
        return F.leaky_relu(self.rows(code), 0.2).reshape(-1, self.out_channels, self.rank)

    def delta(self, rows: torch.Tensor, count: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Offsets [B, C_out, C_in] of accumulated rows (the sum over `count` iterations)."""
        scale = 1.0 / math.sqrt(self.rank)
        return rows @ (self.cols * scale).t() + count * self.bias


class HyperNetwork(nn.Module):
    """[x, reconstruction] (6 x input_size^2, [-1, 1]) -> per tuned layer, rows [B, C_out, rank].

    layers: [[name, C_out, C_in], ...] (plain lists, so `init_kwargs` is JSON for save_network).
    """

    def __init__(self, layers: list, input_size: int = 256, code_dim: int = 512, inner_channels: int = 128,
                 rank: int = 16):
        super().__init__()
        specs = [TunedLayer(str(n), int(o), int(i)) for n, o, i in layers]
        if input_size % 16 or input_size < 16:
            raise ValueError(f"input_size must be a multiple of 16, got {input_size}")
        self.init_kwargs = {"layers": [[s.name, s.out_channels, s.in_channels] for s in specs],
                            "input_size": input_size, "code_dim": code_dim, "inner_channels": inner_channels,
                            "rank": rank}
        self.specs = specs
        self.input_size = input_size
        self.backbone = ReStyleEncoder("psp", "resnet34", n_styles=0, in_channels=6)
        spatial = input_size // 16
        self.heads = nn.ModuleDict({s.name: LayerHead(spatial, 512, inner_channels, code_dim) for s in specs})
        self.shared = nn.ModuleDict()
        for s in specs:
            if s.shape_key not in self.shared:
                self.shared[s.shape_key] = SharedRefinement(s.out_channels, s.in_channels, code_dim, rank)

    @classmethod
    def for_generator(cls, G: nn.Module, layers=None, **kwargs) -> "HyperNetwork":
        specs = tuned_layer_specs(G, layers)
        return cls([[s.name, s.out_channels, s.in_channels] for s in specs], **kwargs)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images at any size -> input_size (antialiased)."""
        if images.shape[-2:] != (self.input_size, self.input_size):
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return images

    def forward(self, target: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone.features(torch.cat([self.prepare(target), self.prepare(reconstruction)], dim=1))
        return {s.name: self.shared[s.shape_key](self.heads[s.name](features)) for s in self.specs}

    def deltas(self, rows: dict[str, torch.Tensor], count: float) -> dict[str, torch.Tensor]:
        return {s.name: self.shared[s.shape_key].delta(rows[s.name], count) for s in self.specs}


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------------
# Rendering with per-sample offsets


def offset_weights(G: nn.Module, deltas: dict[str, torch.Tensor], sample: int) -> dict[str, torch.Tensor]:
    """{'<layer>.weight': W * (1 + Delta[sample])} for functional_call on G.synthesis."""
    out = {}
    for name, delta in deltas.items():
        weight = getattr(G.synthesis, name).weight
        out[f"{name}.weight"] = weight * (1 + delta[sample].to(weight.dtype))[:, :, None, None]
    return out


def synthesize(G: nn.Module, ws: torch.Tensor | None, transforms: torch.Tensor | None,
               deltas: dict[str, torch.Tensor] | None = None, styles: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """G.synthesis(ws, transform) with each sample's weights offset by its own Delta (None: no offsets).

    styles: render from StyleSpace instead of ws (`G.synthesis(None, styles=S)`, S entries [B, C]).
    Offsets differ per sample, so samples are rendered one at a time (a modulated conv folds a single
    sample's styles into its weight anyway). Differentiable in the offsets.
    """
    if not deltas:
        if styles is not None:
            return G.synthesis(None, transform=transforms, styles=styles)
        return G.synthesis(ws, transform=transforms)
    images = []
    count = ws.shape[0] if ws is not None else next(iter(styles.values())).shape[0]
    for b in range(count):
        transform = None if transforms is None else (transforms if transforms.ndim == 2 else transforms[b:b + 1])
        kwargs = {"transform": transform}
        if styles is not None:
            kwargs["styles"] = {k: v[b:b + 1] for k, v in styles.items()}
        images.append(torch.func.functional_call(G.synthesis, offset_weights(G, deltas, b),
                                                 (None if styles is not None else ws[b:b + 1],), kwargs))
    return torch.cat(images)


@dataclass
class HyperStyleOutput:
    rows: dict[str, torch.Tensor]  # per layer, the rows accumulated over the iterations [B, C_out, rank]
    count: int  # iterations accumulated
    images: list[torch.Tensor]  # reconstruction after each iteration (index 0: before any offset)


def hyperstyle_invert(hyper: HyperNetwork, G: nn.Module, targets: torch.Tensor, ws: torch.Tensor,
                      transforms: torch.Tensor | None = None, n_iters: int = 5,
                      initial: torch.Tensor | None = None) -> HyperStyleOutput:
    """The HyperStyle iteration: offsets refined n_iters times, each reading the latest reconstruction.

    targets [B, 3, H, W] in [-1, 1]; ws [B, num_ws, w_dim] (fixed); transforms: inverse frame transforms
    for G.synthesis ([B, 3, 3], None = the generator's default). `initial`: G's render of ws without
    offsets, when the caller has it. Runs under the caller's grad mode (training backpropagates through it).
    """
    if n_iters < 1:
        raise ValueError(f"n_iters must be >= 1, got {n_iters}")
    image = synthesize(G, ws, transforms) if initial is None else initial
    images = [image]
    rows: dict[str, torch.Tensor] = {}
    for it in range(n_iters):
        step = hyper(targets, image)
        rows = step if not rows else {k: rows[k] + step[k] for k in rows}
        image = synthesize(G, ws, transforms, hyper.deltas(rows, it + 1))
        images.append(image)
    return HyperStyleOutput(rows=rows, count=n_iters, images=images)


# --------------------------------------------------------------------------------------------------
# Per-frame offsets of a video (the HyperStyle tuner's output)

OFFSETS_FORMAT = "videdit.hyperstyle-offsets"


@dataclass
class FrameOffsets:
    """Offsets of every frame in factored form: Delta[n] = rows[n] @ cols^T + bias, per tuned layer.

    rows[name]: float32 [N, C_out, rank]; cols[name]: [C_in, rank] (already scaled); bias[name]: [C_in]
    (already multiplied by the iteration count). Linear in rows, so a temporal filter of the rows is the
    same filter of the offsets. base[name]: the layer's weight W the offsets multiply (W' = W (1 + Delta)),
    kept so that a renderer holding a generator with other weights in those layers (the tuner saves the
    mean offsets applied) can put the originals back (`use_base_weights`).
    """

    rows: dict[str, torch.Tensor]
    cols: dict[str, torch.Tensor]
    bias: dict[str, torch.Tensor]
    base: dict[str, torch.Tensor] | None = None

    @classmethod
    def from_output(cls, hyper: HyperNetwork, out: HyperStyleOutput) -> "FrameOffsets":
        rows, cols, bias = {}, {}, {}
        for s in hyper.specs:
            block = hyper.shared[s.shape_key]
            rows[s.name] = out.rows[s.name].detach().float().cpu()
            cols[s.name] = (block.cols.detach() / math.sqrt(block.rank)).float().cpu()
            bias[s.name] = (block.bias.detach() * out.count).float().cpu()
        return cls(rows, cols, bias)

    @property
    def num_frames(self) -> int:
        return int(next(iter(self.rows.values())).shape[0])

    @property
    def layers(self) -> list[str]:
        return list(self.rows)

    def deltas(self, indices=None, device=None) -> dict[str, torch.Tensor]:
        """Dense offsets {layer: [B, C_out, C_in]} of the frames `indices` (None = all)."""
        out = {}
        for name, rows in self.rows.items():
            r = rows if indices is None else rows[torch.as_tensor(np.asarray(indices), dtype=torch.long)]
            d = r @ self.cols[name].t() + self.bias[name]
            out[name] = d if device is None else d.to(device)
        return out

    def mean_deltas(self) -> dict[str, torch.Tensor]:
        """The offsets averaged over the frames, {layer: [1, C_out, C_in]}."""
        return {name: (rows.mean(0, keepdim=True) @ self.cols[name].t() + self.bias[name])
                for name, rows in self.rows.items()}

    def filtered(self, taps: np.ndarray, padding: str = "reflect") -> "FrameOffsets":
        """The offsets filtered over time with `taps` (the latent smoothing's filter, same padding)."""
        from videdit.temporal import temporal_filter

        rows = {name: torch.from_numpy(temporal_filter(r.numpy(), np.asarray(taps), padding).astype(np.float32))
                for name, r in self.rows.items()}
        return FrameOffsets(rows, dict(self.cols), dict(self.bias), None if self.base is None else dict(self.base))

    def check_generator(self, G: nn.Module, num_frames: int | None = None) -> None:
        """One clear error when these offsets cannot apply to G (other layers or shapes) or to a video of num_frames."""
        from videdit.errors import CheckpointError

        if num_frames is not None and self.num_frames != num_frames:
            raise CheckpointError(f"HyperStyle offsets hold {self.num_frames} frames; the video has {num_frames}")
        names = set(G.synthesis.layer_names)
        for name, rows in self.rows.items():
            shape = tuple(getattr(G.synthesis, name).weight.shape[:2]) if name in names else None
            if shape != (rows.shape[1], self.cols[name].shape[0]):
                raise CheckpointError(f"HyperStyle offsets do not fit this generator (layer {name}: offsets "
                                      f"{rows.shape[1]}x{self.cols[name].shape[0]}, generator {shape})")

    @torch.no_grad()
    def use_base_weights(self, G: nn.Module, num_frames: int | None = None) -> nn.Module:
        """Copy the stored original weights into G's offset layers (in place), after `check_generator`
        (with the video's num_frames when given); returns G."""
        from videdit.errors import CheckpointError

        self.check_generator(G, num_frames)
        if self.base is None:
            raise CheckpointError("these HyperStyle offsets hold no base weights (written by an older videdit): "
                                  "rerun the tune stage")
        for name, weight in self.base.items():
            target = getattr(G.synthesis, name).weight
            if tuple(target.shape) != tuple(weight.shape):
                raise CheckpointError(f"HyperStyle base weights of {name} have shape {list(weight.shape)}; "
                                      f"the generator's is {list(target.shape)}")
            target.copy_(weight.to(target))
        return G

    def save(self, path: str | PathLike) -> Path:
        import json

        path = Path(path)
        tensors = {}
        for name in self.rows:
            tensors[f"{name}.rows"] = self.rows[name].contiguous()
            tensors[f"{name}.cols"] = self.cols[name].contiguous()
            tensors[f"{name}.bias"] = self.bias[name].contiguous()
            if self.base is not None:
                tensors[f"{name}.base"] = self.base[name].detach().float().cpu().contiguous()
        from videdit.fileio import save_safetensors

        metadata = {"format": OFFSETS_FORMAT, "layers": json.dumps(self.layers), "base": json.dumps(self.base is not None)}
        save_safetensors(tensors, path, metadata)
        return path

    @classmethod
    def load(cls, path: str | PathLike) -> "FrameOffsets":
        import json

        from safetensors import safe_open

        from videdit.errors import CheckpointError

        path = Path(path)
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != OFFSETS_FORMAT:
                    raise CheckpointError(f"{path}: not a HyperStyle offsets file (format={meta.get('format')!r})")
                layers = json.loads(meta["layers"])
                keys = ("rows", "cols", "bias") + (("base",) if json.loads(meta.get("base", "false")) else ())
                parts = {key: {n: f.get_tensor(f"{n}.{key}") for n in layers} for key in keys}
        except CheckpointError:
            raise
        except Exception as err:  # safetensors raises its own error type for a corrupt header
            raise CheckpointError(f"{path}: unreadable HyperStyle offsets ({type(err).__name__})") from None
        return cls(parts["rows"], parts["cols"], parts["bias"], parts.get("base"))


@torch.no_grad()
def apply_offsets(G: nn.Module, deltas: dict[str, torch.Tensor]) -> nn.Module:
    """Write W * (1 + Delta) into G's tuned layers in place (Delta [C_out, C_in] or [1, C_out, C_in]); returns G."""
    for name, delta in deltas.items():
        weight = getattr(G.synthesis, name).weight
        weight.mul_(1 + delta.reshape(weight.shape[0], weight.shape[1], 1, 1).to(weight))
    return G
