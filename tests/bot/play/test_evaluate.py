"""`pilot eval`: a tiny random bundle plays the Arena in-process for a couple of seconds at 320x180."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bot import cli
from bot.perception.detector import Detections
from bot.play.evaluate import EvalConfig, latency, main, report
from bot.policy.bundle import PolicyBundle

SMALL = ["--width", "320", "--height", "180", "--zoom", "0.25", "--seconds", "1.5"]


class NoDetections:
    """A detector that sees nothing: the policy still runs on the HUD and its own cursor."""

    def detect(self, frame: np.ndarray) -> Detections:
        return Detections.empty()


@pytest.fixture
def blind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PolicyBundle, "detector", lambda self, runtime="auto", threads=0: NoDetections())


def test_json_report(tmp_path: Path, tiny_bundle, blind, capsys: pytest.CaptureFixture) -> None:
    bundle = tiny_bundle(tmp_path / "bundle")
    assert main(["--policy", str(bundle), "--episodes", "2", "--json", *SMALL]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["seeds"] == [1000, 1001]
    assert set(result["policies"]) == {"bot", "expert", "random"}
    bot, expert = result["policies"]["bot"]["credits_mean"], result["policies"]["expert"]["credits_mean"]
    assert result["bot_expert_ratio"] == (bot / expert if expert else None)
    assert [e["seed"] for e in result["policies"]["bot"]["episodes"]] == [1000, 1001]
    assert set(result["latency_ms"]) == {"detect", "track", "hud", "encode", "strategist", "tactician",
                                         "executor", "total", "arena"}  # fmt: skip
    rates = result["decisions_per_s"]
    assert rates["executor"] == pytest.approx(30.0, rel=0.05)  # every frame at 30 fps
    assert rates["tactician"] == pytest.approx(10.0, rel=0.1)
    assert 0 < rates["strategist"] <= 1.0


def test_table_with_the_trained_detector(tmp_path: Path, tiny_bundle, arena_detector: Path, capsys) -> None:
    bundle = tiny_bundle(tmp_path / "bundle", detector=arena_detector)
    assert main(["--policy", str(bundle), "--episodes", "1", "--no-baselines", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "| bot " in out and "| expert" not in out and "| detect " in out


def test_overlay_video(tmp_path: Path, tiny_bundle, blind, capsys) -> None:
    import av

    bundle = tiny_bundle(tmp_path / "bundle")
    video = tmp_path / "out" / "eval.mp4"
    args = ["--policy", str(bundle), "--episodes", "1", "--no-baselines", "--overlay", str(video), "--json"]
    assert main([*args, *SMALL]) == 0
    assert json.loads(capsys.readouterr().out)["overlay"] == str(video)
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 46 and frames[0].shape == (180, 320, 3)  # 45 steps + the final frame


def test_bad_bundle_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["eval", "--policy", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pilot eval: error:") and "nowhere" in err and "\n" not in err


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="--episodes: expected >= 1"):
        EvalConfig(policy=Path("p"), episodes=0)
    with pytest.raises(ValueError, match="even numbers"):
        EvalConfig(policy=Path("p"), width=321)
    with pytest.raises(ValueError, match="--policy: expected a policy bundle folder"):
        EvalConfig()
    assert EvalConfig(game="naev").policy is None, "a game with an adapter is measured without a bundle too"


def test_a_bundle_for_another_game_is_refused_before_any_game_starts(capsys) -> None:
    assert cli.main(["eval", "--game", "naev", "--policy", "data/pretrained/arena"]) == 1
    assert "a bundle for 'arena' cannot play 'naev'" in capsys.readouterr().err


def _summary(seed: int, credits: int, frames: int = 60) -> dict:
    ms = {stage: [1.0] * frames for stage in ("detect", "track", "hud", "encode", "total", "arena")}
    ran = {
        "strategist": [i % 30 == 29 for i in range(frames)],
        "tactician": [i % 3 == 0 for i in range(frames)],
    }
    ran["executor"] = [True] * frames
    ms |= {stage: [5.0 * r for r in flags] for stage, flags in ran.items()}
    return {
        "seed": seed, "frames": frames, "seconds": frames / 30, "ran": ran, "ms": ms,
        "score": {"credits": credits, "kills": {"npc_scout": 1}, "boxes": 2, "deaths": 0},
        "mode_counts": {"FIGHT": 10, "LOOT": 50},
        "calls": {stage: sum(flags) for stage, flags in ran.items()},
    }  # fmt: skip


def test_report_numbers() -> None:
    cfg = EvalConfig(policy=Path("p"), episodes=2, seconds=2.0)
    bot = [_summary(1000, 100), _summary(1001, 300)]
    result = report(cfg, bot, {"expert": [_summary(1000, 400), _summary(1001, 400)]})
    assert result["bot_expert_ratio"] == pytest.approx(0.5)
    assert result["policies"]["bot"]["credits_std"] == pytest.approx(100.0)
    assert result["policies"]["bot"]["modes"] == {"FIGHT": pytest.approx(1 / 6), "LOOT": pytest.approx(5 / 6)}
    assert result["decisions_per_s"] == {"strategist": 1.0, "tactician": 10.0, "executor": 30.0}
    assert report(cfg, bot, {"expert": [_summary(1000, 0)]})["bot_expert_ratio"] is None
    lat = latency(bot)
    assert lat["strategist"]["p50"] == 0.0 and lat["strategist"]["call_p50"] == 5.0
    assert lat["detect"] == {"p50": 1.0, "p95": 1.0}


@pytest.mark.slow
def test_workers(tmp_path: Path, tiny_bundle, arena_detector: Path, capsys) -> None:
    bundle = tiny_bundle(tmp_path / "bundle", detector=arena_detector)
    args = ["--policy", str(bundle), "--episodes", "2", "--workers", "2", "--no-baselines", "--json", *SMALL]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    serial = ["--policy", str(bundle), "--episodes", "2", "--no-baselines", "--json", *SMALL]
    assert main(serial) == 0
    alone = json.loads(capsys.readouterr().out)
    assert (
        result["policies"]["bot"]["episodes"] == alone["policies"]["bot"]["episodes"]
    )  # lock-step: same play


def test_warns_about_training_seeds(tmp_path: Path, tiny_bundle, caplog: pytest.LogCaptureFixture) -> None:
    from bot.play.evaluate import warn_training_seeds

    bundle = PolicyBundle.load(tiny_bundle(tmp_path / "bundle"))
    bundle.meta["data"] = {"train_episodes": ["expert-001001", "expert-000007"]}
    warn_training_seeds(bundle, [1000, 1002])
    assert not caplog.records
    warn_training_seeds(bundle, [1000, 1001])
    assert "[1001] were training episodes" in caplog.text


def test_against_plays_both_bundles_on_the_same_seeds(tmp_path: Path, tiny_bundle, blind, capsys) -> None:
    ours, theirs = tiny_bundle(tmp_path / "ours"), tiny_bundle(tmp_path / "theirs", seed=1)
    args = ["--policy", str(ours), "--against", str(theirs), "--episodes", "3", "--no-baselines"]
    assert main([*args, *SMALL, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    other = result["against"]
    assert other["policy"] == str(theirs) and [e["seed"] for e in other["episodes"]] == [1000, 1001, 1002]
    pairs = zip(result["policies"]["bot"]["episodes"], other["episodes"])
    diffs = [a["credits"] - b["credits"] for a, b in pairs]
    paired = other["paired_credits"]
    assert paired["n"] == 3 and paired["diff_mean"] == pytest.approx(np.mean(diffs))
    assert paired["wins"] + paired["ties"] + paired["losses"] == 3
    assert main([*args, *SMALL]) == 0
    assert f"{ours} - {theirs}: " in capsys.readouterr().out
    with pytest.raises(ValueError, match="--against: expected the Arena and --episodes >= 2"):
        EvalConfig(policy=ours, against=theirs, episodes=1)
