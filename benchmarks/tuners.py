"""PTI vs HyperStyle vs local tweak on one clip and one generator: `python -m benchmarks tuners`.

A synthetic clip (a photo moved by a known camera path, unaligned crops at the generator's resolution)
and a randomly initialised generator of the chosen configuration; pivot latents are the generator's
mean latent plus noise (no encoder weights ship). Each tuner runs on the same inputs:

* baseline: the untuned generator (its render time per frame is the ratio's denominator);
* pti: `run_tune` (L2 + LPIPS with a random AlexNet backbone: the real one's cost, no download);
* hyperstyle: a hypernetwork first trained for --hyper-train-steps on the clip's crops (time shown
  apart: it is paid once per generator, not per video), then `run_hyperstyle` (per-frame offsets);
  quality with the per-frame offsets (what the render stage applies) and with the mean-offset
  generator alone (tune/generator.safetensors);
* local-tweak: `run_local_tweak` with a random discriminator of the generator's resolution.

Printed: seconds per frame of the tuning stage, its ratio to the baseline render, reconstruction PSNR
and MS-SSIM (videdit.evaluate.metrics) against the crops, and the peak resident memory of each step
(VmHWM, reset before each step where the kernel allows).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import from the repository root instead
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import peak_rss_mb, reset_peak_rss, set_threads


def _quality(G, align: Path, latents: Path, deltas=None) -> dict:
    """Mean PSNR and MS-SSIM of every frame's render (its latent, its transform) against its crop."""
    import numpy as np
    import torch

    from videdit.evaluate.metrics import ms_ssim, ms_ssim_scales, psnr
    from videdit.io.color import to_uint8
    from videdit.networks.hyperstyle import synthesize
    from videdit.tuning.data import CropFrames, inverse_transforms

    from videdit import records

    ws = torch.from_numpy(records.load_latents(latents))
    inv = inverse_transforms(records.TransformsRecord.load(align).matrix)
    crops = CropFrames(align / records.UNALIGNED, len(ws), G.img_resolution)
    scores = {"psnr": [], "ms_ssim": []}
    with torch.no_grad():
        for i in range(len(ws)):
            d = None if deltas is None else {k: v[i:i + 1] for k, v in deltas.items()}
            out = to_uint8(synthesize(G, ws[i:i + 1], inv[i:i + 1], d))[0]
            ref = to_uint8(crops.batch([i], torch.device("cpu")))[0]
            scores["psnr"].append(psnr(ref, out))
            if ms_ssim_scales(*ref.shape[:2]) >= 1:
                scores["ms_ssim"].append(ms_ssim(ref, out))
    return {k: float(np.mean(v)) if v else float("nan") for k, v in scores.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks tuners", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny64", help="generator: tiny64, tiny256, r256, r1024, ...")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--pti-steps", type=int, default=40)
    parser.add_argument("--tweak-steps", type=int, default=40)
    parser.add_argument("--hyper-train-steps", type=int, default=100)
    parser.add_argument("--hyper-iters", type=int, default=2, help="refinement iterations, in training and inference")
    parser.add_argument("--hyper-input", type=int, default=64, help="hypernetwork input size (256 = published)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from benchmarks.tune import generator_kwargs
    from videdit.checkpoints import load_generator
    from videdit.networks.discriminator import Discriminator
    from videdit.networks.encoders import ReStyleEncoder
    from videdit.networks.hyperstyle import FrameOffsets
    from videdit.networks.stylegan3 import Generator
    from videdit.tuning.pti import TuneSettings, run_tune
    from videdit.tuning.hyperstyle import HyperStyleSettings, run_hyperstyle
    from videdit.tuning.local_tweak import LocalTweakSettings, run_local_tweak
    from videdit.synthetic import write_tune_inputs
    from videdit.tuning.train_hyperstyle import HyperStyleTrainSettings, train_hyperstyle

    set_threads(args.threads)
    torch.manual_seed(args.seed)
    G = Generator(**generator_kwargs(args.config)).eval().requires_grad_(False)
    res = G.img_resolution
    D = Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=min(32768, 64 * res),
                      channel_max=min(512, 4 * res)).eval()
    rows = []
    with tempfile.TemporaryDirectory(prefix="videdit-bench-tuners-") as tmp:
        root = Path(tmp)
        align, latents, _ = write_tune_inputs(root, G, args.frames, seed=args.seed, max_rotation_deg=4.0)
        n = args.frames

        # Baseline: the untuned generator, its render time per frame.
        reset_peak_rss()
        ws = torch.from_numpy(np.load(latents))
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(n):
                G.synthesis(ws[i:i + 1])
        render_s = (time.perf_counter() - t0) / n
        rows.append(("untuned (baseline)", render_s, _quality(G, align, latents), peak_rss_mb(), ""))

        reset_peak_rss()
        t0 = time.perf_counter()
        pti = run_tune(align, latents, G, root / "pti", TuneSettings(steps=args.pti_steps, lpips_random_backbone=True,
                                                                     checkpoint_every=0, progress=False, device=args.device))
        seconds = time.perf_counter() - t0
        rows.append(("pti", seconds / n, _quality(load_generator(pti.generator_path), align, latents), peak_rss_mb(),
                     f"{args.pti_steps} steps"))

        reset_peak_rss()
        t0 = time.perf_counter()
        encoder = ReStyleEncoder("e4e", "resnet34", n_styles=G.num_ws).eval()
        # No trained encoder ships: a random one (residuals ~0.03) around the clip's mean latent, so the
        # hypernetwork trains on latents like the ones it gets at inference.
        latent_avg = torch.from_numpy(np.load(latents)).mean(0)
        trained = train_hyperstyle(align / "unaligned", G, (encoder, latent_avg), root / "hyper_train",
                                   HyperStyleTrainSettings(steps=args.hyper_train_steps, batch_size=2, lr=2e-3,
                                                           n_iters=args.hyper_iters, lpips_random_backbone=True,
                                                           encoder_iters=1,
                                                           input_size=args.hyper_input, checkpoint_every=0,
                                                           progress=False, device=args.device))
        train_s = time.perf_counter() - t0
        reset_peak_rss()
        t0 = time.perf_counter()
        hyper = run_hyperstyle(align, latents, G, root / "hyper", HyperStyleSettings(
            hypernetwork=str(trained.hypernetwork_path), n_iters=args.hyper_iters, progress=False, device=args.device))
        seconds = time.perf_counter() - t0
        offsets = FrameOffsets.load(hyper.offsets_path)
        rows.append(("hyperstyle (per-frame offsets)", seconds / n, _quality(G, align, latents, offsets.deltas()),
                     peak_rss_mb(), f"{args.hyper_iters} iters; training {train_s:.1f} s once, "
                                 f"{trained.parameters:,} params"))
        rows.append(("hyperstyle (mean offsets)", float("nan"),
                     _quality(load_generator(hyper.generator_path), align, latents), float("nan"),
                     "generator.safetensors alone"))

        reset_peak_rss()
        t0 = time.perf_counter()
        tweak = run_local_tweak(align, latents, G, root / "tweak", LocalTweakSettings(
            max_steps=args.tweak_steps, checkpoint_every=0, progress=False, device=args.device), discriminator=D)
        seconds = time.perf_counter() - t0
        rows.append(("local-tweak", seconds / n, _quality(load_generator(tweak.generator_path), align, latents),
                     peak_rss_mb(), f"{tweak.steps_done} steps"))

    print(f"\ntuners on {args.config} ({res} px), {n} frames, {args.threads} thread(s), device {args.device}")
    print(f"{'method':32s} {'s/frame':>9s} {'x render':>9s} {'PSNR dB':>8s} {'MS-SSIM':>8s} {'peak MB':>8s}  notes")
    for name, spf, q, peak, note in rows:
        ratio = spf / render_s if spf == spf else float("nan")
        print(f"{name:32s} {spf:9.3f} {ratio:9.1f} {q['psnr']:8.2f} {q['ms_ssim']:8.4f} {peak:8.0f}  {note}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
