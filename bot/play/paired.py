"""Paired comparison of two policies played on the same seeds (`pilot eval --against`): the per-seed
difference, its mean with a 95 % Student-t interval, and wins / ties / losses.

Why paired: the same bundle scores 0.46-0.66 of the expert on different seed sets (benchmarks/RESULTS.md,
session 4), so two bundles are compared seed by seed, where the seed's own difficulty cancels out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Z95 = 1.959963984540054  # two-sided 95 % normal quantile
# two-sided 95 % t quantiles for few degrees of freedom, where the expansion below is off by > 0.001
T95_SMALL = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365}


def t95(dof: int) -> float:
    """Two-sided 95 % Student-t quantile: a table below 8 degrees of freedom, else the Cornish-Fisher
    expansion around the normal quantile (error < 0.001 from 8 on)."""
    if dof < 1:
        raise ValueError(f"t95: expected at least 1 degree of freedom, got {dof}")
    if dof in T95_SMALL:
        return T95_SMALL[dof]
    z, v = Z95, float(dof)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


def paired_difference(ours: Sequence[float], theirs: Sequence[float]) -> dict[str, Any]:
    """ours - theirs seed by seed: n, means, the mean difference, its sample std, 95 % interval, wins."""
    if len(ours) != len(theirs) or len(ours) < 2:
        got = f"{len(ours)} and {len(theirs)}"
        raise ValueError(f"paired_difference: expected two lists of the same length >= 2, got {got}")
    diffs = [float(a) - float(b) for a, b in zip(ours, theirs)]
    n = len(diffs)
    mean = sum(diffs) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t95(n - 1) * std / math.sqrt(n)
    return {
        "n": n,
        "ours_mean": sum(map(float, ours)) / n,
        "theirs_mean": sum(map(float, theirs)) / n,
        "diff_mean": mean,
        "diff_std": std,
        "ci95": [mean - half, mean + half],
        "wins": sum(d > 0 for d in diffs),
        "ties": sum(d == 0 for d in diffs),
        "losses": sum(d < 0 for d in diffs),
    }


def paired_line(ours: str, theirs: str, stats: dict[str, Any], unit: str = "credits") -> str:
    """One text line: 'ours - theirs: +x ± s (95 % CI a..b), wins w / ties t / losses l of n seeds'."""
    lo, hi = stats["ci95"]
    return (
        f"{ours} - {theirs}: {stats['diff_mean']:+.0f} {unit} a seed (std {stats['diff_std']:.0f}; 95 % CI "
        f"{lo:+.0f}..{hi:+.0f}); wins {stats['wins']} / ties {stats['ties']} / losses {stats['losses']} of "
        f"{stats['n']} seeds"
    )
