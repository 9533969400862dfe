#!/usr/bin/env bash
# Sets everything up (.venv, X tools) and runs every check CI runs: ruff format, ruff check, and the whole
# pytest suite that can run on this machine (fast + slow + display; GPU tests skip themselves without CUDA).
# Extra arguments go to pytest, e.g. `scripts/test.sh -k episode` or `scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --dev
echo "[test] ruff format --check"
.venv/bin/ruff format --check --quiet .
echo "[test] ruff check"
.venv/bin/ruff check --quiet .
echo "[test] pytest"
exec .venv/bin/pytest -m "slow or not slow" --durations=15 "$@"  # the slowest 15: where CI time goes
