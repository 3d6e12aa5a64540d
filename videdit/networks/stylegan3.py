"""StyleGAN3 generator (alias-free GAN), state-dict compatible with NVIDIA's official networks.

Module, parameter and buffer names and shapes are the official ones, so
`Generator(**official_kwargs).load_state_dict(official_state_dict, strict=True)` works. The maths
(layer design, Fourier-feature input, modulated conv + filtered leaky ReLU, magnitude EMAs) follows
the published method; the implementation is our own and runs on videdit.ops.

Differences from the official API, all additive:
* `synthesis(ws, transform=...)` takes the inverse image transform as an argument ([3,3] or [B,3,3]);
  the `transform` buffer is only the default and is never written by a forward pass.
* `impl="fast" | "ref"` picks the op implementation (same results).
* `force_fp32` is honoured as in the official code (on CUDA, layers marked `use_fp16` run in float16
  with their conv_clamp unless it is True), but its default is the synthesis network's `force_fp32`
  attribute, True unless set (float32, as the published video code calls it); an explicit keyword wins.
* `synthesis.compiled_render`: None (eager), or the layers' loop compiled by torch.compile (set by
  videdit.models.apply_compile); a compilation that fails gives one warning and the loop runs eagerly.
* StyleSpace as stylegan3-editing defines it: `synthesis.w_to_s(ws)` (its W2S) and `synthesis(None, styles=S)`
  (its `forward(ws, all_s=S)`).
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn as nn

from videdit.ops import bias_act, filtered_lrelu, modulated_conv2d
from videdit.ops.filters import design_lowpass_filter
from videdit.stylespace import check_styles

__all__ = [
    "FullyConnectedLayer", "MappingNetwork", "SynthesisInput", "SynthesisLayer", "SynthesisNetwork",
    "Generator", "make_transform", "tiny_generator_kwargs", "r_config_kwargs", "t_config_kwargs",
    "layer_design",
]

log = logging.getLogger(__name__)


def make_transform(translate=(0.0, 0.0), angle_deg=0.0):
    """Image transform [[cos, sin, tx], [-sin, cos, ty], [0, 0, 1]] (float64), as in the official code.

    translate: (tx, ty) in image widths, or [..., 2]; angle_deg: scalar or [...]. Batched inputs give
    [..., 3, 3]. Torch inputs give a torch float64 tensor, anything else numpy. The synthesis network
    takes the INVERSE of this matrix.
    """
    if isinstance(translate, torch.Tensor) or isinstance(angle_deg, torch.Tensor):
        t = torch.as_tensor(translate, dtype=torch.float64)
        a = torch.as_tensor(angle_deg, dtype=torch.float64)
        batch = torch.broadcast_shapes(t.shape[:-1], a.shape)
        t = t.expand(*batch, 2)
        a = torch.deg2rad(a.expand(batch))
        c, s = torch.cos(a), torch.sin(a)
        zero, one = torch.zeros_like(c), torch.ones_like(c)
        rows = [torch.stack([c, s, t[..., 0]], -1), torch.stack([-s, c, t[..., 1]], -1),
                torch.stack([zero, zero, one], -1)]
        return torch.stack(rows, -2)
    t = np.asarray(translate, dtype=np.float64)
    a = np.asarray(angle_deg, dtype=np.float64)
    batch = np.broadcast_shapes(t.shape[:-1], a.shape)
    t = np.broadcast_to(t, (*batch, 2))
    a = np.deg2rad(np.broadcast_to(a, batch))
    m = np.zeros((*batch, 3, 3), dtype=np.float64)
    m[..., 0, 0] = np.cos(a)
    m[..., 0, 1] = np.sin(a)
    m[..., 0, 2] = t[..., 0]
    m[..., 1, 0] = -np.sin(a)
    m[..., 1, 1] = np.cos(a)
    m[..., 1, 2] = t[..., 1]
    m[..., 2, 2] = 1
    return m


def normalize_2nd_moment(x, dim=1, eps=1e-8):
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalised learning rate: stored weights are scaled at run time."""

    def __init__(self, in_features, out_features, activation="linear", bias=True, lr_multiplier=1.0,
                 weight_init=1.0, bias_init=0.0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) * (weight_init / lr_multiplier))
        if bias:
            init = np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [out_features])
            self.bias = nn.Parameter(torch.from_numpy(init / lr_multiplier))
        else:
            self.bias = None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x, impl="fast"):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act(x, b, act=self.activation, impl=impl)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class MappingNetwork(nn.Module):
    """z (+ c) -> w, broadcast to num_ws; keeps the running average w_avg for truncation."""

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=2, lr_multiplier=0.01, w_avg_beta=0.998):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        self.embed = FullyConnectedLayer(c_dim, w_dim) if c_dim > 0 else None
        features = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * num_layers
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu",
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False, impl="fast"):
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [N, {self.z_dim}], got {tuple(z.shape)}")
        x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None or c.shape != (z.shape[0], self.c_dim):
                raise ValueError(f"c must be [N, {self.c_dim}] for a conditional generator")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32), impl=impl))
            x = torch.cat([x, y], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x, impl=impl)
        if update_emas:
            # new = mean + beta * (old - mean), written before the truncation below uses it.
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            x[:, :cutoff] = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
        return x

    def extra_repr(self):
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


