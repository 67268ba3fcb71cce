#!/usr/bin/env bash
# Creates .venv (if absent) and installs deploykit with the given extras. Used by demo.sh and test.sh.
# Prints one line per step; pip's own output only when it fails.
# Usage: setup.sh [EXTRAS] [--no-warm-up]; --no-warm-up leaves byte-compiling to the first import (see below).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
warm_up="${2:-}"
python="${PYTHON:-python3}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi
echo "setup: installing deploykit${extras:+[$extras]} into .venv"
# constraints.txt pins the CPU build of torch; without it pip may pull a multi-GB CUDA build.
# PYTHONWARNINGS=ignore silences setuptools' "Editable installation" notice (a warning, not an error).
# --no-compile: pip would byte-compile all ~8,000 files (most of them torch's), about 25 s of CPU; the import
# below compiles the modules deploykit uses instead, once.
if ! PYTHONWARNINGS=ignore .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile \
    -c constraints.txt -e ".${extras:+[$extras]}" >"$log" 2>&1; then
  cat "$log" >&2
  echo "setup failed: see pip's output above" >&2
  exit 1
fi
# demo.sh skips it (--no-warm-up): its deploy writes the bytecode of what it imports, which spares the
# warm-up's own imports (about 3 s); pytest's workers under PYTHONDONTWRITEBYTECODE would each compile again.
[ "$warm_up" = "--no-warm-up" ] && exit 0
env -u PYTHONDONTWRITEBYTECODE .venv/bin/python -c "
import importlib.util
import deploykit.cli, deploykit.pipeline.deploy, torch, torch.onnx, onnxruntime
for optional in ('openvino', 'matplotlib.pyplot', 'skimage.data', 'pytest', 'mypy.main'):
    if importlib.util.find_spec(optional.split('.')[0]) is not None:
        importlib.import_module(optional)
" || { echo "setup failed: deploykit does not import" >&2; exit 1; }
