"""Mamba block forward+backward: our reference path vs mambapy (pure PyTorch, parallel scan) on the CPU,
and on a GPU also our reference path with the Triton scan (models/triton_scan.py, what it runs on CUDA)
and the mamba-ssm kernels. All rows use one block of the same size, with the same weights.

    .venv/bin/python benchmarks/bench_mamba.py                  # B16 L256 d_model 128, a table
    .venv/bin/python benchmarks/bench_mamba.py --json
    .venv/bin/python benchmarks/bench_mamba.py --batch 8 --length 1024

The ratio mambapy / ours is taken between rows of the same run (common.py explains the timing).

On a CPU shared with other busy processes, run with OMP_WAIT_POLICY=PASSIVE (and/or --threads 1): with
OpenMP's default spin-waiting, every parallel op waits on a thread the other process has descheduled, which
made the same rows 10-20x slower and noisy on the 2-core project VM.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any
from unittest import mock

import torch

from benchmarks.common import add_common_args, apply_threads, report, time_call
from models import scan
from models.kernels import kernels_available
from models.mamba import MambaBlock, MambaConfig

COLUMNS = ("what", "device", "pass", "min_ms", "median_ms", "note")
OURS, TRITON = "ours (reference path)", "ours (reference path, Triton scan)"


class PyTorchScan(torch.nn.Module):
    """A block whose scan stays on the PyTorch reference on CUDA too (selective_scan would pick Triton there;
    the block has no switch for it, so the lookup is patched for the call)."""

    def __init__(self, block: torch.nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with mock.patch.object(scan, "triton_scan", lambda: None):
            return self.block(x)


def fwd_bwd(block: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        inp = x.detach().requires_grad_()
        block(inp).square().mean().backward()
        _sync(x.device)

    return run


def fwd(block: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            block(x)
        _sync(x.device)

    return run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_blocks(args: argparse.Namespace, device: str) -> dict[str, torch.nn.Module | None]:
    torch.manual_seed(0)
    config = dict(d_model=args.d_model, d_state=args.d_state, expand=2, d_conv=4)
    ours = MambaBlock(MambaConfig(**config, path="reference")).to(device)
    blocks: dict[str, torch.nn.Module | None] = {OURS: PyTorchScan(ours) if device == "cuda" else ours}
    if device == "cuda":
        blocks[TRITON] = ours if scan.triton_scan() is not None else None
    from mambapy.mamba import MambaBlock as MambapyBlock
    from mambapy.mamba import MambaConfig as MambapyConfig

    mambapy = MambapyBlock(MambapyConfig(d_model=args.d_model, n_layers=1, d_state=args.d_state)).to(device)
    mambapy.load_state_dict(ours.state_dict())
    blocks["mambapy 1.2.0 (pscan)"] = mambapy
    if device == "cuda":
        kernels = None
        if kernels_available():
            kernels = MambaBlock(MambaConfig(**config, path="kernels")).to(device)
            kernels.load_state_dict(ours.state_dict())
        blocks["ours (mamba-ssm kernels)"] = kernels
    return blocks


def measure(args: argparse.Namespace, device: str) -> list[dict[str, Any]]:
    x = torch.randn(args.batch, args.length, args.d_model, device=device)
    rows = []
    for name, block in make_blocks(args, device).items():
        for label, make in (("fwd+bwd", fwd_bwd), ("fwd", fwd)):
            row: dict[str, Any] = {"what": name, "device": device, "pass": label}
            if block is None:
                row["note"] = (
                    "n/a (triton not importable)" if name == TRITON else "n/a (mamba-ssm not installed)"
                )
            else:
                row.update(time_call(make(block, x), number=args.number, repeats=args.repeats, warmup=2))
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--number", type=int, default=2, help="calls per timing round")
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds")
    add_common_args(parser)
    args = parser.parse_args(argv)
    load = apply_threads(args)
    rows = measure(args, "cpu")
    if torch.cuda.is_available():
        rows += measure(args, "cuda")
    else:
        rows += [
            {"what": TRITON, "device": "cuda", "note": "n/a (no CUDA: the Triton scan runs only there)"},
            {"what": "all other GPU rows", "device": "cuda", "note": "n/a (no CUDA)"},
        ]
    timed = {(r["what"], r["device"], r["pass"]): r for r in rows if "median_ms" in r}
    extra: dict[str, Any] = {
        "size": f"B{args.batch} L{args.length} d_model {args.d_model} d_state {args.d_state}"
    }
    extra["load average at start"] = round(load, 2)
    extra["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY", "unset")
    pairs = [(OURS, "mambapy 1.2.0 (pscan)"), (OURS, "ours (mamba-ssm kernels)")]
    pairs += [(TRITON, OURS), (TRITON, "mambapy 1.2.0 (pscan)"), (TRITON, "ours (mamba-ssm kernels)")]
    for device in ("cpu", "cuda"):
        for mine, other in pairs:
            ours, theirs = timed.get((mine, device, "fwd+bwd")), timed.get((other, device, "fwd+bwd"))
            if ours and theirs:
                label = "ours" if mine == OURS else mine  # the key earlier runs used
                extra[f"{device} fwd+bwd speed-up of {label} vs {other} (median)"] = round(
                    theirs["median_ms"] / ours["median_ms"], 2
                )
    report("Mamba block forward+backward", rows, COLUMNS, args.json, **extra)


if __name__ == "__main__":
    main()
