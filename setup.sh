#!/usr/bin/env bash
# Idempotent setup: creates .venv/ here, installs a pinned torch that runs without a GPU, then videdit
# with its test, Ray and app extras. A second run with nothing changed only checks a stamp and exits in seconds.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
# torch 2.14.1 + torchvision 0.29.1: the pair that imports together here (lpips needs torchvision) and
# that can also compile the CUDA ops. On another machine, set TORCH_SPEC, e.g. to a CPU build:
#   TORCH_SPEC="torch==2.5.1 torchvision==0.20.1 --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

stamp=.venv/.videdit-setup-stamp
want=$( (cat pyproject.toml setup.sh; echo "$TORCH_SPEC") | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import videdit" 2>/dev/null; then
  echo "setup: .venv is up to date"
  exit 0
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
# Install torch first and explicitly, so no other package's requirement can pull a different build.
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q $TORCH_SPEC
.venv/bin/python -m pip install -q -e ".[test,ray,app]"
.venv/bin/python -c "import torch, torchvision, videdit; print('setup: torch', torch.__version__, '| videdit', videdit.__version__)"
echo "$want" > "$stamp"
