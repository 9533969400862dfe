"""Shared timing and reporting for the benchmark scripts: every script prints a table, or JSON with --json.

Timing: warm-up calls, then `repeats` rounds of `number` calls; each round gives a mean per call and we
report the min and the median of those means, because this VM is noisy (10-30 % between runs). Ratios are
always taken between rows measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from bot.play.report import format_table  # noqa: F401 - re-exported for the benchmark scripts


def time_call(fn: Callable[[], Any], number: int = 10, repeats: int = 3, warmup: int = 3) -> dict[str, float]:
    """Time `fn()`; returns {"min_ms", "median_ms"} over `repeats` rounds of `number` calls each."""
    for _ in range(warmup):
        fn()
    means = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        means.append((time.perf_counter() - start) / number * 1000.0)
    return {"min_ms": min(means), "median_ms": statistics.median(means)}


def percentiles_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50 / p95 of a list of durations in seconds, in milliseconds."""
    ordered = sorted(samples_s)
    if not ordered:
        return {"p50_ms": float("nan"), "p95_ms": float("nan")}

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] * 1000.0

    return {"p50_ms": pick(0.50), "p95_ms": pick(0.95)}


def machine_summary() -> dict[str, Any]:
    """Where and when the numbers were taken, for RESULTS.md."""
    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
    }
    try:
        import os

        info["cpus"] = os.cpu_count()
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0 = torch's default")


def apply_threads(args: argparse.Namespace) -> float:
    """Apply --threads to torch; returns the 1-minute load average, since a busy shared VM slows every row."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    import os

    return os.getloadavg()[0]


def report(
    title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str], as_json: bool, **extra: Any
) -> None:
    """Print the benchmark's result: a titled table (plus `extra` as key: value lines) or one JSON object."""
    if as_json:
        json.dump(
            {"title": title, "machine": machine_summary(), "rows": list(rows), **extra}, sys.stdout, indent=2
        )
        sys.stdout.write("\n")
        return
    print(f"## {title}")
    print(f"machine: {machine_summary()}")
    print(format_table(rows, columns))
    for key, value in extra.items():
        print(f"{key}: {value}")
