"""Benchmark: fast vs literal reference ops on the real layer shapes of StyleGAN3 generators.

    python -m benchmarks ops [--config r1024,t256] [--layers L4,L8,L12 | all] [--threads N] [--repeat N]

For each selected layer (batch 1, the layer's real channels, sizes, filters and padding) it times
`modulated_conv2d` and `filtered_lrelu` with impl="fast" and impl="ref" in the same run, checks
that both give the same result, and reports the time ratio and the peak memory of each. Every
measurement runs in its own subprocess; peak memory is that process's maximum resident set size
(VmHWM, reset just before the op) minus its size just before the op runs (inputs, weights and the
interpreter excluded).
"fast+autograd" is the fast op with autograd recording (what tuning runs), forward only.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import from the repository root instead
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import current_rss_mb, peak_rss_mb, reset_peak_rss, run_json_child, set_threads

CONFIGS = {
    # name: (generator kwargs factory name, resolution, default layers)
    "r1024": ("r_config_kwargs", 1024, "L4,L8,L12"),
    "t256": ("t_config_kwargs", 256, "L3,L8,L12"),
}


def build_generator(config: str, seed: int = 0):
    import torch

    from videdit.networks import stylegan3

    factory, resolution, _ = CONFIGS[config]
    torch.manual_seed(seed)
    return stylegan3.Generator(**getattr(stylegan3, factory)(resolution))


def select_layers(G, spec: str) -> list[str]:
    names = G.synthesis.layer_names
    if spec == "all":
        return list(names)
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    picked = []
    for w in wanted:
        match = [n for n in names if n == w or n.split("_")[0] == w]
        if not match:
            raise SystemExit(f"unknown layer {w!r}; layers: {', '.join(names)}")
        picked.extend(match)
    return picked


def _worker(spec: dict) -> dict:
    import torch

    from videdit import ops

    set_threads(spec["threads"])
    G = build_generator(spec["config"])
    layer = getattr(G.synthesis, spec["layer"])
    del G
    gen = torch.Generator().manual_seed(1)
    impl = "ref" if spec["impl"] == "ref" else "fast"
    autograd = spec["impl"] == "fast+autograd"
    k = layer.conv_kernel
    size = int(layer.in_size[0])
    with torch.no_grad():
        styles = layer.affine(torch.randn([1, layer.w_dim], generator=gen))
    if spec["op"] == "modconv":
        x = torch.randn([1, layer.in_channels, size, size], generator=gen)
        weight = layer.weight.detach()

        def op(inp):
            return ops.modulated_conv2d(inp, weight, styles, padding=k - 1, demodulate=not layer.is_torgb,
                                        input_gain=layer.magnitude_ema, impl=impl)
    else:
        x = torch.randn([1, layer.out_channels, size + k - 1, size + k - 1], generator=gen)
        bias = torch.randn([layer.out_channels], generator=gen) * 0.1
        gain = 1 if layer.is_torgb else 2 ** 0.5
        slope = 1 if layer.is_torgb else 0.2

        def op(inp):
            return ops.filtered_lrelu(inp, fu=layer.up_filter, fd=layer.down_filter, b=bias, up=layer.up_factor,
                                      down=layer.down_factor, padding=layer.padding, gain=gain, slope=slope,
                                      clamp=layer.conv_clamp, impl=impl)
    if autograd:
        x.requires_grad_(True)
    import gc

    gc.collect()
    reset_peak_rss()
    base = current_rss_mb()
    times, cpu_times = [], []
    y = None
    for _ in range(spec["repeat"]):
        y = None
        start, start_cpu = time.perf_counter(), time.process_time()
        with torch.set_grad_enabled(autograd):
            y = op(x)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
    result = {"time_s": min(times), "cpu_s": min(cpu_times), "peak_mb": peak_rss_mb() - base,
              "shape": list(y.shape)}
    if spec.get("save"):
        torch.save(y.detach().contiguous(), spec["save"])
    return result


def _compare(path_a: str, path_b: str) -> float:
    import torch

    a, b = torch.load(path_a), torch.load(path_b)
    return ((a - b).abs().max() / b.abs().max().clamp(min=1)).item()


def main(argv: list[str]) -> int:
    # This benchmark measures the PyTorch path against the literal reference (workers inherit the
    # setting); `python -m benchmarks native` compares the native kernels.
    os.environ.setdefault("VIDEDIT_OPS", "torch")
    parser = argparse.ArgumentParser(prog="python -m benchmarks ops", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="r1024,t256", help="comma list of: " + ", ".join(CONFIGS))
    parser.add_argument("--layers", default=None, help="comma list (L4 or full names) or 'all'; default per config")
    parser.add_argument("--ops", default="modconv,filtered_lrelu")
    parser.add_argument("--impls", default="fast,ref,fast+autograd")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0

    print(f"videdit ops benchmark: batch 1, {args.threads} thread(s), best of {args.repeat}; "
          "peak = max RSS above the RSS before the op")
    header = (f"{'config':6s} {'layer':14s} {'op':15s} {'impl':13s} {'wall s':>8s} {'cpu s':>8s} {'peak MiB':>9s} "
              f"{'x faster':>9s} {'x cpu':>7s} {'mem/ref':>8s} {'max err':>9s}")
    print(header)
    ok = True
    with tempfile.TemporaryDirectory(prefix="videdit-bench-ops-") as tmp:
        for config in [c.strip() for c in args.config.split(",") if c.strip()]:
            if config not in CONFIGS:
                raise SystemExit(f"unknown config {config!r}; known: {', '.join(CONFIGS)}")
            G = build_generator(config)
            names = select_layers(G, args.layers or CONFIGS[config][2])
            del G
            for name in names:
                for op in args.ops.split(","):
                    results = {}
                    for impl in args.impls.split(","):
                        save = str(Path(tmp) / f"{impl}.pt") if impl in ("fast", "ref") else None
                        spec = dict(config=config, layer=name, op=op, impl=impl, threads=args.threads,
                                    repeat=args.repeat, save=save)
                        results[impl] = run_json_child("ops", "--worker", spec, timeout=3600)
                    ref = results.get("ref", {})
                    err = None
                    if "fast" in results and "ref" in results and "error" not in ref and "error" not in results["fast"]:
                        err = _compare(str(Path(tmp) / "fast.pt"), str(Path(tmp) / "ref.pt"))
                        ok &= err <= 1e-4
                    for impl, r in results.items():
                        if "error" in r:
                            print(f"{config:6s} {name:14s} {op:15s} {impl:13s} ERROR {r['error']}")
                            continue
                        speed = cpu = mem = ""
                        if impl != "ref" and "time_s" in ref:
                            speed = f"{ref['time_s'] / r['time_s']:.2f}"
                            cpu = f"{ref['cpu_s'] / max(r['cpu_s'], 1e-6):.2f}"
                            mem = f"{r['peak_mb'] / max(ref['peak_mb'], 1e-3):.2f}"
                        e = f"{err:.1e}" if (err is not None and impl == "fast") else ""
                        print(f"{config:6s} {name:14s} {op:15s} {impl:13s} {r['time_s']:8.3f} {r['cpu_s']:8.3f} "
                              f"{r['peak_mb']:9.1f} {speed:>9s} {cpu:>7s} {mem:>8s} {e:>9s}", flush=True)
    print("results identical (max err <= 1e-4 relative)" if ok else "MISMATCH between fast and ref")
    return 0 if ok else 1


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
