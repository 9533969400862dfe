"""Compares models/triton_scan.py with the reference scan on CPU tensors; run under TRITON_INTERPRET=1.

    TRITON_INTERPRET=1 .venv/bin/python tests/support/triton_scan_check.py   # prints JSON, one entry per case

Triton reads TRITON_INTERPRET when it is imported, so tests/models/test_triton_scan.py runs this file in a
subprocess. Each case reports max |triton - reference| / max |reference| for y, the last state and every
gradient, under a loss that uses y, the last state or both (so dy or dh_last is None in the last two).
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F

from models.scan import selective_scan
from models.triton_scan import triton_selective_scan

# (name, Bt, L, D, N, dtype, chunk of the Triton scan, h0 given, loss on)
CASES = [
    ("L37 not a multiple of the chunk", 2, 37, 8, 4, torch.float32, 8, True, "both"),
    ("two channel blocks, padded N, fp64", 1, 13, 40, 3, torch.float64, 0, False, "both"),
    ("chunk 1, loss on y only", 3, 5, 8, 4, torch.float32, 1, True, "y"),
    ("chunk > L, loss on the state only", 1, 9, 8, 16, torch.float32, 100, True, "h"),
]
NAMES = ("u", "delta", "A", "B", "C", "h0")


def make_inputs(
    batch: int, length: int, d_inner: int, d_state: int, dtype: torch.dtype
) -> list[torch.Tensor]:
    """u, delta (softplus'ed, a few large), A (negative), B, C, h0, as the Mamba block gives them."""
    u = torch.randn(batch, length, d_inner, dtype=dtype)
    delta = F.softplus(torch.randn(batch, length, d_inner, dtype=dtype) * 2)
    A = -torch.rand(d_inner, d_state, dtype=dtype) * 4 - 0.1
    B, C = torch.randn(2, batch, length, d_state, dtype=dtype)
    h0 = torch.randn(batch, d_inner, d_state, dtype=dtype)
    return [u, delta, A, B, C, h0]


def _run(scan, inputs: list[torch.Tensor], loss_on: str, **kwargs) -> list[torch.Tensor]:
    """y, the last state and the gradients of a fixed nonlinear loss, from fresh leaves."""
    leaves = [x.clone().requires_grad_() for x in inputs]
    y, h = scan(*leaves, **kwargs)
    loss = y.new_zeros(())
    if loss_on in ("y", "both"):
        loss = loss + y.sin().sum()
    if loss_on in ("h", "both"):
        loss = loss + h.cos().sum()
    loss.backward()
    return [y.detach(), h.detach()] + [x.grad for x in leaves]


def compare(case: tuple) -> dict[str, float]:
    name, batch, length, d_inner, d_state, dtype, chunk, with_h0, loss_on = case
    torch.manual_seed(0)
    inputs = make_inputs(batch, length, d_inner, d_state, dtype)
    if not with_h0:
        inputs[5] = torch.zeros_like(inputs[5])  # a given zero state, so dh0 is compared too
    ours = _run(triton_selective_scan, inputs, loss_on, chunk=chunk)
    reference = _run(selective_scan, inputs, loss_on, chunk=5)
    errors = {}
    for key, a, b in zip(("y", "h_last") + tuple(f"d{n}" for n in NAMES), ours, reference, strict=True):
        errors[key] = ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
    return errors


def rejects_bad_inputs() -> list[str]:
    """The ValueErrors that triton_selective_scan should raise; returns the messages seen."""
    u, delta, A, B, C, h0 = make_inputs(1, 4, 8, 4, torch.float32)
    seen = []
    for args in ((u.half(), delta, A, B, C), (u[:, :0], delta[:, :0], A, B[:, :0], C[:, :0])):
        try:
            triton_selective_scan(*args)
        except ValueError as exc:
            seen.append(str(exc))
    return seen


def main() -> None:
    report = {"cases": {case[0]: compare(case) for case in CASES}, "rejected": rejects_bad_inputs()}
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
