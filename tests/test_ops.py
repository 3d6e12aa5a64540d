"""videdit.ops: reference outputs of NVIDIA's ops, and fast == literal reference (forward and backward)."""
from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
import torch


from videdit import ops

# The package exports the function under the module's name; get the module itself.
filtered_lrelu_module = importlib.import_module("videdit.ops.filtered_lrelu")

DATA = Path(__file__).resolve().parent / "data" / "golden"
CASES = json.loads((DATA / "ops.json").read_text())["cases"]


pytestmark = [pytest.mark.numeric, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def golden():
    from safetensors.torch import load_file

    return load_file(str(DATA / "ops.safetensors"))


def _tensor(golden, name):
    return None if name in (None, "None") else golden[name]


def run_case(golden, name, impl):
    c = CASES[name]
    op = c["op"]
    if op == "upfirdn2d":
        return ops.upfirdn2d(golden[f"{name}.x"], golden[c["filter"]], up=c.get("up", 1), down=c.get("down", 1),
                             padding=c.get("padding", 0), flip_filter=c.get("flip_filter", False),
                             gain=c.get("gain", 1), impl=impl)
    if op == "filtered_lrelu":
        return ops.filtered_lrelu(golden[f"{name}.x"], fu=_tensor(golden, c["fu"]), fd=_tensor(golden, c["fd"]),
                                  b=_tensor(golden, c["b"]), up=c["up"], down=c["down"], padding=c["padding"],
                                  gain=c["gain"], slope=c["slope"], clamp=c["clamp"], impl=impl)
    if op == "bias_act":
        kwargs = {k: c[k] for k in ("dim", "act", "alpha", "gain", "clamp") if k in c}
        return ops.bias_act(golden[f"{name}.x"], golden[c["b"]], impl=impl, **kwargs)
    if op == "modulated_conv2d":
        return ops.modulated_conv2d(golden[f"{name}.x"], golden[f"{name}.w"], golden[f"{name}.s"],
                                    demodulate=c["demodulate"], padding=c["padding"],
                                    input_gain=golden.get(f"{name}.input_gain"), impl=impl)
    if op == "conv2d_resample":
        return ops.conv2d_resample(golden[f"{name}.x"], golden[f"{name}.w"], f=golden[c["f"]], down=c["down"],
                                   padding=c["padding"], flip_weight=c["flip_weight"], impl=impl)
    raise AssertionError(op)


OP_CASES = [n for n, c in CASES.items() if c["op"] != "design_lowpass_filter"]
DESIGN_CASES = [n for n, c in CASES.items() if c["op"] == "design_lowpass_filter"]


@pytest.mark.parametrize("impl", ["fast", "ref"])
def test_golden_cases(golden, impl):
    errors = {}
    for name in OP_CASES:
        y = run_case(golden, name, impl)
        ref = golden[f"{name}.y"]
        assert y.shape == ref.shape, name
        errors[name] = (y - ref).abs().max().item() / max(1.0, ref.abs().max().item())
    groups = {}
    for name, err in errors.items():
        op = CASES[name]["op"]
        groups[op] = max(groups.get(op, 0.0), err)
    print(f"\nops {impl} worst abs / max(1, max|y|): " + ", ".join(f"{k} {v:.2e}" for k, v in groups.items()))
    bad = {k: v for k, v in errors.items() if v > 1e-5}
    assert not bad, bad


@pytest.mark.parametrize("name", DESIGN_CASES)
def test_filter_design(golden, name):
    c = CASES[name]
    f = ops.design_lowpass_filter(c["numtaps"], c["cutoff"], c["width"], c["fs"], c["radial"])
    assert (f - golden[f"{name}.f"]).abs().max().item() <= 1e-6
    assert ops.design_lowpass_filter(1, 2.0, 4.0, 16) is None


def test_setup_filter():
    f = ops.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and abs(f.sum().item() - 1) < 1e-6
    g = ops.setup_filter([1, 3, 3, 1], gain=4)
    assert abs(g.sum().item() - 4) < 1e-5
    s = ops.setup_filter(list(range(1, 9)))
    assert s.ndim == 1 and abs(s.sum().item() - 1) < 1e-6


# --------------------------------------------------------------------------------------------
# Fast against the literal reference on random inputs, forward and backward.

UPFIRDN_CONFIGS = [
    # (filter shape, up, down, padding, flip, gain)
    ((12,), 2, 1, [9, 8, 9, 8], False, 4),
    ((24,), 4, 1, [-6, -9, -6, -9], False, 16),
    ((12,), 1, 2, [5, 6, 4, 4], False, 1),
    ((7,), 2, 3, [3, -1, 2, 1], True, 2.5),
    ((6, 6), 1, 2, [2, 3, 1, 0], False, 1),
    ((5, 3), 2, 1, [2, 1, 0, 3], False, 1),
    ((5, 3), [2, 1], [1, 2], [1, 1, 2, 2], True, 1),
    ((4, 4), 1, 2, 1, False, 1),
    ((3,), 3, 2, [4, 4], False, 9),
    (None, 2, 2, [1, 0, 0, 1], False, 3),
]


def _close(a, b, rtol=1e-5):
    """|a - b| <= rtol * max(1, max|b|): the reference README's ops criterion. Fast and literal ops sum the same
    products in another order (separable passes of <= 24 taps, convolutions of <= 5 * 9 terms); float32 rounding
    of such sums is ~sqrt(K) * u = ~3e-7 of the output's scale, and the worst measured over the kernel settings of
    .ci/run is 3.9e-7 (goldens, float32), so 1e-5 leaves >= 25x; a wrong filter flip gives > 1e-2
    (test_reference_catches_a_wrong_flip). float64 cases use 1e-10 (u = 1.1e-16)."""
    return (a - b).abs().max().item() <= rtol * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("config", UPFIRDN_CONFIGS, ids=lambda c: str(c))
def test_upfirdn2d_fast_equals_ref(config):
    shape, up, down, padding, flip, gain = config
    gen = torch.Generator().manual_seed(1)
    x = torch.randn([2, 3, 11, 13], generator=gen, requires_grad=True)
    f = None if shape is None else torch.randn(shape, generator=gen)
    outs, grads = {}, {}
    for impl in ["fast", "ref"]:
        y = ops.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain, impl=impl)
        outs[impl] = y
    weight = torch.randn(outs["ref"].shape, generator=gen)
    for impl in ["fast", "ref"]:
        (grads[impl],) = torch.autograd.grad((outs[impl] * weight).sum(), x)
    assert outs["fast"].shape == outs["ref"].shape
    assert _close(outs["fast"], outs["ref"]) and _close(grads["fast"], grads["ref"])


