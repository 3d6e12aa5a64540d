#!/usr/bin/env bash
# Compile and link videdit's CUDA extension (videdit/ops/csrc/*.cu) without running any kernel.
#
# Needs nvcc and a CUDA build of torch; no GPU. Builds into a fresh temporary cache folder (so
# the result says something about the sources as they are now), imports the module (which
# resolves every symbol) and lists the GPU code in it.
#
#   scripts/check_cuda_build.sh                 # uses .venv/bin/python, CUDA_HOME=/usr/local/cuda
#   PYTHON=/path/to/python TORCH_CUDA_ARCH_LIST="8.6" scripts/check_cuda_build.sh
#
# Exit status 0 when the extension builds and imports, 1 when it does not, 2 when the
# environment has no nvcc or no CUDA build of torch (nothing could be checked).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0}"
export MAX_JOBS="${MAX_JOBS:-2}"
export PATH="$CUDA_HOME/bin:$PATH"

if ! command -v nvcc >/dev/null; then
  echo "check_cuda_build: no nvcc under CUDA_HOME=$CUDA_HOME" >&2
  exit 2
fi
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.version.cuda else 1)"; then
  echo "check_cuda_build: $PYTHON has no CUDA build of torch" >&2
  exit 2
fi

cache="$(mktemp -d)"
trap 'rm -rf "$cache"' EXIT
echo "nvcc: $(nvcc --version | tail -1)"
echo "torch: $("$PYTHON" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
echo "archs: $TORCH_CUDA_ARCH_LIST"

start=$(date +%s)
XDG_CACHE_HOME="$cache" VIDEDIT_OPS_BUILD_TIMEOUT="${VIDEDIT_OPS_BUILD_TIMEOUT:-1800}" "$PYTHON" - <<'PY'
import sys
from videdit.ops.extensions import BuildError, build, import_module
from videdit.ops.kernels import CUDA_EXTENSION

try:
    path = build(CUDA_EXTENSION)
except BuildError as exc:
    print(f"CUDA extension: BUILD FAILED\n{exc}", file=sys.stderr)
    sys.exit(1)
module = import_module(CUDA_EXTENSION, path)  # resolves every symbol; runs no kernel
missing = [n for n in ("upfirdn2d", "bias_act", "bias_act_backward", "filtered_lrelu", "filtered_lrelu_backward")
           if not hasattr(module, n)]
if missing:
    print(f"CUDA extension: missing functions {missing}", file=sys.stderr)
    sys.exit(1)
print(f"CUDA extension: built and imported {path}")
PY
echo "build time: $(( $(date +%s) - start )) s"
so=$(find "$cache" -name 'videdit_native_cuda*.so' | head -1)
if command -v cuobjdump >/dev/null; then
  echo "GPU code in the module:"
  cuobjdump --list-elf "$so" | sed 's/^/  /'
else
  echo "GPU code: cuobjdump not installed; not listed"
fi
