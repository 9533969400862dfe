"""bot/workers.py: the spawned-process pool behind `pilot demos`, `pilot eval` and `pilot dagger`.

The workers run stdlib functions (a spawned process imports `play` and `init` by name, and a test module is
not importable there): math.sqrt for results and a failure, Path.touch to see which episodes ran.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bot.errors import PilotError
from bot.workers import play_seeds


def test_results_come_back_in_seed_order_with_progress_callbacks() -> None:
    seeds = [81, 4, 49, 16, 1, 36]
    done, ticks = [], []
    results = play_seeds(
        seeds, math.sqrt, workers=2, init=int, episode=str, on_done=done.append, tick=lambda: ticks.append(1)
    )
    assert results == [9.0, 2.0, 7.0, 4.0, 1.0, 6.0]
    assert sorted(done) == sorted(seeds) and ticks


def test_a_failed_episode_names_itself_and_cancels_the_ones_not_started(tmp_path: Path) -> None:
    with pytest.raises(PilotError, match=r"^ep-1: episode failed: ValueError\('math domain error'\)"):
        play_seeds([4, -1, 9], math.sqrt, workers=2, init=int, episode=lambda seed: f"ep{seed}")

    missing_folder = tmp_path / "no-such-folder" / "x"
    later = [tmp_path / f"episode-{i}" for i in range(10)]
    with pytest.raises(PilotError, match="no-such-folder.*episode failed: FileNotFoundError"):
        play_seeds([missing_folder, *later], Path.touch, workers=1, init=int, episode=str)
    ran = [path for path in later if path.exists()]
    assert len(ran) <= 3, f"episodes kept starting after the failure: {ran}"  # <= 2 already queued + 1


def test_no_seeds_no_work() -> None:
    assert play_seeds([], math.sqrt, workers=2, init=int, episode=str) == []
