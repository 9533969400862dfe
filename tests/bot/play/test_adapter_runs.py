"""pilot eval for adapter games: who plays, the ratio, and the frame rate each player actually got (no game
is started: the workers are replaced by a function that returns made-up episodes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.play import adapter_runs


@pytest.fixture
def fake_games(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    played: list[str] = []
    score = {"bot": 60.0, "scripted": 120.0, "random": 30.0}
    frames = {"bot": 150, "scripted": 300, "random": 300}

    def play_seeds(seeds: list[int], play: Any, *, init_args: tuple, **_: Any) -> list[dict[str, Any]]:
        pilot = "bot" if init_args[0]["pilot"] not in score else init_args[0]["pilot"]
        played.append(pilot)
        return [
            {"seed": s, "seconds": 10.0, "frames": frames[pilot] + s, "kills": 1, "deaths": 0,
             "score_per_min": score[pilot]}
            for s in seeds
        ]  # fmt: skip

    monkeypatch.setattr(adapter_runs, "play_seeds", play_seeds)
    monkeypatch.setattr(adapter_runs, "load_bundle_for", lambda policy, game: None)
    return played


def test_the_bot_and_both_baselines_play_the_same_seeds(fake_games: list[str]) -> None:
    result = adapter_runs.evaluate("naev", 2, 10.0, 0, 1, (1280, 720), policy=Path("b"))
    assert fake_games == ["bot", "scripted", "random"]
    assert result["bot_expert_ratio"] == pytest.approx(0.5)
    bot = result["policies"]["bot"]
    assert bot["frames_per_s_mean"] == pytest.approx(15.05) and bot["frames_per_s_min"] == pytest.approx(15.0)
    assert "fps" in adapter_runs.tables(result)


def test_no_baselines_plays_the_bot_alone_and_gives_no_ratio(fake_games: list[str]) -> None:
    result = adapter_runs.evaluate("naev", 1, 10.0, 0, 1, (1280, 720), policy=Path("b"), baselines=False)
    assert fake_games == ["bot"] and set(result["policies"]) == {"bot"}
    assert result["bot_expert_ratio"] is None
    assert "bot / expert" not in adapter_runs.tables(result)


def test_without_a_policy_the_baselines_play(fake_games: list[str]) -> None:
    result = adapter_runs.evaluate("naev", 1, 10.0, 0, 1, (1280, 720), baselines=False)
    assert fake_games == ["scripted", "random"] and result["bot_expert_ratio"] is None
