"""GPU benchmarks of the ops, as markdown tables for docs/benchmarks.md:

    python -m benchmarks gpu [--sections ops,fp16,synthesis,precision,pipeline] [--repeats 20] [--device cuda]

* ops:       each CUDA kernel against the PyTorch path on the same GPU (the 15 filtered_lrelu layers
             of StyleGAN3-T and -R at 1024 with their real channel counts, plus upfirdn2d and bias_act
             cases), forward and forward + backward, and the largest difference.
* fp16:      the CUDA kernels in float16 against float32.
* synthesis: the whole synthesis network (random weights) per frame, PyTorch path vs CUDA kernels,
             forward and forward + backward (what a tuning step pays).
* compile:   the whole synthesis network (R-1024 and T-256, random weights, forward) eager against
             torch.compile (`--compile`: inductor's default mode), against mode reduce-overhead (CUDA
             graphs; CUDA only), and fp16 against fp32 eager and compiled: seconds per image and ratios.
             The first compiled call (compilation) is reported apart. `--compile-backend eager` checks the
             plumbing on a CPU in seconds.
* precision: the whole synthesis network at `--precision` fp16 and tf32 against fp32 (R-1024 and
             T-256, random weights, default ops): seconds per image, and how far the image moves
             (mean and max absolute difference, PSNR over the image range [-1, 1]).
* pipeline:  `videdit run` on a synthetic clip, seconds per frame, with the PyTorch ops and with
             the default ("auto") kernels (stand-in networks unless real weights are present).

Every ratio compares two timings of the same run: PyTorch / CUDA, fp32 / fp16, fp32 / tf32 (> 1: the
second is faster). Times are medians of --repeats runs after two warm-up calls (the first call of a shape
family builds and self-checks the kernels). Runs on CPU too (--device cpu), for a smoke test.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as `python benchmarks/gpu.py`: import from the repository root instead
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SECTIONS = ("ops", "fp16", "synthesis", "compile", "precision", "pipeline")
LAYERS = 15  # 14 synthesis layers + ToRGB


@dataclass(frozen=True)
class OpCall:
    """One benchmark case: op name, a label, the input shape and the op's other arguments."""

    op: str
    name: str
    shape: tuple
    kwargs: dict


def sg3_layer_calls(config: str, resolution: int = 1024, channels: int | None = None, batch: int = 1):
    """The filtered_lrelu call of every layer of StyleGAN3-T ('t') or -R ('r'): real filters, factors,
    padding, sizes and (unless capped by `channels`) channel counts."""
    import numpy as np

    import videdit.networks.stylegan3 as sg3

    g = (sg3.r_config_kwargs if config == "r" else sg3.t_config_kwargs)(resolution)
    d = sg3.layer_design(resolution, g["channel_base"], g["channel_max"])
    conv_kernel, radial = g.get("conv_kernel", 3), g.get("use_radial_filters", False)
    for idx in range(LAYERS):
        prev = max(idx - 1, 0)
        # Only the layer's filter and padding design is used; its weights are tiny (1 channel).
        layer = sg3.SynthesisLayer(
            w_dim=8, is_torgb=idx == LAYERS - 1, is_critically_sampled=idx >= LAYERS - 3, use_fp16=False,
            in_channels=1, out_channels=1, in_size=int(d["sizes"][prev]), out_size=int(d["sizes"][idx]),
            in_sampling_rate=int(d["sampling_rates"][prev]), out_sampling_rate=int(d["sampling_rates"][idx]),
            in_cutoff=d["cutoffs"][prev], out_cutoff=d["cutoffs"][idx], in_half_width=d["half_widths"][prev],
            out_half_width=d["half_widths"][idx], conv_kernel=conv_kernel, use_radial_filters=radial)
        c = int(d["channels"][idx])
        c = min(c, channels) if channels else c
        size = int(np.asarray(layer.in_size)[0]) + layer.conv_kernel - 1
        kwargs = dict(fu=layer.up_filter, fd=layer.down_filter, up=layer.up_factor, down=layer.down_factor,
                      padding=list(layer.padding), gain=1 if layer.is_torgb else math.sqrt(2),
                      slope=1 if layer.is_torgb else 0.2, clamp=layer.conv_clamp)
        yield OpCall("filtered_lrelu", f"{config.upper()}-{resolution} L{idx}", (batch, c, size, size), kwargs)


