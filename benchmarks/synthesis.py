"""Benchmark: whole StyleGAN3 synthesis, fast ops vs the literal reference ops, same run.

    python -m benchmarks synthesis [--cases r1024-fwd,t256-fwdbwd] [--threads N] [--batch N]

* r1024-fwd: StyleGAN3-R 1024 (the real kwargs: channel_base 65536, channel_max 1024, 1x1 convs,
  radial filters), one image, forward without autograd.
* t256-fwdbwd: StyleGAN3-T 256, forward + backward of an L2 loss to ws and every synthesis
  parameter (what pivotal tuning does).

Implementations (--impls): `fast` = the PyTorch ops, `auto` = the default `--ops auto` (the fused C++
filtered_lrelu for the shape families where it measured faster, forward or forward + backward as
used), `ref` = the literal reference ops. Each non-reference one is printed as a ratio against ref.
`--against REV` adds `prev`: `auto` with the videdit package as it was at git revision REV (same harness).

`--profile` (forward cases) times each op family inside the timed pass and prints it beside its floor,
both measured in the same child: the modulated convolutions' FLOPs at this machine's sgemm rate
(4096^2 matmuls), filtered_lrelu at the larger of its direct polyphase arithmetic at the sgemm rate and
its input + output bytes at the memory bandwidth (a large copy); "other" is the rest (Fourier input,
styles, modulation). The whole pass is also set against the issue's fixed yardstick, 438 GFLOP.

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
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO_ROOT, current_rss_mb, peak_rss_mb, reset_peak_rss, run_json_child, set_threads

CASES = {
    "r1024-fwd": ("r_config_kwargs", 1024, False),
    "t256-fwdbwd": ("t_config_kwargs", 256, True),
}
# Issue 31's fixed yardstick: the R-1024 forward's conv/matmul work as FlopCounterMode counted it.
YARDSTICK_GFLOP = {"r1024-fwd": 438.0}
FAMILIES = ("modulated conv", "filtered_lrelu", "other")


def _machine_rates() -> dict:
    """This child's sgemm rate (GFLOP/s, 4096^2 matmuls) and memory bandwidth (GB/s, read + write of a
    256 MiB copy), best of a few: the floors' denominators, measured beside the pass they judge."""
    import torch

    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    out = torch.empty(4096, 4096)
    torch.mm(a, b, out=out)
    gemm_s = min(_timed(lambda: torch.mm(a, b, out=out)) for _ in range(3))
    src, dst = torch.randn(64 << 20), torch.empty(64 << 20)
    dst.copy_(src)
    copy_s = min(_timed(lambda: dst.copy_(src)) for _ in range(5))
    return {"gemm_gflops": 2 * 4096 ** 3 / gemm_s / 1e9, "bandwidth_gbs": 2 * src.numel() * 4 / copy_s / 1e9}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _conv_flops(x, w) -> float:
    """A stride-1 convolution with padding k - 1 (the synthesis layers'), 2 FLOPs per multiply-add."""
    n, _, h, width = x.shape
    out_ch, in_ch, kh, kw = w.shape
    return 2.0 * n * out_ch * in_ch * kh * kw * (h + kh - 1) * (width + kw - 1)


def _filtered_lrelu_work(x, y, fu, fd, up, down) -> tuple[float, float]:
    """(FLOPs, bytes) of filtered_lrelu done directly: polyphase upsampling (taps / up per axis and
    sample), the downsampling filter at the kept samples only, input and output read/written once."""
    n, c, h, w = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    mid_h, mid_w = out_h * down, out_w * down  # within the filter margins
    ku = 1 if fu is None else fu.shape[-1]
    kd = 1 if fd is None else fd.shape[-1]
    up_macs = mid_h * w * ku / up + mid_h * mid_w * ku / up if fu is None or fu.ndim == 1 else \
        mid_h * mid_w * (ku / up) ** 2
    down_macs = out_h * mid_w * kd + out_h * out_w * kd if fd is None or fd.ndim == 1 else out_h * out_w * kd * kd
    return 2.0 * n * c * (up_macs + down_macs), float(x.numel() + y.numel()) * x.element_size()


