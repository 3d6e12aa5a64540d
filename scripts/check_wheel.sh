#!/usr/bin/env bash
# Build a wheel from the tree, install it into a fresh virtual environment that reuses .venv's
# dependencies (so torch is not downloaded twice), and from outside the checkout run `videdit presets`
# and a short `videdit run CLIP --until align` from the installed wheel. Proves the wheel carries what
# the package reads at run time (presets, kernel sources) and the LICENSE.
#
#   scripts/check_wheel.sh            # uses .venv/bin/python; exit 0 when all of it works
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
PYTHON="${PYTHON:-$repo/.venv/bin/python}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation . -w "$work/dist"
wheel=$(ls "$work"/dist/videdit-*.whl)
echo "wheel: $(basename "$wheel")"
"$PYTHON" - "$wheel" <<'PY'
import sys, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
names = wheel.namelist()
need = ["videdit/presets/default.toml", "videdit/ops/csrc/filtered_lrelu_cpu.cpp", "videdit/ops/csrc/cuda_ops.cpp"]
missing = [n for n in need if n not in names]
leaked = [n for n in names if n.startswith(("tests/", "benchmarks/"))]
if missing or leaked:
    sys.exit(f"wheel check: missing {missing}, should not ship {leaked[:3]}")
# The licence: the file itself, the same text as the repository's, and named by the metadata.
licenses = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
metadata = next((wheel.read(n).decode() for n in names if n.endswith(".dist-info/METADATA")), "")
if len(licenses) != 1 or wheel.read(licenses[0]) != open("LICENSE", "rb").read():
    sys.exit(f"wheel check: LICENSE missing or not the repository's ({licenses})")
if "License-Expression: MIT" not in metadata or "License-File: LICENSE" not in metadata:
    sys.exit("wheel check: METADATA does not name the MIT licence and its file")
print(f"wheel holds {len(names)} files, presets, kernel sources and LICENSE included, no tests or benchmarks")
PY

# A fresh environment whose only extra path is .venv's site-packages (dependencies), not the checkout.
"$PYTHON" -m venv "$work/env"
site=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
envsite=$("$work/env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$site" > "$envsite/videdit-deps.pth"
"$work/env/bin/python" -m pip install -q --no-deps --no-index "$wheel"

cd "$work"  # outside the checkout: nothing can be found relative to it
where=$("$work/env/bin/python" -c 'import videdit, os; print(os.path.dirname(videdit.__file__))')
case "$where" in "$repo"*) echo "wheel check: videdit was imported from the checkout ($where)" >&2; exit 1;; esac
"$work/env/bin/videdit" presets
"$work/env/bin/python" -c 'from videdit.synthetic import make_clip; make_clip("clip.mp4", n_frames=4)'
"$work/env/bin/videdit" run clip.mp4 --until align --preset demo --out run
test -f run/align/transforms.npz
echo "wheel check: ok (installed from the wheel at $where)"
