"""Test-suite wide settings."""
import os

# The default op mode "auto" may start building the fused C++ kernel in the background on first use
# and switch to it once built; the suite pins the PyTorch path so results do not depend on whether a
# build finished mid-run. The native-kernel tests select their kernels explicitly (use_ops).
os.environ.setdefault("VIDEDIT_OPS", "torch")