@pytest.mark.parametrize("config", [c for i, c in enumerate(UPFIRDN_CONFIGS[:7]) if i != 1], ids=lambda c: str(c))
def test_upfirdn2d_gradcheck(config):
    shape, up, down, padding, flip, gain = config
    gen = torch.Generator().manual_seed(2)
    x = torch.randn([1, 2, 7, 6], generator=gen, dtype=torch.float64, requires_grad=True)
    f = torch.randn(shape, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda t: ops.upfirdn2d(t, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain), (x,))


FLRELU_CONFIGS = [
    # (fu taps, fd shape, up, down, padding, gain, slope, clamp, bias)
    (12, (12,), 2, 2, [9, 8, 9, 8], math.sqrt(2), 0.2, 256, True),
    (12, (12,), 2, 2, [9, 8, 9, 8], math.sqrt(2), 0.2, 0.5, True),
    (24, (12,), 4, 2, [-6, -9, -6, -9], math.sqrt(2), 0.2, 256, True),
    (12, (12, 12), 2, 2, [11, 10, 11, 10], math.sqrt(2), 0.2, 256, True),
    (12, (12,), 2, 2, [-3, -4, -3, -4], math.sqrt(2), 0.2, None, False),
    (12, None, 2, 1, [5, 6, 5, 6], 1.7, 0.1, 0.8, True),
    (None, None, 1, 1, 0, 1, 1, 256, True),
    (12, (12,), 2, 2, [9, 8, 9, 8], -0.5, 0.2, 0.3, True),
]


