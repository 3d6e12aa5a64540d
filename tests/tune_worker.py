"""A tuning run in its own process, for the kill-and-resume test in test_tune.py.

usage: python tune_worker.py ALIGN_DIR LATENTS GENERATOR OUT_DIR SETTINGS_JSON THREADS SLEEP_S

Prints "step K" after every step (flushed) and sleeps SLEEP_S, so the test can SIGKILL it midway.
"""
from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    align_dir, latents, generator, out_dir, settings_json, threads, sleep_s = argv
    import torch

    torch.set_num_threads(int(threads))
    from videdit.tuning.pti import TuneSettings, run_tune

    def on_step(step: int, loss: float) -> None:
        print(f"step {step}", flush=True)
        time.sleep(float(sleep_s))

    run_tune(align_dir, latents, generator, out_dir, TuneSettings(**json.loads(settings_json)), on_step=on_step)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
