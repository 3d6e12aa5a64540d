"""Does a batch pay on this machine? `python -m benchmarks batching [--configs r256,r1024] [--batch 4]`.

For each generator configuration (random weights), in child processes of their own: the synthesis
forward of --batch samples as one call against --batch calls of one, alternating --repeats times after a
warm-up (medians); then PTI steps (L2 + LPIPS-Alex, Adam; benchmarks.tune's child, whose forward column is
one call after a warm-up) at batch 1 and at the default batch:

  batch B, micro auto   the default: on a CPU the step's samples go through forward and backward one
                        at a time (tune.micro_batch = 0: gradients accumulated, the same maths);
  batch B, micro B      the whole batch in one forward and backward (what a GPU does; --whole-batch, and
                        at 1024 only with --whole-batch-1024: it needs about 4.5 GB per sample on a CPU).

Printed per configuration: seconds per image of the forward and of the PTI step, and throughput
(images per second) relative to batch 1; >= 1 means the batch costs nothing or pays.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import from the repository root instead
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import statistics
import sys
import time

from benchmarks.common import markdown_table, ratio, run_json_child, set_threads
from benchmarks.tune import generator_kwargs, run_child


def forward_child(spec: dict) -> dict:
    """Seconds per image of synthesis forward at batch 1 and at spec["batch"], the two alternating
    spec["repeats"] times after a warm-up of each (medians): the batch as one call against as many calls of 1."""
    import torch

    from videdit.networks.stylegan3 import Generator

    set_threads(spec["threads"])
    torch.manual_seed(0)
    G = Generator(**generator_kwargs(spec["config"])).eval()
    batch = spec["batch"]
    ws = G.mapping(torch.randn(batch, G.z_dim), None).detach()
    ones, whole = [], []
    with torch.no_grad():
        G.synthesis(ws[:1])
        G.synthesis(ws)
        for _ in range(spec["repeats"]):
            start = time.perf_counter()
            for i in range(batch):
                G.synthesis(ws[i:i + 1])
            ones.append((time.perf_counter() - start) / batch)
            start = time.perf_counter()
            G.synthesis(ws)
            whole.append((time.perf_counter() - start) / batch)
    return {"one_s": statistics.median(ones), "batch_s": statistics.median(whole), "repeats": spec["repeats"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks batching", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="r256,r1024")
    parser.add_argument("--batch", type=int, default=4, help="the default batch (tune.batch_size, render/encode)")
    parser.add_argument("--steps", type=int, default=2, help="PTI steps (the first, with set-up, is left out)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--whole-batch", action="store_true", help="also time micro_batch = batch")
    parser.add_argument("--whole-batch-1024", action="store_true", help="... at 1024 too (about 20 GB on a CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating forward timings (medians)")
    parser.add_argument("--forward-only", action="store_true", help="only the forward table")
    parser.add_argument("--forward-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.forward_child:
        print(json.dumps(forward_child(json.loads(args.forward_child))))
        return 0

    forward_rows = []
    for config in [c.strip() for c in args.configs.split(",") if c.strip()]:
        print(f"batching bench: {config} forward, batch 1 x {args.batch} against batch {args.batch} ...", file=sys.stderr, flush=True)
        r = run_json_child("batching", "--forward-child", {"config": config, "batch": args.batch, "repeats": args.repeats,
                                                             "threads": args.threads})
        if "error" in r:
            forward_rows.append([config, "failed: " + r["error"], "", "", ""])
            continue
        forward_rows.append([config, f"{r['one_s']:.2f}", f"{r['batch_s']:.2f}", f"{ratio(r['one_s'], r['batch_s']):.2f}",
                             r["repeats"]])
    print(markdown_table(["config", "forward s/image, batch 1", f"forward s/image, batch {args.batch}",
                          "throughput batch / batch 1", "alternating repeats (medians)"], forward_rows))
    print()
    if args.forward_only:
        return 0

    rows = []
    for config in [c.strip() for c in args.configs.split(",") if c.strip()]:
        variants = [(1, 0), (args.batch, 0)]
        if args.whole_batch and (args.whole_batch_1024 or not config.endswith("1024")):
            variants.append((args.batch, args.batch))
        results = {}
        for batch, micro in variants:
            print(f"batching bench: {config}, batch {batch}, micro {micro or 'auto'} ...", file=sys.stderr, flush=True)
            results[(batch, micro)] = run_child("tune", {"config": config, "steps": args.steps, "batch_size": batch,
                                                         "micro_batch": micro, "threads": args.threads, "device": "cpu"})
        one = results[(1, 0)]
        for (batch, micro), r in results.items():
            if "error" in r or "error" in one:
                rows.append([config, batch, micro or "auto", "failed: " + r.get("error", one.get("error", "")), "", "", "", ""])
                continue
            forward, step = r["forward_s"] / batch, r["step_s"] / batch
            rows.append([config, batch, micro or "auto", f"{forward:.2f}", f"{ratio(one['forward_s'], forward):.2f}",
                         f"{step:.2f}", f"{ratio(one['step_s'], step):.2f}", f"{r['peak_rss_mb'] / 1024:.1f}"])
    print(markdown_table(["config", "batch", "micro-batch", "forward s/image", "forward throughput vs batch 1",
                          "PTI step s/image", "PTI throughput vs batch 1", "peak RSS GB"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
