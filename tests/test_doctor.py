"""`videdit doctor`: the environment report (no GPU needed; nothing may be built without --build)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videdit import doctor
from videdit.cli import main
from videdit.ops import extensions, selfcheck
from videdit.ops.upfirdn2d import upfirdn2d_torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_build(tmp_path, monkeypatch):
    """An empty ops cache, and any attempt to compile fails the test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(extensions, "build", lambda *a, **k: pytest.fail("doctor built a kernel without --build"))
    monkeypatch.setattr(extensions, "start_background_build", lambda *a: pytest.fail("doctor started a build"))


def test_json_report_describes_this_environment(no_build, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VIDEDIT_OPS", "cpp")
    weights = tmp_path / "weights"
    weights.mkdir()
    main(["doctor", "--json", "--weights-dir", str(weights)])  # returns (no SystemExit) on success
    report = json.loads(capsys.readouterr().out)
    assert report["torch"]["torch"] == torch.__version__
    assert report["torch"]["cuda_available"] == torch.cuda.is_available()
    assert len(report["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert report["ops"] == {"mode": "cpp", "env": "cpp"}
    assert report["native"]["cpu_extension"] == "missing"  # empty cache, and nothing was built
    assert report["native"]["cache"] == str(tmp_path / "cache" / "videdit" / "ops")
    assert set(report["video"]["encoders"]) == set(doctor.ENCODERS)
    assert all(isinstance(ok, bool) for ok in report["video"]["encoders"].values())
    assert set(report["landmarks"]) == {"dlib", "face-alignment"}
    assert report["weights"]["folder"] == str(weights)
    assert report["weights"]["files"] and not any(f["present"] for f in report["weights"]["files"])


def test_text_report_has_every_section(no_build, capsys):
    main(["doctor"])
    text = capsys.readouterr().out
    for section in ("torch:", "GPUs:", "ops:", "native kernels:", "video:", "landmarks:", "weights:"):
        assert f"\n{section}\n" in text, section
    assert "CPU fused filtered_lrelu: missing" in text


def test_a_broken_component_is_reported_not_raised(no_build, monkeypatch):
    def broken():
        raise ImportError("libavcodec.so.62: cannot open shared object file")

    monkeypatch.setattr(doctor, "_video_info", broken)
    report = doctor.collect()
    assert report["video"] == {"error": "ImportError: libavcodec.so.62: cannot open shared object file"}
    assert "video:\n  error: ImportError: libavcodec.so.62" in doctor.format_report(report)
    assert "error" not in report["landmarks"]  # the other probes still ran


def test_self_check_verdicts_are_read_from_the_cache(no_build, caplog):
    """What doctor lists per GPU is what the self-check saved (here on CPU, with one wrong kernel)."""
    device = torch.device("cpu")
    check = selfcheck.KernelSelfCheck(selfcheck.self_check_path(device))
    x = torch.randn([1, 2, 20, 20])
    f = torch.tensor([1.0, 2.0, 1.0])
    with caplog.at_level(logging.ERROR, logger="videdit.ops"):
        check.verdict("upfirdn2d", upfirdn2d_torch, selfcheck.call_arguments("upfirdn2d", x, (f,), {"up": 2}))
        check.verdict("upfirdn2d", lambda x, f, **kw: upfirdn2d_torch(x, f, **kw) + 1,
                      selfcheck.call_arguments("upfirdn2d", x, (f,), {"down": 2}))
    verdicts = doctor._verdicts(device)
    assert verdicts["passed"] == 1 and len(verdicts["failed"]) == 1
    assert verdicts["failed"][0].startswith("upfirdn2d|float32|f3|up1,1|down2,2")

    report = doctor.collect()
    report["native"]["verified"] = {"cuda:0": verdicts}
    text = doctor.format_report(report)
    assert "self-check on cuda:0: 1 shape families passed, 1 failed" in text
    assert "FAILED upfirdn2d|float32|f3|up1,1|down2,2" in text


def test_doctor_command_in_a_fresh_process(tmp_path):
    """The installed entry point: exit 0 and parseable JSON, nothing built (empty cache stays empty)."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "videdit", "doctor", "--json"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["native"]["cpu_extension"] == "missing"
    assert not list((tmp_path / "cache").rglob("*.so"))


def test_gpu_check_script_says_no_gpu_and_exits_2(tmp_path):
    if shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0:
        pytest.skip("this machine has a GPU: scripts/gpu_check.sh would run the whole check")
    env = dict(os.environ, GPU_CHECK_OUT=str(tmp_path / "out"))
    proc = subprocess.run([str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("gpu_check: no NVIDIA GPU on this machine (nvidia-smi is missing or lists no "
                                   "device); nothing checked")
    assert not (tmp_path / "out").exists()
