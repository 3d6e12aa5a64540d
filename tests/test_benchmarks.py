"""benchmarks/ (outside the package): the shared helpers, both ways of running a benchmark, the wheel
leaving them out, and the whole-pipeline benchmark's arithmetic."""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import common, pipeline

ROOT = Path(__file__).resolve().parents[1]


def _child_env() -> dict[str, str]:
    # No PYTHONPATH: the command must find the repository root by itself.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return dict(env, OMP_NUM_THREADS="1")


def _fresh_pages(mib: int):
    """`mib` MiB of newly mapped, touched memory: resident pages the process did not hold before (an
    allocation through malloc may reuse freed heap pages that are still resident after earlier tests)."""
    import mmap

    block = mmap.mmap(-1, mib * 2**20)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    return block


@pytest.mark.skipif(not common.reset_peak_rss(), reason="kernel without a resettable VmHWM")
def test_peak_rss_sees_an_allocation_and_forgets_it_after_a_reset():
    common.reset_peak_rss()
    before = common.peak_rss_mb()
    block = _fresh_pages(64)
    with_block = common.peak_rss_mb()
    block.close()
    common.reset_peak_rss()
    after_reset = common.peak_rss_mb()
    assert with_block - before >= 60
    assert after_reset < with_block - 40


def test_rss_poller_measures_the_increase_inside_the_block():
    with common.RSSPoller(interval_s=0.001) as meter:
        block = _fresh_pages(48)
    assert meter.increase_mb >= 40
    block.close()
    with common.RSSPoller() as quiet:
        pass
    assert quiet.increase_mb < 40


def test_best_time_keeps_the_fastest_call_and_warms_up_once():
    durations = iter([0.03, 0.0, 0.02, 0.01])
    calls = []

    def work():
        calls.append(1)
        import time

        time.sleep(next(durations))

    best = common.best_time(work, 3, warmup=True)
    assert len(calls) == 4  # one warm-up, three timed
    assert 0.0 <= best < 0.01  # the 0 s call, not the 0.03 s warm-up


def test_ratio_and_markdown_table():
    assert common.ratio(3.0, 1.5) == 2.0
    assert math.isnan(common.ratio(1.0, 0.0))
    table = common.markdown_table(["a", "b"], [[1, "x"], [2.5, "y"]]).splitlines()
    assert table == ["| a | b |", "|---|---|", "| 1 | x |", "| 2.5 | y |"]


def test_only_common_reads_the_peak_memory():
    # One helper per job: neither a benchmark nor the package keeps its own copy of the VmHWM reader
    # (videdit.memory's, which benchmarks/common.py uses).
    files = [*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "videdit").rglob("*.py")]
    readers = sorted(str(p.relative_to(ROOT)) for p in files if "VmHWM:" in p.read_text())
    assert readers == ["videdit/memory.py"]


