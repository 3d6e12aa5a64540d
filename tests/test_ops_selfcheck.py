"""The ops modules import without cycles, and the native kernels' self-check (videdit.ops.selfcheck).

No GPU is needed: the self-check is device-agnostic, so these tests hand it deliberately wrong
"kernels" on CPU tensors, either directly or through backend.lookup with the CUDA branch pointed
at CPU tensors (monkeypatched kernels.cuda_supports / cuda_module / CUDA_OPS).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch

import videdit.ops as ops
from videdit.ops import backend, kernels, reference, selfcheck
from videdit.ops.bias_act import bias_act_torch
from videdit.ops.filtered_lrelu import filtered_lrelu_torch
from videdit.ops.upfirdn2d import upfirdn2d_torch

from tests.test_architecture import find_cycles, import_graph  # noqa: E402

pytestmark = [pytest.mark.numeric, pytest.mark.usefixtures("one_torch_thread")]

OPS_DIR = Path(ops.__file__).resolve().parent
FILTER = torch.tensor([0.1, 0.25, 0.3, 0.25, 0.1])


# ----------------------------------------------------------------------------------------------
# Import cycles


def _import_graph() -> dict[str, set[str]]:
    """The ops modules' imports of each other (the package-wide reader of tests/test_architecture.py)."""
    graph = import_graph()
    return {name: {t for t in targets if t.startswith("videdit.ops")} for name, targets in graph.items()
            if name == "videdit.ops" or name.startswith("videdit.ops.")}


def test_ops_modules_import_each_other_without_cycles():
    graph = _import_graph()
    assert "videdit.ops.kernels" in graph["videdit.ops.backend"]  # the scan sees function-level imports too
    assert "videdit.ops.backend" not in graph["videdit.ops.kernels"]
    assert graph["videdit.ops.mode"] == set(), "the mode switch must stay a leaf"
    assert find_cycles(graph) == []


def test_backend_still_exports_the_mode_switch(monkeypatch):
    from videdit.ops import mode

    assert backend.use_ops is mode.use_ops and backend.MODES == mode.MODES
    monkeypatch.setenv(mode.ENV_VAR, "cpp")
    assert mode.current_mode() == "cpp"
    monkeypatch.setenv(mode.ENV_VAR, "nonsense")
    assert mode.current_mode() == "auto"


# ----------------------------------------------------------------------------------------------
# The self-check on its own


def _upfirdn_call(**overrides):
    gen = torch.Generator().manual_seed(0)
    args = dict(x=torch.randn([1, 4, 30, 26], generator=gen), f=FILTER, up=2, down=1, padding=[2, 1, 3, 2],
                flip_filter=False, gain=4)
    args.update(overrides)
    return args


def test_correct_kernel_passes_is_used_and_saved(tmp_path):
    calls = []

    def kernel(x, f, **kw):  # a correct "kernel": the PyTorch path itself
        calls.append(tuple(x.shape))
        return upfirdn2d_torch(x, f, **kw)

    check = selfcheck.KernelSelfCheck(tmp_path / "verdicts.json")
    checked = selfcheck.CheckedKernel("upfirdn2d", kernel, upfirdn2d_torch, check)
    a = _upfirdn_call()
    y = checked(a["x"], a["f"], up=2, padding=[2, 1, 3, 2], gain=4)
    torch.testing.assert_close(y, reference.upfirdn2d(a["x"], a["f"], up=2, padding=[2, 1, 3, 2], gain=4))
    assert calls[-1] == (1, 4, 30, 26), "the checked kernel did not run the real call"
    assert len(calls) == 2  # the check's small input, then the call
    saved = json.loads((tmp_path / "verdicts.json").read_text())
    assert saved["version"] == selfcheck.CHECK_VERSION
    [(key, verdict)] = saved["families"].items()
    assert key.startswith("upfirdn2d|float32|f5|up2,2|down1,1|pad2,1,3,2") and verdict["ok"] is True


def test_check_input_is_small_same_family_and_deterministic():
    a = selfcheck.call_arguments("filtered_lrelu", torch.randn([4, 512, 276, 276]),
                                 (), dict(fu=FILTER, fd=FILTER, b=torch.randn(512), up=2, down=2, padding=10))
    case1 = selfcheck.small_case("filtered_lrelu", a, torch.Generator().manual_seed(5))
    case2 = selfcheck.small_case("filtered_lrelu", a, torch.Generator().manual_seed(5))
    assert torch.equal(case1["x"], case2["x"]) and torch.equal(case1["b"], case2["b"])
    n, c, h, w = case1["x"].shape
    assert (n, c) == selfcheck.CHECK_PLANES and case1["b"].shape == (c,) and h == w and h < 100  # small
    out = reference.filtered_lrelu(case1["x"], fu=FILTER, fd=FILTER, b=case1["b"], up=2, down=2, padding=10)
    assert out.shape[-1] >= selfcheck.CHECK_OUTPUT_SIZE  # more than one 32-sample CUDA tile per axis
    assert selfcheck.family("filtered_lrelu", a) == selfcheck.family("filtered_lrelu", dict(a, x=case1["x"]))


