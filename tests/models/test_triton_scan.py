"""The Triton selective scan (models/triton_scan.py) equals the reference scan, and the dispatch in
models/scan.py: CPU tensors never reach Triton, a Triton that does not import is logged once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models import scan
from models.scan import selective_scan

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "tests" / "support" / "triton_scan_check.py"
TOLERANCE = 1e-5  # max |triton - reference| / max |reference|, fp32
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_triton_scan_equals_reference_under_the_interpreter():
    """y, the last state and all six gradients, on CPU tensors under TRITON_INTERPRET=1 (a subprocess:
    Triton reads the variable when it is imported)."""
    pytest.importorskip("triton", reason="triton is not importable: the Triton scan cannot be checked")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(REPO), str(CHECK.parent)]))
    done = subprocess.run(
        [sys.executable, str(CHECK)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    for case, errors in report["cases"].items():
        assert set(errors) == {"y", "h_last", "du", "ddelta", "dA", "dB", "dC", "dh0"}, case
        bad = {key: value for key, value in errors.items() if not value <= TOLERANCE}
        assert bad == {}, f"{case}: relative errors above {TOLERANCE}: {bad}"
    assert len(report["rejected"]) == 2, report["rejected"]
    assert "float32" in report["rejected"][0] and "L >= 1" in report["rejected"][1]


def test_cpu_tensors_never_reach_triton(monkeypatch):
    def refuse():
        raise AssertionError("the CPU path asked for the Triton kernel")

    monkeypatch.setattr(scan, "triton_scan", refuse)
    u = torch.randn(1, 6, 4)
    y, h = selective_scan(
        u, torch.rand(1, 6, 4), -torch.rand(4, 2), torch.randn(1, 6, 2), torch.randn(1, 6, 2)
    )
    assert y.shape == (1, 6, 4) and h.shape == (1, 4, 2)


def test_triton_import_failure_is_logged_once_and_falls_back(monkeypatch, caplog):
    scan.triton_scan.cache_clear()
    monkeypatch.setitem(sys.modules, "models.triton_scan", None)  # the import now raises ImportError
    try:
        with caplog.at_level(logging.WARNING, logger="models.scan"):
            assert scan.triton_scan() is None
            assert scan.triton_scan() is None
    finally:
        scan.triton_scan.cache_clear()
    warnings = [r for r in caplog.records if "Triton selective scan unavailable" in r.getMessage()]
    assert len(warnings) == 1


def _inputs(batch, length, d_inner, d_state, device):
    """u, delta, A, B, C, h0 as the Mamba block gives them (delta softplus'ed, A negative)."""
    torch.manual_seed(0)
    u = torch.randn(batch, length, d_inner, device=device)
    delta = torch.nn.functional.softplus(torch.randn(batch, length, d_inner, device=device) - 1)
    A = -torch.exp(torch.randn(d_inner, d_state, device=device))
    B, C = torch.randn(2, batch, length, d_state, device=device)
    h0 = torch.randn(batch, d_inner, d_state, device=device)
    return [u, delta, A, B, C, h0]


def _outputs_and_grads(inputs, fused):
    leaves = [x.clone().requires_grad_() for x in inputs]
    y, h = selective_scan(*leaves, fused=fused)
    (y.sin().sum() + h.cos().sum()).backward()
    return [y.detach(), h.detach()] + [x.grad for x in leaves]


@pytest.mark.gpu
@cuda_only
def test_triton_scan_equals_reference_on_cuda():
    """B4 L256 D64 N16 fp32 on CUDA: the Triton path (selective_scan's default there) vs the reference."""
    pytest.importorskip("triton", reason="triton is not importable: the Triton scan cannot run")
    from models.triton_scan import triton_selective_scan

    assert scan.triton_scan() is triton_selective_scan
    inputs = _inputs(4, 256, 64, 16, "cuda")
    ours, reference = _outputs_and_grads(inputs, fused=True), _outputs_and_grads(inputs, fused=False)
    names = ("y", "h_last", "du", "ddelta", "dA", "dB", "dC", "dh0")
    errors = {
        key: ((a - b).abs().max() / b.abs().max()).item()
        for key, a, b in zip(names, ours, reference, strict=True)
    }
    assert max(errors.values()) < 1e-4, errors  # tl.exp is ex2.approx on the GPU
