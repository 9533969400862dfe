"""`pilot perceive`: observations stored next to episodes, identical however they are batched, versioned.

The detector here is an untrained yolo11n (built from its YAML): perception's plumbing does not depend on the
weights, and the HUD and cursor features come through regardless.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bot.errors import PerceptionError
from bot.perception.pipeline import Perception, load_detector
from bot.perception.state import GLOB, OBS_SPEC
from bot.profile import load_profile
from bot.recordings.episode import find_episodes, open_episode
from bot.recordings.perceive import cursor_before, main
from bot.recordings.perceived import load_perception


@pytest.fixture(scope="module")
def arena_episodes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bot.play.demos import DemosConfig, run

    out = tmp_path_factory.mktemp("demos")
    run(DemosConfig(out=out, episodes=2, seconds=2, width=640, height=360, workers=1))
    return out


def test_perceive_writes_observations_next_to_each_episode(arena_episodes: Path, raw_detector: Path) -> None:
    assert main(["--episodes", str(arena_episodes), "--detector", str(raw_detector), "--batch", "4"]) == 0
    for path in find_episodes(arena_episodes):
        episode = open_episode(path)
        perceived = load_perception(path)
        n = episode.num_frames
        assert len(perceived) == n and list(perceived["frame"]) == list(range(n))
        assert perceived["objects"].shape == (n, OBS_SPEC.n_max, len(OBS_SPEC.obj_features))
        assert perceived["glob"].shape == (n, len(OBS_SPEC.glob_features))
        assert perceived["summary"].shape == (2, len(OBS_SPEC.summary_features))  # 2 s of frames
        assert list(perceived["summary_end"]) == [29, n - 1]
        meta = perceived.meta
        assert meta["obs_spec"] == OBS_SPEC.to_dict() and meta["detector"]["id"].startswith("untrained:")
        assert meta["tracker"]["match_thresh"] == load_profile("arena").tracker.match_thresh
        assert set(meta["ms_per_frame"]) == {"detect", "track", "hud", "encode"}
        steps = episode.steps()
        glob = perceived["glob"]
        mouse_x = steps.column("mouse_x").to_numpy()
        assert glob[0, GLOB["cursor_x"]] == 0.5  # the cursor a frame shows is the previous action's
        np.testing.assert_allclose(glob[1:, GLOB["cursor_x"]], np.clip(mouse_x[:-1], 0, 1))
        np.testing.assert_allclose(glob[:, GLOB["hp"]], steps.column("hp").to_numpy(), atol=0.01)
        tracks = pq.read_table(path / "perception" / "tracks.parquet")
        assert tracks.num_rows == n and tracks.column_names[:3] == ["frame", "t", "tracks"]
        obs = perceived.observation(5)
        assert obs.t == pytest.approx(steps.column("t")[5].as_py())


def test_batching_does_not_change_the_result(arena_episodes: Path, raw_detector: Path) -> None:
    path = find_episodes(arena_episodes)[0]
    results = []
    for batch in ("1", "7"):
        main(["--episodes", str(path), "--detector", str(raw_detector), "--batch", batch, "--overwrite"])
        results.append(load_perception(path).arrays)
    for name in results[0]:
        np.testing.assert_allclose(results[0][name], results[1][name], atol=1e-5, err_msg=name)


def test_current_results_are_skipped_and_every_subsamples(arena_episodes: Path, raw_detector: Path) -> None:
    path = find_episodes(arena_episodes)[1]
    main(["--episodes", str(path), "--detector", str(raw_detector)])
    stamp = json.loads((path / "perception" / "perception.json").read_text())["created"]
    (path / "perception" / "marker").write_text("kept")
    main(["--episodes", str(path), "--detector", str(raw_detector)])
    assert (path / "perception" / "marker").exists()  # current: not redone
    main(["--episodes", str(path), "--detector", str(raw_detector), "--every", "2"])
    perceived = load_perception(path)
    assert perceived.meta["every"] == 2 and list(perceived["frame"][:3]) == [0, 2, 4]
    assert not (path / "perception" / "marker").exists() and perceived.meta["created"] >= stamp
    assert not (path / "perception.tmp").exists()


def test_other_obs_spec_is_refused(arena_episodes: Path, raw_detector: Path) -> None:
    path = find_episodes(arena_episodes)[0]
    main(["--episodes", str(path), "--detector", str(raw_detector)])
    meta_path = path / "perception" / "perception.json"
    meta = json.loads(meta_path.read_text())
    meta["obs_spec"]["version"] = 0
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(PerceptionError, match="orbit-obs/0.*re-run perception"):
        load_perception(path)
    with pytest.raises(PerceptionError, match="missing"):
        load_perception(arena_episodes)


def test_live_pipeline_step_matches_stored_perception(arena_episodes: Path, raw_detector: Path) -> None:
    """The same frames through `Perception.step` one by one (the live path) give the stored observations."""
    path = find_episodes(arena_episodes)[0]
    main(["--episodes", str(path), "--detector", str(raw_detector), "--overwrite"])
    stored = load_perception(path)
    episode = open_episode(path)
    profile = load_profile("arena")
    detector = load_detector(raw_detector, profile)
    live = Perception(profile, detector, (episode.meta.width, episode.meta.height), episode.meta.fps)
    steps = episode.steps()
    mx, my, click = cursor_before(steps)
    t = steps.column("t").to_pylist()
    for index, frame in episode.frames(stop=20):
        step = live.step(frame, (mx[index], my[index]), click[index], t[index])
        np.testing.assert_allclose(step.obs.glob, stored["glob"][index], atol=1e-5)
        np.testing.assert_allclose(step.obs.objects, stored["objects"][index], atol=1e-5)
        assert set(step.ms) == {"detect", "track", "hud", "encode"}
