"""Start-up: what a command loads before its first frame. A run that stops after align, `--help` and the
missing-weights check load no torch (it is most of the start-up: benchmarks/startup.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Builds a pipeline from the default preset (stand-in networks), wires the stages up to `until`; prints whether torch got loaded.
_CHILD = r"""
import json, sys
from pathlib import Path
from videdit.models import StandInModels
from videdit.pipeline import Pipeline
until = sys.argv[1]
pipe = Pipeline.from_preset("default", weights_dir=Path(sys.argv[2]), models=StandInModels())
stages = pipe.stages_for(Path("clip.mp4"), Path(sys.argv[2]) / "run", until=until)
print(json.dumps({"stages": [s.name for s in stages], "torch": "torch" in sys.modules}))
"""


def _loads_torch(until: str, tmp_path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", _CHILD, until, str(tmp_path)], capture_output=True, text=True,
                          env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_run_until_align_wires_its_stage_without_torch_and_one_until_encode_loads_it(tmp_path):
    align = _loads_torch("align", tmp_path)
    assert align == {"stages": ["align"], "torch": False}
    # The same check can fail: wiring encode needs the device and the generator's code, hence torch.
    encode = _loads_torch("encode", tmp_path)
    assert encode == {"stages": ["align", "encode"], "torch": True}


def test_help_and_the_missing_weights_message_load_no_torch(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")  # the weights are checked before the video is read
    code = ("import sys\nfrom videdit.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "finally:\n    print('TORCH', 'torch' in sys.modules, file=sys.__stderr__)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), VIDEDIT_WEIGHTS=str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    for args, rc in ((["--help"], 0), (["run", str(clip), "--out", str(tmp_path / "run")], 3)):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
        assert done.returncode == rc, done.stderr
        assert done.stderr.strip().splitlines()[-1] == "TORCH False", done.stderr


def test_lazy_module_imports_on_first_use_and_no_grad_applies_at_call_time():
    from videdit.lazy import lazy_module, no_grad

    fractions = lazy_module("fractions")
    assert fractions.Fraction(1, 2) == sys.modules["fractions"].Fraction(1, 2)

    import torch

    @no_grad
    def double(x):
        return x * 2

    x = torch.ones(2, requires_grad=True)
    assert not double(x).requires_grad
    assert (x * 2).requires_grad