def other_op_calls():
    """upfirdn2d and bias_act as the discriminator, the mapping network and the layers' affines call them."""
    import torch

    from videdit.ops.filters import design_lowpass_filter

    fir = torch.tensor([1.0, 3.0, 3.0, 1.0])
    up12 = design_lowpass_filter(numtaps=12, cutoff=64, width=32, fs=512)
    radial = design_lowpass_filter(numtaps=12, cutoff=64, width=32, fs=512, radial=True)
    return [
        OpCall("upfirdn2d", "down2, 4 taps", (1, 128, 512, 512), dict(f=fir, down=2, padding=1)),
        OpCall("upfirdn2d", "up2, 12 taps", (1, 64, 256, 256), dict(f=up12, up=2, padding=[6, 5, 6, 5], gain=4)),
        OpCall("upfirdn2d", "down2, 12x12 radial", (1, 64, 512, 512), dict(f=radial, down=2, padding=5)),
        OpCall("bias_act", "lrelu, clamp", (1, 256, 256, 256), dict(b=torch.randn(256), act="lrelu", clamp=256)),
        OpCall("bias_act", "linear [N, 512]", (64, 512), dict(b=torch.randn(512), act="linear")),
    ]


def _timer(device: str) -> Callable[[Callable, int], float]:
    import torch

    sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)

    def median_ms(fn, repeats):
        for _ in range(2):  # warm-up: build, self-check, allocator, cuDNN heuristics
            fn()
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3

    return median_ms


def _run_call(call: OpCall, mode: str, x, grad: bool):
    """The public op under `mode`; with grad, forward + backward to x (and b)."""
    import torch

    import videdit.ops as ops
    from videdit.ops.mode import use_ops

    op = getattr(ops, call.op)
    kwargs = {k: (v.to(x.device) if isinstance(v, torch.Tensor) else v) for k, v in call.kwargs.items()}
    with use_ops(mode):
        if not grad:
            with torch.no_grad():
                return op(x, **kwargs)
        xg = x.detach().requires_grad_(True)
        y = op(xg, **kwargs)
        (gx,) = torch.autograd.grad(y, [xg], torch.ones_like(y))
        return gx


def _inputs(call: OpCall, device: str, dtype):
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(call.shape, generator=gen) * 2
    kwargs = {k: (v.to(dtype) if k == "b" else v) for k, v in call.kwargs.items()}
    return x.to(device, dtype), OpCall(call.op, call.name, call.shape, kwargs)


def _rel_diff(a, b) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def _failed_families(device: str) -> list[str]:
    import torch

    from videdit.ops import selfcheck

    if device != "cuda":
        return []
    return sorted(k for k, v in selfcheck.cuda_self_check(torch.device("cuda")).verdicts.items() if not v.ok)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _calls(args) -> list[OpCall]:
    calls = [c for cfg in ("t", "r") for c in sg3_layer_calls(cfg, args.resolution, args.channels)]
    return calls + other_op_calls()


def section_ops(args, median_ms) -> str:
    import torch

    kernel_mode = "cuda" if args.device == "cuda" else "cpp"
    rows = []
    for call in _calls(args):
        if kernel_mode == "cpp" and call.op != "filtered_lrelu":
            continue  # no CPU kernel for the other ops
        x, call = _inputs(call, args.device, torch.float32)
        t_torch = median_ms(lambda: _run_call(call, "torch", x, False), args.repeats)
        t_kernel = median_ms(lambda: _run_call(call, kernel_mode, x, False), args.repeats)
        b_torch = median_ms(lambda: _run_call(call, "torch", x, True), args.repeats)
        b_kernel = median_ms(lambda: _run_call(call, kernel_mode, x, True), args.repeats)
        diff = _rel_diff(_run_call(call, kernel_mode, x, False), _run_call(call, "torch", x, False))
        rows.append([f"{call.op} {call.name}", "x".join(map(str, call.shape)), f"{t_torch:.3f}", f"{t_kernel:.3f}",
                     f"{t_torch / t_kernel:.2f}", f"{b_torch:.3f}", f"{b_kernel:.3f}", f"{b_torch / b_kernel:.2f}",
                     f"{diff:.1e}"])
        print(f"  {call.op} {call.name}: {t_torch / t_kernel:.2f}x", file=sys.stderr, flush=True)
    failed = _failed_families(args.device)
    note = ("\n\nShape families that failed the self-check (their kernel column is the PyTorch path): "
            + ", ".join(failed)) if failed else ""
    label = "CUDA" if kernel_mode == "cuda" else "fused C++"
    return (f"### {label} kernels vs the PyTorch path ({args.device}, float32, ms, median of {args.repeats})\n\n"
            + _table(["op / case", "input", "PyTorch fw", f"{label} fw", "ratio", "PyTorch fw+bw", f"{label} fw+bw",
                      "ratio", "max rel diff"], rows) + note)


