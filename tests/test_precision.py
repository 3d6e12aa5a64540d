"""`precision` fp32 | tf32 | fp16: which generator layers run float16 (NVIDIA's rule), the setting from the
preset / `--set` / `--precision` to the generator, the CPU fallback, the cache keys, TF32's switches,
conv_clamp in every op implementation that runs here, float16 through the ops, and (marked cuda) fp16
against fp32 images on a GPU.
"""
from __future__ import annotations

import math
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from videdit.networks.stylegan3 import Generator, SynthesisLayer, layer_design, tiny_generator_kwargs
from videdit.ops import backend, filtered_lrelu, kernels, modulated_conv2d, reference
from videdit.ops.mode import use_ops

pytestmark = [pytest.mark.numeric, pytest.mark.usefixtures("one_torch_thread")]

CPU_FALLBACK = "runs on CUDA only; this run uses float32 on the CPU"


def _generator(config: str, resolution: int = 32, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return Generator(**tiny_generator_kwargs(resolution, radial=config == "R", **overrides)).eval()


def _psnr(a, b, peak_to_peak: float = 2.0) -> float:
    mse = (a.double() - b.double()).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(peak_to_peak ** 2 / mse)


# ----------------------------------------------------------------------------------------------
# Which layers run float16


@pytest.mark.parametrize("config", ["R", "T"])
@pytest.mark.parametrize("num_fp16_res", [0, 1, 4])
def test_half_layers_are_the_ones_nvidia_marks(config, num_fp16_res):
    """NVIDIA: a layer is float16 when its sampling rate * 2^num_fp16_res exceeds the image resolution,
    and only on CUDA when force_fp32 is off (explicitly, or through the network's default)."""
    G = _generator(config, num_fp16_res=num_fp16_res)
    rates = layer_design(32, **{k: G.init_kwargs[k] for k in ("channel_base", "channel_max")})["sampling_rates"]
    expected = [name for name, rate in zip(G.synthesis.layer_names, rates) if rate * 2 ** num_fp16_res > 32]
    assert len(expected) == {0: 0, 1: 10, 4: 15}[num_fp16_res]  # rates 16 (L0-L4) and 32 (L5-L14) at 32 px
    synthesis = G.synthesis
    assert synthesis.half_layers("cuda", force_fp32=False) == expected
    assert synthesis.half_layers("cuda", force_fp32=True) == []
    assert synthesis.half_layers("cpu", force_fp32=False) == []  # fp16 is a CUDA feature
    assert synthesis.half_layers("cuda") == []  # the network's default: float32, as the video code calls it
    from videdit.models import apply_precision

    apply_precision(G, "fp16")
    assert synthesis.half_layers("cuda") == expected
    assert synthesis.half_layers("cuda", force_fp32=True) == []  # an explicit keyword wins over the default
    apply_precision(G, "tf32")
    assert synthesis.half_layers("cuda") == []


def test_official_1024_layout_halves_the_layers_above_64_samples():
    """At 1024 px with num_fp16_res 4 (NVIDIA's default) L5..L14, the layers sampled at 128 and up, are float16."""
    G = _generator("T", resolution=1024, channels=4)
    assert [int(name.split("_")[0][1:]) for name in G.synthesis.half_layers("cuda", force_fp32=False)] == list(range(5, 15))


@pytest.mark.parametrize("config", ["R", "T"])
def test_force_fp32_false_on_the_cpu_is_float32_bytes(config):
    """On the CPU the rule keeps every layer float32: force_fp32=False and an fp16 network give the same bytes."""
    from videdit.models import apply_precision

    G = _generator(config)
    ws = G.mapping(torch.randn(2, G.z_dim), truncation_psi=0.7).detach()
    with torch.no_grad():
        reference_image = G.synthesis(ws)
        assert torch.equal(G.synthesis(ws, force_fp32=False), reference_image)
        apply_precision(G, "fp16")
        assert torch.equal(G.synthesis(ws), reference_image)
        assert torch.equal(G(torch.zeros(1, G.z_dim)), G(torch.zeros(1, G.z_dim), force_fp32=True))


def _dtypes_seen(synthesis):
    """Forward hooks recording each layer's output dtype: {layer name: dtype} (filled as the network runs)."""
    seen = {}
    handles = [getattr(synthesis, name).register_forward_hook(
        lambda module, inputs, output, name=name: seen.__setitem__(name, output.dtype)) for name in synthesis.layer_names]
    return seen, handles


@pytest.mark.parametrize("config", ["R", "T"])
def test_float16_dataflow_through_the_network_with_cpu_half_ops(config, monkeypatch):
    """The float16 path (casts, the grouped modulated conv, bias dtype, conv_clamp, float32 output) run with
    torch's CPU float16 ops: runs_half is made to ignore the device, nothing else changes. The real
    device rule is checked above and on CUDA below."""
    G = _generator(config, num_fp16_res=1)
    ws = G.mapping(torch.randn(3, G.z_dim), truncation_psi=0.7).detach()
    with torch.no_grad():
        full = G.synthesis(ws)
    monkeypatch.setattr(SynthesisLayer, "runs_half",
                        lambda self, device, force_fp32=True: self.use_fp16 and not force_fp32)
    seen, handles = _dtypes_seen(G.synthesis)
    with torch.no_grad():
        assert torch.equal(G.synthesis(ws), full)  # the default is still float32
        half = G.synthesis(ws, force_fp32=False)
    for handle in handles:
        handle.remove()
    assert [n for n, dtype in seen.items() if dtype == torch.float16] == G.synthesis.half_layers("cuda", force_fp32=False)
    assert len([n for n, dtype in seen.items() if dtype == torch.float32]) == 5
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert not torch.equal(half, full)  # it really ran another precision
    assert _psnr(half, full) > 50, _psnr(half, full)


# ----------------------------------------------------------------------------------------------
# Float16 through the ops (the CPU has float16 conv and filters; the network uses them on CUDA only)


def _modconv_cases():
    """(label, x, w, s, input_gain): a random batch, and one whose result fits float16 easily (~4e3) while a
    convolution before demodulation would give ~68x that (3x3, 512 channels) and overflow float16's 65504."""
    gen = torch.Generator().manual_seed(0)
    yield ("random", torch.randn([3, 16, 10, 10], generator=gen) * 200, torch.randn([8, 16, 3, 3], generator=gen),
           torch.randn([3, 16], generator=gen), torch.tensor(0.7))
    w = torch.randn([8, 512, 3, 3], generator=gen)
    aligned = (256 * w[0].sum(dim=[1, 2]).sign()).reshape(1, 512, 1, 1)  # inputs at conv_clamp, lined up with w[0]
    yield "large", aligned.expand(2, 512, 6, 6).contiguous(), w, torch.rand([2, 512], generator=gen) + 0.5, None


@pytest.mark.parametrize("case", list(_modconv_cases()), ids=lambda case: case[0])
def test_modulated_conv_float16_batch_matches_float32(case):
    """A float16 batch runs one grouped conv with per-sample weights (as NVIDIA's): float16 out, close to float32."""
    _, x, w, s, gain = case
    want = reference.modulated_conv2d(x.double(), w, s, padding=2, input_gain=gain)
    # float16's unit roundoff u16 = 2^-11: inputs and modulated weights rounded to float16 (<= u16 each), sums in
    # float32, the output rounded (<= u16): |error| <= 2 u16 sum|x w| + u16 |y|. Aligned inputs (sum|x w| = |y|)
    # give <= 3 u16 = 1.5e-3 of the scale; the random batch's mixed signs ~2 u16 of it. A wrong style or a skipped
    # demodulation moves the output by O(1) of its scale.
    for impl in ("fast", "ref"):
        got = modulated_conv2d(x.half(), w, s, padding=2, input_gain=gain, impl=impl)
        assert got.dtype == torch.float16
        assert ((got.double() - want).abs().max() / want.abs().max()).item() < 2e-3, impl


def test_filtered_lrelu_float16_keeps_its_dtype_and_matches_float32():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn([2, 6, 12, 12], generator=gen) * 50
    b = torch.randn([6], generator=gen)
    f = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    kwargs = dict(fu=f, fd=f, up=2, down=2, padding=1, clamp=40)
    want = reference.filtered_lrelu(x.double(), b=b.double(), **kwargs)
    # About ten float16 roundings between input and output (the input, bias, each filter pass's products and sums
    # of 4 taps, gains, activation, clamp), each <= u16 = 4.9e-4 of the values it touches: 5e-3 of the scale.
    for impl in ("fast", "ref"):
        got = filtered_lrelu(x.half(), b=b.half(), impl=impl, **kwargs)
        assert got.dtype == torch.float16
        assert ((got.double() - want).abs().max() / want.abs().max()).item() < 5e-3, impl


def test_the_cpu_kernel_is_never_chosen_for_float16():
    """The fused C++ kernel takes float32/64 only: for a float16 tensor every mode gives the PyTorch path."""
    x = torch.zeros([1, 2, 8, 8], dtype=torch.float16)
    for mode in ("auto", "cpp", "torch"):
        with use_ops(mode):
            assert backend.lookup("filtered_lrelu", x) is None, mode
    assert kernels.cpu_supports(x.float()) and not kernels.cpu_supports(x)


# ----------------------------------------------------------------------------------------------
# conv_clamp, in every implementation that runs on the CPU


@pytest.fixture(params=[("ref", "torch"), ("fast", "torch"), ("fast", "cpp")], ids=["ref", "fast", "cpp"])
def layer_impl(request):
    """(impl, ops mode); the cpp case needs the fused C++ kernel (built on first use, as test_native_ops)."""
    impl, mode = request.param
    if mode == "cpp":
        if shutil.which(os.environ.get("CXX", "c++")) is None:
            pytest.skip("no C++ compiler on this machine: the native CPU kernel cannot be built")
        assert kernels.cpu_module() is not None, "the CPU extension failed to build: see the warning above"
    return impl, mode


def _layer_by_hand(layer, x, w, clamp):
    """The layer written out step by step with the literal reference ops: (output, activation before the
    downsampling filter). clamp None: no clamp."""
    y = reference.modulated_conv2d(x, layer.weight, layer.style(w, impl="ref"), demodulate=not layer.is_torgb,
                                   padding=layer.conv_kernel - 1, input_gain=layer.magnitude_ema.rsqrt())
    y = y + layer.bias.reshape(1, -1, 1, 1)
    t = reference.upfirdn2d(y, layer.up_filter, up=layer.up_factor, padding=layer.padding, gain=layer.up_factor ** 2)
    gain, slope = (1, 1) if layer.is_torgb else (math.sqrt(2), 0.2)
    activation = F.leaky_relu(t, slope) * gain
    if clamp is not None:
        activation = activation.clamp(-clamp, clamp)
    return reference.upfirdn2d(activation, layer.down_filter, down=layer.down_factor), activation


def _layer_and_input(name_prefix: str):
    G = _generator("T")
    name = next(n for n in G.synthesis.layer_names if n.startswith(name_prefix))
    layer = getattr(G.synthesis, name)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn([2, layer.in_channels, *map(int, layer.in_size)], generator=gen) * 1000
    w = G.mapping(torch.randn([2, G.z_dim], generator=gen)).detach()[:, 0]
    return layer, x, w


def test_conv_clamp_on_torgb_clamps_the_output(layer_impl):
    """ToRGB (gain 1, linear, no filters): its output is exactly the conv + bias clamped to +-conv_clamp."""
    impl, mode = layer_impl
    layer, x, w = _layer_and_input("L14_")
    clamp = layer.conv_clamp
    assert clamp == 256
    want, _ = _layer_by_hand(layer, x, w, clamp)
    unclamped, _ = _layer_by_hand(layer, x, w, None)
    assert unclamped.abs().max() > 2 * clamp  # without the clamp it would go past it
    with use_ops(mode), torch.no_grad():
        got = layer(x, w, impl=impl)
    assert got.abs().max().item() == pytest.approx(clamp, rel=1e-6)
    assert (got.abs() >= clamp * (1 - 1e-6)).float().mean() > 0.05  # the clamp bites on many pixels
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)


