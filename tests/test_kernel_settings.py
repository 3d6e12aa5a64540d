"""The CPU kernel settings the numeric tests are repeated under (.ci/run): videdit fixes MKL's reproducibility mode
only when the environment has not, so a run under MKL_CBWR=COMPATIBLE really uses it; and CI runs the numeric
tests under each setting."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Kernels of a CPU without vector units; MKL's conditional-reproducibility kernels; an AVX2 CPU without AVX-512.
SETTINGS = ["ATEN_CPU_CAPABILITY=default", "MKL_CBWR=COMPATIBLE",
            "MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2"]


def _mkl_cbwr_seen_by_videdit(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    if env_value is not None:
        env["MKL_CBWR"] = env_value
    code = "import os, videdit; print(os.environ['MKL_CBWR'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return out.stdout.strip()


def test_mkl_reproducibility_mode_is_set_unless_the_environment_sets_one():
    assert _mkl_cbwr_seen_by_videdit(None) == "AUTO,STRICT"
    assert _mkl_cbwr_seen_by_videdit("COMPATIBLE") == "COMPATIBLE"


def test_ci_repeats_the_numeric_tests_under_each_kernel_setting():
    script = (REPO / ".ci" / "run").read_text()
    loop = re.search(r'for kernels in (.*?); do\n(.*?)\ndone', script, flags=re.S)
    assert loop, "no loop over kernel settings in .ci/run"
    assert re.findall(r'"([^"]+)"', loop.group(1)) == SETTINGS
    assert 'env $kernels .venv/bin/python -m pytest -q -m "$select" --deselect "$cuda_build"' in loop.group(2)
    assert 'ATEN_CPU_CAPABILITY=default) select="numeric" ;; *) select="numeric and not slow"' in loop.group(2)
    assert script.index("-m pytest -q\n") < script.index("-m pytest -q -m slow") < loop.start()
