#!/usr/bin/env bash
# Creates .venv (if absent) and installs deploykit with the given extras. Used by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
# constraints.txt pins the CPU build of torch; without it pip may pull a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".${extras:+[$extras]}" 2>&1 \
  | grep -v -e "^WARNING: Location" -e "is ignored: it is neither" || true
.venv/bin/python -c "import deploykit, torch, onnxruntime" || { echo "setup failed: see pip output above" >&2; exit 1; }