def test_conv_clamp_on_a_resampling_layer_bounds_the_activation(layer_impl):
    """A layer that upsamples 2x and downsamples 2x: the clamp acts on the activation (after the lrelu gain),
    before the downsampling filter, so the output matches the clamped computation and stays within
    conv_clamp * sum|fd| (far below what the same layer gives without the clamp)."""
    impl, mode = layer_impl
    layer, x, w = _layer_and_input("L1_")
    assert layer.up_factor == 2 and layer.down_factor == 2
    clamp = layer.conv_clamp
    want, activation = _layer_by_hand(layer, x, w, clamp)
    unclamped, raw_activation = _layer_by_hand(layer, x, w, None)
    assert raw_activation.abs().max() > 2 * clamp and activation.abs().max() == clamp
    bound = clamp * layer.down_filter.abs().sum().item() ** 2  # separable: the filter runs along x and y
    assert unclamped.abs().max() > bound
    with use_ops(mode), torch.no_grad():
        got = layer(x, w, impl=impl)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-2)
    assert got.abs().max() <= bound


# ----------------------------------------------------------------------------------------------
# The setting: preset, --set, --precision, checks, cache keys, the CPU fallback, TF32's switches


def _pipeline(overrides=None, models=None, **kwargs):
    from videdit.pipeline import Pipeline, StandInModels

    return Pipeline.from_preset("demo", overrides=overrides, quiet=True, device="cpu",
                                models=models or StandInModels(resolution=32), **kwargs)