class SynthesisInput(nn.Module):
    """Fourier features at fixed random frequencies, rotated/translated by ws[0] and the transform."""

    def __init__(self, w_dim, channels, size, sampling_rate, bandwidth):
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = np.broadcast_to(np.asarray(size), [2])
        self.sampling_rate = sampling_rate
        self.bandwidth = bandwidth
        # Frequencies drawn uniformly-ish from a disc of radius `bandwidth`, random phases.
        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs /= radii * radii.square().exp().pow(0.25)
        freqs *= bandwidth
        phases = torch.rand([channels]) - 0.5
        self.weight = nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3, 3))  # inverse image transform (default)
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)

    def _pixel_coords(self, device):
        """[H, W, 2] (x, y) pixel-centre coordinates in image widths, centred on the image."""
        w, h = int(self.size[0]), int(self.size[1])
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5 - w / 2) / self.sampling_rate
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5 - h / 2) / self.sampling_rate
        return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)

    def style(self, w, impl="fast"):
        """The learned (r_c, r_s, t_x, t_y) of w [N, w_dim], normalised by |(r_c, r_s)|: StyleSpace's `input`."""
        t = self.affine(w, impl=impl)
        return t / t[:, :2].norm(dim=1, keepdim=True)

    def forward(self, w, transform=None, impl="fast", t=None):
        """w [N, w_dim] -> features; or t [N, 4] (a given `style`, used as is, not renormalised) with w None."""
        if t is None:
            t = self.style(w, impl=impl)
        n = t.shape[0]
        device = t.device
        if transform is None:
            transform = self.transform
        transform = transform.to(device=device, dtype=torch.float32)
        if transform.ndim == 2:
            transform = transform.unsqueeze(0)
        if transform.ndim != 3 or transform.shape[1:] != (3, 3) or transform.shape[0] not in (1, n):
            raise ValueError(f"transform must be [3, 3] or [{n}, 3, 3], got {tuple(transform.shape)}")
        transform = transform.expand(n, 3, 3)

        # Learned rotation (r_c, r_s) and translation (t_x, t_y).
        zero, one = torch.zeros_like(t[:, 0]), torch.ones_like(t[:, 0])
        rotation = torch.stack([torch.stack([t[:, 0], -t[:, 1], zero], 1),
                                torch.stack([t[:, 1], t[:, 0], zero], 1),
                                torch.stack([zero, zero, one], 1)], 1)
        translation = torch.stack([torch.stack([one, zero, -t[:, 2]], 1),
                                   torch.stack([zero, one, -t[:, 3]], 1),
                                   torch.stack([zero, zero, one], 1)], 1)
        m = rotation @ translation @ transform  # rotate, then translate, then the user's transform

        freqs = self.freqs.unsqueeze(0)  # [1, C, 2]
        phases = self.phases.unsqueeze(0) + (freqs @ m[:, :2, 2:]).squeeze(2)  # [N, C]
        freqs = freqs @ m[:, :2, :2]  # [N, C, 2]
        # Fade out frequencies the transform pushed past the band limit.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth)
                      / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)

        coords = self._pixel_coords(device)  # [H, W, 2]
        x = coords.unsqueeze(0) @ freqs.transpose(1, 2).unsqueeze(1)  # [N, H, W, C]
        x = x + phases[:, None, None, :]
        x = torch.sin(x * (2 * np.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / np.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)

    def extra_repr(self):
        return (f"w_dim={self.w_dim}, channels={self.channels}, size={list(self.size)}, "
                f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}")


class SynthesisLayer(nn.Module):
    """Modulated conv, then bias + filtered leaky ReLU between two sampling rates (or ToRGB)."""

    def __init__(self, w_dim, is_torgb, is_critically_sampled, use_fp16, in_channels, out_channels, in_size,
                 out_size, in_sampling_rate, out_sampling_rate, in_cutoff, out_cutoff, in_half_width,
                 out_half_width, conv_kernel=3, filter_size=6, lrelu_upsampling=2, use_radial_filters=False,
                 conv_clamp=256, magnitude_ema_beta=0.999):
        super().__init__()
        self.w_dim = w_dim
        self.is_torgb = is_torgb
        self.is_critically_sampled = is_critically_sampled
        self.use_fp16 = use_fp16  # one of the num_fp16_res highest-resolution layers: float16 on CUDA unless force_fp32
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size = np.broadcast_to(np.asarray(in_size), [2])
        self.out_size = np.broadcast_to(np.asarray(out_size), [2])
        self.in_sampling_rate = in_sampling_rate
        self.out_sampling_rate = out_sampling_rate
        self.tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.in_cutoff = in_cutoff
        self.out_cutoff = out_cutoff
        self.in_half_width = in_half_width
        self.out_half_width = out_half_width
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))

        self.up_factor = int(np.rint(self.tmp_sampling_rate / in_sampling_rate))
        if in_sampling_rate * self.up_factor != self.tmp_sampling_rate:
            raise ValueError("sampling rates must be integer multiples of each other")
        self.up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        self.register_buffer("up_filter", design_lowpass_filter(
            numtaps=self.up_taps, cutoff=in_cutoff, width=in_half_width * 2, fs=self.tmp_sampling_rate))

        self.down_factor = int(np.rint(self.tmp_sampling_rate / out_sampling_rate))
        if out_sampling_rate * self.down_factor != self.tmp_sampling_rate:
            raise ValueError("sampling rates must be integer multiples of each other")
        self.down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.down_radial = use_radial_filters and not is_critically_sampled
        self.register_buffer("down_filter", design_lowpass_filter(
            numtaps=self.down_taps, cutoff=out_cutoff, width=out_half_width * 2, fs=self.tmp_sampling_rate,
            radial=self.down_radial))

        # Padding so the output lands on the desired grid; floor division centres the sample
        # locations the way the method's symmetric interpretation requires.
        pad_total = (self.out_size - 1) * self.down_factor + 1
        pad_total -= (self.in_size + self.conv_kernel - 1) * self.up_factor
        pad_total += self.up_taps + self.down_taps - 2
        pad_lo = (pad_total + self.up_factor) // 2
        pad_hi = pad_total - pad_lo
        self.padding = [int(pad_lo[0]), int(pad_hi[0]), int(pad_lo[1]), int(pad_hi[1])]

    def style(self, w, impl="fast"):
        """The styles of w [N, w_dim] -> [N, in_channels]; ToRGB's include its weight gain (as StyleSpace has them)."""
        styles = self.affine(w, impl=impl)
        if self.is_torgb:
            styles = styles * (1 / np.sqrt(self.in_channels * self.conv_kernel ** 2))
        return styles

    def runs_half(self, device, force_fp32=True) -> bool:
        """Whether this layer runs in float16 on `device`: NVIDIA's rule (a use_fp16 layer, not forced to fp32, on CUDA)."""
        return self.use_fp16 and not force_fp32 and torch.device(device).type == "cuda"

    def forward(self, x, w, noise_mode="const", force_fp32=True, update_emas=False, impl="fast", styles=None):
        """x [N, in_channels, in_size, in_size], w [N, w_dim] -> [N, out_channels, out_size, out_size].

        styles: [N, in_channels] used instead of `style(w)` (w may then be None).
        force_fp32=False runs a use_fp16 layer in float16 on CUDA (output float16); noise_mode changes
        nothing (no noise).
        """
        dtype = torch.float16 if self.runs_half(x.device, force_fp32) else torch.float32
        if update_emas:
            magnitude = x.detach().to(torch.float32).square().mean()
            self.magnitude_ema.copy_(magnitude.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        input_gain = self.magnitude_ema.rsqrt()
        if styles is None:
            styles = self.style(w, impl=impl)
        # The weights are modulated in float32 and only then cast to x's dtype (inside the op).
        x = modulated_conv2d(x.to(dtype), self.weight, styles, padding=self.conv_kernel - 1,
                             demodulate=not self.is_torgb, input_gain=input_gain, impl=impl)
        gain = 1 if self.is_torgb else np.sqrt(2)
        slope = 1 if self.is_torgb else 0.2
        # conv_clamp keeps float16 activations far from its overflow (it also applies in float32, as NVIDIA's).
        return filtered_lrelu(x, fu=self.up_filter, fd=self.down_filter, b=self.bias.to(x.dtype),
                              up=self.up_factor, down=self.down_factor, padding=self.padding, gain=gain,
                              slope=slope, clamp=self.conv_clamp, impl=impl)

    def extra_repr(self):
        return (f"w_dim={self.w_dim}, is_torgb={self.is_torgb}, is_critically_sampled={self.is_critically_sampled}, "
                f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"in_size={list(self.in_size)}, out_size={list(self.out_size)}, "
                f"up={self.up_factor}, down={self.down_factor}, padding={self.padding}")


def layer_design(img_resolution, channel_base=32768, channel_max=512, num_layers=14, num_critical=2,
                 first_cutoff=2, first_stopband=2 ** 2.1, last_stopband_rel=2 ** 0.3, margin_size=10,
                 img_channels=3):
    """Per-layer cutoffs, stopbands, sampling rates, half-widths, sizes and channels (numpy arrays)."""
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    return dict(cutoffs=cutoffs, stopbands=stopbands, sampling_rates=sampling_rates, half_widths=half_widths,
                sizes=sizes, channels=channels)


class SynthesisNetwork(nn.Module):
    """Input layer, num_layers synthesis layers and a ToRGB layer; ws [N, num_ws, w_dim] -> image."""

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_layers=14,
                 num_critical=2, first_cutoff=2, first_stopband=2 ** 2.1, last_stopband_rel=2 ** 0.3,
                 margin_size=10, output_scale=0.25, num_fp16_res=4, **layer_kwargs):
        super().__init__()
        self.w_dim = w_dim
        self.num_ws = num_layers + 2
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_layers = num_layers
        self.num_critical = num_critical
        self.margin_size = margin_size
        self.output_scale = output_scale
        self.num_fp16_res = num_fp16_res
        # The default of forward's force_fp32 (not a constructor argument, so checkpoints are unchanged):
        # True runs every layer float32; the pipeline sets it once per run from its precision setting.
        self.force_fp32 = True
        # torch.compile of `render_layers` (called as compiled_render(self, ...), so a deep copy shares it
        # correctly), or None: eager. Not state either; videdit.models.apply_compile sets it per run.
        self.compiled_render = None

        d = layer_design(img_resolution, channel_base, channel_max, num_layers, num_critical, first_cutoff,
                         first_stopband, last_stopband_rel, margin_size, img_channels)
        rates, cutoffs, half_widths = d["sampling_rates"], d["cutoffs"], d["half_widths"]
        sizes, channels = d["sizes"], d["channels"]
        self.input = SynthesisInput(w_dim=w_dim, channels=int(channels[0]), size=int(sizes[0]),
                                    sampling_rate=rates[0], bandwidth=cutoffs[0])
        self.layer_names = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(
                w_dim=w_dim, is_torgb=idx == num_layers, is_critically_sampled=idx >= num_layers - num_critical,
                use_fp16=bool(rates[idx] * 2 ** num_fp16_res > img_resolution),
                in_channels=int(channels[prev]), out_channels=int(channels[idx]),
                in_size=int(sizes[prev]), out_size=int(sizes[idx]),
                in_sampling_rate=int(rates[prev]), out_sampling_rate=int(rates[idx]),
                in_cutoff=cutoffs[prev], out_cutoff=cutoffs[idx],
                in_half_width=half_widths[prev], out_half_width=half_widths[idx], **layer_kwargs)
            name = f"L{idx}_{layer.out_size[0]}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def _check_ws(self, ws):
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        return ws.to(torch.float32).unbind(dim=1)

    def style_widths(self):
        """StyleSpace layout: key -> channel count, `input` (4) first, then the layers in order."""
        return {"input": 4, **{name: getattr(self, name).in_channels for name in self.layer_names}}

    @staticmethod
    def _sample_by_sample(batch: torch.Tensor, update_emas=False) -> bool:
        """Whether a batch runs one sample at a time: inference on a CPU (see forward)."""
        return batch.shape[0] > 1 and batch.device.type == "cpu" and not torch.is_grad_enabled() and not update_emas

    def w_to_s(self, ws, impl="fast", per_sample=None):
        """ws [N, num_ws, w_dim] -> StyleSpace dict (key order of `style_widths`), as the published W2S.

        per_sample: compute each sample's styles alone (None: when forward renders sample by sample, i.e. CPU
        inference). A matrix product rounds a row differently with the number of rows (BLAS picks kernels by
        shape), so this keeps a frame's styles, and its render, the same bits whatever batch it is in. Statistics
        over many samples pass False (a row at a time is many times slower than one matrix product).
        """
        per_layer = self._check_ws(ws)
        if per_sample or (per_sample is None and self._sample_by_sample(ws)):
            rows = [self.w_to_s(ws[i:i + 1], impl=impl, per_sample=False) for i in range(ws.shape[0])]
            return {key: torch.cat([row[key] for row in rows]) for key in rows[0]}
        styles = {"input": self.input.style(per_layer[0], impl=impl)}
        for name, w in zip(self.layer_names, per_layer[1:]):
            styles[name] = getattr(self, name).style(w, impl=impl)
        return styles

    def half_layers(self, device="cuda", force_fp32=None) -> list[str]:
        """Names of the layers that run float16 on `device` with this force_fp32 (None: the attribute)."""
        force_fp32 = self.force_fp32 if force_fp32 is None else bool(force_fp32)
        return [name for name in self.layer_names if getattr(self, name).runs_half(device, force_fp32)]

    def forward(self, ws, transform=None, update_emas=False, impl="fast", styles=None, force_fp32=None,
                **ignored):
        """ws [N, num_ws, w_dim] -> images [N, C, res, res] float32 (about [-1, 1]); or ws None and StyleSpace `styles`.

        transform: the inverse image transform, [3, 3] or [N, 3, 3] (None = the `transform` buffer).
        styles: a `w_to_s` dict (possibly edited), used as is in place of ws. ws is rendered as its `w_to_s`,
        so `synthesis(ws)` and `synthesis(None, styles=synthesis.w_to_s(ws))` give the same bits.
        force_fp32: as the official keyword (False: the use_fp16 layers run float16 on CUDA); None = the
        `force_fp32` attribute. noise_mode, the other official keyword, is accepted and ignored (no noise).
        """
        force_fp32 = self.force_fp32 if force_fp32 is None else bool(force_fp32)
        if ws is not None:
            if styles is not None:
                raise ValueError("pass ws or styles, not both")
            # One rendering path: ws is rendered as its StyleSpace, computed exactly as `w_to_s` computes it, so a
            # render from ws and one from w_to_s(ws) are the same operations on the same values, bit for bit.
            styles = self.w_to_s(ws, impl=impl)
        check_styles(styles, self.style_widths())
        count = styles["input"].shape[0]
        if self._sample_by_sample(styles["input"], update_emas):
            # Inference on a CPU: sample by sample. A batch at once costs more per image there (the input
            # and output scaling of the batched modulated conv, larger working sets), measured 5-13 % at 256 px.
            def one(i):
                t = transform[i:i + 1] if isinstance(transform, torch.Tensor) and transform.ndim == 3 else transform
                return self.forward(None, transform=t, impl=impl, force_fp32=force_fp32,
                                    styles={key: value[i:i + 1] for key, value in styles.items()})

            return torch.cat([one(i) for i in range(count)])
        if self.compiled_render is not None:
            try:
                return self.compiled_render(self, styles, transform, impl, force_fp32, update_emas)
            except Exception as exc:  # a backend that cannot build here (no compiler, unsupported op): eager
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                log.warning(f"torch.compile failed ({type(exc).__name__}: {first}); the synthesis runs eagerly")
                self.compiled_render = None
        return self.render_layers(styles, transform, impl, force_fp32, update_emas)

    def render_layers(self, styles, transform, impl, force_fp32, update_emas):
        """The layers of one forward pass on checked StyleSpace `styles` (what torch.compile compiles)."""
        styles = {key: value.to(torch.float32) for key, value in styles.items()}
        x = self.input(None, transform=transform, impl=impl, t=styles["input"])
        for name in self.layer_names:
            x = getattr(self, name)(x, None, force_fp32=force_fp32, update_emas=update_emas, impl=impl,
                                    styles=styles[name])
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32)

    def extra_repr(self):
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}, num_layers={self.num_layers}")