@pytest.mark.parametrize("context", ["inference_mode", "no_grad", "autocast"])
def test_first_call_of_a_family_may_come_without_autograd(tmp_path, context):
    """The encoders run synthesis under torch.inference_mode(): the check still compares gradients
    (and an autocast around the call does not lower the reference's precision)."""
    check = selfcheck.KernelSelfCheck(None)
    checked = selfcheck.CheckedKernel("filtered_lrelu", filtered_lrelu_torch, filtered_lrelu_torch, check)
    contexts = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad,
                "autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}
    with contexts[context]():
        f = torch.tensor([0.25, 0.5, 0.25])  # inference tensors, in the first case
        x = torch.randn([1, 3, 30, 30])
        y = checked(x, fu=f, fd=f, b=torch.zeros(3), up=2, down=2, padding=2)
    [verdict] = check.verdicts.values()
    assert verdict.ok and "grad x" in verdict.detail and "grad b" in verdict.detail
    assert y.shape == (1, 3, 30, 30)


class _WrongGradient(torch.autograd.Function):
    """Identity forward, gradient 1% off: only a backward comparison can catch it."""

    @staticmethod
    def forward(ctx, y):
        return y.clone()

    @staticmethod
    def backward(ctx, dy):
        return dy * 1.01


@pytest.mark.parametrize("fault", ["scaled output", "wrong gradient", "raises", "nan"])
def test_faulty_kernel_fails_its_family(tmp_path, fault):
    def kernel(x, f, **kw):
        if fault == "raises":
            raise RuntimeError("CUDA error: invalid configuration argument\nmore lines")
        y = upfirdn2d_torch(x, f, **kw)
        if fault == "scaled output":
            return y * 1.01
        if fault == "nan":
            return y * float("nan")
        return _WrongGradient.apply(y)

    check = selfcheck.KernelSelfCheck(tmp_path / "verdicts.json")
    a = _upfirdn_call()
    verdict = check.verdict("upfirdn2d", kernel, selfcheck.call_arguments("upfirdn2d", a.pop("x"), (), a))
    assert not verdict.ok
    expected = {"scaled output": "forward", "wrong gradient": "grad x", "nan": "forward",
                "raises": "RuntimeError: CUDA error: invalid configuration argument"}[fault]
    assert verdict.detail.startswith(expected), verdict.detail


def test_bias_act_family_checks_the_bias_gradient(tmp_path):
    class WrongBiasGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, b):
            return x + b.reshape(1, -1, 1, 1)

        @staticmethod
        def backward(ctx, dy):
            return dy, dy.sum(dim=[0, 2, 3]) * 0.98

    def kernel(x, b, dim=1, act="linear", alpha=None, gain=None, clamp=None):
        return bias_act_torch(WrongBiasGradient.apply(x, b), None, dim=dim, act=act, alpha=alpha, gain=gain,
                              clamp=clamp)

    check = selfcheck.KernelSelfCheck(None)
    a = selfcheck.call_arguments("bias_act", torch.randn([2, 8, 5, 5]), (torch.randn(8),), dict(act="lrelu", clamp=3))
    verdict = check.verdict("bias_act", kernel, a)
    assert not verdict.ok and verdict.detail.startswith("grad b"), verdict.detail
    assert check.verdict("bias_act", bias_act_torch, dict(a, act="tanh")).ok  # another family, checked apart


def test_invalid_call_is_the_callers_error_not_a_kernel_failure(tmp_path, caplog):
    check = selfcheck.KernelSelfCheck(tmp_path / "verdicts.json")
    a = selfcheck.call_arguments("filtered_lrelu", torch.randn([1, 3, 16, 16]), (),
                                 dict(fu=FILTER, fd=FILTER, up=[2, 1], down=1, padding=2))
    with caplog.at_level(logging.WARNING, logger="videdit.ops"), pytest.raises(ValueError, match="one up"):
        check.verdict("filtered_lrelu", filtered_lrelu_torch, a)
    assert not check.verdicts and not caplog.records


# ----------------------------------------------------------------------------------------------
# Through backend.lookup and the public ops, with the CUDA branch pointed at CPU tensors


