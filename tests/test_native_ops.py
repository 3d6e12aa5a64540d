"""Native ops (videdit.ops.kernels, extensions, cpu_autoselect, backend): the fused C++ CPU kernel, the CUDA
kernels' per-sample code run on the CPU, the build cache (locks, failures, timeouts) and the op selection.

The CPU extension is compiled on first use (a minute or two, once; cached in the user cache folder).
The CUDA extension cannot run here; `scripts/check_cuda_build.sh` compiles and links it (slow test
at the end). Its kernels share resample.h with the CPU extension, whose `emulate_*` entry points run
that code tile by tile, so the index arithmetic of the CUDA kernels is checked here.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from videdit.ops import backend, cpu_autoselect, extensions, kernels, reference
from videdit.ops._params import filter_taps, parse_resample
from videdit.ops.filtered_lrelu import filtered_lrelu_torch
from videdit.ops.filters import design_lowpass_filter

pytestmark = pytest.mark.numeric

torch.set_num_threads(2)

DATA = Path(__file__).resolve().parent / "data" / "native_ops"
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------
# StyleGAN3 layer configurations (the official design formulas), checked against NVIDIA's table


@dataclass(frozen=True)
class LayerOp:
    """The filtered_lrelu call of one synthesis layer."""

    name: str
    in_size: int  # size of filtered_lrelu's input (after the conv)
    up: int
    down: int
    padding: tuple
    fu: torch.Tensor | None
    fd: torch.Tensor | None
    gain: float
    slope: float
    clamp: float = 256.0


def sg3_layer_ops(resolution: int, conv_kernel: int, radial: bool, num_layers=14, num_critical=2,
                  margin=10, filter_size=6) -> list[LayerOp]:
    last_cutoff = resolution / 2
    first_stopband, last_stopband = 2 ** 2.1, last_cutoff * 2 ** 0.3
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = 2 * (last_cutoff / 2) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, resolution))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + margin * 2
    sizes[-2:] = resolution
    layers = []
    for idx in range(num_layers + 1):
        prev = max(idx - 1, 0)
        torgb = idx == num_layers
        critical = idx >= num_layers - num_critical
        tmp_rate = max(rates[prev], rates[idx]) * (1 if torgb else 2)
        up, down = int(round(tmp_rate / rates[prev])), int(round(tmp_rate / rates[idx]))
        up_taps = filter_size * up if up > 1 and not torgb else 1
        down_taps = filter_size * down if down > 1 and not torgb else 1
        kernel = 1 if torgb else conv_kernel
        fu = design_lowpass_filter(up_taps, cutoffs[prev], half_widths[prev] * 2, tmp_rate)
        fd = design_lowpass_filter(down_taps, cutoffs[idx], half_widths[idx] * 2, tmp_rate,
                                   radial=radial and not critical)
        total = (int(sizes[idx]) - 1) * down + 1 - (int(sizes[prev]) + kernel - 1) * up + up_taps + down_taps - 2
        lo = (total + up) // 2
        layers.append(LayerOp(f"L{idx}_{int(sizes[idx])}", int(sizes[prev]) + kernel - 1, up, down,
                              (lo, total - lo, lo, total - lo), fu, fd, 1.0 if torgb else math.sqrt(2),
                              1.0 if torgb else 0.2))
    return layers


LAYERS = {"R": sg3_layer_ops(1024, conv_kernel=1, radial=True), "T": sg3_layer_ops(1024, conv_kernel=3, radial=False)}
LAYER_IDS = [(cfg, i) for cfg in LAYERS for i in range(15)]


@pytest.mark.parametrize("cfg", ["t", "r"])
def test_layer_design_matches_nvidia_table(cfg):
    """The helper above reproduces NVIDIA's per-layer factors, taps, filter kinds and padding (64x64)."""
    table = json.loads((DATA / "sg3_64_design.json").read_text())[f"sg3{cfg}_64"]["layers"]
    ops = sg3_layer_ops(64, conv_kernel=1 if cfg == "r" else 3, radial=cfg == "r")
    for op, row in zip(ops, table):
        assert (op.up, op.down) == (row["up_factor"], row["down_factor"]), row["name"]
        assert list(op.padding) == row["padding_x0_x1_y0_y1"], row["name"]
        assert (None if op.fu is None else list(op.fu.shape)) == row["up_filter_shape"], row["name"]
        assert (None if op.fd is None else list(op.fd.shape)) == row["down_filter_shape"], row["name"]