def section_fp16(args, median_ms) -> str:
    import torch

    if args.device != "cuda":
        return "### fp16 vs fp32\n\nnot measured: float16 kernels are CUDA only"
    rows = []
    for call in _calls(args):
        x32, c32 = _inputs(call, args.device, torch.float32)
        x16, c16 = _inputs(call, args.device, torch.float16)
        t32 = median_ms(lambda: _run_call(c32, "cuda", x32, False), args.repeats)
        t16 = median_ms(lambda: _run_call(c16, "cuda", x16, False), args.repeats)
        diff = _rel_diff(_run_call(c16, "cuda", x16, False), _run_call(c32, "cuda", x32, False))
        rows.append([f"{call.op} {call.name}", "x".join(map(str, call.shape)), f"{t32:.3f}", f"{t16:.3f}",
                     f"{t32 / t16:.2f}", f"{diff:.1e}"])
    return (f"### CUDA kernels, float16 vs float32 (ms, median of {args.repeats})\n\n"
            + _table(["op / case", "input", "fp32", "fp16", "ratio", "max rel diff fp16"], rows))


def section_synthesis(args, median_ms) -> str:
    import torch

    import videdit.networks.stylegan3 as sg3
    from videdit.ops.mode import use_ops

    kernel_mode = "cuda" if args.device == "cuda" else "cpp"
    rows = []
    for config in ("t", "r"):
        make = sg3.t_config_kwargs if config == "t" else sg3.r_config_kwargs
        torch.manual_seed(0)
        G = sg3.Generator(**make(args.synthesis_resolution)).to(args.device)
        for batch in args.batches:
            ws = G.mapping(torch.randn([batch, G.z_dim], device=args.device)).detach()

            def forward(mode):
                with use_ops(mode), torch.no_grad():
                    return G.synthesis(ws)

            def forward_backward(mode):
                with use_ops(mode):
                    G.synthesis(ws).square().mean().backward()
                G.zero_grad(set_to_none=True)

            f_torch = median_ms(lambda: forward("torch"), args.repeats) / batch / 1e3
            f_kernel = median_ms(lambda: forward(kernel_mode), args.repeats) / batch / 1e3
            b_torch = median_ms(lambda: forward_backward("torch"), args.repeats) / batch / 1e3
            b_kernel = median_ms(lambda: forward_backward(kernel_mode), args.repeats) / batch / 1e3
            diff = _rel_diff(forward(kernel_mode), forward("torch"))
            rows.append([f"{config.upper()}-{args.synthesis_resolution}", str(batch), f"{f_torch:.4f}",
                         f"{f_kernel:.4f}", f"{f_torch / f_kernel:.2f}", f"{b_torch:.4f}", f"{b_kernel:.4f}",
                         f"{b_torch / b_kernel:.2f}", f"{diff:.1e}"])
        del G
    label = "CUDA" if kernel_mode == "cuda" else "fused C++"
    return (f"### Whole synthesis, seconds per frame ({args.device}, float32, random weights, median of {args.repeats})\n\n"
            + _table(["network", "batch", "PyTorch fw", f"{label} fw", "ratio", "PyTorch fw+bw", f"{label} fw+bw",
                      "ratio", "max rel diff"], rows) + "\n\nfp16 and tf32 against fp32: the precision section.")