@pytest.fixture
def fake_cuda(tmp_path, monkeypatch):
    """The CUDA branch serving CPU float tensors with the given kernels (correct ones by default)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kernels, "cuda_supports", lambda x: x.dtype in (torch.float32, torch.float64))
    monkeypatch.setattr(kernels, "cuda_module", lambda: object())
    fakes = {"upfirdn2d": upfirdn2d_torch, "bias_act": bias_act_torch, "filtered_lrelu": filtered_lrelu_torch}
    monkeypatch.setattr(kernels, "CUDA_OPS", fakes)
    return fakes


def _lrelu_kwargs():
    return dict(fu=FILTER, fd=FILTER, b=torch.linspace(-1, 1, 4), up=2, down=2, padding=4, clamp=8.0)


def test_wrong_cuda_kernel_falls_back_warns_once_and_caches(fake_cuda, caplog):
    """The 'must show' case: a deliberately wrong filtered_lrelu kernel behind lookup."""
    ran_wrong = []

    def wrong_kernel(x, **kw):
        ran_wrong.append(tuple(x.shape))
        return filtered_lrelu_torch(x, **kw) * 1.01

    fake_cuda["filtered_lrelu"] = wrong_kernel
    x = torch.randn([2, 4, 64, 64], generator=torch.Generator().manual_seed(3))
    with backend.use_ops("torch"):
        expected = ops.filtered_lrelu(x, **_lrelu_kwargs())
    with caplog.at_level(logging.WARNING, logger="videdit.ops"), backend.use_ops("cuda"):
        checked = backend.lookup("filtered_lrelu", x, torch_path=filtered_lrelu_torch)
        assert isinstance(checked, selfcheck.CheckedKernel) and checked.kernel is wrong_kernel
        first = ops.filtered_lrelu(x, **_lrelu_kwargs())
        second = ops.filtered_lrelu(x, **_lrelu_kwargs())
    assert torch.equal(first, expected) and torch.equal(second, expected)  # the PyTorch path ran
    assert len(ran_wrong) == 1 and ran_wrong[0] != (2, 4, 64, 64)  # only the check's own small input
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "filtered_lrelu kernel failed its self-check" in warnings[0], warnings

    path = selfcheck.self_check_path(x.device)
    families = json.loads(path.read_text())["families"]
    failed = {k: v for k, v in families.items() if not v["ok"]}
    assert list(failed) == [selfcheck.family("filtered_lrelu", selfcheck.call_arguments("filtered_lrelu", x, (),
                                                                                        _lrelu_kwargs()))]
    assert all(v["ok"] for k, v in families.items() if k.startswith("upfirdn2d"))  # the inner ops passed

    # A new process reads the verdict: no second check, still one warning, still the PyTorch path.
    later = selfcheck.KernelSelfCheck(path)
    later.run = lambda *a, **k: pytest.fail("checked a family that already has a verdict")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="videdit.ops"):
        y = selfcheck.CheckedKernel("filtered_lrelu", wrong_kernel, filtered_lrelu_torch, later)(x, **_lrelu_kwargs())
        selfcheck.CheckedKernel("filtered_lrelu", wrong_kernel, filtered_lrelu_torch, later)(x, **_lrelu_kwargs())
    assert torch.equal(y, expected) and len(ran_wrong) == 1
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_raising_cuda_kernel_is_a_failed_family_not_a_crash(fake_cuda, caplog):
    def launch_failure(x, *args, **kwargs):
        raise RuntimeError("CUDA error: too many resources requested for launch")

    fake_cuda["bias_act"] = launch_failure
    x = torch.randn([3, 6, 4, 4])
    b = torch.randn(6)
    with caplog.at_level(logging.WARNING, logger="videdit.ops"), backend.use_ops("auto"):
        y = ops.bias_act(x, b, act="lrelu")
    torch.testing.assert_close(y, reference.bias_act(x, b, act="lrelu"))
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "too many resources requested" in warning


def test_correct_cuda_kernel_serves_the_call(fake_cuda, caplog):
    calls = []

    def good_kernel(x, f, **kw):
        calls.append(tuple(x.shape))
        return upfirdn2d_torch(x, f, **kw)

    fake_cuda["upfirdn2d"] = good_kernel
    x = torch.randn([1, 3, 20, 20])
    with caplog.at_level(logging.WARNING, logger="videdit.ops"), backend.use_ops("cuda"):
        y = ops.upfirdn2d(x, FILTER, down=2, padding=2)
        with backend.use_ops("torch"):
            assert backend.lookup("upfirdn2d", x) is None
    torch.testing.assert_close(y, reference.upfirdn2d(x, FILTER, down=2, padding=2))
    assert calls[-1] == (1, 3, 20, 20) and not caplog.records
    assert math.isfinite(y.abs().max().item())
