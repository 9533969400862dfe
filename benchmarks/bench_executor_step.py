"""Executor step() latency at batch 1 after histories of 10, 600 and 10 000 frames (it must stay flat), and
the cost of the alternative: re-running forward() over the whole 600-frame history every frame.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_executor_step.py --threads 1   # the target row
    .venv/bin/python benchmarks/bench_executor_step.py --d-model 64 --layers 2                # shipped size
    .venv/bin/python benchmarks/bench_executor_step.py --json

The tracked ratio is recompute / step() after 600 frames, rows timed round by round in one run. On a shared
CPU use OMP_WAIT_POLICY=PASSIVE and/or --threads 1. How it is measured: docs/notes/models.md; results:
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import add_common_args, apply_threads, report
from models.executor import Executor, ExecutorConfig

COLUMNS = ("what", "device", "history", "min_ms", "median_ms", "note")
RECOMPUTE = "forward() over the history + new frame"
HISTORIES = (10, 600, 10_000)


def frames(config: ExecutorConfig, length: int, device: str) -> list[torch.Tensor]:
    widths = (config.d_frame, config.goal_dim, config.d_target, config.approach_dim)
    return [torch.randn(1, length, width, device=device) for width in widths]


def synced(fn: Callable[[], Any], device: str) -> Callable[[], None]:
    def run() -> None:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()

    return run


def time_interleaved(
    calls: dict[Any, tuple[Callable[[], None], int]], repeats: int, warmup: int = 3
) -> dict[Any, dict[str, float]]:
    """common.time_call for several functions, one round of each in turn per repeat, so that a burst of load
    from another process on the shared VM slows all rows alike rather than one (4 runs at load ~2.4: ratio
    153-187; timed row after row, 108-192). Returns {key: {"min_ms", "median_ms"}}."""
    for fn, _ in calls.values():
        for _ in range(warmup):
            fn()
    means: dict[Any, list[float]] = {key: [] for key in calls}
    for _ in range(repeats):
        for key, (fn, number) in calls.items():
            start = time.perf_counter()
            for _ in range(number):
                fn()
            means[key].append((time.perf_counter() - start) / number * 1000.0)
    return {key: {"min_ms": min(v), "median_ms": statistics.median(v)} for key, v in means.items()}


@torch.inference_mode()  # what the live loop should use: no autograd bookkeeping at all
def measure(model: Executor, device: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    config, calls = model.config, {}
    current = [x[:, 0] for x in frames(config, 1, device)]
    for history in HISTORIES:
        _, state = model(*frames(config, history, device), return_state=True)
        calls["step()", history] = (synced(lambda s=state: model.step(*current, s), device), args.number)
        if history == 600:
            decoded = synced(lambda s=state: model.decode(model.step(*current, s)[0]), device)
            calls["step() + decode()", history] = (decoded, args.number)
    recompute = frames(config, 601, device)
    calls[RECOMPUTE, 600] = (synced(lambda: model(*recompute), device), max(1, args.number // 20))
    results = time_interleaved(calls, args.repeats)
    return [{"what": what, "device": device, "history": h, **r} for (what, h), r in results.items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d-model", type=int, default=ExecutorConfig.d_model)
    parser.add_argument("--layers", type=int, default=ExecutorConfig.n_layers)
    parser.add_argument("--number", type=int, default=40, help="step() calls per timing round")
    parser.add_argument("--repeats", type=int, default=9, help="timing rounds (medians need several here)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    load = apply_threads(args)
    torch.manual_seed(0)
    model = Executor(ExecutorConfig(d_model=args.d_model, n_layers=args.layers, mamba_path="auto")).eval()
    rows = measure(model, "cpu", args)
    if torch.cuda.is_available():
        rows += measure(model.cuda(), "cuda", args)
    else:
        rows.append({"what": "all GPU rows", "device": "cuda", "note": "n/a (no CUDA)"})
    extra: dict[str, Any] = {"model": f"Executor d_model {args.d_model}, {args.layers} Mamba layers, batch 1"}
    extra["load average at start"] = round(load, 2)
    extra["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY", "unset")
    for device in ("cpu", "cuda"):
        by_key = {(r["what"], r["history"]): r for r in rows if r["device"] == device and "median_ms" in r}
        if not by_key:
            continue
        steps = [by_key[("step()", h)]["median_ms"] for h in HISTORIES]
        recompute = by_key[(RECOMPUTE, 600)]["median_ms"]
        extra[f"{device} recompute-600 / step-after-600 (median)"] = round(recompute / steps[1], 1)
        extra[f"{device} step after 10000 / after 10 (median)"] = round(steps[2] / steps[0], 2)
    report("Executor step latency (batch 1)", rows, COLUMNS, args.json, **extra)


if __name__ == "__main__":
    main()
