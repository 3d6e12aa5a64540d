"""PTI tuning speed and memory: `python -m benchmarks tune [--configs r256,r1024] [--steps 2] ...`.

Each configuration runs in its own child process (so peak memory is its own): a randomly initialised
generator of that configuration, a synthetic clip of crops at its resolution, and `run_tune` with L2 +
LPIPS (randomly initialised AlexNet backbone: same cost as the real one, no download). Reported per
configuration: seconds per PTI step (the first step, which also holds run_tune's setup: copying the
generator, building LPIPS and the optimizer, is left out when more than one ran), the baseline (one
forward synthesis of the same batch without gradients, timed in the same process), their ratio, and
the child's peak resident memory (and peak CUDA memory on a GPU).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import from the repository root instead
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import cuda_peak_mb, peak_rss_mb, run_json_child, set_threads, sync

CONFIGS = ("tiny64", "tiny256", "t256", "r256", "t1024", "r1024")


def generator_kwargs(config: str) -> dict:
    """Constructor kwargs of a named benchmark configuration (official T/R configs, or small test ones)."""
    from videdit.networks.stylegan3 import r_config_kwargs, t_config_kwargs, tiny_generator_kwargs

    if config.startswith("tiny"):
        return tiny_generator_kwargs(int(config[4:]), channels=8, num_layers=4)
    if config[0] in "tr" and config[1:].isdigit():
        return (t_config_kwargs if config[0] == "t" else r_config_kwargs)(int(config[1:]))
    raise SystemExit(f"unknown config {config!r}; known: {', '.join(CONFIGS)}")


def warm_up_ops(device: str) -> None:
    """One forward and backward of a tiny generator: loads (or builds) the native ops before anything is timed."""
    import torch

    from videdit.networks.stylegan3 import Generator, tiny_generator_kwargs

    G = Generator(**tiny_generator_kwargs(32, channels=8, num_layers=4)).to(device)
    ws = G.mapping(torch.zeros(1, G.z_dim, device=device), None).detach()
    with torch.no_grad():
        G.synthesis(ws)
    G.synthesis(ws).square().mean().backward()


def make_video_inputs(root: Path, G, n_frames: int, seed: int = 0):
    """align/ (crops of the astronaut photo moving a little, transforms.npz) and pivot latents for G."""
    from videdit.synthetic import write_tune_inputs

    return write_tune_inputs(root, G, n_frames, seed=seed, max_shift=0.02, face_centre=(255.0, 120.0),
                             scale=G.img_resolution / 280)


def child(spec: dict) -> dict:
    import numpy as np
    import torch

    from videdit.networks.stylegan3 import Generator
    from videdit.tuning.data import inverse_transforms
    from videdit.tuning.pti import TuneSettings, run_tune

    set_threads(spec["threads"])
    device = torch.device(spec["device"])
    warm_up_ops(spec["device"])
    torch.manual_seed(0)
    G = Generator(**generator_kwargs(spec["config"])).eval().to(device)
    batch = spec["batch_size"]
    with tempfile.TemporaryDirectory(prefix="videdit-bench-tune-") as tmp:
        align, latents, matrix = make_video_inputs(Path(tmp), G, max(batch, 4))
        ws = torch.from_numpy(np.load(latents)[:batch]).to(device)
        inv = inverse_transforms(matrix[:batch]).to(device)
        with torch.no_grad():  # baseline: the forward pass alone, after a warm-up call (first-use costs)
            G.synthesis(ws, transform=inv)
            t0 = time.perf_counter()
            G.synthesis(ws, transform=inv)
            sync(device)
            forward_s = time.perf_counter() - t0
        step_times: list[float] = []
        last = [time.perf_counter()]

        def on_step(step: int, loss: float) -> None:
            sync(device)
            now = time.perf_counter()
            step_times.append(now - last[0])
            last[0] = now

        settings = TuneSettings(steps=spec["steps"], batch_size=batch, checkpoint_every=0, lpips_random_backbone=True,
                                progress=False, device=spec["device"], micro_batch=spec.get("micro_batch", 0))
        # Import what run_tune imports lazily (lpips + torchvision; the optimizer pulls in torch._dynamo, tens
        # of seconds on a busy machine) so the first step's time holds only run_tune's own setup.
        import lpips  # noqa: F401
        import torch._dynamo  # noqa: F401

        last[0] = time.perf_counter()
        run_tune(align, latents, G, Path(tmp) / "tune", settings, on_step=on_step)
    timed = step_times[1:] if len(step_times) > 1 else step_times
    return {
        "config": spec["config"], "resolution": G.img_resolution, "batch_size": batch, "steps": len(step_times),
        "micro_batch": spec.get("micro_batch", 0),
        "params_m": sum(p.numel() for p in G.parameters()) / 1e6,
        "step_s": sum(timed) / len(timed), "first_step_s": step_times[0], "forward_s": forward_s,
        "peak_rss_mb": peak_rss_mb(),
        "peak_cuda_mb": cuda_peak_mb(device),
    }


def run_child(module: str, spec: dict) -> dict:
    """Run `python -m benchmarks <module> --child SPEC`: its JSON result, or the config and the error."""
    return {"config": spec.get("config"), **run_json_child(module, "--child", spec)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="r256,r1024", help=f"comma list of {', '.join(CONFIGS)}")
    parser.add_argument("--steps", type=int, default=2, help="PTI steps per config (1024 configs: --steps-1024)")
    parser.add_argument("--steps-1024", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    rows = []
    for config in [c for c in args.configs.split(",") if c]:
        steps = args.steps_1024 if config.endswith("1024") else args.steps
        spec = {"config": config, "steps": steps, "batch_size": args.batch_size, "threads": args.threads,
                "device": args.device}
        print(f"tune bench: {config}, batch {args.batch_size}, {steps} step(s) on {args.device} ...", file=sys.stderr, flush=True)
        rows.append(run_child("tune", spec))
    print(f"{'config':8s} {'batch':>5s} {'steps':>5s} {'s/step':>9s} {'fwd s':>8s} {'step/fwd':>8s} {'peak RSS MB':>11s} {'peak CUDA MB':>12s}")
    for r in rows:
        if "error" in r:
            print(f"{r['config']:8s} failed: {r['error']}")
            continue
        cuda = f"{r['peak_cuda_mb']:.0f}" if r["peak_cuda_mb"] is not None else "-"
        print(f"{r['config']:8s} {r['batch_size']:5d} {r['steps']:5d} {r['step_s']:9.2f} {r['forward_s']:8.2f} "
              f"{r['step_s'] / r['forward_s']:8.2f} {r['peak_rss_mb']:11.0f} {cuda:>12s}")
    if args.json:
        print(json.dumps(rows))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
