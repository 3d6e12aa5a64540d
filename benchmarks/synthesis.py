"""Benchmark: whole StyleGAN3 synthesis, fast ops vs the literal reference ops, same run.

    python -m benchmarks synthesis [--cases r1024-fwd,t256-fwdbwd] [--threads N] [--batch N]

* r1024-fwd: StyleGAN3-R 1024 (the real kwargs: channel_base 65536, channel_max 1024, 1x1 convs,
  radial filters), one image, forward without autograd.
* t256-fwdbwd: StyleGAN3-T 256, forward + backward of an L2 loss to ws and every synthesis
  parameter (what pivotal tuning does).

Implementations (--impls): `fast` = the PyTorch ops, `auto` = the default `--ops auto` (the fused C++
filtered_lrelu for the shape families where it measured faster, forward or forward + backward as
used), `ref` = the literal reference ops. Each non-reference one is printed as a ratio against ref.

Weights are random (seeded; no pretrained weights are needed to time the maths). Each measurement
runs in its own subprocess: wall time, CPU time of the process (steadier than wall time on a shared
machine; equal to compute time with one thread), and peak memory = maximum RSS minus the RSS just before the
forward pass (the generator's weights are excluded). The fast and reference outputs (and gradients)
are compared: max |difference| relative to the largest reference value.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import from the repository root instead
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.common import current_rss_mb, peak_rss_mb, reset_peak_rss, run_json_child, set_threads

CASES = {
    "r1024-fwd": ("r_config_kwargs", 1024, False),
    "t256-fwdbwd": ("t_config_kwargs", 256, True),
}


def _worker(spec: dict) -> dict:
    import torch

    from videdit.networks import stylegan3

    set_threads(spec["threads"])
    factory, resolution, backward = CASES[spec["case"]]
    torch.manual_seed(0)
    G = stylegan3.Generator(**getattr(stylegan3, factory)(resolution))
    gen = torch.Generator().manual_seed(1)
    z = torch.randn([spec["batch"], G.z_dim], generator=gen)
    with torch.no_grad():
        ws = G.mapping(z, truncation_psi=0.7)
    target = torch.randn([spec["batch"], 3, resolution, resolution], generator=gen) * 0.5
    from videdit.ops.backend import use_ops

    impl = "fast" if spec["impl"] == "auto" else spec["impl"]
    ops_mode = "auto" if spec["impl"] == "auto" else "torch"
    if ops_mode == "auto":  # the first use measures each shape family once (cached): keep that out of the timing
        with use_ops("auto"):
            _fwd_bwd(G, ws, target, impl, backward)
    reset_peak_rss()
    base = current_rss_mb()
    start, start_cpu = time.perf_counter(), time.process_time()
    with use_ops(ops_mode):
        img, grads = _fwd_bwd(G, ws, target, impl, backward)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    result = {"time_s": elapsed, "cpu_s": cpu, "peak_mb": peak_rss_mb() - base, "rss_before_mb": base}
    if spec.get("save"):
        torch.save({"img": img.detach().contiguous(), "grads": [g.contiguous() for g in grads]}, spec["save"])
    return result


def _fwd_bwd(G, ws, target, impl: str, backward: bool):
    import torch

    if backward:
        ws = ws.detach().requires_grad_(True)
        img = G.synthesis(ws, impl=impl)
        loss = (img - target).square().mean()
        params = [p for p in G.synthesis.parameters()]
        return img, torch.autograd.grad(loss, [ws] + params)
    with torch.no_grad():
        return G.synthesis(ws, impl=impl), []


def _compare(path_fast: str, path_ref: str) -> dict:
    import torch

    fast, ref = torch.load(path_fast), torch.load(path_ref)

    def rel(a, b):
        return ((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()

    out = {"img": (fast["img"] - ref["img"]).abs().max().item(), "img_scale": ref["img"].abs().max().item()}
    if ref["grads"]:
        out["grad_ws"] = rel(fast["grads"][0], ref["grads"][0])
        out["grad_params_worst"] = max(rel(a, b) for a, b in zip(fast["grads"][1:], ref["grads"][1:]))
    return out


def main(argv: list[str]) -> int:
    # Each impl sets its own ops mode in the worker: "fast" and "ref" the PyTorch path, "auto" the
    # default mode; `python -m benchmarks native` compares the native kernels op by op.
    parser = argparse.ArgumentParser(prog="python -m benchmarks synthesis", description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="r1024-fwd,t256-fwdbwd", help="comma list of: " + ", ".join(CASES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--impls", default="fast,ref",
                        help="fast: the PyTorch path; auto: the default ops mode (the fused C++ filtered_lrelu "
                             "where it measured faster, decided once per shape family before timing); ref: literal")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    ok = True
    print(f"videdit synthesis benchmark: batch {args.batch}, {args.threads} thread(s), random weights; "
          "peak = max RSS above the RSS before the forward pass")
    with tempfile.TemporaryDirectory(prefix="videdit-bench-synthesis-") as tmp:
        for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
            if case not in CASES:
                raise SystemExit(f"unknown case {case!r}; known: {', '.join(CASES)}")
            results = {}
            for impl in args.impls.split(","):
                spec = dict(case=case, impl=impl, threads=args.threads, batch=args.batch,
                            save=str(Path(tmp) / f"{case}-{impl}.pt"))
                results[impl] = r = run_json_child("synthesis", "--worker", spec, timeout=3600)
                if "error" in r:
                    print(f"{case:12s} {impl:5s} ERROR {r['error']}", flush=True)
                    ok = False
                else:
                    print(f"{case:12s} {impl:5s} wall {r['time_s']:9.2f} s  cpu {r['cpu_s']:9.2f} s  "
                          f"peak {r['peak_mb'] / 1024:7.2f} GiB", flush=True)
            ref = results.get("ref", {})
            for name, fast in results.items():
                if name == "ref" or "time_s" not in fast or "time_s" not in ref:
                    continue
                cmp = _compare(str(Path(tmp) / f"{case}-{name}.pt"), str(Path(tmp) / f"{case}-ref.pt"))
                same = cmp["img"] <= 1e-4 * max(1.0, cmp["img_scale"]) and cmp.get("grad_params_worst", 0) <= 1e-3 \
                    and cmp.get("grad_ws", 0) <= 1e-3
                ok &= same
                print(f"{case:12s} {name} vs ref: {ref['time_s'] / fast['time_s']:.2f}x faster (wall), "
                      f"{ref['cpu_s'] / fast['cpu_s']:.2f}x (cpu time), "
                      f"peak memory {fast['peak_mb'] / ref['peak_mb']:.3f} of ref; "
                      + ", ".join(f"{k} {v:.2e}" for k, v in cmp.items())
                      + ("  (identical up to float32 round-off)" if same else "  MISMATCH"), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
