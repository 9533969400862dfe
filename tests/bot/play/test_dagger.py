"""`pilot dagger`: a tiny random bundle plays the Arena at 320x180 while the expert labels every frame."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bot.perception.state import GLOB
from bot.play import dagger
from bot.policy.bundle import PolicyBundle
from bot.recordings.episode import open_episode
from bot.recordings.perceive import is_current
from bot.recordings.perceived import load_perception
from training.datasets import load_episode
from training.labels import label_source

SMALL = ["--width", "320", "--height", "180", "--zoom", "0.25"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, tiny_bundle, arena_detector: Path) -> Path:
    root = tmp_path_factory.mktemp("dagger")
    bundle = tiny_bundle(root / "bundle", arena_detector)
    argv = ["--policy", str(bundle), "--out", str(root / "out"), "--episodes", "2", "--seconds", "2"]
    assert dagger.main(argv + ["--seed", "7", "--workers", "2", *SMALL]) == 0  # the spawned-worker pool
    return root


def test_episode_holds_the_bots_play_the_experts_labels_and_its_perception(recorded: Path) -> None:
    folder = recorded / "out" / "dagger-000007"
    episode = open_episode(folder)
    assert episode.meta.complete and episode.meta.source == "bot" and episode.meta.seed == 7
    assert episode.meta.extra["dagger"]["labels"] == "expert"
    assert episode.meta.extra["dagger"]["actions"] == "plan"  # arena/expert/labeller.py, not its hand
    steps = episode.steps()
    assert steps.num_rows == episode.meta.frames == 61  # 2 s at 30 fps + the reset frame
    assert set(dagger.EXPERT_COLUMNS) <= set(steps.column_names)
    labels = pq.read_table(folder / "labels" / "expert.parquet")
    assert labels.column("frame").to_pylist() == list(range(61))
    perceived = load_perception(folder)
    assert perceived["frame"].tolist() == list(range(61))
    # the bot and the expert disagree somewhere (a random policy), so the two columns are not one
    played = steps.column("mouse_x").to_numpy()
    expert = steps.column("expert_mouse_x").to_numpy()
    assert not np.allclose(played, expert)
    # the stored Observations carry the cursor the bot had when each frame was captured (its action before),
    # as `pilot perceive` would have stored them from the played columns
    cursor = perceived["glob"][:, [GLOB["cursor_x"], GLOB["cursor_y"]]]
    before = np.stack([played[:-1], steps.column("mouse_y").to_numpy()[:-1]], axis=1)
    np.testing.assert_allclose(cursor[1:], before, atol=1e-6)


def test_the_episode_records_the_aim_snap_the_bot_played_with(recorded: Path) -> None:
    meta = open_episode(recorded / "out" / "dagger-000007").meta
    bundle = PolicyBundle.load(recorded / "bundle")
    assert meta.extra["dagger"]["snap"] == bundle.inference.snap_boxes == 40.0  # no --snap: the bundle's


def test_stored_perception_is_current_for_the_bundles_detector(recorded: Path) -> None:
    bundle = PolicyBundle.load(recorded / "bundle")
    detector = bundle.detector("auto", 1)
    for folder in sorted((recorded / "out").iterdir()):
        assert is_current(folder, detector, every=1)  # `pilot perceive` keeps it instead of redoing it


def test_training_targets_are_the_experts_actions(recorded: Path) -> None:
    folder = recorded / "out" / "dagger-000008"
    arrays = load_episode(folder, label_source("expert"))
    steps = open_episode(folder).steps()
    np.testing.assert_array_equal(arrays.mouse[:, 0], steps.column("expert_mouse_x").to_numpy())
    np.testing.assert_array_equal(arrays.mouse[:, 1], steps.column("expert_mouse_y").to_numpy())
    np.testing.assert_array_equal(arrays.click, steps.column("expert_click").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(arrays.key, steps.column("expert_key").to_numpy())
    assert (arrays.mode >= 0).all()  # every frame has the expert's mode


def test_rerun_keeps_done_episodes_and_replays_unfinished_ones(recorded: Path) -> None:
    out = recorded / "out"
    shutil.rmtree(out / "dagger-000008" / "perception")  # stopped between the episode and its perception
    kept = (out / "dagger-000007" / "meta.json").stat().st_mtime_ns
    cfg = dagger.DaggerConfig(
        policy=recorded / "bundle", out=out, episodes=2, seconds=2.0, seed=7, workers=1,
        width=320, height=180, zoom=0.25,
    )  # fmt: skip
    assert dagger.pending_seeds(cfg) == [8]
    assert not (out / "dagger-000008").exists()  # removed to be played again
    results = dagger.run(cfg)
    assert [r["seed"] for r in results] == [8]
    assert dagger.is_done(out / "dagger-000008")
    assert (out / "dagger-000007" / "meta.json").stat().st_mtime_ns == kept
    meta = json.loads((out / "dagger-000008" / "meta.json").read_text())
    assert meta["complete"] and meta["frames"] == 61


def test_config_errors_name_the_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--episodes"):
        dagger.DaggerConfig(policy=tmp_path, episodes=0)
    with pytest.raises(ValueError, match="--skill-min/max"):
        dagger.DaggerConfig(policy=tmp_path, skill_min=0.9, skill_max=0.5)
