"""The tuning package itself: the registry, the shared loop (resume, early stop), and its import rule."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from videdit.errors import VideditError

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.numeric, pytest.mark.usefixtures("one_torch_thread")]


# --------------------------------------------------------------------------------------------------
# Registry


def test_registry_names_and_interface():
    from videdit.tuning import TUNERS, get_tuner
    from videdit.tuning.base import Tuner

    assert list(TUNERS) == ["pti", "hyperstyle", "local-tweak", "none"]
    sections = {name: get_tuner(name).section for name in TUNERS}
    assert sections == {"pti": "tune", "hyperstyle": "hyperstyle", "local-tweak": "local_tweak", "none": "tune"}
    for name in TUNERS:
        tuner = get_tuner(name)
        assert isinstance(tuner, Tuner) and tuner.name == name
        settings = tuner.settings_class()
        params = tuner.cache_params(settings)
        assert "device" not in params and "progress" not in params
    assert "frame_cache_mb" not in get_tuner("pti").cache_params(get_tuner("pti").settings_class())
    assert get_tuner("none").cache_params(get_tuner("none").settings_class()) == {}


def test_unknown_tuner_is_one_line_naming_the_tuners():
    from videdit.tuning import get_tuner

    with pytest.raises(VideditError) as err:
        get_tuner("dreambooth")
    message = str(err.value)
    assert "\n" not in message and "'dreambooth'" in message
    for name in ("pti", "hyperstyle", "local-tweak", "none"):
        assert name in message


def test_input_files_and_generator_file():
    from videdit.tuning import get_tuner

    hyper = get_tuner("hyperstyle")
    assert hyper.input_files(hyper.settings_class()) == {}
    assert hyper.input_files(hyper.settings_class(hypernetwork="h.safetensors")) == {"hypernetwork": Path("h.safetensors")}
    tweak = get_tuner("local-tweak")
    filled = tweak.with_generator_file(tweak.settings_class(), "/w/snapshot.pkl")
    assert filled.discriminator == "/w/snapshot.pkl" and tweak.input_files(filled) == {"discriminator": Path("/w/snapshot.pkl")}
    assert tweak.with_generator_file(tweak.settings_class(), "/w/G.safetensors").discriminator is None
    assert get_tuner("pti").with_generator_file(get_tuner("pti").settings_class(), "/w/snapshot.pkl") == get_tuner("pti").settings_class()


def test_none_tuner_writes_the_generator_unchanged(tmp_path):
    from safetensors.torch import load_file

    from videdit.checkpoints import save_generator
    from videdit.networks.stylegan3 import Generator, tiny_generator_kwargs
    from videdit.stages.tune import run_tune
    from videdit.synthetic import write_tune_inputs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = Generator(**tiny_generator_kwargs(16, channels=8, num_layers=4)).eval()
    align, latents, _ = write_tune_inputs(tmp_path, G, 3)
    gen_path = save_generator(G, tmp_path / "G.safetensors")
    result = run_tune(align, latents, G, tmp_path / "tune", tuner="none")
    assert result.generator_path == tmp_path / "tune" / "generator.safetensors" and result.num_frames == 3
    before, after = load_file(str(gen_path)), load_file(str(result.generator_path))
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert not (tmp_path / "tune" / "checkpoints").exists()


# --------------------------------------------------------------------------------------------------
# The loop, on a toy problem: fit a vector to noisy targets drawn from the step (and from torch's RNG,
# so a resume that did not restore the RNG state would drift)


def _toy(steps: int, out: Path | None, *, every: int = 3, stop=None, seed: int = 0, on_step=None,
         fail_after: int | None = None):
    from videdit.tuning.data import batch_indices
    from videdit.tuning.loop import LoopConfig, StepOutput, run_loop

    torch.manual_seed(123)  # the caller's RNG: the loop must not depend on it nor change it
    model = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    targets = torch.arange(8, dtype=torch.float32).reshape(2, 4)
    pool = np.arange(2)

    def step(index: int) -> StepOutput:
        if fail_after is not None and index >= fail_after:
            raise KeyboardInterrupt  # an interrupted run: its last checkpoint stays
        row = int(batch_indices(index, pool, 1, seed)[0])
        noise = 0.01 * torch.randn(4)  # drawn from the loop's RNG stream
        loss = ((model.weight[0] - targets[row] - noise) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return StepOutput(float(loss.detach()), {"row": float(row)})

    config = LoopConfig("toy", steps, out / "checkpoints" / "latest.pt" if out else None, every,
                        fingerprint="toy-1", seed=seed, progress=False)
    result = run_loop(step, {"model": model, "optimizer": optimizer}, config, stop=stop, on_step=on_step)
    return result, model.weight.detach().clone()


def test_loop_resume_mid_run_equals_an_uninterrupted_run(tmp_path):
    reference, weight = _toy(10, tmp_path / "ref")
    rng_after = torch.get_rng_state()
    _toy(10, tmp_path / "ref")  # the caller's RNG state is what it was before the loop ran
    assert torch.equal(torch.get_rng_state(), rng_after)

    with pytest.raises(KeyboardInterrupt):
        _toy(10, tmp_path / "run", fail_after=7)  # checkpoints at steps 3 and 6 are on disk
    payload = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)
    assert payload["step"] == 6 and payload["tuner"] == "toy"
    resumed, resumed_weight = _toy(10, tmp_path / "run")
    assert resumed.resumed_from_step == 6 and resumed.steps_done == 10
    # Exact by construction: the checkpoint restores weights, optimiser state and RNG state bit for bit, and the
    # remaining steps repeat the same operations in this process.
    assert torch.equal(resumed_weight, weight)
    assert resumed.losses == reference.losses and len(reference.losses) == 10
    # A finished run reruns at once, from its final checkpoint.
    again, again_weight = _toy(10, tmp_path / "run")
    assert again.resumed_from_step == 10 and torch.equal(again_weight, weight)
    # Another fingerprint or kind is not resumed.
    other, _ = _toy(4, tmp_path / "run", seed=1)
    assert other.resumed_from_step == 0 and other.steps_done == 4


def test_loop_without_checkpoints_is_deterministic_and_reports_each_step():
    seen = []
    first, w1 = _toy(5, None, on_step=lambda k, out: seen.append((k, out.loss)))
    second, w2 = _toy(5, None)
    assert torch.equal(w1, w2) and first.losses == second.losses
    assert [k for k, _ in seen] == [1, 2, 3, 4, 5] and [v for _, v in seen] == first.losses


def test_loop_early_stop_ends_and_checkpoints_the_run(tmp_path):
    from videdit.tuning.loop import should_stop

    result, _ = _toy(50, tmp_path, every=100, stop=lambda losses: should_stop(losses, 2, 1e6))
    assert result.stopped_early and result.steps_done == 2
    payload = torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)
    assert payload["step"] == 2 and payload["stopped_early"]
    rerun, _ = _toy(50, tmp_path, every=100, stop=lambda losses: should_stop(losses, 2, 1e6))
    assert rerun.resumed_from_step == 2 and rerun.steps_done == 2 and rerun.stopped_early


def test_loop_non_finite_loss_is_one_line():
    from videdit.errors import InputError
    from videdit.tuning.loop import LoopConfig, StepOutput, run_loop

    config = LoopConfig("toy", 3, progress=False, nan_hint="lower toy.lr")
    with pytest.raises(InputError) as err:
        run_loop(lambda k: StepOutput(1.0, objective=float("nan")), {}, config)
    assert str(err.value) == "toy: loss became nan at step 1; lower toy.lr"


# --------------------------------------------------------------------------------------------------
# Import rules


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_tuning_imports_no_stage():
    files = sorted((ROOT / "videdit" / "tuning").glob("*.py"))
    assert len(files) >= 9
    offenders = {f.name: sorted(m for m in _imported_modules(f) if m == "videdit.stages" or m.startswith("videdit.stages."))
                 for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_tune_and_stitch_stages_import_no_other_stage():
    for name in ("tune", "stitch"):
        stages = {m for m in _imported_modules(ROOT / "videdit" / "stages" / f"{name}.py") if m.startswith("videdit.stages")}
        assert stages == set(), (name, stages)


def test_one_resolve_device_and_one_loop():
    """No tuning module defines its own device resolver, checkpoint writer or optimisation loop."""
    for path in sorted((ROOT / "videdit" / "tuning").glob("*.py")) + [ROOT / "videdit" / "stages" / "tune.py"]:
        tree = ast.parse(path.read_text())
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert "resolve_device" not in defined, path.name
        if path.name not in ("loop.py",):
            assert "run_loop" not in defined, path.name
        loops = [n for n in ast.walk(tree) if isinstance(n, ast.While)]
        assert path.name == "loop.py" or not loops, path.name


def test_tune_stage_cache_params_and_files():
    """The stage's cache key: what the pipeline keyed on before the registry (so old run folders stay cached)."""
    from dataclasses import asdict

    from videdit.stages.tune import tune_stage_params
    from videdit.tuning.hyperstyle import HyperStyleSettings
    from videdit.tuning.pti import TuneSettings

    pti = TuneSettings(steps=7, device="cuda", progress=False, frame_cache_mb=1, weights_dir="/w")
    params, files = tune_stage_params("pti", pti)
    expected = {k: v for k, v in asdict(pti).items() if k not in ("device", "progress", "frame_cache_mb", "weights_dir", "fit_memory",
                                                              "micro_batch")}
    assert params == dict(expected, tuner="pti") and files == {}
    hyper = HyperStyleSettings(hypernetwork="/w/h.safetensors", device="cuda")
    params, files = tune_stage_params("hyperstyle", hyper)
    assert params == dict({k: v for k, v in asdict(hyper).items() if k not in ("device", "progress")}, tuner="hyperstyle")
    assert files == {"hypernetwork": Path("/w/h.safetensors")}
    assert tune_stage_params("none", pti) == ({"tuner": "none"}, {})
    with pytest.raises(VideditError, match="unknown tuner"):
        tune_stage_params("nope", pti)