def test_precision_setting_is_typed_and_checked(tmp_path):
    from videdit.errors import VideditError
    from videdit.settings import SettingsError

    assert _pipeline().run_options.precision == "fp32"
    assert _pipeline().resolved_settings()["precision"] == "fp32"
    assert _pipeline({"precision": "tf32"}).resolved_settings()["precision"] == "tf32"
    preset = tmp_path / "mine.toml"
    preset.write_text('inherit = "demo"\nprecision = "fp16"\n')
    from videdit.pipeline import Pipeline

    assert Pipeline.from_preset(str(preset), quiet=True).run_options.precision == "fp16"
    with pytest.raises(SettingsError, match=r"^setting precision = 'fp8': allowed values are fp32, tf32, fp16$"):
        _pipeline({"precision": "fp8"})
    with pytest.raises(SettingsError, match=r"^setting precision = 16: expected a string$"):
        _pipeline({"precision": 16})
    with pytest.raises(VideditError, match=r"^bad setting 'precison': expected SECTION.KEY or a run-wide key \(precision, compile\)$"):
        _pipeline({"precison": "fp16"})


def test_a_preset_records_its_own_name_and_what_it_inherits(tmp_path):
    from videdit import presets

    assert "inherits" not in presets.load_preset("default") and presets.load_preset("default")["preset"] == "default"
    for name in ("demo", "fast", "quality"):
        loaded = presets.load_preset(name)
        assert (loaded["preset"], loaded["inherits"]) == (name, ["default"])
    mine = tmp_path / "mine.toml"
    mine.write_text('inherit = "demo"\n[tune]\nsteps = 3\n')
    loaded = presets.load_preset(str(mine))
    assert (loaded["preset"], loaded["inherits"], loaded["tune"]["steps"]) == ("mine", ["demo", "default"], 3)


