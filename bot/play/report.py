"""Plain-text tables for command-line reports (benchmarks, `pilot demo`, `pilot eval`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return "" if value is None else str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A fixed-width, markdown-compatible table of `rows` restricted to `columns`."""
    body = [[format_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max([len(col)] + [len(r[i]) for r in body]) for i, col in enumerate(columns)]
    lines = ["| " + " | ".join(col.ljust(w) for col, w in zip(columns, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |" for r in body]
    return "\n".join(lines)


def mean_std(values: Sequence[float]) -> str:
    """'mean ± std' of a list of numbers (population std), for score tables."""
    if not values:
        return "n/a"
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    return f"{mean:.0f} ± {std:.0f}"


def summary_row(name: str, summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One score-table row from episode summaries (arena/rollout.py `play_episode`, bot/play/evaluate.py)."""
    credits = [s["score"]["credits"] for s in summaries]
    kills = [sum(s["score"]["kills"].values()) for s in summaries]
    modes: dict[str, int] = {}
    for s in summaries:
        for mode, count in s["mode_counts"].items():
            modes[mode] = modes.get(mode, 0) + count
    total = sum(modes.values())
    return {
        "policy": name,
        "credits (mean ± std)": mean_std(credits),
        "credits_mean": sum(credits) / len(credits),
        "kills": mean_std(kills),
        "boxes": mean_std([s["score"]["boxes"] for s in summaries]),
        "deaths": mean_std([s["score"]["deaths"] for s in summaries]),
        "modes": " ".join(f"{m[:4]} {100 * c / total:.0f}%" for m, c in modes.items()) if total else "-",
    }