def section_compile(args, median_ms) -> str:
    """Eager against torch.compile (and CUDA graphs), fp32 and fp16, as the pipeline sets them (apply_compile,
    apply_precision); every ratio is eager fp32 / this, in this run."""
    import torch

    import videdit.networks.stylegan3 as sg3
    from videdit.models import apply_compile, apply_precision

    variants = [("eager", "fp32", False, None), ("compiled", "fp32", True, None)]
    if args.device == "cuda":
        variants += [("compiled, CUDA graphs", "fp32", True, "reduce-overhead"), ("eager", "fp16", False, None),
                     ("compiled", "fp16", True, None)]
    networks = [("R", sg3.r_config_kwargs), ("T", sg3.t_config_kwargs)]
    resolutions = {"R": args.synthesis_resolution, "T": min(args.synthesis_resolution, 256)}
    rows = []
    for config, make in networks:
        label = f"{config}-{resolutions[config]}"
        torch.manual_seed(0)
        G = sg3.Generator(**make(resolutions[config])).to(args.device).eval()
        ws = G.mapping(torch.randn([1, G.z_dim], device=args.device), truncation_psi=0.7).detach()
        seconds, images = {}, {}
        for name, precision, compiled, mode in variants:
            apply_precision(G, precision)
            apply_compile(G, compiled, backend=args.compile_backend, mode=mode if args.compile_backend == "inductor" else None)
            with torch.no_grad():
                start = time.perf_counter()
                images[(name, precision)] = G.synthesis(ws)  # the first call compiles
                if args.device == "cuda":
                    torch.cuda.synchronize()
                first = time.perf_counter() - start
                fell_back = compiled and G.synthesis.compiled_render is None
                seconds[(name, precision)] = median_ms(lambda: G.synthesis(ws), args.repeats) / 1e3
            reference = seconds[("eager", "fp32")]
            _, max_abs, psnr = _image_difference(images[(name, precision)], images[("eager", "fp32")])
            rows.append([label, name + (" (FELL BACK to eager)" if fell_back else ""), precision, f"{first:.2f}",
                         f"{seconds[(name, precision)]:.4f}", f"{reference / seconds[(name, precision)]:.2f}",
                         f"{max_abs:.1e}", f"{psnr:.1f}"])
            print(f"  {label} {name} {precision}: {reference / seconds[(name, precision)]:.2f}x", file=sys.stderr, flush=True)
        apply_compile(G, False)
        del G
    return (f"### Synthesis compiled against eager, fp16 against fp32 (seconds per image, batch 1, {args.device}, "
            f"backend {args.compile_backend}, random weights, median of {args.repeats})\n\n"
            + _table(["network", "how", "precision", "first call s", "s", "eager fp32 / this", "max abs diff",
                      "PSNR dB"], rows)
            + "\n\nfirst call: compilation included. Differences to the eager fp32 image; PSNR over the range [-1, 1].")


def _image_difference(image, reference) -> tuple[float, float, float]:
    """(mean abs, max abs, PSNR in dB over the image range [-1, 1], i.e. a peak-to-peak of 2)."""
    diff = (image.double() - reference.double()).abs()
    mse = diff.square().mean().item()
    return diff.mean().item(), diff.max().item(), (math.inf if mse == 0 else 10 * math.log10(4 / mse))


def section_precision(args, median_ms) -> str:
    import videdit.networks.stylegan3 as sg3

    if args.device != "cuda":
        return "### Synthesis at fp16 and tf32 against fp32\n\nnot measured: fp16 and tf32 run on CUDA only"
    return precision_table(args, median_ms, [("R-1024", sg3.r_config_kwargs(1024)), ("T-256", sg3.t_config_kwargs(256))])


def precision_table(args, median_ms, networks: list[tuple[str, dict]]) -> str:
    """Each network (label, Generator kwargs; random weights) at fp32, tf32 and fp16, set as the pipeline
    sets them: seconds per image and the image's difference to fp32's."""
    import torch

    import videdit.networks.stylegan3 as sg3
    from videdit.models import apply_precision, tf32_switches
    from videdit.ops.mode import current_mode

    rows = []
    for label, kwargs in networks:
        torch.manual_seed(0)
        G = sg3.Generator(**kwargs).to(args.device).eval()
        for batch in args.batches:
            ws = G.mapping(torch.randn([batch, G.z_dim], device=args.device), truncation_psi=0.7).detach()
            seconds, images = {}, {}
            for precision in ("fp32", "tf32", "fp16"):
                apply_precision(G, precision)
                with tf32_switches(precision), torch.no_grad():
                    seconds[precision] = median_ms(lambda: G.synthesis(ws), args.repeats) / batch / 1e3
                    images[precision] = G.synthesis(ws)
            for precision in ("fp16", "tf32"):
                mean_abs, max_abs, psnr = _image_difference(images[precision], images["fp32"])
                ratio = seconds["fp32"] / seconds[precision]
                rows.append([label, str(batch), precision, f"{seconds['fp32']:.4f}", f"{seconds[precision]:.4f}",
                             f"{ratio:.2f}", f"{mean_abs:.1e}", f"{max_abs:.1e}", f"{psnr:.1f}"])
                print(f"  {label} batch {batch} {precision}: {ratio:.2f}x, PSNR {psnr:.1f} dB", file=sys.stderr, flush=True)
        del G
    return (f"### Synthesis at fp16 and tf32 against fp32 (seconds per image, {args.device}, ops {current_mode()}, "
            f"random weights, median of {args.repeats})\n\n"
            + _table(["network", "batch", "precision", "fp32 s", "s", "fp32 / this", "mean abs diff", "max abs diff",
                      "PSNR dB"], rows)
            + "\n\nfp16: NVIDIA's mixed precision (the num_fp16_res = 4 highest-resolution layers in float16, "
              "conv_clamp 256); tf32: float32 with TF32 matmuls and convolutions. Differences are to the fp32 "
              "image of the same network; PSNR over the image range [-1, 1].")


