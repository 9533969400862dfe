#!/usr/bin/env bash
# Creates the project's own virtual environment (.venv) and installs Orbit Pilot into it.
# Usage: scripts/bootstrap.sh [--dev]   (--dev adds pytest, ruff, selenium, the X tools, Naev and Chromium)
# Idempotent: a second run only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
extras=""
if [ "${1:-}" = "--dev" ]; then extras="[dev]"; fi

if [ ! -x .venv/bin/python ]; then
    echo "[bootstrap] creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
stamp=".venv/.installed$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "[bootstrap] installing orbit-pilot$extras (torch comes from this machine's wheel cache when present)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".$extras"
    touch "$stamp"
fi

if [ -n "$extras" ]; then
    # Display tests drive a real X server: Xvfb, xdotool (a "person" clicking), xdpyinfo (readiness).
    need=()
    command -v Xvfb >/dev/null || need+=(xvfb)
    command -v xdotool >/dev/null || need+=(xdotool)
    command -v xdpyinfo >/dev/null || need+=(x11-utils)
    # Naev 0.8.2, the second game (bot/games/naev/): a real game nobody here wrote, for its display tests.
    [ -x /usr/games/naev ] || command -v naev >/dev/null || need+=(naev)
    # Headless Chromium and its WebDriver: the `pilot autolabel` review page's browser test (no X needed).
    command -v chromium >/dev/null || need+=(chromium)
    command -v chromedriver >/dev/null || need+=(chromium-driver)
    if [ ${#need[@]} -gt 0 ]; then
        sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
        echo "[bootstrap] apt-get install ${need[*]}"
        $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
fi
echo "[bootstrap] ready: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