class _FamilyTimers:
    """Wall time, FLOPs and bytes per op family and layer, by wrapping the two op names the synthesis
    layers call (benchmark instrumentation in this child only; the ops themselves run unchanged)."""

    def __init__(self, stylegan3, synthesis):
        self.rows: dict[tuple[str, str], dict] = {}
        self.layer = "input"
        mod_conv, flrelu = stylegan3.modulated_conv2d, stylegan3.filtered_lrelu

        def conv(x, w, *args, **kwargs):
            y, seconds = self._run(mod_conv, x, w, *args, **kwargs)
            self._add("modulated conv", seconds, _conv_flops(x, w), 0.0)
            return y

        def act(x, *args, **kwargs):
            y, seconds = self._run(flrelu, x, *args, **kwargs)
            flops, nbytes = _filtered_lrelu_work(x, y, kwargs.get("fu"), kwargs.get("fd"), kwargs.get("up", 1),
                                                 kwargs.get("down", 1))
            self._add("filtered_lrelu", seconds, flops, nbytes)
            return y

        stylegan3.modulated_conv2d, stylegan3.filtered_lrelu = conv, act
        for name in synthesis.layer_names:
            getattr(synthesis, name).register_forward_pre_hook(lambda _m, _i, name=name: setattr(self, "layer", name))

    @staticmethod
    def _run(fn, *args, **kwargs):
        start = time.perf_counter()
        y = fn(*args, **kwargs)
        return y, time.perf_counter() - start

    def _add(self, family: str, seconds: float, flops: float, nbytes: float):
        row = self.rows.setdefault((self.layer, family), {"s": 0.0, "flops": 0.0, "bytes": 0.0})
        row["s"] += seconds
        row["flops"] += flops
        row["bytes"] += nbytes

    def report(self, total_s: float, rates: dict) -> dict:
        def floor(flops, nbytes):
            return max(flops / (rates["gemm_gflops"] * 1e9), nbytes / (rates["bandwidth_gbs"] * 1e9))

        families = {}
        for fam in FAMILIES[:2]:
            rows = [r for (_, f), r in self.rows.items() if f == fam]
            s, flops, nbytes = (sum(r[k] for r in rows) for k in ("s", "flops", "bytes"))
            families[fam] = {"s": s, "gflop": flops / 1e9, "gb": nbytes / 1e9, "floor_s": floor(flops, nbytes)}
        families["other"] = {"s": total_s - sum(f["s"] for f in families.values()), "gflop": 0.0, "gb": 0.0,
                             "floor_s": 0.0}
        layers = {}
        for (layer, fam), r in self.rows.items():
            layers.setdefault(layer, {})[fam] = {"s": r["s"], "floor_s": floor(r["flops"], r["bytes"])}
        return {"families": families, "layers": layers, **rates}


