#!/usr/bin/env bash
# Sets everything up (.venv) and runs the main job on the built-in Arena. Extra arguments go to `pilot demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/pilot demo "$@"