def test_cpu_fallback_says_so_once(caplog):
    pipe = _pipeline({"precision": "fp16"})
    with caplog.at_level("WARNING", logger="videdit"):
        assert pipe.precision == "fp32" and pipe.precision == "fp32"
        assert pipe.generator().synthesis.force_fp32 is True
    assert [r.getMessage() for r in caplog.records] == [f"fp16 {CPU_FALLBACK}"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="videdit"):
        assert _pipeline({"precision": "fp32"}).precision == "fp32"
    assert caplog.records == []


@pytest.mark.parametrize("precision", ["tf32", "fp16"])
def test_generator_gets_the_precision_on_cuda(precision, monkeypatch):
    """With a CUDA device (only its name is needed to choose) the pipeline's generator gets the precision."""
    from videdit.pipeline import Pipeline

    monkeypatch.setattr(Pipeline, "device", property(lambda self: "cuda"))
    monkeypatch.setattr("videdit.models.StandInModels.load_generator", lambda self, device: _generator("T"))
    pipe = _pipeline({"precision": precision})
    assert pipe.precision == precision
    assert pipe.generator().synthesis.force_fp32 is (precision != "fp16")


def test_cache_params_differ_by_precision(tmp_path, monkeypatch):
    """The generator stages' cache params name the precision (fp32's stay as before the setting existed);
    on the CPU an fp16 request runs fp32, so its keys are fp32's."""
    from videdit.pipeline import Pipeline
    from videdit.runner import canonical_json, digest_text

    def params(precision, device):
        monkeypatch.setattr(Pipeline, "device", property(lambda self: device))
        pipe = _pipeline({"precision": precision, "edit.direction": "", "edit.edits": ["age", "s:L6_52_16:3"]})
        stages = pipe.stages_for(tmp_path / "clip.mp4", tmp_path / "run")
        return {s.name: digest_text(canonical_json(s.params)) for s in stages}, {s.name: s.params for s in stages}

    fp32, fp32_params = params("fp32", "cuda")
    tf32, _ = params("tf32", "cuda")
    fp16, fp16_params = params("fp16", "cuda")
    cpu_fp16, _ = params("fp16", "cpu")
    assert cpu_fp16 == fp32
    generator_stages = ["encode", "tune", "edit", "render"]
    for name in fp32:
        differ = name in generator_stages
        assert (fp32[name] != fp16[name]) is differ and (fp32[name] != tf32[name]) is differ and (tf32[name] != fp16[name]) is differ, name
    assert all("precision" not in fp32_params[name] for name in fp32)
    assert all(fp16_params[name]["precision"] == "fp16" for name in generator_stages)


