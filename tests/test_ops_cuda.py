"""The CUDA kernels on a real GPU against the literal PyTorch reference, forward and backward, and
their self-check in place (`pytest -m cuda`; scripts/gpu_check.sh runs these).

Every test here is marked `cuda` and skips, saying why, where no GPU is visible or the CUDA
extension cannot be built (no nvcc, or a CPU-only torch).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

import videdit.ops as ops
from videdit.ops import backend, kernels, reference, selfcheck
from videdit.ops.bias_act import bias_act_torch
from videdit.ops.filtered_lrelu import filtered_lrelu_torch
from benchmarks.gpu import sg3_layer_calls
from videdit.ops.upfirdn2d import upfirdn2d_torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="no CUDA GPU visible: the CUDA kernels can only run on a GPU machine "
                                        "(scripts/gpu_check.sh)")]

DEVICE = "cuda"
# Largest |kernel - reference| relative to the reference's largest magnitude.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 1e-2}
LAYER_CALLS = [c for cfg in ("t", "r") for c in sg3_layer_calls(cfg, 1024, channels=3)]


@pytest.fixture(scope="module")
def cuda_ext():
    if torch.version.cuda is None:
        pytest.skip("torch is a CPU-only build: the CUDA extension cannot be built")
    cuda_home = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    if shutil.which("nvcc") is None and not (cuda_home / "bin" / "nvcc").exists():
        pytest.skip(f"no nvcc on PATH or under {cuda_home}: the CUDA extension cannot be built")
    module = kernels.cuda_module()
    assert module is not None, "the CUDA extension failed to build or load: see the warning above"
    return module


def assert_close_rel(got, want, dtype, what):
    scale = want.abs().max().item()
    err = (got.double() - want.double()).abs().max().item() / max(scale, 1e-30)
    assert err <= TOLERANCE[dtype], f"{what}: max error {err:.2e} of the largest value {scale:.3g}"


def forward_backward(fn, x, b, kwargs, seed=0):
    """fn's output and its gradients to x and b for a fixed random output weighting."""
    x = x.detach().requires_grad_(True)
    b = None if b is None else b.detach().requires_grad_(True)
    y = fn(x, b=b, **kwargs) if "b" not in kwargs else fn(x, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.device, y.dtype)
    grads = torch.autograd.grad(y, [t for t in (x, b) if t is not None], dy)
    return [y, *grads]


def _wide(v):
    return v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("call", LAYER_CALLS, ids=[c.name.replace(" ", "-") for c in LAYER_CALLS])
def test_filtered_lrelu_kernel_matches_reference(cuda_ext, call, dtype):
    """Every layer of StyleGAN3-T/R at 1024 (real filters, factors, padding and image sizes; 3 channels).

    Full size: forward in every dtype, backward in float64. In float32/16 a full-size backward is not
    comparable: among millions of intermediates a few lie within rounding of the leaky ReLU's kink,
    and float32 vs float64 puts them on different sides (gradient x1 vs x0.2; measured 1e-3 of the
    largest gradient on T-L10 for float32 reference vs float64 reference). So float32/16 gradients
    are compared on a small input of the same layer (about 10^4 intermediates), as the self-check does.
    """
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(call.shape, generator=gen) * 4).to(DEVICE, dtype)  # x4: the clamp (256) stays rare but
    b = torch.randn(call.shape[1], generator=gen).to(DEVICE, dtype)  # the negative side is well covered
    kw = {k: (v.to(DEVICE) if isinstance(v, torch.Tensor) else v) for k, v in call.kwargs.items()}
    kw64 = {k: _wide(v) for k, v in kw.items()}
    if dtype == torch.float64:
        got = forward_backward(kernels.filtered_lrelu_cuda, x, b, kw)
        want = forward_backward(reference.filtered_lrelu, x, b, kw)
        for name, g, w in zip(("forward", "grad x", "grad b"), got, want):
            assert_close_rel(g, w, dtype, f"{call.name} {name}")
        return
    with torch.no_grad():
        assert_close_rel(kernels.filtered_lrelu_cuda(x, b=b, **kw),
                         reference.filtered_lrelu(x.double(), b=b.double(), **kw64), dtype, f"{call.name} forward")
    a = selfcheck.call_arguments("filtered_lrelu", x, (), dict(kw, b=b))
    case = selfcheck.small_case("filtered_lrelu", a, torch.Generator().manual_seed(2))
    small = {k: v for k, v in case.items() if k not in ("x", "b")}
    got = forward_backward(kernels.filtered_lrelu_cuda, case["x"], case["b"], small)
    want = forward_backward(reference.filtered_lrelu, case["x"].double(), case["b"].double(),
                            {k: _wide(v) for k, v in small.items()})
    for name, g, w in zip(("small forward", "small grad x", "small grad b"), got, want):
        assert_close_rel(g, w, dtype, f"{call.name} {name}")


