"""Executor step() latency at batch 1 after histories of 10, 600 and 10 000 frames (it must stay flat), and
the cost of the alternative: re-running forward() over the whole 600-frame history every frame. On CUDA
also the step as a CUDA graph (models/graphs.py) after 0 and 600 frames.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_executor_step.py --threads 1   # the target row
    .venv/bin/python benchmarks/bench_executor_step.py --d-model 64 --layers 2                # shipped size
    .venv/bin/python benchmarks/bench_executor_step.py --json --skip-cpu                      # GPU rows only

The tracked ratio is recompute / step() after 600 frames, rows timed round by round in one run. On a shared
CPU use OMP_WAIT_POLICY=PASSIVE and/or --threads 1. How it is measured: docs/notes/models.md; results:
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import add_common_args, apply_threads, report
from models.executor import Executor, ExecutorConfig
from models.graphs import GraphedExecutor

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


@torch.inference_mode()
def measure_graphed(
    model: Executor, on_cpu: Executor, args: argparse.Namespace, device: str = "cuda"
) -> list[dict[str, Any]]:
    """GPU rows: eager step() vs its CUDA graph after 0 and 600 frames; `model` on CUDA, `on_cpu` its copy.

    "state passed back" chains the returned state as the live loop does (no copy-in); "CPU in/out" is what
    PolicyRunner would pay: a CPU executor, CPU inputs, outputs copied back, decode() on the CPU.
    """
    config, graph, host_graph = model.config, GraphedExecutor(model, device), GraphedExecutor(on_cpu, device)
    current = [x[:, 0] for x in frames(config, 1, device)]
    host_current = [x.cpu() for x in current]
    zero, zero_graphed = model.reset(1), graph.reset(1)
    _, history = model(*frames(config, 600, device), return_state=True)
    _, host_history = on_cpu(*frames(config, 600, "cpu"), return_state=True)
    chain, host_chain = [history], [host_history]

    def chained() -> None:
        chain[0] = graph.step(*current, chain[0])[1]

    def host_chained() -> None:
        out, host_chain[0] = host_graph.step(*host_current, host_chain[0])
        host_graph.decode(out)

    def timed(fn: Callable[[], Any]) -> tuple[Callable[[], None], int]:
        return synced(fn, device), args.number

    calls = {
        ("step()", 0): timed(lambda: model.step(*current, zero)),
        ("step() graphed", 0): timed(lambda: graph.step(*current, zero_graphed)),
        ("step() graphed", 600): timed(lambda: graph.step(*current, history)),
        ("step() graphed, state passed back", 600): timed(chained),
        ("step() + decode() graphed, CPU in/out", 600): timed(host_chained),
    }
    results = time_interleaved(calls, args.repeats)
    return [{"what": what, "device": device, "history": h, **r} for (what, h), r in results.items()]


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The tracked ratios, each between medians of the same run and device."""
    extra = {}
    for device in ("cpu", "cuda"):
        median = {
            (r["what"], r["history"]): r["median_ms"]
            for r in rows
            if r["device"] == device and "median_ms" in r
        }
        if not median:
            continue
        steps = [median[("step()", h)] for h in HISTORIES]
        extra[f"{device} recompute-600 / step-after-600 (median)"] = round(
            median[(RECOMPUTE, 600)] / steps[1], 1
        )
        extra[f"{device} step after 10000 / after 10 (median)"] = round(steps[2] / steps[0], 2)
        if ("step() graphed", 600) in median:
            graphed = median[("step() graphed", 600)]
            extra[f"{device} graphed step after 600 / after 0 (median)"] = round(
                graphed / median[("step() graphed", 0)], 2
            )
            extra[f"{device} eager / graphed step after 600 (median)"] = round(steps[1] / graphed, 1)
    return extra


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d-model", type=int, default=ExecutorConfig.d_model)
    parser.add_argument("--layers", type=int, default=ExecutorConfig.n_layers)
    parser.add_argument("--number", type=int, default=40, help="step() calls per timing round")
    parser.add_argument("--repeats", type=int, default=9, help="timing rounds (medians need several here)")
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU rows (scripts/gpu_check.sh)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    load = apply_threads(args)
    torch.manual_seed(0)
    model = Executor(ExecutorConfig(d_model=args.d_model, n_layers=args.layers, mamba_path="auto")).eval()
    rows = [] if args.skip_cpu else measure(model, "cpu", args)
    if torch.cuda.is_available():
        on_cpu = copy.deepcopy(model)
        rows += measure(model.cuda(), "cuda", args)
        rows += measure_graphed(model, on_cpu, args)
    else:
        rows.append({"what": "all GPU rows", "device": "cuda", "note": "n/a (no CUDA)"})
    extra: dict[str, Any] = {"model": f"Executor d_model {args.d_model}, {args.layers} Mamba layers, batch 1"}
    extra["load average at start"] = round(load, 2)
    extra["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY", "unset")
    extra |= ratios(rows)
    report("Executor step latency (batch 1)", rows, COLUMNS, args.json, **extra)


if __name__ == "__main__":
    main()
