"""`pilot demos` writes expert episodes that replay exactly; `pilot demo` writes its overlay and table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from arena import spec
from arena.env import ArenaConfig, ArenaEnv
from bot.errors import PilotError
from bot.play import demo, demos
from bot.recordings.episode import open_episode

SMALL = dict(width=320, height=180, zoom=0.25, fps=30)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demos")
    demos.run(demos.DemosConfig(out=out, episodes=2, seconds=3.0, seed=7, workers=2, **SMALL))
    return out


def test_episodes_are_complete_and_labelled(demo_dir: Path) -> None:
    names = sorted(p.name for p in demo_dir.iterdir())
    assert names == ["expert-000007", "expert-000008"]
    for name in names:
        episode = open_episode(demo_dir / name)
        assert episode.meta.complete and episode.meta.source == "expert" and episode.meta.frames == 90
        assert episode.meta.keys == list(spec.KEYS) and episode.meta.classes == list(spec.CLASSES)
        steps = episode.steps().to_pylist()
        assert all(0.0 <= r["mouse_x"] <= 1.0 and 0.0 <= r["mouse_y"] <= 1.0 for r in steps)
        assert all(r["gt_objects"][0]["cls"] == "player" for r in steps)
        assert [r["t"] for r in steps[:3]] == pytest.approx([0.0, 1 / 30, 2 / 30])
        labels = episode.labels("expert").to_pylist()
        assert len(labels) == 90 and {r["mode"] for r in labels} <= set(spec.MODES)
        assert sum(1 for _ in episode.frames()) == 90


def test_rows_pair_each_action_with_the_frame_it_was_chosen_from(demo_dir: Path) -> None:
    """Replaying the recorded actions from reset reproduces row t's ground truth *before* action t."""
    episode = open_episode(demo_dir / "expert-000007")
    steps = episode.steps().to_pylist()
    env = ArenaEnv(ArenaConfig(episode_seconds=3.0, render=False, **SMALL))
    _, info = env.reset(seed=7)
    for row in steps:
        assert row["credits"] == info["score"]["credits"]
        assert [o["id"] for o in row["gt_objects"]] == [o["id"] for o in info["objects"]]
        assert row["gt_objects"][0]["x1"] == pytest.approx(info["objects"][0]["box"][0], abs=1e-3)
        assert row["selected_id"] == info["player"]["selected"]
        action = {
            "mouse": np.array([row["mouse_x"], row["mouse_y"]], np.float32),
            "click": int(row["click"]),
            "key": row["key"],
        }
        _, _, _, _, info = env.step(action)


def test_rerun_keeps_complete_episodes_and_redoes_unfinished_ones(demo_dir: Path) -> None:
    meta_path = demo_dir / "expert-000008" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["complete"] = False
    meta_path.write_text(json.dumps(meta))
    kept_mtime = (demo_dir / "expert-000007" / "meta.json").stat().st_mtime_ns
    cfg = demos.DemosConfig(out=demo_dir, episodes=2, seconds=3.0, seed=7, workers=1, **SMALL)
    assert demos.pending_seeds(cfg) == [8]
    results = demos.run(cfg)
    assert [r["seed"] for r in results] == [8]
    assert open_episode(demo_dir / "expert-000008").meta.complete
    assert (demo_dir / "expert-000007" / "meta.json").stat().st_mtime_ns == kept_mtime


def test_ctrl_c_in_an_episode_leaves_it_to_be_recorded_again(tmp_path: Path) -> None:
    class CtrlC:  # the progress queue: Ctrl+C arrives after the first second of play
        def put(self, frames: int) -> None:
            raise KeyboardInterrupt

    cfg = demos.DemosConfig(out=tmp_path, episodes=1, seconds=3.0, seed=3, workers=1, **SMALL)
    with pytest.raises(KeyboardInterrupt):
        demos.record_episode(cfg, 3, progress=CtrlC())
    assert not (tmp_path / "expert-000003").exists(), "a shortened demo would be kept as complete"
    assert demos.pending_seeds(cfg) == [3]


def test_config_errors_name_the_option() -> None:
    with pytest.raises(ValueError, match="--episodes"):
        demos.DemosConfig(episodes=0)
    with pytest.raises(ValueError, match="--skill-min/max"):
        demos.DemosConfig(skill_min=0.9, skill_max=0.5)


def test_pilot_demo_plays_the_bot_and_prints_the_table(
    tiny_bundle, arena_detector: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tiny_bundle(tmp_path / "bundle", arena_detector)
    argv = ["--policy", str(bundle), "--out", str(tmp_path), "--window", "off", "--episodes", "1"]
    assert demo.main(argv + ["--seconds", "2", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "| bot" in out and "| expert" in out and "| random" in out and "overlay video" in out
    import av

    with av.open(str(tmp_path / "overlay.mp4")) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert 60 <= frames <= 61  # 2 s at 30 fps (+ the reset frame)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["live"] is None and set(summary["eval"]["policies"]) == {"bot", "expert", "random"}
    assert "bot_expert_ratio" in summary["eval"]


def test_pilot_demo_without_a_bundle_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PilotError, match="no bundle.json"):
        demo.main(["--policy", str(tmp_path), "--window", "off"])


@pytest.mark.display
def test_display_detection(xvfb: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert demo.display_available()
    monkeypatch.setenv("DISPLAY", ":199")  # nothing listens there
    assert not demo.display_available()
    monkeypatch.delenv("DISPLAY")
    assert not demo.display_available()