@pytest.fixture
def tf32_flags():
    """torch's TF32 switches set ON before the test (cuDNN's default; matmul's is off) and put back after."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def _flags():
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def test_tf32_switches_on_only_for_tf32_and_put_back(tf32_flags):
    from videdit.models import tf32_switches

    for precision, inside in (("fp32", (False, False)), ("fp16", (False, False)), ("tf32", (True, True))):
        with tf32_switches(precision):
            assert _flags() == inside, precision
        assert _flags() == (True, True)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with pytest.raises(RuntimeError):
        with tf32_switches("tf32"):
            raise RuntimeError("a failing stage")
    assert _flags() == (False, False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from videdit.synthetic import make_clip

    return make_clip(tmp_path_factory.mktemp("clip") / "face.mp4", n_frames=3, size=(160, 128))


def test_cpu_run_with_fp16_is_fp32_bytes_and_reuses_its_cache(clip, tmp_path, tf32_flags):
    """A whole run (to encode) asked for fp16 on the CPU: one warning in the log, the fp32 run's cache keys,
    and, recomputed, the same bytes; TF32's switches are off while it runs and put back after."""
    from videdit.pipeline import StandInModels

    class FlagRecordingModels(StandInModels):
        """The stand-in networks, noting torch's TF32 switches whenever the run loads a generator."""

        def __init__(self):
            super().__init__(resolution=32)
            self.flags_seen = []

        def load_generator(self, device):
            self.flags_seen.append(_flags())
            return super().load_generator(device)

    overrides = {"align.crop_size": 32, "encode.n_iters": 1}
    run_dir = tmp_path / "run"
    first = _pipeline(dict(overrides, precision="fp32")).run(clip.path, run_dir, until="encode")
    assert first.status == "ok", first.error
    latents = (run_dir / "encode" / "latents.npy").read_bytes()
    models = FlagRecordingModels()
    cached = _pipeline(dict(overrides, precision="fp16"), models=models).run(clip.path, run_dir, until="encode")
    assert cached.status == "ok" and cached.stages == {"align": "cached", "encode": "cached"}
    recomputed = _pipeline(dict(overrides, precision="fp16"), models=models).run(clip.path, run_dir, until="encode",
                                                                                 from_stage="encode")
    assert recomputed.stages["encode"] == "ran"
    assert (run_dir / "encode" / "latents.npy").read_bytes() == latents
    assert models.flags_seen and set(models.flags_seen) == {(False, False)}
    assert _flags() == (True, True)
    log = (run_dir / "log.txt").read_text()
    assert log.count(f"fp16 {CPU_FALLBACK}") == 2  # once per fp16 run
    import tomllib

    saved = tomllib.loads((run_dir / "settings.toml").read_text())  # what ran, and what was asked beside it
    assert (saved["precision"], saved["precision_requested"]) == ("fp32", "fp16")
    assert (saved["preset"], saved["inherits"]) == ("demo", ["default"])


