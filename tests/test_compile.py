"""The `compile` run setting (`videdit run --compile`): the synthesis layers through torch.compile, and the
one-line fallback to eager where compilation fails (forced here on the CPU with a backend that raises)."""
from __future__ import annotations

import copy
import logging

import pytest
import torch

import videdit.networks.stylegan3 as sg3
from videdit.models import apply_compile


def _tiny():
    torch.manual_seed(0)
    G = sg3.Generator(**sg3.tiny_generator_kwargs(resolution=32, channels=16)).eval()
    ws = G.mapping(torch.randn([1, G.z_dim]), truncation_psi=0.7).detach()
    return G, ws


def _failing_backend(graph_module, example_inputs):
    raise RuntimeError("no compiler on this machine")


def test_a_failing_compilation_warns_once_and_runs_eagerly_with_the_same_bits(caplog):
    G, ws = _tiny()
    with torch.no_grad():
        eager = G.synthesis(ws)
        apply_compile(G, True, backend=_failing_backend)
        assert G.synthesis.compiled_render is not None
        with caplog.at_level(logging.WARNING):
            first = G.synthesis(ws)
            second = G.synthesis(ws)
    warnings = [r.getMessage() for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert G.synthesis.compiled_render is None
    # The fallback runs the same eager code on the same values: equal by construction.
    assert torch.equal(first, eager) and torch.equal(second, eager)


@pytest.mark.slow  # dynamo traces every layer: tens of seconds on 2 busy cores
def test_compiled_layers_match_eager_and_a_deep_copy_renders_with_its_own_weights():
    G, ws = _tiny()
    with torch.no_grad():
        eager = G.synthesis(ws)
        # The "eager" backend traces the layers with dynamo and runs the captured graph as is: the same
        # kernels, so the image agrees to float32 rounding of a reordering at most (|x| <= ~1, 1e-5 is
        # ~100 ulp at 1).
        apply_compile(G, True, backend="eager")
        compiled = G.synthesis(ws)
        assert G.synthesis.compiled_render is not None  # it compiled, it did not fall back
        torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-5)
        G2 = copy.deepcopy(G)
        for p in G2.synthesis.parameters():
            p.add_(0.5)
        assert not torch.allclose(G2.synthesis(ws), eager, atol=1e-3)  # the copy's own weights, not G's
    apply_compile(G, False)
    assert G.synthesis.compiled_render is None


@pytest.mark.parametrize("flag, expected", [([], False), (["--compile"], True)])
def test_the_run_flag_reaches_the_run_settings(flag, expected, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from videdit.cli import cli
    from videdit.pipeline import Pipeline

    seen = {}
    original = Pipeline.__init__

    def record(self, settings, **kwargs):  # the real constructor, then stop: what the CLI built is under test
        original(self, settings, **kwargs)
        seen["compile"] = self.run_options.compile
        raise SystemExit(0)

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    monkeypatch.setattr(Pipeline, "__init__", record)
    CliRunner().invoke(cli, ["run", str(clip), *flag, "--out", str(tmp_path / "run")])
    assert seen == {"compile": expected}