class Generator(nn.Module):
    """Mapping + synthesis. `init_kwargs` holds the constructor arguments (for saving)."""

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs=None, **synthesis_kwargs):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        self.init_kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                img_channels=img_channels, mapping_kwargs=dict(mapping_kwargs),
                                **synthesis_kwargs)
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False, transform=None,
                impl="fast", **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas, impl=impl)
        return self.synthesis(ws, transform=transform, update_emas=update_emas, impl=impl, **synthesis_kwargs)


def t_config_kwargs(img_resolution=1024, **overrides):
    """Official StyleGAN3-T generator kwargs (channel_base 32768, channel_max 512)."""
    kwargs = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=img_resolution, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), channel_base=32768, channel_max=512,
                  magnitude_ema_beta=0.5 ** (32 / 20000))
    kwargs.update(overrides)
    return kwargs


def r_config_kwargs(img_resolution=1024, **overrides):
    """Official StyleGAN3-R generator kwargs (as in sg3-r-ffhq-1024: 65536 / 1024, 1x1 convs, radial filters)."""
    kwargs = t_config_kwargs(img_resolution, channel_base=65536, channel_max=1024, conv_kernel=1,
                             use_radial_filters=True)
    kwargs.update(overrides)
    return kwargs


def tiny_generator_kwargs(resolution=32, channels=16, w_dim=512, z_dim=None, radial=False, **overrides):
    """Kwargs of a small generator for tests: num_ws 16 (14 layers), real w_dim 512 by default.

    Channels are capped at `channels` (the official formula rint(min(channel_base/2/cutoff, max)) still
    applies, so the last layers get fewer), one mapping layer. At resolution 32 with the defaults this
    is about 0.4 M parameters, mostly the affine layers reading w.
    """
    kwargs = dict(z_dim=w_dim if z_dim is None else z_dim, c_dim=0, w_dim=w_dim, img_resolution=resolution,
                  img_channels=3, mapping_kwargs=dict(num_layers=1), channel_base=channels * resolution // 2,
                  channel_max=channels, magnitude_ema_beta=0.5 ** (32 / 20000))
    if radial:
        kwargs.update(conv_kernel=1, use_radial_filters=True)
    kwargs.update(overrides)
    return kwargs
