"""Paired comparison of two policies on the same seeds (`pilot eval --against`)."""

from __future__ import annotations

import math

import pytest

from bot.play.paired import paired_difference, paired_line, t95

T_TABLE = [(1, 12.706), (4, 2.776), (5, 2.571), (8, 2.306), (10, 2.228), (30, 2.042), (47, 2.012)]


@pytest.mark.parametrize(("dof", "quantile"), T_TABLE)
def test_t95_matches_the_t_table(dof: int, quantile: float) -> None:
    assert t95(dof) == pytest.approx(quantile, abs=0.001)


def test_paired_difference_by_hand() -> None:
    stats = paired_difference([10, 12, 9, 15], [8, 12, 10, 11])  # differences 2, 0, -1, 4
    assert stats["n"] == 4 and stats["diff_mean"] == pytest.approx(1.25)
    std = math.sqrt(((0.75**2) + (1.25**2) + (2.25**2) + (2.75**2)) / 3)
    assert stats["diff_std"] == pytest.approx(std)
    half = 3.182 * std / 2
    assert stats["ci95"] == pytest.approx([1.25 - half, 1.25 + half], abs=1e-3)
    assert (stats["wins"], stats["ties"], stats["losses"]) == (2, 1, 1)
    assert stats["ours_mean"] == pytest.approx(11.5) and stats["theirs_mean"] == pytest.approx(10.25)
    line = paired_line("B2", "B", stats)
    assert line.startswith("B2 - B: +1 credits a seed") and "wins 2 / ties 1 / losses 1 of 4 seeds" in line


def test_paired_difference_needs_pairs() -> None:
    with pytest.raises(ValueError, match="same length >= 2, got 2 and 3"):
        paired_difference([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 1 degree"):
        t95(0)
