"""Native ops vs the PyTorch path: `python -m benchmarks native [options]`.

Per layer of the R-1024 / T-1024 generators (real filters, factors, padding and image sizes; the
channel count capped by --channels): time of the PyTorch filtered_lrelu (the baseline) and of the
fused C++ CPU kernel, forward (and with --backward, forward + backward), their ratio and peak
memory, and the largest difference between the two. With --synthesis, the whole synthesis forward
of a randomly initialised generator with every filtered_lrelu on the PyTorch path, then on the fused
kernel. On a machine with a GPU the CUDA kernels are timed the same way against the PyTorch path on
the GPU (and checked against it).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import from the repository root instead
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import math
import os
import time

from benchmarks.common import RSSPoller, best_time, set_threads, sync


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks native", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=["r", "t", "both"], default="both")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--channels", type=int, default=8, help="channels per layer, capped (default 8)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case; the best is reported")
    parser.add_argument("--layers", default="", help="comma-separated layer indices (default: all 15)")
    parser.add_argument("--backward", action="store_true", help="also time forward + backward")
    parser.add_argument("--synthesis", action="store_true", help="also time the whole synthesis forward")
    parser.add_argument("--synthesis-resolution", type=int, default=None,
                        help="resolution of the synthesis run (default: --resolution)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--device", choices=["cpu", "cuda", "both"], default="cpu")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: process CPU time (all threads summed), robust on a machine shared with other "
                             "jobs; use with --threads 1 to compare single-thread cost (CPU device only)")
    return parser.parse_args(argv)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _peak_memory(fn, device, torch) -> str:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return f"{(torch.cuda.max_memory_allocated() - base) / 2**20:.1f}"
    with RSSPoller(interval_s=0.001) as meter:
        fn()
    return "n/a" if math.isnan(meter.increase_mb) else f"{max(meter.increase_mb, 0):.1f}"


def _layer_cases(args):
    from videdit.networks.stylegan3 import SynthesisLayer, layer_design

    configs = {"r": dict(channel_base=65536, channel_max=1024, conv_kernel=1, use_radial_filters=True),
               "t": dict(channel_base=32768, channel_max=512, conv_kernel=3, use_radial_filters=False)}
    picked = [int(i) for i in args.layers.split(",") if i.strip()] if args.layers else list(range(15))
    for name in (["r", "t"] if args.config == "both" else [args.config]):
        cfg = configs[name]
        d = layer_design(args.resolution, cfg["channel_base"], cfg["channel_max"])
        rates, cutoffs, half_widths, sizes = d["sampling_rates"], d["cutoffs"], d["half_widths"], d["sizes"]
        for idx in picked:
            prev = max(idx - 1, 0)
            # Only the filter and padding design of the layer is used; its weights are tiny (1 channel).
            layer = SynthesisLayer(
                w_dim=8, is_torgb=idx == 14, is_critically_sampled=idx >= 12, use_fp16=False, in_channels=1,
                out_channels=1, in_size=int(sizes[prev]), out_size=int(sizes[idx]),
                in_sampling_rate=int(rates[prev]), out_sampling_rate=int(rates[idx]), in_cutoff=cutoffs[prev],
                out_cutoff=cutoffs[idx], in_half_width=half_widths[prev], out_half_width=half_widths[idx],
                conv_kernel=cfg["conv_kernel"], use_radial_filters=cfg["use_radial_filters"])
            channels = min(args.channels, int(d["channels"][idx]))
            size = int(sizes[prev]) + layer.conv_kernel - 1
            kwargs = dict(fu=layer.up_filter, fd=layer.down_filter, up=layer.up_factor, down=layer.down_factor,
                          padding=layer.padding, gain=1 if layer.is_torgb else math.sqrt(2),
                          slope=1 if layer.is_torgb else 0.2, clamp=layer.conv_clamp)
            yield f"{name.upper()}-L{idx}", [args.batch, channels, size, size], kwargs


def _time_layers(args, torch, device: str) -> list[tuple[str, float]]:
    from videdit.ops import backend, kernels
    import videdit.ops as ops

    native_fn = kernels.filtered_lrelu_cpu if device == "cpu" else kernels.filtered_lrelu_cuda
    if device == "cpu" and kernels.cpu_module() is None:
        print("fused CPU kernel unavailable (see the warning above); nothing to compare")
        return []
    if device == "cuda" and kernels.cuda_module() is None:
        print("CUDA kernels unavailable (see the warning above); nothing to compare")
        return []
    clock = CLOCKS[args.clock] if device == "cpu" else time.perf_counter

    def torch_fn(x, **kw):
        with backend.use_ops("torch"):
            return ops.filtered_lrelu(x, **kw)

    header = (f"{'layer':8} {'input':>20} {'torch ms':>9} {'native ms':>9} {'ratio':>6} "
              f"{'torch MiB':>9} {'native MiB':>10} {'max |diff|':>10}")
    if args.backward:
        header += f" {'fw+bw torch':>11} {'fw+bw native':>12} {'ratio':>6}"
    print(header)
    ratios = []
    gen = torch.Generator().manual_seed(0)
    for name, shape, kwargs in _layer_cases(args):
        x = (torch.randn(shape, generator=gen) * 2).to(device)
        b = torch.randn([shape[1]], generator=gen).to(device)
        kw = dict(kwargs, b=b, fu=None if kwargs["fu"] is None else kwargs["fu"].to(device),
                  fd=None if kwargs["fd"] is None else kwargs["fd"].to(device))
        with torch.no_grad():
            t_torch = best_time(lambda: torch_fn(x, **kw), args.repeats, warmup=True, device=device, clock=clock)
            t_native = best_time(lambda: native_fn(x, **kw), args.repeats, warmup=True, device=device, clock=clock)
            m_torch = _peak_memory(lambda: torch_fn(x, **kw), device, torch)
            m_native = _peak_memory(lambda: native_fn(x, **kw), device, torch)
            y_torch, y_native = torch_fn(x, **kw), native_fn(x, **kw)
            diff = (y_torch - y_native).abs().max().item()
        line = (f"{name:8} {'x'.join(map(str, shape)):>20} {t_torch * 1e3:9.1f} {t_native * 1e3:9.1f} "
                f"{t_torch / t_native:6.2f} {m_torch:>9} {m_native:>10} {diff:10.2e}")
        ratios.append((name, t_torch / t_native))
        if args.backward:
            xg = x.clone().requires_grad_()

            def fwbw(fn):
                def run():
                    y = fn(xg, **kw)
                    y.backward(torch.ones_like(y))
                return run

            tb_torch = best_time(fwbw(torch_fn), args.repeats, warmup=True, device=device, clock=clock)
            tb_native = best_time(fwbw(native_fn), args.repeats, warmup=True, device=device, clock=clock)
            line += f" {tb_torch * 1e3:11.1f} {tb_native * 1e3:12.1f} {tb_torch / tb_native:6.2f}"
        print(line, flush=True)
    if ratios:
        geo = math.exp(sum(math.log(r) for _, r in ratios) / len(ratios))
        print(f"geometric mean ratio (torch / native, forward) over {len(ratios)} layers: {geo:.2f}")
    return ratios


def _time_synthesis(args, torch, device: str):
    """Whole synthesis forward, every filtered_lrelu routed as the public op's backend hook does."""
    import videdit.networks.stylegan3 as sg3
    from videdit.ops import backend
    from videdit.ops.filtered_lrelu import filtered_lrelu as torch_filtered_lrelu

    def routed(x, **kw):  # what the public op does once the backend hook is in place
        fn = backend.lookup("filtered_lrelu", x)
        return fn(x, **kw) if fn is not None else torch_filtered_lrelu(x, **kw)

    res = args.synthesis_resolution or args.resolution
    clock = CLOCKS[args.clock] if device == "cpu" else time.perf_counter
    for name in (["r", "t"] if args.config == "both" else [args.config]):
        kwargs = sg3.r_config_kwargs(res) if name == "r" else sg3.t_config_kwargs(res)
        torch.manual_seed(0)
        G = sg3.Generator(**kwargs).eval().to(device)
        ws = G.mapping(torch.randn([args.batch, G.z_dim], device=device)).detach()
        original = sg3.filtered_lrelu
        sg3.filtered_lrelu = routed
        mode = "cpp" if device == "cpu" else "cuda"
        results = {}
        try:
            with torch.no_grad():
                for label in ("torch", mode):
                    with backend.use_ops(label):
                        image = G.synthesis(ws)  # warm-up, and the image to compare
                        sync(device)
                        best = best_time(lambda: G.synthesis(ws), max(1, args.repeats - 1), device=device, clock=clock)
                        peak = _peak_memory(lambda: G.synthesis(ws), device, torch)  # a separate run: the
                        # memory poller's own CPU time must not count in the timing
                    results[label] = (best, peak, image)
        finally:
            sg3.filtered_lrelu = original
        (t_torch, m_torch, img_torch), (t_native, m_native, img_native) = results["torch"], results[mode]
        diff = (img_torch - img_native).abs().max().item()
        print(f"synthesis {name.upper()}-{res} batch {args.batch} on {device}: PyTorch ops {t_torch:.2f} s, "
              f"{mode} filtered_lrelu {t_native:.2f} s, ratio {t_torch / t_native:.2f}; peak MiB {m_torch} vs "
              f"{m_native}; max |diff| {diff:.2e}", flush=True)


def main(argv) -> int:
    args = _parse(argv)
    import torch

    set_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "both" else [args.device]
    print(f"torch {torch.__version__}, {args.threads} threads, CUDA available: {torch.cuda.is_available()}, "
          f"CPU timings: {args.clock} clock, best of {args.repeats}")
    for device in devices:
        if device == "cuda" and not torch.cuda.is_available():
            print("no GPU here: CUDA kernels not timed")
            continue
        print(f"\n== filtered_lrelu per layer on {device} (forward, no autograd unless --backward) ==")
        _time_layers(args, torch, device)
        if args.synthesis:
            print()
            _time_synthesis(args, torch, device)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