def small_size(op: LayerOp, target_out: int) -> int:
    """An input size (>= 4) whose filtered_lrelu output is about target_out samples."""
    taps_u = 1 if op.fu is None else op.fu.shape[0]
    taps_d = 1 if op.fd is None else op.fd.shape[0]
    pad = op.padding[0] + op.padding[1]
    need_mid = (target_out - 1) * op.down + taps_d
    return max(4, -(-(need_mid - pad + taps_u - 1) // op.up))


def run_layer(fn, op: LayerOp, x, b, **overrides):
    kwargs = dict(fu=op.fu, fd=op.fd, b=b, up=op.up, down=op.down, padding=list(op.padding), gain=op.gain,
                  slope=op.slope, clamp=op.clamp)
    kwargs.update(overrides)
    if kwargs["fu"] is not None:
        kwargs["fu"] = kwargs["fu"].to(x.dtype)
    if kwargs["fd"] is not None:
        kwargs["fd"] = kwargs["fd"].to(x.dtype)
    return fn(x, **kwargs)


# ----------------------------------------------------------------------------------------------
# The CPU extension


@pytest.fixture(scope="module")
def cpu_ext():
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler on this machine: the native CPU kernel cannot be built")
    module = kernels.cpu_module()
    assert module is not None, "the CPU extension failed to build: see the warning above"
    return module


def layer_inputs(op, size, channels=3, batch=2, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn([batch, channels, size, size], generator=gen, dtype=dtype) * 2
    b = torch.randn([channels], generator=gen, dtype=dtype)
    return x, b


# Tolerances. The fused kernel and the reference sum the same filter taps in another order (separable passes of
# up to 24 and 12 taps, each output a sum of K <= 36 products); float32 rounding of that is ~sqrt(K)*u ~ 4e-7 of
# the output's scale (u = 2^-24), worst case K*u ~ 2e-6. Forward: atol 2e-6 * scale (the worst case), and rtol
# 1e-5; backward sums over the same taps twice: 1e-5 * scale. Full-size layers against the fast PyTorch op, which
# takes other shortcuts (strips, fused gains): 2e-5 * scale. float64 (the CUDA tile code run on the CPU):
# atol 1e-12 and rtol 1e-10 on values O(10), u = 1.1e-16: rounding ~1e-14. A wrong tap or padding moves a
# filtered value by O(1e-2) of the scale.
@pytest.mark.parametrize("cfg,idx", LAYER_IDS, ids=[f"{c}-L{i}" for c, i in LAYER_IDS])
def test_cpu_forward_and_backward_match_reference(cpu_ext, cfg, idx):
    """Every R-1024 / T-1024 layer configuration (real filters, factors, padding; small images)."""
    op = LAYERS[cfg][idx]
    x, b = layer_inputs(op, small_size(op, 9))
    # A clamp that bites, so the clamp's gradient is exercised too (the real 256 never does here).
    clamp = 1.5
    x_ref, b_ref = x.clone().requires_grad_(), b.clone().requires_grad_()
    y_ref = run_layer(reference.filtered_lrelu, op, x_ref, b_ref, clamp=clamp)
    x_nat, b_nat = x.clone().requires_grad_(), b.clone().requires_grad_()
    y_nat = run_layer(kernels.filtered_lrelu_cpu, op, x_nat, b_nat, clamp=clamp)
    assert y_nat.shape == y_ref.shape
    scale = y_ref.abs().max().item()
    torch.testing.assert_close(y_nat, y_ref, atol=2e-6 * scale, rtol=1e-5)
    dy = torch.randn_like(y_ref)
    dx_ref, db_ref = torch.autograd.grad(y_ref, [x_ref, b_ref], dy)
    dx_nat, db_nat = torch.autograd.grad(y_nat, [x_nat, b_nat], dy)
    torch.testing.assert_close(dx_nat, dx_ref, atol=1e-5 * dx_ref.abs().max().item(), rtol=1e-5)
    torch.testing.assert_close(db_nat, db_ref, atol=1e-5 * db_ref.abs().max().item(), rtol=1e-5)


@pytest.mark.parametrize("cfg,idx", [("R", 0), ("R", 4), ("R", 13), ("T", 8), ("T", 12), ("T", 14)])
def test_cpu_forward_full_size_layers(cpu_ext, cfg, idx):
    """Real 1024-generator image sizes (one plane), against the fast PyTorch op."""
    import videdit.ops as ops

    op = LAYERS[cfg][idx]
    x, b = layer_inputs(op, op.in_size, channels=1, batch=1)
    with backend.use_ops("torch"):
        y_fast = run_layer(ops.filtered_lrelu, op, x, b)
    y_nat = run_layer(kernels.filtered_lrelu_cpu, op, x, b)
    torch.testing.assert_close(y_nat, y_fast, atol=2e-5 * y_fast.abs().max().item(), rtol=1e-4)


GRADCHECK_CASES = [("R", 0, False), ("R", 12, False), ("R", 14, False), ("T", 3, False), ("R", 4, True),
                   ("R", 13, True), ("T", 8, True), ("T", 13, True)]


@pytest.mark.parametrize("cfg,idx,fast", GRADCHECK_CASES, ids=[f"{c}-L{i}" for c, i, _ in GRADCHECK_CASES])
def test_cpu_gradcheck_float64(cpu_ext, cfg, idx, fast):
    """Full Jacobians where the input is small; a random projection (fast mode) for the layers whose
    padding crops a lot (their smallest useful input has ~1000 samples)."""
    op = LAYERS[cfg][idx]
    x, b = layer_inputs(op, small_size(op, 3), channels=1, batch=1, dtype=torch.float64, seed=idx)
    x.requires_grad_()
    b.requires_grad_()

    def fn(x_, b_):
        return run_layer(kernels.filtered_lrelu_cpu, op, x_, b_, clamp=2.0)

    assert torch.autograd.gradcheck(fn, (x, b), eps=1e-6, atol=1e-6, fast_mode=fast)


def test_cpu_kernel_matches_nvidia_goldens(cpu_ext):
    """NVIDIA's filtered_lrelu outputs (ops.safetensors), through the fused kernel."""
    from safetensors.torch import load_file

    cases = json.loads((DATA / "ops_golden.json").read_text())["cases"]
    tensors = load_file(DATA / "ops_golden.safetensors")
    checked = 0
    for name, case in cases.items():
        if case["op"] != "filtered_lrelu":
            continue
        fu = tensors.get(case["fu"]) if case["fu"] != "None" else None
        fd = tensors.get(case["fd"]) if case["fd"] != "None" else None
        b = tensors[case["b"]] if case["b"] else None
        y = kernels.filtered_lrelu_cpu(tensors[f"{name}.x"], fu, fd, b, up=case["up"], down=case["down"],
                                       padding=case["padding"], gain=case["gain"], slope=case["slope"],
                                       clamp=case["clamp"])
        expected = tensors[f"{name}.y"]
        torch.testing.assert_close(y, expected, atol=1e-5 * expected.abs().max().item(), rtol=1e-5, msg=name)
        checked += 1
    assert checked == 8


def test_cpu_kernel_argument_forms(cpu_ext):
    """flip_filter, no bias, no clamp, int / [x, y] padding, non-contiguous input, threads 1 vs 2."""
    op = LAYERS["T"][5]
    x, b = layer_inputs(op, 24)
    x = x.transpose(2, 3)  # non-contiguous
    for kwargs in (dict(flip_filter=True), dict(b=None, clamp=None), dict(padding=[9, 8]), dict(padding=9)):
        bias = kwargs.pop("b", b)
        ref = run_layer(reference.filtered_lrelu, op, x, bias, **kwargs)
        nat = run_layer(kernels.filtered_lrelu_cpu, op, x, bias, **kwargs)
        torch.testing.assert_close(nat, ref, atol=2e-6 * ref.abs().max().item(), rtol=1e-5)
    one_thread = two_threads = None
    try:
        torch.set_num_threads(1)
        one_thread = run_layer(kernels.filtered_lrelu_cpu, op, x, b)
    finally:
        torch.set_num_threads(2)
    two_threads = run_layer(kernels.filtered_lrelu_cpu, op, x, b)
    # Exact by construction: work items are bands of output rows, and an output's arithmetic (the same loops over
    # the same recomputed intermediate rows) does not depend on which band or thread computes it.
    assert torch.equal(one_thread, two_threads)


def test_cpu_kernel_falls_back_and_rejects_like_the_op(cpu_ext):
    op = LAYERS["T"][0]
    x, b = layer_inputs(op, 20)
    ref = run_layer(reference.filtered_lrelu, op, x, b)
    torch.testing.assert_close(run_layer(kernels.filtered_lrelu_cpu, op, x, b, impl="ref"), ref)
    with pytest.raises(ValueError):
        run_layer(kernels.filtered_lrelu_cpu, op, x, b, up=[2, 1])
    with pytest.raises(ValueError):
        run_layer(kernels.filtered_lrelu_cpu, op, x[:, :, :2, :2], b, padding=-20)


# ----------------------------------------------------------------------------------------------
# The CUDA kernels' per-sample code, run on the CPU


@pytest.mark.parametrize("cfg,idx", [(c, i) for c in LAYERS for i in (0, 3, 4, 8, 11, 12, 13, 14)])
def test_cuda_tile_code_matches_reference(cpu_ext, cfg, idx):
    """The tile kernel of filtered_lrelu.cu (forward and backward), tile by tile on the CPU."""
    op = LAYERS[cfg][idx]
    x, b = layer_inputs(op, small_size(op, 11), channels=2, dtype=torch.float64, seed=idx)
    clamp = 1.5
    args = kernels.prepare_fused(x, op.fu, op.fd, b, op.up, op.down, list(op.padding), op.gain, op.slope, clamp,
                                 False, torch.float64)
    xc, bc, fu, fd, plan = args
    common = (plan.up, plan.down, plan.padx0, plan.pady0, plan.mid_h, plan.mid_w)
    act = (plan.gain, plan.slope, plan.clamp)
    x_ref, b_ref = x.clone().requires_grad_(), b.clone().requires_grad_()
    y_ref = run_layer(reference.filtered_lrelu, op, x_ref, b_ref, clamp=clamp)
    dy = torch.randn_like(y_ref)
    (dx_ref,) = torch.autograd.grad(y_ref, [x_ref], dy)
    for tile in (4, 7):  # several tiles, partial edge tiles
        y = cpu_ext.emulate_filtered_lrelu(xc, bc, fu, fd, *common, plan.out_h, plan.out_w, *act, tile)
        torch.testing.assert_close(y, y_ref.detach(), atol=1e-12, rtol=1e-10)
        dx = cpu_ext.emulate_filtered_lrelu_backward(dy, xc, bc, fu, fd, kernels.flipped(fu), kernels.flipped(fd),
                                                     *common, *act, tile)
        torch.testing.assert_close(dx, dx_ref, atol=1e-12, rtol=1e-10)


UPFIRDN_CASES = [
    dict(up=2, padding=[9, 8, 9, 8], gain=4), dict(up=4, padding=[-6, -9, -6, -9], gain=16), dict(down=2),
    dict(down=3, padding=[1, 2, 3, 0], flip_filter=True), dict(up=2, down=3, padding=[3, -1, 2, 1], gain=2.5),
    dict(up=[2, 1], down=[1, 2], padding=[1, 1, 2, 2]), dict(up=[1, 3], down=[2, 1], padding=[0, 4, -1, 2]),
]


@pytest.mark.parametrize("case", range(len(UPFIRDN_CASES)))
@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_cuda_upfirdn2d_code_and_gradient_plan(cpu_ext, case, kind):
    """upfirdn2d.cu's per-sample code, and the transposed plan its backward pass uses."""
    kwargs = UPFIRDN_CASES[case]
    gen = torch.Generator().manual_seed(case)
    f = torch.rand([7] if kind == "1d" else [5, 3], generator=gen, dtype=torch.float64)
    x = torch.randn([2, 3, 11, 13], generator=gen, dtype=torch.float64, requires_grad=True)
    y_ref = reference.upfirdn2d(x, f, **kwargs)
    taps = kernels.correlation_taps(f, kwargs.get("flip_filter", False), kwargs.get("gain", 1), torch.float64, "cpu")
    rs = parse_resample(kwargs.get("up", 1), kwargs.get("down", 1), kwargs.get("padding", 0))

    def emulate(inp, t, r):
        out_w, out_h = kernels.upfirdn2d_out_size(inp, t, r)
        return cpu_ext.emulate_upfirdn2d(inp.detach().contiguous(), t, r.upx, r.upy, r.downx, r.downy, r.padx0,
                                         r.pady0, out_h, out_w)

    torch.testing.assert_close(emulate(x, taps, rs), y_ref.detach(), atol=1e-12, rtol=1e-10)
    dy = torch.randn_like(y_ref)
    (dx_ref,) = torch.autograd.grad(y_ref, [x], dy)
    transposed = rs.transposed(x.shape[3], x.shape[2], *filter_taps(taps))
    torch.testing.assert_close(emulate(dy, kernels.flipped(taps), transposed), dx_ref, atol=1e-12, rtol=1e-10)


@pytest.fixture
def cuda_wrappers_on_cpu(cpu_ext, monkeypatch):
    """The CUDA wrappers of videdit.ops.kernels (plans, autograd) driving the CPU extension: its emulated
    upfirdn2d kernel and its fused filtered_lrelu, which take the CUDA entry points' arguments."""
    from types import SimpleNamespace

    fake = SimpleNamespace(upfirdn2d=cpu_ext.emulate_upfirdn2d, filtered_lrelu=cpu_ext.filtered_lrelu_forward,
                           filtered_lrelu_backward=cpu_ext.filtered_lrelu_backward)
    monkeypatch.setattr(kernels, "cuda_supports", lambda x: x.dtype == torch.float64)
    monkeypatch.setattr(kernels, "cuda_module", lambda: fake)


@pytest.mark.parametrize("case", [1, 3, 4, 6])
def test_cuda_upfirdn2d_wrapper_is_differentiable_twice(cuda_wrappers_on_cpu, case):
    """upfirdn2d_cuda's autograd: the gradient is an upfirdn2d with the transposed Resample2d, itself
    differentiable (gradgradcheck), and the forward is the reference's."""
    kwargs = UPFIRDN_CASES[case]
    gen = torch.Generator().manual_seed(case)
    f = torch.rand([4], generator=gen, dtype=torch.float64)
    x = torch.randn([1, 2, 7, 9], generator=gen, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(kernels.upfirdn2d_cuda(x, f, **kwargs), reference.upfirdn2d(x, f, **kwargs),
                               atol=1e-12, rtol=1e-10)
    assert torch.autograd.gradgradcheck(lambda t: kernels.upfirdn2d_cuda(t, f, **kwargs), [x])


def test_cuda_filtered_lrelu_wrapper_matches_reference(cuda_wrappers_on_cpu):
    op = LAYERS["T"][4]
    x, b = layer_inputs(op, small_size(op, 11), channels=2, dtype=torch.float64, seed=4)
    xk, bk = x.clone().requires_grad_(), b.clone().requires_grad_()
    xr, br = x.clone().requires_grad_(), b.clone().requires_grad_()
    y = run_layer(kernels.filtered_lrelu_cuda, op, xk, bk, clamp=1.5)
    y_ref = run_layer(reference.filtered_lrelu, op, xr, br, clamp=1.5)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-10)
    dy = torch.randn_like(y_ref)
    for got, want in zip(torch.autograd.grad(y, [xk, bk], dy), torch.autograd.grad(y_ref, [xr, br], dy)):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("act", sorted(kernels.ACTIVATION_IDS))
def test_cuda_bias_act_code(cpu_ext, act):
    """bias_act.cu's per-element value and gradient factor, for every activation, with a clamp."""
    from videdit.ops.reference import resolve_activation

    gen = torch.Generator().manual_seed(3)
    z = (torch.randn([4, 5, 6], generator=gen, dtype=torch.float64) * 3).requires_grad_()
    _, alpha, gain = resolve_activation(act, None, None)
    for clamp in (-1.0, 1.2):
        y_ref = reference.bias_act(z, None, act=act, clamp=None if clamp < 0 else clamp)
        dy = torch.randn_like(y_ref)
        (dz_ref,) = torch.autograd.grad(y_ref, [z], dy)
        y, dz = cpu_ext.emulate_bias_act(z.detach(), dy, kernels.ACTIVATION_IDS[act], alpha, gain, clamp)
        torch.testing.assert_close(y, y_ref.detach(), atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(dz, dz_ref, atol=1e-12, rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# Selection


def test_use_ops_nests_and_restores(monkeypatch):
    monkeypatch.delenv(backend.ENV_VAR, raising=False)
    assert backend.current_mode() == "auto"
    with backend.use_ops("torch"):
        assert backend.current_mode() == "torch"
        with backend.use_ops("cpp"):
            assert backend.current_mode() == "cpp"
        assert backend.current_mode() == "torch"
    assert backend.current_mode() == "auto"
    with pytest.raises(ValueError):
        with backend.use_ops("fast"):
            pass
    monkeypatch.setenv(backend.ENV_VAR, "torch")
    assert backend.current_mode() == "torch"


def test_lookup_per_mode(cpu_ext):
    x = torch.zeros([1, 2, 8, 8])
    with pytest.raises(ValueError):
        backend.lookup("conv2d", x)
    with backend.use_ops("torch"):
        assert backend.lookup("filtered_lrelu", x) is None
    with backend.use_ops("cpp"):
        assert backend.lookup("filtered_lrelu", x) is kernels.filtered_lrelu_cpu
        assert backend.lookup("filtered_lrelu", x.half()) is None  # the kernel takes float32/64
        assert backend.lookup("upfirdn2d", x) is None  # no CPU kernel for the other ops
    with backend.use_ops("cuda"):
        assert backend.lookup("filtered_lrelu", x) is None  # CPU tensor
    with backend.use_ops("auto"):
        assert backend.lookup("filtered_lrelu", x) is None  # auto compares against the caller's PyTorch path
        fn = backend.lookup("filtered_lrelu", x, torch_path=filtered_lrelu_torch)
        assert fn is not None and fn.__self__ is cpu_autoselect.cpu_auto_selector(filtered_lrelu_torch)


def test_auto_never_waits_for_the_cpu_build(tmp_path, monkeypatch):
    """With no built CPU extension, 'auto' starts a background build and uses PyTorch meanwhile."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    started = []
    monkeypatch.setattr(extensions, "start_background_build", started.append)
    x = torch.zeros([1, 2, 8, 8])
    with backend.use_ops("auto"):
        assert backend.lookup("filtered_lrelu", x, torch_path=filtered_lrelu_torch) is None
    assert started == [kernels.CPU_EXTENSION]
    assert extensions.build_state(kernels.CPU_EXTENSION) == "missing"


def test_auto_selector_measures_once_and_remembers(cpu_ext, tmp_path, caplog):
    op = LAYERS["T"][2]
    x, b = layer_inputs(op, 20)
    path = tmp_path / "decisions.json"
    selector = cpu_autoselect.CpuAutoSelect(path, filtered_lrelu_torch)
    ref = run_layer(reference.filtered_lrelu, op, x, b)
    with caplog.at_level(logging.INFO, logger="videdit.ops"):
        y = run_layer(selector.filtered_lrelu, op, x, b)
    torch.testing.assert_close(y, ref, atol=2e-6 * ref.abs().max().item(), rtol=1e-5)
    saved = json.loads(path.read_text())
    assert len(saved) == 1
    decision = next(iter(saved.values()))
    assert decision["native_s"] > 0 and decision["torch_s"] > 0
    assert decision["native"] == (decision["native_s"] < decision["torch_s"])
    assert any("ops auto" in r.getMessage() for r in caplog.records)

    # a new process reads the decision instead of measuring
    again = cpu_autoselect.CpuAutoSelect(path, filtered_lrelu_torch)
    again.measure = lambda *a, **k: pytest.fail("measured a family that was already decided")
    torch.testing.assert_close(run_layer(again.filtered_lrelu, op, x, b), y)


def test_auto_selector_decides_differentiated_calls_apart(cpu_ext, tmp_path):
    """A call autograd will differentiate is its own family, timed forward + backward (tuning pays the
    backward too), and its gradients equal the reference's whichever path wins."""
    op = LAYERS["T"][2]
    x, b = layer_inputs(op, 20)
    selector = cpu_autoselect.CpuAutoSelect(tmp_path / "decisions.json", filtered_lrelu_torch)
    with torch.no_grad():
        run_layer(selector.filtered_lrelu, op, x, b)
    timed = []
    real_time_call = cpu_autoselect._time_call

    def counting_time_call(fn):
        timed.append(torch.is_grad_enabled())
        return real_time_call(fn)

    xg, bg = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
    try:
        cpu_autoselect._time_call = counting_time_call
        y = run_layer(selector.filtered_lrelu, op, xg, bg)
    finally:
        cpu_autoselect._time_call = real_time_call
    keys = sorted(json.loads((tmp_path / "decisions.json").read_text()))
    assert len(keys) == 2 and keys[1] == keys[0] + "|grad", keys
    assert timed and all(timed)  # measured with autograd on
    gy = torch.randn_like(y)
    gx, gb = torch.autograd.grad(y, [xg, bg], gy)
    xr, br = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
    ref = run_layer(reference.filtered_lrelu, op, xr, br)
    rx, rb = torch.autograd.grad(ref, [xr, br], gy)
    torch.testing.assert_close(gx, rx, atol=1e-5 * rx.abs().max().item(), rtol=1e-4)
    torch.testing.assert_close(gb, rb, atol=1e-5 * rb.abs().max().item(), rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# Build cache: failures, locks, timeouts (no real compile: a broken source fails in the compiler's
# first pass)


@pytest.fixture
def broken_sources(tmp_path, monkeypatch):
    src = tmp_path / "csrc"
    src.mkdir()
    (src / "broken.cpp").write_text("int videdit_broken( {\n")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return extensions.ExtensionSpec("videdit_broken_test", ("broken.cpp",), cuda=False, source_dir=src)


def test_cache_folder_follows_xdg_and_versions(broken_sources, tmp_path):
    folder = extensions.build_dir(broken_sources)
    assert folder.is_relative_to(tmp_path / "cache" / "videdit" / "ops")
    assert torch.__version__.replace("+", "_") in str(folder)
    assert folder.name.startswith("videdit_broken_test-")


def test_a_changed_source_or_header_is_a_new_build(broken_sources):
    """The cache key hashes the sources and every header beside them: editing either gives a new build
    folder, so a new build; an unrelated file in the folder does not."""
    folder = extensions.build_dir(broken_sources)
    source_dir = broken_sources.source_dir
    (source_dir / "notes.txt").write_text("not a source")
    extensions._spec_digest.cache_clear()  # cached per process: sources do not change while a run goes
    assert extensions.build_dir(broken_sources) == folder
    (source_dir / "broken.cpp").write_text("int videdit_broken( {\n// edited\n")
    extensions._spec_digest.cache_clear()
    edited = extensions.build_dir(broken_sources)
    assert edited != folder and edited.parent == folder.parent
    (source_dir / "shared.h").write_text("#pragma once\n")
    extensions._spec_digest.cache_clear()
    assert extensions.build_dir(broken_sources) not in (folder, edited)
    extensions._spec_digest.cache_clear()


def test_failed_build_warns_once_with_compiler_lines_and_is_remembered(broken_sources, caplog):
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler on this machine")
    with caplog.at_level(logging.WARNING, logger="videdit.ops"):
        assert extensions.load_or_none(broken_sources) is None
        assert extensions.load_or_none(broken_sources) is None  # cached: no second warning
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "broken.cpp" in warnings[0].getMessage() and "error" in warnings[0].getMessage()
    assert "Traceback" not in warnings[0].getMessage()
    assert extensions.build_state(broken_sources) == "failed"
    started = time.monotonic()
    with pytest.raises(extensions.BuildError, match="earlier build failed"):
        extensions.build(broken_sources)  # a new process does not recompile
    assert time.monotonic() - started < 1.0


def test_build_timeout_is_a_build_error(broken_sources):
    with pytest.raises(extensions.BuildError, match="timed out"):
        extensions.build(broken_sources, timeout_s=0.05)
    assert not (extensions.build_dir(broken_sources) / "videdit.lock").exists()


def test_stale_lock_is_broken_and_live_lock_waited_for(tmp_path):
    lock_path, done = tmp_path / "videdit.lock", tmp_path / "built.json"
    lock_path.write_text("12345 0\n")
    old = time.time() - 3600
    os.utime(lock_path, (old, old))
    lock = extensions._BuildLock(lock_path, stale_after_s=60, done=done)
    started = time.monotonic()
    assert lock.acquire() is True  # an hour-old lock: broken at once
    assert time.monotonic() - started < 1.0
    lock.release()
    assert not lock_path.exists()

    lock_path.write_text("live\n")  # a fresh lock: wait until the other build reports done
    done.write_text("{}")
    assert extensions._BuildLock(lock_path, stale_after_s=60, done=done).acquire() is False
    done.unlink()
    started = time.monotonic()  # ... or until the lock grows older than the timeout
    assert extensions._BuildLock(lock_path, stale_after_s=1.0, done=done).acquire() is True
    assert 0.9 < time.monotonic() - started < 10


# ----------------------------------------------------------------------------------------------
# CUDA: compile and link (no GPU needed), slow


@pytest.mark.slow
def test_cuda_extension_compiles_and_links():
    if torch.version.cuda is None:
        pytest.skip("torch is not a CUDA build")
    cuda_home = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    if not (cuda_home / "bin" / "nvcc").exists():
        pytest.skip(f"no nvcc under {cuda_home}")
    proc = subprocess.run([str(REPO / "scripts" / "check_cuda_build.sh")], cwd=REPO, capture_output=True, text=True,
                          timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "built and imported" in proc.stdout


def test_unusable_cache_folder_is_one_warning_not_a_crash(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # mkdir under a file fails
    spec = extensions.ExtensionSpec("videdit_unusable_cache_test", ("filtered_lrelu_cpu.cpp",), cuda=False)
    with caplog.at_level(logging.WARNING, logger="videdit.ops"):
        assert extensions.load_or_none(spec) is None
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_public_op_routes_through_the_selected_kernel(cpu_ext, monkeypatch):
    """The public filtered_lrelu asks the backend: under use_ops('cpp') the fused kernel runs, under 'torch' it does not."""
    import videdit.ops as ops
    from videdit.ops.backend import use_ops

    calls = []
    real = kernels.filtered_lrelu_cpu

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(kernels, "filtered_lrelu_cpu", spy)
    x = torch.randn(1, 4, 20, 20)
    fu = fd = torch.tensor([0.25, 0.5, 0.25])
    with use_ops("torch"):
        y_torch = ops.filtered_lrelu(x, fu, fd, up=2, down=2, padding=1)
    assert not calls
    with use_ops("cpp"):
        y_cpp = ops.filtered_lrelu(x, fu, fd, up=2, down=2, padding=1)
    assert calls, "the public op did not use the fused kernel under use_ops('cpp')"
    torch.testing.assert_close(y_cpp, y_torch, rtol=1e-5, atol=1e-5)
