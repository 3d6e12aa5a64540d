"""The one optimisation loop: step, record, progress bar, early stop, checkpoint, resume.

Every iterative algorithm (PTI, the local tweak, HyperStyle training, stitching tuning) hands it a
per-step function and the objects whose state a checkpoint holds (networks, optimizers); the loop does
the rest the same way for all of them:

* `step_fn(step)` runs optimisation step `step` (0-based) and returns a `StepOutput`. Batches must be
  a pure function of the step (`data.batch_indices`), so a resumed run draws what an uninterrupted
  one would.
* every `checkpoint_every` steps (and at an early stop, and after the last step) the state objects,
  the losses so far and torch's RNG state go to `checkpoint_path`, atomically.
* a run finds a checkpoint of the same name and fingerprint, not past `steps`, and continues it with
  the RNG state restored, so it ends where an uninterrupted run ends. Any other checkpoint is ignored
  and replaced. A fresh run seeds torch's RNG with `seed`. The caller's RNG state is left as it was.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from videdit.lazy import lazy_module
from videdit.errors import CheckpointError, InputError
from videdit.tuning.data import CHECKPOINT_VERSION, load_checkpoint, save_checkpoint

torch = lazy_module("torch")  # settings are read without loading torch (start-up)

log = logging.getLogger("videdit")


@dataclass(frozen=True)
class StepOutput:
    """What one step reports. loss: recorded, watched by the early stop and shown; parts: its terms (shown,
    passed to on_step); objective: the optimised total when it is not `loss` (must stay finite too)."""

    loss: float
    parts: Mapping[str, float] = field(default_factory=dict)
    objective: float | None = None


def accumulate_gradients(indices: np.ndarray, micro_batch: int,
                         loss_of: Callable[[np.ndarray], tuple[torch.Tensor, Mapping[str, torch.Tensor]]]
                         ) -> tuple[float, dict[str, float]]:
    """Backward of the batch's mean loss, `micro_batch` samples at a time.

    loss_of(part) -> (the mean loss over those samples, its terms). Each part's loss is weighted by its
    share of the batch, so the gradients add up to the whole batch's (the same maths up to float
    round-off) while memory holds one micro-batch, and on a CPU, where per-image cost grows with the batch,
    a batch of 4 costs 4 batches of 1. Returns the batch's mean loss and terms."""
    micro_batch = max(1, int(micro_batch))
    total, parts_total = 0.0, {}
    for lo in range(0, len(indices), micro_batch):
        part = indices[lo:lo + micro_batch]
        share = len(part) / len(indices)
        loss, parts = loss_of(part)
        (loss * share).backward()
        total += float(loss.detach()) * share
        for key, value in parts.items():
            parts_total[key] = parts_total.get(key, 0.0) + float(value) * share
    return total, parts_total


def default_micro_batch(device: torch.device, batch_size: int) -> int:
    """Samples per forward/backward when not set: 1 on a CPU (bigger batches cost more per image there),
    the whole batch on a GPU."""
    return 1 if torch.device(device).type == "cpu" else max(1, int(batch_size))


@dataclass
class LoopConfig:
    """name: progress label, log and error prefix, and the checkpoint's "tuner" entry (a checkpoint written
    under another name is not resumed). checkpoint_path None: no checkpoints; checkpoint_every 0: none written (one
    already there is still resumed)."""

    name: str
    steps: int
    checkpoint_path: Path | None = None
    checkpoint_every: int = 0
    fingerprint: str = ""
    seed: int = 0
    progress: bool = True
    nan_hint: str = "lower the learning rate"


@dataclass
class LoopResult:
    steps_done: int
    resumed_from_step: int  # 0 for a fresh run
    stopped_early: bool
    losses: list[float]  # StepOutput.loss of every step, from step 1 (a resumed run includes the earlier ones)


def should_stop(losses: list[float], window: int, threshold: float, rel_improvement: float = 0.0) -> bool:
    """The early-stop rule: the mean loss of the last `window` steps is below `threshold` (> 0), or it
    improved by less than `rel_improvement` (> 0) on the window before. window < 1: never."""
    if window < 1 or len(losses) < window:
        return False
    recent = float(np.mean(losses[-window:]))
    if threshold > 0 and recent < threshold:
        return True
    if rel_improvement > 0 and len(losses) >= 2 * window:
        previous = float(np.mean(losses[-2 * window:-window]))
        return previous - recent < rel_improvement * previous
    return False


