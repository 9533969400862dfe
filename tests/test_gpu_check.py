"""scripts/gpu_check.sh on a machine without a usable GPU: one line saying so and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def run(tmp_path: Path, nvidia_smi_status: int) -> subprocess.CompletedProcess[str]:
    """The script with a stand-in nvidia-smi (exit status `nvidia_smi_status`) first on PATH."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text(f"#!/bin/sh\nexit {nvidia_smi_status}\n")
    (fake / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    env["GPU_CHECK_PYTHON"] = sys.executable
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)


def test_no_device_is_one_line_and_a_non_zero_exit(tmp_path):
    result = run(tmp_path, nvidia_smi_status=1)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "gpu_check: no GPU here (nvidia-smi is missing or lists no device); nothing to check"
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_no_cuda_in_torch_is_one_line_and_a_non_zero_exit(tmp_path):
    result = run(tmp_path, nvidia_smi_status=0)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"gpu_check: no GPU here (torch.cuda.is_available() is False for {sys.executable})"
    ]


def test_usage_error_for_an_unknown_flag(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT), "--nope"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 64 and "usage: scripts/gpu_check.sh" in result.stderr