def section_pipeline(args) -> str:
    from videdit.pipeline import Pipeline, StandInModels
    from videdit.errors import MissingWeightsError
    from videdit.ops.mode import use_ops
    from videdit.synthetic import make_clip

    rows = []
    with tempfile.TemporaryDirectory(prefix="videdit-gpu-bench-") as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, n_frames=args.frames)
        real = Pipeline.from_preset("fast", device=args.device, quiet=True)
        try:
            real.check_weights()
            preset, models, what = "fast", None, "real weights, preset fast"
        except MissingWeightsError:
            preset, models, what = "demo", StandInModels(resolution=64), "stand-in networks at 64 px, preset demo"
        for mode in ("torch", "auto"):
            pipe = Pipeline.from_preset(preset, device=args.device, quiet=True, models=models,
                                        overrides={"tune.steps": args.tune_steps})
            with use_ops(mode):
                [result] = pipe.run_many(clip, out=Path(tmp) / f"run-{mode}")
            if result.status != "ok":
                return f"### Whole pipeline\n\nfailed with ops {mode}: {result.error}"
            rows.append([mode, str(result.frames), f"{result.seconds:.1f}", f"{result.seconds / result.frames:.3f}"])
    ratio = float(rows[0][3]) / float(rows[1][3])
    return (f"### Whole pipeline, seconds per frame ({args.device}; {what}; {args.frames} frames, "
            f"{args.tune_steps} tuning steps)\n\n" + _table(["ops", "frames", "seconds", "s / frame"], rows)
            + f"\n\nratio torch / auto: {ratio:.2f}")


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=1024, help="generator resolution of the layer cases")
    parser.add_argument("--channels", type=int, default=None, help="cap the layers' channel counts")
    parser.add_argument("--synthesis-resolution", type=int, default=1024)
    parser.add_argument("--batches", default="1,8", help="synthesis batch sizes")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compile section")
    parser.add_argument("--frames", type=int, default=16, help="frames of the pipeline clip")
    parser.add_argument("--tune-steps", type=int, default=50, help="tuning steps of the pipeline run")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}")
    args.batches = [int(b) for b in args.batches.split(",")]
    return args


def main(argv=None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_bench: no CUDA GPU visible (use --device cpu for a smoke test)", file=sys.stderr)
        return 2
    if args.device == "cuda":
        from videdit.ops import kernels

        if kernels.cuda_module() is None:  # the kernel columns would time the PyTorch path twice
            kept = ("pipeline", "precision", "compile")  # these time whatever ops run by default
            kernel_sections = [s for s in args.sections if s not in kept]
            print(f"gpu_bench: the CUDA kernels are unavailable (see the warning above); skipping {kernel_sections}",
                  file=sys.stderr)
            args.sections = [s for s in args.sections if s in kept]
    median_ms = _timer(args.device)
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"## GPU benchmarks: {where}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"{time.strftime('%Y-%m-%d')}\n")
    for section in args.sections:
        print(f"[{section}]", file=sys.stderr, flush=True)
        if section == "pipeline":
            text = section_pipeline(args)
        else:
            text = {"ops": section_ops, "fp16": section_fp16, "synthesis": section_synthesis,
                    "compile": section_compile, "precision": section_precision}[section](args, median_ms)
        print(text + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