def test_cli_precision_flag(clip, tmp_path):
    from click.testing import CliRunner

    from videdit import cli

    result = CliRunner().invoke(cli.cli, ["run", str(clip.path), "--out", str(tmp_path / "run"), "--until", "align",
                                          "--device", "cpu", "--precision", "tf32", "--set", "align.crop_size=32"])
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if CPU_FALLBACK in line] == \
        [line for line in result.stderr.splitlines() if "tf32" in line and "CUDA" in line]
    assert len([line for line in result.stderr.splitlines() if CPU_FALLBACK in line]) == 1
    saved = (tmp_path / "run" / "settings.toml").read_text()
    assert 'precision = "fp32"' in saved and 'precision_requested = "tf32"' in saved
    bad = CliRunner().invoke(cli.cli, ["run", str(clip.path), "--precision", "fp8"])
    assert bad.exit_code == 2 and "'fp8' is not one of 'fp32', 'tf32', 'fp16'" in bad.stderr


# ----------------------------------------------------------------------------------------------
# On a GPU


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (fp16 layers run on CUDA only)")
@pytest.mark.parametrize("ops", ["torch", "cuda"])
@pytest.mark.parametrize("config", ["R", "T"])
def test_fp16_against_fp32_on_cuda(config, ops):
    """fp16 really runs the marked layers in float16 (forward hooks), and its images stay close to fp32's,
    with the PyTorch ops and with the CUDA kernels (their PyTorch fallback where they are not built)."""
    from videdit.models import apply_precision

    G = _generator(config, resolution=64, channels=32, num_fp16_res=2).cuda()  # L4-L14 float16, L0-L3 not
    ws = G.mapping(torch.randn(4, G.z_dim, device="cuda"), truncation_psi=0.7).detach()
    with use_ops(ops), torch.no_grad():
        full = G.synthesis(ws)
        apply_precision(G, "fp16")
        seen, handles = _dtypes_seen(G.synthesis)
        half = G.synthesis(ws)
    for handle in handles:
        handle.remove()
    expected = G.synthesis.half_layers("cuda")
    assert len(expected) == 11 and expected[0].startswith("L4_")
    assert [n for n, dtype in seen.items() if dtype == torch.float16] == expected
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert not torch.equal(half, full)
    assert (half - full).abs().mean().item() < 5e-3
    assert _psnr(half, full) > 40, _psnr(half, full)