def _worker(spec: dict) -> dict:
    if spec.get("tree"):
        # Another tree's package: first on the path (before `python -m`'s working directory). The harness
        # imported this tree's videdit.memory (RSS readings); it is dropped so every videdit import is that tree's.
        import sys

        for name in [n for n in sys.modules if n == "videdit" or n.startswith("videdit.")]:
            del sys.modules[name]
        sys.path.insert(0, spec["tree"])
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

    impl = "fast" if spec["impl"] in ("auto", "prev") else spec["impl"]
    ops_mode = "auto" if spec["impl"] in ("auto", "prev") else "torch"
    if ops_mode == "auto":  # the first use measures each shape family once (cached): keep that out of the timing
        from videdit.ops import kernels

        kernels.cpu_module()  # built now, not in the background while the warm-up runs the PyTorch path
        with use_ops("auto"):
            _fwd_bwd(G, ws, target, impl, backward)
    timers = _FamilyTimers(stylegan3, G.synthesis) if spec.get("profile") and not backward else None
    reset_peak_rss()
    base = current_rss_mb()
    start, start_cpu = time.perf_counter(), time.process_time()
    with use_ops(ops_mode):
        img, grads = _fwd_bwd(G, ws, target, impl, backward)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    result = {"time_s": elapsed, "cpu_s": cpu, "peak_mb": peak_rss_mb() - base, "rss_before_mb": base,
              "package": str(Path(stylegan3.__file__).parents[2])}
    if timers is not None:
        result["profile"] = timers.report(elapsed, _machine_rates())
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
    parser.add_argument("--against", default=None,
                        help="git revision: also time `auto` with the videdit package as it was there (impl `prev`)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per implementation (ref runs once), alternating; each keeps its fastest")
    parser.add_argument("--profile", action="store_true",
                        help="forward cases: time per op family against its floor (sgemm rate, memory bandwidth)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    ok = True
    print(f"videdit synthesis benchmark: batch {args.batch}, {args.threads} thread(s), random weights; "
          "peak = max RSS above the RSS before the forward pass")
    impls = [i for i in args.impls.split(",") if i]
    if args.against:
        impls.insert(impls.index("ref") if "ref" in impls else len(impls), "prev")
    with tempfile.TemporaryDirectory(prefix="videdit-bench-synthesis-") as tmp:
        previous = _extract(args.against, Path(tmp) / "prev") if args.against else None
        for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
            if case not in CASES:
                raise SystemExit(f"unknown case {case!r}; known: {', '.join(CASES)}")
            results = {}
            for repeat in range(args.repeats):
                # Alternating, so every implementation sees the same spells of load; each keeps its fastest run.
                for impl in impls if repeat % 2 == 0 else impls[::-1]:
                    if impl == "ref" and repeat > 0:
                        continue
                    spec = dict(case=case, impl=impl, threads=args.threads, batch=args.batch,
                                save=str(Path(tmp) / f"{case}-{impl}.pt"), profile=args.profile and impl != "ref",
                                tree=str(previous) if impl == "prev" else None)
                    r = run_json_child("synthesis", "--worker", spec, timeout=3600)
                    if "error" in r:
                        print(f"{case:12s} {impl:5s} ERROR {r['error']}", flush=True)
                        ok = False
                        continue
                    print(f"{case:12s} {impl:5s} wall {r['time_s']:9.2f} s  cpu {r['cpu_s']:9.2f} s  "
                          f"peak {r['peak_mb'] / 1024:7.2f} GiB  (run {repeat + 1}; videdit from {r['package']})",
                          flush=True)
                    if r["time_s"] < results.get(impl, {}).get("time_s", float("inf")):
                        results[impl] = r
            for impl, r in results.items():
                if "profile" in r:
                    _print_profile(case, impl, r)
            if "prev" in results and "time_s" in results["prev"]:
                for impl in ("auto", "fast"):
                    if "time_s" in results.get(impl, {}):
                        print(f"{case:12s} {impl} vs prev ({args.against}): "
                              f"{results['prev']['time_s'] / results[impl]['time_s']:.2f}x faster (wall), "
                              f"{results['prev']['cpu_s'] / results[impl]['cpu_s']:.2f}x (cpu time)", flush=True)
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


def _extract(rev: str, into: Path) -> Path:
    """The videdit package as it was at `rev`, in a folder of its own (first on the child's path)."""
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", rev, "videdit"], check=True,
                             capture_output=True).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _print_profile(case: str, impl: str, r: dict):
    p = r["profile"]
    print(f"{case} {impl}: sgemm {p['gemm_gflops']:.1f} GFLOP/s, copy bandwidth {p['bandwidth_gbs']:.1f} GB/s "
          "(measured in the same child)")
    print("| family | s | GFLOP | GB in+out | floor s | x floor |")
    print("|---|---|---|---|---|---|")
    for fam, f in p["families"].items():
        print(f"| {fam} | {f['s']:.2f} | {f['gflop']:.1f} | {f['gb']:.2f} | {f['floor_s']:.2f} | "
              + (f"{f['s'] / f['floor_s']:.2f} |" if f["floor_s"] > 0 else "- |"))
    print(f"| whole pass | {r['time_s']:.2f} | | | {sum(f['floor_s'] for f in p['families'].values()):.2f} | "
          f"{r['time_s'] / sum(f['floor_s'] for f in p['families'].values()):.2f} |")
    if case in YARDSTICK_GFLOP:
        floor = YARDSTICK_GFLOP[case] / p["gemm_gflops"]
        print(f"{case} {impl}: against the issue's yardstick ({YARDSTICK_GFLOP[case]:.0f} GFLOP at the sgemm rate "
              f"= {floor:.2f} s): {r['time_s'] / floor:.2f}x the floor (wall)")
    print("per layer (s, x floor): " + "; ".join(
        f"{layer} " + " ".join(f"{fam.split()[-1]} {v['s']:.2f} ({v['s'] / max(v['floor_s'], 1e-9):.1f})"
                              for fam, v in fams.items()) for layer, fams in p["layers"].items()), flush=True)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