def test_filtered_lrelu_clamp_and_gradcheck(cuda_ext):
    gen = torch.Generator().manual_seed(2)
    call = LAYER_CALLS[3]
    x = (torch.randn([1, 2, 20, 20], generator=gen, dtype=torch.float64) * 300).to(DEVICE)  # clamp bites
    b = torch.randn([2], generator=gen, dtype=torch.float64).to(DEVICE)
    kw = {k: (_wide(v).to(DEVICE) if isinstance(v, torch.Tensor) else v) for k, v in call.kwargs.items()}
    got = forward_backward(kernels.filtered_lrelu_cuda, x, b, kw)
    want = forward_backward(reference.filtered_lrelu, x, b, kw)
    for g, w in zip(got, want):
        assert_close_rel(g, w, torch.float64, "clamped layer")
    small = dict(kw, clamp=2.0)
    xs = torch.randn([1, 2, 12, 12], generator=gen, dtype=torch.float64).to(DEVICE).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: kernels.filtered_lrelu_cuda(t, **small), [xs], eps=1e-6, atol=1e-5)


UPFIRDN_CASES = {
    "up2-12taps": dict(f=torch.randn(12, generator=torch.Generator().manual_seed(3)), up=2, padding=[6, 5, 6, 5],
                       gain=4),
    "down2-4taps": dict(f=torch.tensor([1.0, 3.0, 3.0, 1.0]), down=2, padding=1),
    "2d-filter-flip": dict(f=torch.randn([5, 7], generator=torch.Generator().manual_seed(4)), up=[2, 1], down=[1, 2],
                           padding=[3, 2, 1, 4], flip_filter=True),
    "crop": dict(f=torch.tensor([0.25, 0.5, 0.25]), up=3, down=2, padding=[-4, -1, 2, -3]),
    "no-filter": dict(f=None, down=2),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("case", sorted(UPFIRDN_CASES))
def test_upfirdn2d_kernel_matches_reference(cuda_ext, case, dtype):
    kw = {k: (v.to(DEVICE) if isinstance(v, torch.Tensor) else v) for k, v in UPFIRDN_CASES[case].items()}
    x = torch.randn([2, 3, 37, 41], generator=torch.Generator().manual_seed(5)).to(DEVICE, dtype)
    f = kw.pop("f")
    got = forward_backward(lambda t, b=None, **k: kernels.upfirdn2d_cuda(t, f, **k), x, None, kw)
    want = forward_backward(lambda t, b=None, **k: reference.upfirdn2d(t, _wide(f), **k), x.double(), None, kw)
    for name, g, w in zip(("forward", "grad x"), got, want):
        assert_close_rel(g, w, dtype, f"{case} {name}")


def test_upfirdn2d_kernel_second_order(cuda_ext):
    """The CUDA upfirdn2d is differentiable any number of times (R1 penalties of the discriminator)."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64, device=DEVICE)
    x = torch.randn([1, 2, 9, 11], dtype=torch.float64, device=DEVICE, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: kernels.upfirdn2d_cuda(t, f, up=2, down=1, padding=2), [x])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("act", sorted(kernels.ACTIVATION_IDS))
def test_bias_act_kernel_matches_reference(cuda_ext, act, dtype):
    gen = torch.Generator().manual_seed(6)
    for shape, dim, clamp in (([2, 8, 5, 7], 1, None), ([16, 24], 1, 0.7), ([3, 4, 6], 2, 2.0)):
        x = (torch.randn(shape, generator=gen) * 2).to(DEVICE, dtype)
        b = torch.randn(shape[dim], generator=gen).to(DEVICE, dtype)
        kw = dict(dim=dim, act=act, clamp=clamp)
        got = forward_backward(kernels.bias_act_cuda, x, b, kw)
        want = forward_backward(reference.bias_act, x.double(), b.double(), kw)
        for name, g, w in zip(("forward", "grad x", "grad b"), got, want):
            assert_close_rel(g, w, dtype, f"{act} {shape} dim {dim} clamp {clamp} {name}")


# ----------------------------------------------------------------------------------------------
# The self-check in place


@pytest.fixture
def fresh_verdicts(tmp_path, monkeypatch):
    """Verdicts in a fresh file (the built extension stays where it is: no rebuild)."""
    path = tmp_path / "selfcheck.json"
    check = selfcheck.KernelSelfCheck(path)
    monkeypatch.setattr(selfcheck, "cuda_self_check", lambda device: check)
    return path


def test_real_kernels_pass_their_self_check_and_serve_the_calls(cuda_ext, fresh_verdicts, caplog):
    call = LAYER_CALLS[5]
    x = torch.randn([1, 16, *call.shape[2:]], generator=torch.Generator().manual_seed(7)).to(DEVICE)
    kw = {k: (v.to(DEVICE) if isinstance(v, torch.Tensor) else v) for k, v in call.kwargs.items()}
    b = torch.randn(16, device=DEVICE)
    with caplog.at_level(logging.WARNING, logger="videdit.ops"):
        for mode in ("cuda", "auto"):
            with backend.use_ops(mode):
                assert isinstance(backend.lookup("filtered_lrelu", x, torch_path=filtered_lrelu_torch),
                                  selfcheck.CheckedKernel)
                y = ops.filtered_lrelu(x, b=b, **kw)
            assert torch.equal(y, kernels.filtered_lrelu_cuda(x, b=b, **kw)), "the kernel did not serve the call"
        with backend.use_ops("cuda"):
            ops.upfirdn2d(x, torch.tensor([1.0, 3.0, 3.0, 1.0], device=DEVICE), down=2, padding=1)
            ops.bias_act(x, b, act="lrelu")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    families = json.loads(fresh_verdicts.read_text())["families"]
    assert {k.split("|")[0] for k in families} == {"filtered_lrelu", "upfirdn2d", "bias_act"}
    assert all(v["ok"] for v in families.values()), families
    with backend.use_ops("torch"):
        assert backend.lookup("filtered_lrelu", x, torch_path=filtered_lrelu_torch) is None


def test_wrong_kernel_on_the_gpu_falls_back_with_one_warning(cuda_ext, fresh_verdicts, monkeypatch, caplog):
    def off_by_one_percent(x, b=None, **kw):
        return kernels.bias_act_cuda(x, b, **kw) * 1.01

    monkeypatch.setitem(kernels.CUDA_OPS, "bias_act", off_by_one_percent)
    x = torch.randn([4, 32, 8, 8], device=DEVICE)
    b = torch.randn(32, device=DEVICE)
    with caplog.at_level(logging.WARNING, logger="videdit.ops"), backend.use_ops("cuda"):
        ys = [ops.bias_act(x, b, act="lrelu") for _ in range(3)]
    expected = bias_act_torch(x, b, act="lrelu")
    assert all(torch.equal(y, expected) for y in ys)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert not any(v["ok"] for v in json.loads(fresh_verdicts.read_text())["families"].values())


def test_upfirdn2d_torch_path_on_gpu_is_what_a_failed_family_runs(cuda_ext):
    """The fallback itself runs on the GPU (no device round trip) and matches the kernel."""
    x = torch.randn([1, 4, 30, 30], device=DEVICE)
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], device=DEVICE)
    y = upfirdn2d_torch(x, f, down=2, padding=1)
    assert y.is_cuda
    assert_close_rel(kernels.upfirdn2d_cuda(x, f, down=2, padding=1), y, torch.float32, "upfirdn2d")
