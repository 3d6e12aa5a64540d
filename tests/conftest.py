"""Test-suite wide settings."""
import os

import pytest

# The default op mode "auto" may start building the fused C++ kernel in the background on first use
# and switch to it once built; the suite pins the PyTorch path so results do not depend on whether a
# build finished mid-run. The native-kernel tests select their kernels explicitly (use_ops).
os.environ.setdefault("VIDEDIT_OPS", "torch")
import videdit  # noqa: E402,F401 - before any test module loads torch: videdit fixes MKL's reproducibility mode first


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`):
    the CPU is shared, and oversubscribed OpenMP threads only wait for each other."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