def _state_dicts(state: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, obj in state.items():
        if isinstance(obj, torch.nn.Module):
            out[name] = {k: v.detach().to("cpu") for k, v in obj.state_dict().items()}
        else:  # optimizers: their state is reloaded onto the parameters' device
            out[name] = obj.state_dict()
    return out


def _resume(config: LoopConfig, state: Mapping[str, Any], device: torch.device) -> tuple[int, list[float], bool]:
    """(start step, losses, stopped early) from a matching checkpoint (state and RNG restored), else a fresh start."""
    ckpt = load_checkpoint(config.checkpoint_path) if config.checkpoint_path is not None else None
    if (ckpt is not None and ckpt.get("tuner") == config.name and ckpt.get("fingerprint") == config.fingerprint
            and int(ckpt["step"]) <= config.steps):
        try:
            for name, obj in state.items():
                obj.load_state_dict(ckpt["state"][name])
        except (RuntimeError, KeyError, ValueError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise CheckpointError(f"{config.name} checkpoint {config.checkpoint_path} does not fit: {first}") from None
        torch.set_rng_state(ckpt["rng_cpu"])
        if device.type == "cuda" and ckpt.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng_cuda"], device)
        start = int(ckpt["step"])
        log.info("%s: resuming from step %d of %d", config.name, start, config.steps)
        return start, list(ckpt["losses"]), bool(ckpt["stopped_early"])
    if ckpt is not None:
        log.warning("%s: checkpoint %s is from other settings, inputs or more steps; starting over",
                    config.name, config.checkpoint_path)
    torch.manual_seed(config.seed)
    return 0, [], False


def run_loop(
    step_fn: Callable[[int], StepOutput],
    state: Mapping[str, Any],
    config: LoopConfig,
    *,
    stop: Callable[[list[float]], bool] | None = None,
    on_step: Callable[[int, StepOutput], None] | None = None,
    device: torch.device | str = "cpu",
) -> LoopResult:
    """Run `step_fn` for steps start..config.steps-1 (see the module notes).

    state: name -> module or optimizer, saved and restored by checkpoints. stop(losses) -> True ends
    the run early (checked after every step). on_step(steps_done, output) runs after each step's
    checkpoint, steps counted from 1.
    """
    from videdit import progress

    device = torch.device(device)
    if config.steps < 0 or config.checkpoint_every < 0:
        raise InputError(f"{config.name}: steps >= 0 and checkpoint_every >= 0 are required")
    resumable = config.checkpoint_path is not None  # a checkpoint left by an earlier run is read even when this one writes none
    checkpoints = resumable and config.checkpoint_every > 0
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        if resumable:
            start, losses, stopped = _resume(config, state, device)
        else:
            start, losses, stopped = 0, [], False
            torch.manual_seed(config.seed)
        saved_step = start

        def checkpoint(step: int) -> None:
            nonlocal saved_step
            saved_step = step
            save_checkpoint(config.checkpoint_path, {
                "version": CHECKPOINT_VERSION, "tuner": config.name, "step": step, "fingerprint": config.fingerprint,
                "stopped_early": stopped, "losses": losses, "state": _state_dicts(state),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None})

        bar = progress.bar(config.steps, config.name, "step", initial=start, enabled=config.progress)
        step = start
        try:
            while step < config.steps and not stopped:
                out = step_fn(step)
                step += 1
                for value in (out.loss, out.objective):
                    if value is not None and not math.isfinite(value):
                        raise InputError(f"{config.name}: loss became {value} at step {step}; {config.nan_hint}")
                losses.append(float(out.loss))
                stopped = bool(stop(losses)) if stop is not None else False
                bar.update(1)
                bar.set_postfix({k: f"{float(v):.4f}" for k, v in {"loss": out.loss, **out.parts}.items()},
                                refresh=False)
                if checkpoints and (step % config.checkpoint_every == 0 or stopped):
                    checkpoint(step)
                if on_step is not None:
                    on_step(step, out)
        finally:
            bar.close()
        if stopped:
            log.info("%s: early stop at step %d", config.name, step)
        if checkpoints and step > saved_step:
            checkpoint(step)  # the final state, so a rerun with the same steps finishes at once
    return LoopResult(steps_done=step, resumed_from_step=start, stopped_early=stopped, losses=losses)