@pytest.mark.parametrize("config", FLRELU_CONFIGS, ids=lambda c: str(c))
def test_filtered_lrelu_fast_equals_ref(config, monkeypatch):
    taps_u, shape_d, up, down, padding, gain, slope, clamp, use_bias = config
    gen = torch.Generator().manual_seed(3)
    x = torch.randn([2, 4, 21, 23], generator=gen)
    fu = None if taps_u is None else ops.design_lowpass_filter(taps_u, 2.0, 6.0, 16 * up) * 1.1
    fd = None if shape_d is None else torch.rand(shape_d, generator=gen) / 20
    b = torch.randn([4], generator=gen) if use_bias else None
    kwargs = dict(fu=fu, fd=fd, up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp)
    ref = ops.filtered_lrelu(x, b=b, impl="ref", **kwargs)
    with torch.no_grad():
        whole = ops.filtered_lrelu(x, b=b, **kwargs)
        monkeypatch.setattr(filtered_lrelu_module, "STRIP_BYTES", 3000)  # many small strips
        strips = ops.filtered_lrelu(x, b=b, **kwargs)
    assert whole.shape == ref.shape == strips.shape
    assert _close(whole, ref) and _close(strips, ref)
    # Backward w.r.t. x and b: plain autograd, then recomputed strips (checkpointing).
    xr = x.clone().requires_grad_(True)
    br = None if b is None else b.clone().requires_grad_(True)
    inputs = [xr] if br is None else [xr, br]
    weight = torch.randn(ref.shape, generator=gen)
    y_ref = ops.filtered_lrelu(xr, b=br, impl="ref", **kwargs)
    grads_ref = torch.autograd.grad((y_ref * weight).sum(), inputs)
    monkeypatch.setattr(filtered_lrelu_module, "STRIP_BYTES", 30000)  # a few strips
    for checkpoint_bytes in [1 << 40, 0]:
        monkeypatch.setattr(filtered_lrelu_module, "CHECKPOINT_BYTES", checkpoint_bytes)
        y = ops.filtered_lrelu(xr, b=br, **kwargs)
        assert _close(y, ref)
        grads = torch.autograd.grad((y * weight).sum(), inputs)
        for a, r in zip(grads, grads_ref):
            assert _close(a, r)


