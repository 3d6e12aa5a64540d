#!/usr/bin/env bash
# The GPU check, ready for any CUDA machine: set up, build and self-check the CUDA kernels, run the
# CUDA tests and the GPU benchmarks, and print the results as markdown (for docs/benchmarks.md).
#
#   scripts/gpu_check.sh                          # setup.sh, then everything below
#   SKIP_SETUP=1 PYTHON=/path/to/python scripts/gpu_check.sh
#   GPU_BENCH_ARGS="--sections ops,fp16 --repeats 5" scripts/gpu_check.sh
#   GPU_BENCH_ARGS="--sections precision" scripts/gpu_check.sh   # only --precision fp16/tf32 vs fp32
#   GPU_BENCH_ARGS="--sections compile" scripts/gpu_check.sh     # only torch.compile / CUDA graphs vs eager
#
# setup.sh needs PyPI; on a machine without internet use SKIP_SETUP=1 and PYTHON set to an environment
# that already has videdit's dependencies (a CUDA build of torch). nvcc is needed for the kernels.
#
# Steps: nvidia-smi; `videdit doctor --build` (compiles the CUDA extension for the visible GPU's
# architecture and self-checks a standard set of shape families); `pytest -m cuda` (every CUDA kernel
# against the PyTorch reference, forward and backward, the self-check in place, and
# tests/test_precision.py's fp16-vs-fp32 images with a hook confirming the float16 layers);
# `python -m benchmarks gpu` (CUDA kernels vs the PyTorch path per op, fp16 vs fp32 kernels, whole
# synthesis, torch.compile (`--compile`) and CUDA graphs against eager and fp16 against fp32 with the
# compile time apart, `--precision` fp16 and tf32 against fp32 at R-1024 and T-256: seconds per image, ratio,
# mean/max abs difference and PSNR; whole pipeline seconds per frame); `python -m benchmarks pipeline --device
# cuda` (every stage at the real configuration against its floor, and the 1-minute clip; PIPELINE_BENCH_ARGS
# replaces its "--frames 30 --tune-steps 5"). Everything printed is also saved under
# $GPU_CHECK_OUT (default $TMPDIR/videdit-gpu-check-<date>/).
#
# Exit status: 0 all passed; 1 a step failed (see its log); 2 no GPU here, nothing was checked.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU on this machine (nvidia-smi is missing or lists no device); nothing checked" >&2
  exit 2
fi

out="${GPU_CHECK_OUT:-${TMPDIR:-/tmp}/videdit-gpu-check-$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
echo "gpu_check: results go to $out/"

if [ "${SKIP_SETUP:-0}" != 1 ]; then
  ./setup.sh || { echo "gpu_check: setup.sh failed" >&2; exit 1; }
fi
PYTHON="${PYTHON:-.venv/bin/python}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export PATH="$CUDA_HOME/bin:$PATH"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
# TORCH_CUDA_ARCH_LIST unset: the extension is built for the visible GPUs' architectures only.

nvidia-smi --query-gpu=name,compute_cap,memory.total,memory.used,driver_version --format=csv | tee "$out/nvidia-smi.csv"
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: $PYTHON's torch sees no GPU (a CPU-only build, or a driver too old for its CUDA); nothing checked" >&2
  exit 2
fi
command -v nvcc >/dev/null 2>&1 || echo "gpu_check: WARNING: no nvcc under CUDA_HOME=$CUDA_HOME: the CUDA kernels cannot be built; their tests will skip" >&2

failed=()

echo; echo "== videdit doctor --build"
start=$(date +%s)
"$PYTHON" -m videdit doctor --build 2>&1 | tee "$out/doctor.txt"
[ "${PIPESTATUS[0]}" = 0 ] || failed+=("doctor")
echo "(doctor --build: $(( $(date +%s) - start )) s, including the CUDA build)"

echo; echo "== pytest -m cuda"
"$PYTHON" -m pytest -q -m cuda -rs -p no:cacheprovider tests/ 2>&1 | tee "$out/pytest-cuda.txt"
[ "${PIPESTATUS[0]}" = 0 ] || failed+=("pytest -m cuda")

echo; echo "== GPU benchmarks"
# shellcheck disable=SC2086
"$PYTHON" -m benchmarks gpu ${GPU_BENCH_ARGS:-} | tee "$out/benchmarks.md"
[ "${PIPESTATUS[0]}" = 0 ] || failed+=("gpu_bench")

echo; echo "== whole pipeline at the real configuration (R-1024, IR-SE50 ReStyle-e4e, LPIPS-Alex; random weights)"
# The same table as docs/benchmarks.md's CPU one: seconds per frame per stage, its floor, the 1-minute clip.
# shellcheck disable=SC2086
"$PYTHON" -m benchmarks pipeline --device cuda ${PIPELINE_BENCH_ARGS:---frames 30 --tune-steps 5} | tee "$out/pipeline.md"
[ "${PIPESTATUS[0]}" = 0 ] || failed+=("pipeline bench")

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu_check: FAILED: ${failed[*]} (logs in $out/)" >&2
  exit 1
fi
echo "gpu_check: all passed; the tables for docs/benchmarks.md are in $out/benchmarks.md"
