"""Strategist training forward+backward: our SDPA model vs a stock nn.TransformerEncoder(norm_first=True)
of the same size (CPU and GPU), and on a GPU ours with the SDPA flash backend forced vs math (bf16).

    .venv/bin/python benchmarks/bench_strategist.py        # B32 T60 d_model 256, 4 layers
    .venv/bin/python benchmarks/bench_strategist.py --json
    .venv/bin/python benchmarks/bench_strategist.py --json --skip-cpu   # GPU rows only (bf16 ours vs stock)

Both models are causal with a mode loss at every step, in train mode (dropout 0.1); ratios come from one run.

On a CPU shared with other busy processes, run with OMP_WAIT_POLICY=PASSIVE (and/or --threads 1): with
OpenMP's default spin-waiting, every parallel op waits on a thread the other process has descheduled, which
made the same rows 10-20x slower and noisy on the 2-core project VM.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import add_common_args, apply_threads, report, time_call
from models.layers import count_parameters
from models.strategist import Strategist, StrategistConfig

COLUMNS = ("what", "device", "params", "min_ms", "median_ms", "note")


class StockStrategist(nn.Module):
    """The same shape built from nn.TransformerEncoder(norm_first=True), as the replaced system did."""

    def __init__(self, c: StrategistConfig) -> None:
        super().__init__()
        self.embed = nn.Linear(c.d_in, c.d_model)
        layer = nn.TransformerEncoderLayer(
            c.d_model, c.n_heads, c.d_ff, c.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.d_model)
        self.goal_head = nn.Linear(c.d_model, c.goal_dim)
        self.mode_head = nn.Linear(c.goal_dim, c.n_modes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], device=x.device)
        h = self.encoder(self.embed(x), mask=mask, is_causal=True)  # (B, T, d_model)
        return self.mode_head(F.layer_norm(self.goal_head(self.norm(h)), (self.goal_head.out_features,)))


def train_step(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, context: Any) -> Callable[[], None]:
    def run() -> None:
        with context():
            out = model(x)
            logits = out.mode_logits if hasattr(out, "mode_logits") else out
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), label_smoothing=0.1)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if x.device.type == "cuda":
            torch.cuda.synchronize()

    return run


def variants(config: StrategistConfig, device: str) -> list[tuple[str, nn.Module, Any, str]]:
    """(name, model, context factory, note) rows to time on `device`."""
    torch.manual_seed(0)
    ours = Strategist(config).to(device).train()
    no_rope = Strategist(dataclasses.replace(config, use_rope=False)).to(device).train()
    stock = StockStrategist(config).to(device).train()
    if device == "cpu":
        plain = contextlib.nullcontext
        return [
            ("ours: SDPA is_causal + RoPE", ours, plain, ""),
            ("ours without RoPE", no_rope, plain, ""),
            ("stock nn.TransformerEncoder(norm_first)", stock, plain, ""),
        ]
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def autocast_with(backend: SDPBackend | None) -> Callable[[], Any]:
        def context() -> Any:
            stack = contextlib.ExitStack()
            stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
            if backend is not None:
                stack.enter_context(sdpa_kernel(backend))
            return stack

        return context

    return [
        ("ours bf16, SDPA forced FLASH_ATTENTION", ours, autocast_with(SDPBackend.FLASH_ATTENTION), ""),
        ("ours bf16, SDPA forced MATH", ours, autocast_with(SDPBackend.MATH), ""),
        ("ours bf16, SDPA default dispatch", ours, autocast_with(None), ""),
        ("stock nn.TransformerEncoder bf16", stock, autocast_with(None), "default dispatch"),
    ]


def measure(config: StrategistConfig, args: argparse.Namespace, device: str) -> list[dict[str, Any]]:
    x = torch.randn(args.batch, args.length, config.d_in, device=device)
    labels = torch.randint(0, config.n_modes, (args.batch, args.length), device=device)
    rows = []
    for name, model, context, note in variants(config, device):
        result = time_call(
            train_step(model, x, labels, context), number=args.number, repeats=args.repeats, warmup=2
        )
        rows.append(
            {"what": name, "device": device, "params": count_parameters(model), "note": note, **result}
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=60)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--number", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU rows (scripts/gpu_check.sh)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    load = apply_threads(args)
    config = StrategistConfig(
        d_model=args.d_model, n_layers=args.layers, d_ff=4 * args.d_model, max_len=args.length
    )
    rows = [] if args.skip_cpu else measure(config, args, "cpu")
    if torch.cuda.is_available():
        rows += measure(config, args, "cuda")
    else:
        rows.append(
            {"what": "all GPU rows (flash vs math, stock)", "device": "cuda", "note": "n/a (no CUDA)"}
        )
    median = {(r["what"], r["device"]): r["median_ms"] for r in rows if "median_ms" in r}
    extra = {
        "size": f"B{args.batch} T{args.length} d_model {args.d_model}, {args.layers} layers, 4 heads, train()"
    }
    extra["load average at start"] = round(load, 2)
    extra["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY", "unset")
    pairs = [
        ("cpu", "stock nn.TransformerEncoder(norm_first)", "ours: SDPA is_causal + RoPE"),
        ("cuda", "ours bf16, SDPA forced MATH", "ours bf16, SDPA forced FLASH_ATTENTION"),
        ("cuda", "stock nn.TransformerEncoder bf16", "ours bf16, SDPA forced FLASH_ATTENTION"),
    ]
    for device, slow, fast in pairs:
        if (slow, device) in median and (fast, device) in median:
            extra[f"{device}: {slow} / {fast} (median)"] = round(
                median[(slow, device)] / median[(fast, device)], 2
            )
    report(
        "Strategist forward+backward (training step without the optimizer)", rows, COLUMNS, args.json, **extra
    )


if __name__ == "__main__":
    main()
