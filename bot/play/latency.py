"""Per-stage latency of the live loop (`pilot run`): the stages in their order, and p50/p95 milliseconds for
each status line (the last period) and for the run's summary (the whole run)."""

from __future__ import annotations

from collections import deque

import numpy as np

STAGES = (
    "capture",
    "detect",
    "track",
    "hud",
    "encode",
    "strategist",
    "tactician",
    "executor",
    "total",
    "input",
)
PER_CALL = ("strategist", "tactician")  # stages that run on some frames only (1 Hz, tactician_hz)


class Latency:
    """Per-stage milliseconds: the whole run (for the summary) and the last status period."""

    def __init__(self, keep: int = 100_000) -> None:
        self.run: dict[str, deque[float]] = {s: deque(maxlen=keep) for s in STAGES}
        self.recent: dict[str, list[float]] = {s: [] for s in STAGES}

    def add(self, stage: str, ms: float) -> None:
        self.run[stage].append(ms)
        self.recent[stage].append(ms)

    def status(self) -> str:
        parts = []
        for stage in STAGES:
            values = self.recent[stage]
            if values:
                p50, p95 = np.percentile(values, [50, 95])
                parts.append(f"{stage} {p50:.1f}/{p95:.1f}")
            values.clear()
        return " ".join(parts)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for stage, values in self.run.items():
            if values:
                p50, p95 = np.percentile(list(values), [50, 95])
                out[stage] = {"p50": float(p50), "p95": float(p95), "mean": float(np.mean(values))}
        return out
