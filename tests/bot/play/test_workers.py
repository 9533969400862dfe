"""bot/play/workers.py: the spawned-process pool behind `pilot demos`, `pilot eval` and `pilot dagger`.

The workers run stdlib functions (a spawned process imports `play` and `init` by name, and a test module is
not importable there): math.sqrt for results and a failure; subprocess.call of `sleep 2 && touch FILE` for
episodes that leave a trace, so the test can see which ones ran (2 s: far more than the run needs to stop).
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

from bot.errors import PilotError
from bot.play.workers import play_seeds


def _episodes(folder: Path, n: int) -> list[list[str]]:
    return [["sh", "-c", f"sleep 2 && touch {folder / f'ran-{i}'}"] for i in range(n)]


def _ran(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("ran-*"))


def test_results_come_back_in_seed_order_with_progress_callbacks() -> None:
    seeds = [81, 4, 49, 16, 1, 36]
    done, ticks = [], []
    results = play_seeds(
        seeds, math.sqrt, workers=2, init=int, episode=str, on_done=done.append, tick=lambda: ticks.append(1)
    )
    assert results == [9.0, 2.0, 7.0, 4.0, 1.0, 6.0]
    assert sorted(done) == sorted(seeds) and ticks


def test_a_failed_episode_names_itself_and_no_episode_starts_after_it(tmp_path: Path) -> None:
    with pytest.raises(PilotError, match=r"^ep-1: episode failed: ValueError\('math domain error'\)"):
        play_seeds([4, -1, 9], math.sqrt, workers=2, init=int, episode=lambda seed: f"ep{seed}")

    failing = ["/no/such/program"]
    with pytest.raises(PilotError, match=r"program'\]: episode failed: FileNotFoundError"):
        play_seeds([failing, *_episodes(tmp_path, 5)], subprocess.call, workers=1, init=int, episode=str)
    # The one worker took the next episode at once; the pool had handed it a second one already, which
    # sees the stop and does not play.
    assert len(_ran(tmp_path)) <= 1, _ran(tmp_path)


def test_ctrl_c_starts_no_further_episode(tmp_path: Path) -> None:
    def ctrl_c() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        play_seeds(_episodes(tmp_path, 5), subprocess.call, workers=1, init=int, episode=str, tick=ctrl_c)
    assert _ran(tmp_path) in ([], ["ran-0"]), "only the episode playing at Ctrl+C may finish"


def test_no_seeds_no_work() -> None:
    assert play_seeds([], math.sqrt, workers=2, init=int, episode=str) == []
