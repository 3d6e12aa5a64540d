"""The StyleGAN2 discriminator that StyleGAN3 is trained with (resnet architecture).

Module, parameter and buffer names follow NVIDIA's `training.networks_stylegan2.Discriminator`, so
`Discriminator(**official_kwargs).load_state_dict(official_state, strict=True)` works:

    b{res}  DiscriminatorBlock for res = img_resolution, ..., 8:
            [fromrgb (first block)], conv0 (3x3), conv1 (3x3, down 2), skip (1x1, down 2, no bias)
    mapping label embedding + MLP (only when c_dim > 0)
    b4      DiscriminatorEpilogue: mbstd -> conv (3x3) -> fc -> out

Weights are stored unscaled and multiplied by 1/sqrt(fan_in) at run time (equalised learning rate).
On CUDA the blocks of the `num_fp16_res` highest resolutions run in float16 unless `force_fp32`;
elsewhere everything runs in float32.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch

from videdit.ops import bias_act, conv2d_resample, setup_filter

__all__ = [
    "Discriminator",
    "DiscriminatorBlock",
    "DiscriminatorEpilogue",
    "MinibatchStdLayer",
    "Conv2dLayer",
    "FullyConnectedLayer",
    "LabelMapping",
]

_DEFAULT_GAIN = {"linear": 1.0, "lrelu": math.sqrt(2.0), "relu": math.sqrt(2.0)}


def _register_weight(module: torch.nn.Module, name: str, value: torch.Tensor | None, trainable: bool) -> None:
    # Frozen layers (Freeze-D) keep their weights as buffers: same state-dict names, no gradients.
    if value is None:
        setattr(module, name, None)
    elif trainable:
        setattr(module, name, torch.nn.Parameter(value))
    else:
        module.register_buffer(name, value)


class FullyConnectedLayer(torch.nn.Module):
    """y = act(x @ (weight * lr_mult / sqrt(in)).T + bias * lr_mult)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
        trainable: bool = True,
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        weight = torch.randn([out_features, in_features]) / lr_multiplier
        bias_value = torch.full([out_features], float(bias_init)) if bias else None
        _register_weight(self, "weight", weight, trainable)
        _register_weight(self, "bias", bias_value, trainable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(torch.nn.Module):
    """Equalised-lr convolution with optional FIR up/downsampling, bias, activation and clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter: Any = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        channels_last: bool = False,
        trainable: bool = True,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = _DEFAULT_GAIN.get(activation, 1.0)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        _register_weight(self, "weight", weight, trainable)
        _register_weight(self, "bias", torch.zeros([out_channels]) if bias else None, trainable)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        x = conv2d_resample(
            x, w, f=self.resample_filter, up=self.up, down=self.down, padding=self.padding, flip_weight=(self.up == 1)
        )
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, activation={self.activation}, "
            f"up={self.up}, down={self.down}"
        )


class LabelMapping(torch.nn.Module):
    """Maps a conditioning label c to the projection vector `cmap` of conditional discriminators.

    The official class is the StyleGAN2 MappingNetwork built with z_dim=0, num_ws=None and no w_avg:
    embed (c -> embed_features), 2nd-moment normalisation, then `num_layers` lrelu FC layers fc0, fc1, ...
    """

    def __init__(
        self,
        c_dim: int,
        w_dim: int,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        freeze_layers: int = 0,
        freeze_embed: bool = False,
    ):
        super().__init__()
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_layers = num_layers
        embed_features = w_dim if embed_features is None else embed_features
        layer_features = w_dim if layer_features is None else layer_features
        features = [embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        self.embed = FullyConnectedLayer(c_dim, embed_features, trainable=not freeze_embed)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier,
                trainable=idx >= freeze_layers,
            )
            setattr(self, f"fc{idx}", layer)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        x = self.embed(c.to(torch.float32))
        x = x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        return x


class DiscriminatorBlock(torch.nn.Module):
    """One resolution of the discriminator: (fromrgb) -> conv0 -> conv1 (down 2), plus a 1x1 skip."""

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        first_layer_idx: int,
        architecture: str = "resnet",
        activation: str = "lrelu",
        resample_filter: Any = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        freeze_layers: int = 0,
    ):
        if in_channels not in (0, tmp_channels):
            raise ValueError(f"in_channels must be 0 (first block) or tmp_channels, got {in_channels}")
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"unknown discriminator architecture {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer("resample_filter", setup_filter(resample_filter))

        # Layers are numbered across the whole network; the first `freeze_layers` are frozen.
        self.num_layers = 0

        def next_trainable() -> bool:
            trainable = self.first_layer_idx + self.num_layers >= freeze_layers
            self.num_layers += 1
            return trainable

        common = dict(activation=activation, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, trainable=next_trainable(), **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, trainable=next_trainable(), **common)
        self.conv1 = Conv2dLayer(
            tmp_channels, out_channels, kernel_size=3, down=2, resample_filter=resample_filter,
            trainable=next_trainable(), **common,
        )
        if architecture == "resnet":
            self.skip = Conv2dLayer(
                tmp_channels, out_channels, kernel_size=1, bias=False, down=2, resample_filter=resample_filter,
                trainable=next_trainable(), channels_last=self.channels_last,
            )

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, force_fp32: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = (x if x is not None else img).device
        half = self.use_fp16 and not force_fp32 and device.type == "cuda"
        dtype = torch.float16 if half else torch.float32
        memory_format = torch.channels_last if self.channels_last and half else torch.contiguous_format

        if x is not None:
            _check_shape(x, self.in_channels, self.resolution, "block input")
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0 or self.architecture == "skip":
            _check_shape(img, self.img_channels, self.resolution, "image")
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            # The skip architecture feeds a downsampled image to the next block.
            img = _downsample2x(img, self.resample_filter) if self.architecture == "skip" else None

        if self.architecture == "resnet":
            # Both branches are scaled by sqrt(1/2) so their sum keeps unit variance.
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=math.sqrt(0.5))
            x = y + x
        else:
            x = self.conv1(self.conv0(x))
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}"


def _downsample2x(img: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    from videdit.ops import upfirdn2d

    taps = f.shape[-1]
    pad = [(taps - 2 + 1) // 2, (taps - 2) // 2] * 2
    return upfirdn2d(img, f, down=2, padding=pad)


def _check_shape(x: torch.Tensor | None, channels: int, resolution: int, what: str) -> None:
    if x is None or x.ndim != 4 or tuple(x.shape[1:]) != (channels, resolution, resolution):
        got = None if x is None else list(x.shape)
        raise ValueError(f"discriminator {what}: expected [N, {channels}, {resolution}, {resolution}], got {got}")


class MinibatchStdLayer(torch.nn.Module):
    """Appends the standard deviation over groups of `group_size` samples as `num_channels` extra maps.

    Sample i belongs to group i % (N / G) (the batch is reshaped as [G, N/G, ...]), so N must be a
    multiple of min(group_size, N).
    """

    def __init__(self, group_size: int | None, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = n if self.group_size is None else min(self.group_size, n)
        f = self.num_channels
        if n % g:
            raise ValueError(f"minibatch-std: batch {n} is not a multiple of the group size {g}")
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)  # variance over each group
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [n/g, F]: std averaged over channels and pixels
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(torch.nn.Module):
    """The 4x4 end of the discriminator: minibatch std -> 3x3 conv -> fc -> out (-> label projection)."""

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        activation: str = "lrelu",
        conv_clamp: float | None = None,
    ):
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"unknown discriminator architecture {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp
        )
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, img: torch.Tensor | None, cmap: torch.Tensor | None) -> torch.Tensor:
        _check_shape(x, self.in_channels, self.resolution, "epilogue input")
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == "skip":
            _check_shape(img, self.img_channels, self.resolution, "image")
            x = x + self.fromrgb(img.to(dtype=torch.float32, memory_format=torch.contiguous_format))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            # Projection discriminator: score = <out, cmap> / sqrt(cmap_dim).
            x = (x * cmap).sum(dim=1, keepdim=True) * (1.0 / math.sqrt(self.cmap_dim))
        return x

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}"


class Discriminator(torch.nn.Module):
    """StyleGAN2 discriminator. `D(img, c)` returns logits [N, 1] (real > fake).

    img: float32 [N, img_channels, img_resolution, img_resolution] in [-1, 1]; c: [N, c_dim] labels
    (ignored when c_dim == 0). The constructor kwargs are NVIDIA's and are kept in `init_kwargs`.
    """

    def __init__(
        self,
        c_dim: int,
        img_resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 4,
        conv_clamp: float | None = 256,
        cmap_dim: int | None = None,
        block_kwargs: dict | None = None,
        mapping_kwargs: dict | None = None,
        epilogue_kwargs: dict | None = None,
    ):
        super().__init__()
        self.init_kwargs = copy.deepcopy(
            dict(
                c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels, architecture=architecture,
                channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp,
                cmap_dim=cmap_dim, block_kwargs=dict(block_kwargs or {}), mapping_kwargs=dict(mapping_kwargs or {}),
                epilogue_kwargs=dict(epilogue_kwargs or {}),
            )
        )
        log2 = int(math.log2(img_resolution))
        if 2**log2 != img_resolution or img_resolution < 8:
            raise ValueError(f"img_resolution must be a power of two >= 8, got {img_resolution}")
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = log2
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0

        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                channels[res] if res < img_resolution else 0, channels[res], channels[res // 2], resolution=res,
                first_layer_idx=layer_idx, use_fp16=res >= fp16_resolution, **(block_kwargs or {}), **common,
            )
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = LabelMapping(c_dim=c_dim, w_dim=cmap_dim, **(mapping_kwargs or {}))
        self.b4 = DiscriminatorEpilogue(
            channels[4], cmap_dim=cmap_dim, resolution=4, **(epilogue_kwargs or {}), **common
        )

    def forward(
        self, img: torch.Tensor, c: torch.Tensor | None = None, update_emas: bool = False, **block_kwargs
    ) -> torch.Tensor:
        del update_emas  # accepted for call compatibility with the official training loop
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, **block_kwargs)
        cmap = None
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f"this discriminator is conditional: pass labels c of shape [N, {self.c_dim}]")
            cmap = self.mapping(c)
        return self.b4(x, img, cmap)

    def extra_repr(self) -> str:
        return f"c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}"