def test_python_m_benchmarks_lists_every_benchmark_but_not_the_helpers():
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, env=_child_env(),
                         capture_output=True, text=True, check=True).stdout
    names = out.strip().splitlines()[-1].split(": ", 1)[1].split(", ")
    expected = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_"))
    assert names == [n for n in expected if n != "common"]
    assert "pipeline" in names
    unknown = subprocess.run([sys.executable, "-m", "benchmarks", "nonesuch"], cwd=ROOT, env=_child_env(),
                             capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown benchmark 'nonesuch'" in unknown.stderr


def test_a_benchmark_runs_as_a_script_from_another_folder(tmp_path):
    # The script imports benchmarks.common and benchmarks.tune from the repository root it lives in.
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render.py"), "--help"], cwd=tmp_path,
                          env=_child_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "python -m benchmarks render" in proc.stdout


def test_the_wheel_leaves_the_benchmarks_out():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    from setuptools import find_packages

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(str(ROOT), include=config["include"], exclude=config.get("exclude", ()))
    assert "videdit" in packages and "videdit.stages" in packages
    assert not [p for p in packages if p.split(".")[0] in ("benchmarks", "tests")]
    assert not (ROOT / "videdit" / "bench").exists()


def test_pipeline_size_option_is_checked():
    assert pipeline.parse_size("1920x1080") == (1920, 1080)
    for bad in ("1920", "axb", "1921x1080", "32x32"):
        with pytest.raises(argparse.ArgumentTypeError):
            pipeline.parse_size(bad)


def test_pipeline_rows_divide_by_frames_or_steps_and_extrapolate_a_minute():
    # wall seconds for the per-frame times and the extrapolation; CPU seconds for the ratio to the floor
    stages = {"align": {"seconds": 6.0, "clock_seconds": 12.0, "peak_rss_mb": 1024.0, "peak_cuda_mb": None},
              "tune": {"seconds": 10.0, "clock_seconds": 20.0, "peak_rss_mb": 2048.0, "peak_cuda_mb": None},
              "edit": {"seconds": 0.3, "clock_seconds": 0.3, "peak_rss_mb": 512.0, "peak_cuda_mb": None}}
    floors = {"align": {"seconds": 0.5, "what": "decode ..."}, "tune": {"seconds": 4.0, "what": "fwd+bwd"}}
    rows = {r["stage"]: r for r in pipeline.summarise(stages, floors, n_frames=3, preset_steps=350, tune_steps=2,
                                                      threads=2)}
    assert rows["align"]["per_unit_s"] == pytest.approx(2.0)
    assert rows["align"]["over_floor"] == pytest.approx(8.0)
    assert rows["align"]["minute_s"] == pytest.approx(2.0 * 1800)
    assert rows["tune"]["unit"] == "step" and rows["tune"]["per_unit_s"] == pytest.approx(5.0)
    assert rows["tune"]["minute_s"] == pytest.approx(5.0 * 350)  # per video, not per frame
    assert rows["tune"]["minute_unloaded_s"] == pytest.approx(20.0 / 2 / 2 * 350)  # CPU s / threads
    assert rows["edit"]["floor_s"] is None and rows["edit"]["over_floor"] is None
    table = pipeline.format_table(list(rows.values()), cuda=False, preset_steps=350).splitlines()
    assert table[0].startswith("| stage | s per frame | peak RSS GB | floor CPU s |")
    assert "| tune | 5.00 /step | 2.0 | 4.00 | fwd+bwd | 2.50 | 29.2 min (350 steps) | 29.2 min |" in table
    total_s = 2.0 * 1800 + 5.0 * 350 + 0.1 * 1800
    total_unloaded_s = 2.0 * 1800 + 5.0 * 350 + 0.05 * 1800
    assert table[-1].endswith(f"**{total_s / 3600:.1f} h** | **{total_unloaded_s / 3600:.1f} h** |")


@pytest.mark.slow
def test_pipeline_benchmark_measures_every_stage_and_its_floor_with_small_networks(tmp_path, one_torch_thread):
    # The benchmark's own code paths end to end, with the stand-in networks (the real config is minutes).
    from videdit.pipeline import STAGE_ORDER, Pipeline, StandInModels
    from videdit.synthetic import make_clip

    pipe = Pipeline.from_preset("default", device="cpu", quiet=True, models=StandInModels(64), overrides={
        "align.crop_size": 64, "encode.input_size": 64, "edit.direction": "age", "tune.steps": 1,
        "tune.batch_size": 1, "tune.lpips_random_backbone": True})
    clip = make_clip(tmp_path / "clip.mp4", n_frames=2, size=(320, 256), audio=False).path
    stages = pipeline.run_stages(pipe, clip, tmp_path / "run")
    assert list(stages) == list(pipe.active_stages()) == [s for s in STAGE_ORDER if s != "stitch"]
    assert all(s["seconds"] > 0 and s["clock_seconds"] > 0 and s["peak_rss_mb"] > 100 for s in stages.values())
    clock = pipeline.ratio_clock(pipe.device)
    floors = pipeline.network_floors(pipe, 3, 64, 2, {"encode": 2, "tune": 1, "render": 2}, clock)
    floors["align"] = pipeline.align_floor(clip, pipe.sections["align"], "cpu", tmp_path, clock)
    assert sorted(floors) == ["align", "encode", "render", "tune"]
    assert all(f["seconds"] > 0 for f in floors.values())
    rows = pipeline.summarise(stages, floors, n_frames=2, preset_steps=350, tune_steps=1, threads=1)
    table = pipeline.format_table(rows, cuda=False, preset_steps=350).splitlines()
    assert len(table) == 2 + len(stages) + 1  # header, rule, one row per stage run, total


def test_estimate_table_puts_each_stage_beside_its_estimate():
    stages = {"align": {"seconds": 3.0}, "encode": {"seconds": 12.0}, "edit": {"seconds": 0.01}}
    table = pipeline.estimate_table({"align": 2.0, "encode": 16.0, "edit": 0.0}, stages).splitlines()
    assert table[2] == "| align | 2.0 | 3.0 | 1.50 |"
    assert table[3] == "| encode | 16.0 | 12.0 | 0.75 |"
    assert table[4] == "| edit | 0.0 | 0.0 | - |"  # nothing to compare with
    assert table[5] == "| **total** | 18.0 | 15.0 | **0.83** |"


@pytest.mark.parametrize("radial", [True, False])
def test_synthesis_profile_counts_the_convolutions_as_flopcountermode(radial, monkeypatch, one_torch_thread):
    """The --profile floor's conv FLOPs are what torch's FlopCounterMode counts in the convolution of each
    modulated conv (1x1 convs run as a matrix product, 3x3 as a convolution); every layer reports both families."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks import synthesis
    from videdit.networks import stylegan3
    from videdit.ops import modconv

    torch.manual_seed(0)
    G = stylegan3.Generator(**stylegan3.tiny_generator_kwargs(radial=radial))
    counted = []
    original = modconv._conv2d

    def counting(*args, **kwargs):
        with FlopCounterMode(display=False) as counter:
            y = original(*args, **kwargs)
        counted.append(counter.get_total_flops())
        return y

    monkeypatch.setattr(modconv, "_conv2d", counting)
    for name in ("modulated_conv2d", "filtered_lrelu"):  # restored after the timers' wrapping
        monkeypatch.setattr(stylegan3, name, getattr(stylegan3, name))
    timers = synthesis._FamilyTimers(stylegan3, G.synthesis)
    with torch.no_grad():
        G.synthesis(G.mapping(torch.randn(1, G.z_dim)))
    report = timers.report(1.0, {"gemm_gflops": 100.0, "bandwidth_gbs": 10.0})
    conv, act = report["families"]["modulated conv"], report["families"]["filtered_lrelu"]
    assert len(counted) == len(G.synthesis.layer_names)
    assert conv["gflop"] * 1e9 == pytest.approx(sum(counted), rel=1e-12)
    assert act["gflop"] > 0 and act["gb"] > 0
    assert act["floor_s"] == pytest.approx(max(act["gflop"] / 100.0, act["gb"] / 10.0))
    assert set(report["layers"]) == set(G.synthesis.layer_names)
    assert all(set(fams) == {"modulated conv", "filtered_lrelu"} for fams in report["layers"].values())
