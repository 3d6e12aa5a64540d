"""ReStyle encoders (IR-SE50 / ResNet34 backbones, e4e / pSp heads) and the iterative inversion loop.

The encoders take a 6-channel image (target + current reconstruction, both in [-1, 1]) and return a
W+ residual [B, 16, 512]; `restyle_invert` runs the published ReStyle iteration around a generator.

Module and parameter names follow the published ReStyle code for StyleGAN3 exactly, so a released
encoder state dict loads with strict=True. Nothing here knows about files or videos.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

ENCODER_KINDS = ("e4e", "psp")
BACKBONES = ("ir_se50", "resnet34")
ENCODER_INPUT_SIZE = 256  # the released encoders were trained on 256x256 inputs

# (in_channels, depth, units) of the four IR-SE50 depth groups; the first unit of each has stride 2.
_IR_SE50_GROUPS = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))
# (in_channels, out_channels, blocks) of torchvision's resnet34 layer1..layer4.
_RESNET34_GROUPS = ((64, 64, 3), (64, 128, 4), (128, 256, 6), (256, 512, 3))

# The checkpoint's `opts["encoder_type"]` -> (kind, backbone).
ENCODER_TYPES = {
    "ProgressiveBackboneEncoder": ("e4e", "ir_se50"),
    "BackboneEncoder": ("psp", "ir_se50"),
    "ResNetProgressiveBackboneEncoder": ("e4e", "resnet34"),
    "ResNetBackboneEncoder": ("psp", "resnet34"),
}


# ---------------------------------------------------------------------------------------------
# Building blocks


class EqualLinear(nn.Module):
    """Linear layer with its weight scaled at run time by lr_mul / sqrt(in_features) (no activation)."""

    def __init__(self, in_features: int, out_features: int, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.lr_mul = lr_mul
        self.weight_gain = lr_mul / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_mul)

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}, lr_mul={self.lr_mul}"


class SqueezeExcite(nn.Module):
    """Channel gating: global average -> 1x1 conv down -> ReLU -> 1x1 conv up -> sigmoid -> scale."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.adaptive_avg_pool2d(x, 1)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class IRSEUnit(nn.Module):
    """Pre-activation residual unit of IR-SE: BN, conv, PReLU, strided conv, BN, SE; no activation after the add."""

    def __init__(self, in_channels: int, depth: int, stride: int, squeeze_excite: bool = True):
        super().__init__()
        # Registered before res_layer, as published, so the state dict keeps the published key order.
        if in_channels == depth:
            # A 1x1 max-pool is plain strided subsampling (the identity for stride 1).
            self.shortcut_layer = nn.MaxPool2d(kernel_size=1, stride=stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(depth),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, kernel_size=3, stride=1, padding=1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(depth),
            *([SqueezeExcite(depth)] if squeeze_excite else []),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRBackbone(nn.Module):
    """IR(-SE) ResNet for 112x112 faces -> unit-norm 512-D identity embedding, with the module names of
    the public ArcFace checkpoints (the same units as the ReStyle encoder's body).

    ArcFace IR-SE50: units (3, 4, 14, 3), squeeze-excite, affine output norm; CurricularFace IR-101:
    units (3, 13, 30, 3), no squeeze-excite, output norm without affine parameters.
    """

    def __init__(self, units_per_stage: tuple[int, ...], squeeze_excite: bool, affine_output: bool = True):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units, in_channels = [], 64
        for depth, count in zip((64, 128, 256, 512), units_per_stage):
            for i in range(count):
                units.append(IRSEUnit(in_channels, depth, 2 if i == 0 else 1, squeeze_excite))
                in_channels = depth
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512), nn.Dropout(0.4), nn.Flatten(), nn.Linear(512 * 7 * 7, 512),
            nn.BatchNorm1d(512, affine=affine_output),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.output_layer(self.body(self.input_layer(x))), dim=1)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (same child names): conv-BN-ReLU-conv-BN + shortcut, ReLU after the add."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class GradualStyleBlock(nn.Module):
    """One style head: log2(size) x [3x3 stride-2 conv + LeakyReLU(0.01)], then an EqualLinear to a 512 code."""

    def __init__(self, in_channels: int, out_channels: int, spatial: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(channels, out_channels, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
            channels = out_channels
        self.convs = nn.Sequential(*layers)
        self.out_channels = out_channels
        self.linear = EqualLinear(out_channels, out_channels, lr_mul=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        # The published head flattens with view(-1, C); a map that is not 1x1 here would mix samples.
        if x.shape[-2:] != (1, 1):
            raise ValueError(f"style head expects a 1x1 map after its convs, got {tuple(x.shape[-2:])}; "
                             f"the encoder input must be at most {ENCODER_INPUT_SIZE}x{ENCODER_INPUT_SIZE}")
        return self.linear(x.flatten(1))


# ---------------------------------------------------------------------------------------------
# The encoder


class ReStyleEncoder(nn.Module):
    """ReStyle encoder: x [B, in_channels, S, S] (S <= 256) -> W+ residual codes [B, n_styles, 512].

    kind "e4e": code 0 is head 0, code i is head 0 + head i (each offset relative to code 0).
    kind "psp": code i is head i.
    The state dict equals the published one (`ProgressiveBackboneEncoder`, `BackboneEncoder`,
    `ResNetProgressiveBackboneEncoder`, `ResNetBackboneEncoder`), without the `encoder.` prefix.
    The returned codes exclude `latent_avg` / the previous codes: `restyle_invert` adds those.
    """

    def __init__(self, kind: str = "e4e", backbone: str = "ir_se50", n_styles: int = 16, in_channels: int = 6):
        super().__init__()
        if kind not in ENCODER_KINDS:
            raise ValueError(f"kind must be one of {ENCODER_KINDS}, got {kind!r}")
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        self.kind = kind
        self.backbone = backbone
        self.n_styles = n_styles
        self.in_channels = in_channels
        # What save_network / save_restyle_encoder record to rebuild this module.
        self.init_kwargs = {"kind": kind, "backbone": backbone, "n_styles": n_styles, "in_channels": in_channels}

        if backbone == "ir_se50":
            self.input_layer = nn.Sequential(
                nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False),
                nn.BatchNorm2d(64),
                nn.PReLU(64),
            )
            units = [
                IRSEUnit(cin if i == 0 else depth, depth, stride=2 if i == 0 else 1)
                for cin, depth, count in _IR_SE50_GROUPS
                for i in range(count)
            ]
        else:
            # torchvision's resnet34 stem with a 6-channel input and a PReLU (named `relu`), no max-pool.
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.PReLU(64)
            units = [
                BasicBlock(cin if i == 0 else cout, cout, stride=2 if (i == 0 and cin != cout) else 1)
                for cin, cout, count in _RESNET34_GROUPS
                for i in range(count)
            ]
        self.body = nn.Sequential(*units)
        self.styles = nn.ModuleList(GradualStyleBlock(512, 512, 16) for _ in range(n_styles))

    @property
    def encoder_type(self) -> str:
        """The published class name (the checkpoint's `opts["encoder_type"]`)."""
        return {v: k for k, v in ENCODER_TYPES.items()}[(self.kind, self.backbone)]

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        if self.backbone == "ir_se50":
            return self.input_layer(x)
        return self.relu(self.bn1(self.conv1(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map every head reads: [B, 512, S/16, S/16]."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"encoder expects [B, {self.in_channels}, H, W], got {list(x.shape)}")
        return self.body(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.features(x)
        heads = [style(feat) for style in self.styles]
        if self.kind == "psp":
            return torch.stack(heads, dim=1)
        base = heads[0]
        return torch.stack([base] + [base + offset for offset in heads[1:]], dim=1)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, backbone={self.backbone!r}, n_styles={self.n_styles}, in_channels={self.in_channels}"


def build_encoder_on_meta(kind: str = "e4e", backbone: str = "ir_se50", **kwargs) -> ReStyleEncoder:
    """An encoder with no storage yet (meta device): fill it with `load_state_dict(sd, assign=True)`.

    Avoids initialising ~186 M parameters that a checkpoint overwrites anyway.
    """
    with torch.device("meta"):
        return ReStyleEncoder(kind, backbone, **kwargs)


def reference_state_dict(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """Deterministic weights defined by each key's name and shape (rule v1 of the ReStyle goldens).

    Every tensor comes from a generator seeded with the CRC-32 of its key, so the result does not
    depend on key order. Used to check this implementation against the published one and to give
    benchmarks realistic, cheap-to-make weights. Works on a meta-device encoder.
    """
    result: dict[str, torch.Tensor] = {}
    for key, tensor in encoder.state_dict().items():
        owner_name, leaf = key.rsplit(".", 1) if "." in key else ("", key)
        owner = encoder.get_submodule(owner_name)
        shape = tuple(tensor.shape)
        gen = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
        if leaf == "num_batches_tracked":
            value = torch.zeros((), dtype=torch.int64)
        elif isinstance(owner, nn.BatchNorm2d) and leaf == "running_var":
            value = 0.5 + torch.rand(shape, generator=gen)
        elif isinstance(owner, nn.BatchNorm2d) and leaf == "weight":
            value = 1 + 0.1 * torch.randn(shape, generator=gen)
        elif isinstance(owner, nn.BatchNorm2d) and leaf in ("bias", "running_mean"):
            value = 0.1 * torch.randn(shape, generator=gen)
        elif isinstance(owner, nn.PReLU) and leaf == "weight":
            value = 0.25 + 0.05 * torch.randn(shape, generator=gen)
        elif isinstance(owner, EqualLinear) and leaf == "weight":
            value = torch.randn(shape, generator=gen)
        elif leaf == "weight" and len(shape) >= 2:
            # Multiplying by the double reciprocal (not dividing) is what makes the values bit-exact.
            value = torch.randn(shape, generator=gen) * (1.0 / math.sqrt(math.prod(shape[1:])))
        elif leaf == "bias" and len(shape) == 1:
            value = 0.1 * torch.randn(shape, generator=gen)
        else:
            raise ValueError(f"no reference rule for {key!r} ({type(owner).__name__}, shape {list(shape)})")
        result[key] = value
    return result


# ---------------------------------------------------------------------------------------------
# The iterative inversion loop


@dataclass
class RestyleOutput:
    """What one `restyle_invert` call produced for a batch (all on the generator's device, float32)."""

    codes: torch.Tensor  # [B, num_ws, 512] final accumulated W+ codes
    codes_per_iter: list[torch.Tensor] = field(default_factory=list)  # accumulated codes after each iteration
    # The image kept at each iteration, pooled to the encoder size: aligned renders for all but the
    # last iteration; the last is the unaligned render when synthesis_transforms was given.
    pooled_per_iter: list[torch.Tensor] = field(default_factory=list)
    # The same images at generator resolution (only with return_full_images=True).
    images_per_iter: list[torch.Tensor] = field(default_factory=list)


def _identity_transforms(batch: int, device: torch.device) -> torch.Tensor:
    return torch.eye(3, device=device).expand(batch, 3, 3).contiguous()


def _pool(images: torch.Tensor, size: int) -> torch.Tensor:
    # The published face pool: adaptive average pooling (an exact 4x4 mean for 1024 -> 256).
    return F.adaptive_avg_pool2d(images, (size, size))


def average_image(generator: nn.Module, latent_avg: torch.Tensor, size: int = ENCODER_INPUT_SIZE) -> torch.Tensor:
    """Render `latent_avg` repeated over all ws with the identity transform, pooled to size: [3, size, size].

    Compute it once per generator and pass it to every `restyle_invert` call.
    """
    device = latent_avg.device
    with torch.inference_mode():
        # A [512] latent_avg is repeated over every ws; a [num_ws, 512] one is used as it is.
        ws = latent_avg.float().reshape(1, -1, latent_avg.shape[-1]).expand(1, generator.num_ws, -1)
        image = generator.synthesis(ws, transform=_identity_transforms(1, device))
        return _pool(image.float(), size)[0]


def restyle_invert(
    encoder: nn.Module,
    generator: nn.Module,
    images: torch.Tensor,
    latent_avg: torch.Tensor,
    *,
    n_iters: int = 3,
    avg_image: torch.Tensor | None = None,
    synthesis_transforms: torch.Tensor | None = None,
    input_size: int = ENCODER_INPUT_SIZE,
    render_final: bool = True,
    return_full_images: bool = False,
) -> RestyleOutput:
    """Invert a batch of aligned images into W+ with the ReStyle iteration.

    images: [B, 3, H, W] in [-1, 1]; resized (antialiased) to input_size if H, W differ.
    latent_avg: [512] (or [num_ws, 512]) average latent the first iteration starts from.
    synthesis_transforms: optional [B, 3, 3] (or [3, 3]) matrices handed to `generator.synthesis` for
        the final, unaligned render: the INVERSE of the frame's make_transform matrix.
    avg_image: [3, S, S] from `average_image`; computed here when None (costly: pass it).
    render_final: render the last iteration's image (only needed for previews); the codes do not
        depend on it.

    Iteration 0 feeds [x, avg_image] and adds latent_avg to the encoder output; iteration k > 0
    feeds [x, pooled aligned render of iteration k-1] and adds the previous codes.
    """
    if n_iters < 1:
        raise ValueError(f"n_iters must be >= 1, got {n_iters}")
    if encoder.training:
        raise ValueError("restyle_invert needs encoder.eval(): batch statistics would make frames depend on each other")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {list(images.shape)}")
    batch = images.shape[0]
    device = latent_avg.device

    with torch.inference_mode():
        target = images.to(device=device, dtype=torch.float32)
        if target.shape[-2:] != (input_size, input_size):
            target = F.interpolate(target, size=(input_size, input_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        if avg_image is None:
            avg_image = average_image(generator, latent_avg, input_size)
        identity = _identity_transforms(batch, device)
        if synthesis_transforms is not None:
            synthesis_transforms = synthesis_transforms.to(device=device, dtype=torch.float32)
            synthesis_transforms = synthesis_transforms.expand(batch, 3, 3)

        out = RestyleOutput(codes=torch.empty(0))
        feedback = avg_image.to(device).expand(batch, *avg_image.shape)
        codes = None
        for it in range(n_iters):
            residual = encoder(torch.cat([target, feedback], dim=1))
            # latent_avg [512] broadcasts over every ws; a [num_ws, 512] one adds per entry.
            codes = residual + (latent_avg if codes is None else codes)
            out.codes_per_iter.append(codes)

            last = it == n_iters - 1
            if last and not render_final:
                break
            transform = synthesis_transforms if (last and synthesis_transforms is not None) else identity
            image = generator.synthesis(codes, transform=transform).float()
            pooled = _pool(image, input_size)
            out.pooled_per_iter.append(pooled)
            if return_full_images:
                out.images_per_iter.append(image)
            feedback = pooled  # only read when another iteration follows, i.e. an aligned render
        out.codes = codes
    return out