@pytest.mark.parametrize("checkpointed", [False, True])
def test_filtered_lrelu_gradcheck(checkpointed, monkeypatch):
    if checkpointed:
        monkeypatch.setattr(filtered_lrelu_module, "CHECKPOINT_BYTES", 0)
        monkeypatch.setattr(filtered_lrelu_module, "STRIP_BYTES", 500)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn([1, 2, 8, 8], generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn([2], generator=gen, dtype=torch.float64, requires_grad=True)
    fu = torch.randn([8], generator=gen, dtype=torch.float64)
    fd = torch.randn([6, 6], generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda t, bb: ops.filtered_lrelu(t, fu, fd, bb, up=2, down=2, padding=[5, 4, 5, 4], clamp=50.0), (x, b))


@pytest.mark.parametrize("act", ["linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"])
def test_bias_act_fast_equals_ref(act):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn([3, 5, 4, 4], generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn([5], generator=gen, dtype=torch.float64, requires_grad=True)
    for kwargs in [dict(), dict(alpha=0.3, gain=1.5, clamp=0.9)]:
        y = ops.bias_act(x, b, act=act, **kwargs)
        r = ops.bias_act(x, b, act=act, impl="ref", **kwargs)
        assert _close(y, r)
        gy = torch.autograd.grad(y.sum(), [x, b])
        gr = torch.autograd.grad(r.sum(), [x, b])
        assert all(_close(a, c) for a, c in zip(gy, gr))
    assert torch.autograd.gradcheck(lambda t, bb: ops.bias_act(t, bb, act=act, dim=1), (x, b))
    with torch.no_grad():  # the in-place no-grad path must not touch its input
        x0 = x.detach().clone()
        ops.bias_act(x0, b.detach(), act=act, clamp=0.5)
        assert torch.equal(x0, x.detach())
    with pytest.raises(ValueError):
        ops.bias_act(x, b, act="nope")


@pytest.mark.parametrize("n,k,demod,gain", [(1, 1, True, True), (3, 1, True, False), (1, 3, True, True),
                                            (3, 3, False, True), (2, 3, True, True)])
def test_modulated_conv2d_fast_equals_ref(n, k, demod, gain):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn([n, 5, 6, 7], generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn([4, 5, k, k], generator=gen, dtype=torch.float64, requires_grad=True)
    s = torch.randn([n, 5], generator=gen, dtype=torch.float64, requires_grad=True)
    input_gain = torch.tensor(0.7, dtype=torch.float64) if gain else None
    args = dict(demodulate=demod, padding=k - 1, input_gain=input_gain)
    y = ops.modulated_conv2d(x, w, s, **args)
    r = ops.modulated_conv2d(x, w, s, impl="ref", **args)
    assert y.shape == r.shape and _close(y, r, 1e-10)
    gy = torch.autograd.grad((y * r.detach()).sum(), [x, w, s])
    gr = torch.autograd.grad((r * r.detach()).sum(), [x, w, s])
    assert all(_close(a, c, 1e-10) for a, c in zip(gy, gr))
    assert torch.autograd.gradcheck(lambda a, b, c: ops.modulated_conv2d(a, b, c, **args), (x, w, s))


@pytest.mark.parametrize("k,up,down,padding,flip_weight", [
    (3, 1, 2, 1, True), (1, 1, 2, 0, True), (3, 1, 2, 1, False), (3, 2, 1, 1, False), (1, 2, 1, 0, True),
    (3, 1, 1, 1, True), (3, 2, 2, 0, True), (3, 1, 1, [0, 2, 1, 1], False),
])
def test_conv2d_resample_fast_equals_ref(k, up, down, padding, flip_weight):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn([2, 4, 9, 10], generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn([6, 4, k, k], generator=gen, dtype=torch.float64, requires_grad=True)
    f = ops.setup_filter([1, 3, 3, 1]).double()
    args = dict(f=f, up=up, down=down, padding=padding, flip_weight=flip_weight)
    y = ops.conv2d_resample(x, w, **args)
    r = ops.conv2d_resample(x, w, impl="ref", **args)
    assert y.shape == r.shape and _close(y, r, 1e-10)
    gy = torch.autograd.grad((y * r.detach()).sum(), [x, w])
    gr = torch.autograd.grad((r * r.detach()).sum(), [x, w])
    assert all(_close(a, c, 1e-10) for a, c in zip(gy, gr))


def test_reference_catches_a_wrong_flip(golden):
    """Sanity check that the golden cases can fail: flipping an asymmetric filter changes the result."""
    name = "upfirdn2d_asym2d_up2_pad"
    c = CASES[name]
    y = ops.upfirdn2d(golden[f"{name}.x"], golden[c["filter"]], up=c["up"], padding=c["padding"], flip_filter=True)
    assert (y - golden[f"{name}.y"]).abs().max().item() > 1e-2


def test_bad_arguments():
    x = torch.zeros([1, 1, 4, 4])
    with pytest.raises(ValueError):
        ops.upfirdn2d(x, torch.ones(3), impl="cuda")
    with pytest.raises(ValueError):
        ops.upfirdn2d(x, torch.ones(3), padding=[1, 2, 3])
    with pytest.raises(ValueError):
        ops.upfirdn2d(x, torch.ones(9), padding=-2)


def test_modulated_conv2d_double_backward():
    """The fast conv's custom backward is itself differentiable."""
    gen = torch.Generator().manual_seed(8)
    x = torch.randn([2, 3, 5, 5], generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn([4, 3, 3, 3], generator=gen, dtype=torch.float64, requires_grad=True)
    s = torch.randn([2, 3], generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, b, c: ops.modulated_conv2d(a, b, c, padding=2), (x, w, s))


def test_filtered_lrelu_strips_keep_their_height_at_any_batch(monkeypatch):
    """A batch is cut into the strips of one sample, sample by sample (not into B-times shorter strips with
    B-times the recomputed halo): the per-image cost stays that of batch 1."""
    monkeypatch.setattr(filtered_lrelu_module, "STRIP_BYTES", 40000)
    fu = ops.design_lowpass_filter(12, 2.0, 6.0, 32)
    settings = None
    geometry = {}
    for batch in (1, 4):
        x = torch.zeros([batch, 4, 30, 30])
        rs = filtered_lrelu_module.parse_resample(2, 2, [9, 8, 9, 8])
        settings = filtered_lrelu_module._Settings(fu=fu, fd=fu, up=2, down=2, padx0=rs.padx0, padx1=rs.padx1,
                                                   pady0=rs.pady0, pady1=rs.pady1, up_gain=4.0, post_gain=1.0,
                                                   slope=0.2, clamp=None, flip_filter=False)
        geometry[batch] = list(filtered_lrelu_module._strips(x, settings))
    one = [strip[2:] for strip in geometry[1]]
    assert len(one) > 1  # the map is really cut into strips
    assert [strip[:2] for strip in geometry[4]] == [(n, n + 1) for n in range(4) for _ in one]
    assert [strip[2:] for strip in geometry[4]] == one * 4
