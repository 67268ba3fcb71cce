#!/usr/bin/env bash
# Sets up .venv and runs the whole default test suite: ruff, mypy, import-linter's layers, pytest (slow/GPU tests deselected or skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
echo "== ruff"; ruff check deploykit tests benchmarks
echo "== mypy"; mypy
echo "== import-linter"; lint-imports
echo "== pytest"
python -m pytest -m "not slow" -n 2 -q "$@"
