"""Datasets from perceived episodes: split by episode, label sources, target matching, and no leakage."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from bot.perception.state import GLOB
from bot.recordings.episode import find_episodes
from bot.recordings.perceived import load_perception
from models.strategist import IGNORE_INDEX, MODES
from training.datasets import (
    DataConfig,
    ExecutorDataset,
    StrategistDataset,
    TacticianDataset,
    collate_executor,
    collate_strategist,
    final_test_episodes,
    load_episode,
    mode_goals,
    set_teacher_context,
    split_episodes,
)
from training.errors import DatasetError
from training.labels import FileLabels, HeuristicLabels, label_source


@pytest.fixture
def episode_copy(perceived: Path, tmp_path: Path) -> Path:
    """A private copy of one perceived episode, whose label files a test may rewrite."""
    source = find_episodes(perceived)[0]
    return Path(shutil.copytree(source, tmp_path / source.name))


def _rewrite_labels(episode: Path, change: dict) -> None:
    path = episode / "labels" / "expert.parquet"
    table = pq.read_table(path)
    for name, values in change.items():
        table = table.set_column(
            table.column_names.index(name), name, pa.array(values, table.schema.field(name).type)
        )
    pq.write_table(table, path)


def test_split_is_by_episode_and_seeded(perceived: Path, tmp_path: Path) -> None:
    cfg = DataConfig(data=perceived, val_fraction=0.3)
    train, val = split_episodes(cfg)
    assert len(train) == 2 and len(val) == 1 and not set(train) & set(val)
    assert split_episodes(cfg) == (train, val)  # deterministic
    explicit = DataConfig(data=perceived, val_data=val[0])
    train2, val2 = split_episodes(explicit)
    assert val2 == val and train2 == train  # episodes of val_data are never trained on
    with pytest.raises(DatasetError, match="no perceived episodes"):
        split_episodes(DataConfig(data=tmp_path))
    with pytest.raises(DatasetError, match="val_fraction"):
        DataConfig(val_fraction=1.0)


def test_extra_data_only_ever_trains(perceived: Path, tmp_path: Path) -> None:
    episodes = sorted(p for p in perceived.iterdir() if (p / "meta.json").exists())
    extra = tmp_path / "dagger"
    extra.mkdir()
    shutil.copytree(episodes[0], extra / "dagger-000000")
    base = DataConfig(data=perceived, val_data=episodes[1])
    train, val = split_episodes(DataConfig(data=perceived, val_data=episodes[1], extra_data=(extra,)))
    assert val == split_episodes(base)[1] == [episodes[1]]
    assert train == split_episodes(base)[0] + [extra / "dagger-000000"]
    # an extra folder that is the held-out one (or inside `data`) adds nothing twice and never trains on val
    again, _ = split_episodes(DataConfig(data=perceived, val_data=episodes[1], extra_data=(perceived,)))
    assert again == split_episodes(base)[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="DataConfig.extra_data"):
        split_episodes(DataConfig(data=perceived, extra_data=(tmp_path / "empty",)))


def test_test_data_must_be_episodes_used_nowhere_else(perceived: Path, tmp_path: Path) -> None:
    episodes = find_episodes(perceived)
    train, val = split_episodes(DataConfig(data=perceived, val_data=episodes[0]))
    assert final_test_episodes(DataConfig(data=perceived), train + val) == []  # no test_data: none
    with pytest.raises(DatasetError, match=r"test_data: expert-\d+ is also a training or validation episode"):
        final_test_episodes(DataConfig(data=perceived, test_data=episodes[1]), train + val)
    copy = tmp_path / "test"
    shutil.copytree(episodes[0], copy / episodes[0].name)  # the validation episode under another path
    with pytest.raises(DatasetError, match="also a training or validation episode"):
        final_test_episodes(DataConfig(data=perceived, test_data=copy), train + val)
    assert final_test_episodes(DataConfig(data=perceived, test_data=copy), train) == [copy / episodes[0].name]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="DataConfig.test_data: no perceived episodes"):
        final_test_episodes(DataConfig(data=perceived, test_data=tmp_path / "empty"), train)


def test_label_source_specs() -> None:
    assert label_source("expert") == FileLabels("expert", 0.0)
    assert label_source("vlm:0.7") == FileLabels("vlm", 0.7)
    assert isinstance(label_source("heuristic"), HeuristicLabels)
    for bad in ("", "vlm:x", "vlm:2"):
        with pytest.raises(DatasetError, match="DataConfig.labels"):
            label_source(bad)


def test_confidence_threshold_keeps_confident_labels(episode_copy: Path) -> None:
    table = pq.read_table(episode_copy / "labels" / "expert.parquet")
    n = table.num_rows
    conf = np.where(np.arange(n) % 2 == 0, 0.9, 0.2).astype(np.float32)
    conf[:3] = np.nan  # null-like: counts as certain
    vlm = table.set_column(table.column_names.index("confidence"), "confidence", pa.array(conf, pa.float32()))
    pq.write_table(vlm, episode_copy / "labels" / "vlm.parquet")
    kept = FileLabels("vlm", 0.5).labels(episode_copy)
    assert kept.num_rows == 3 + int((conf[3:] >= 0.5).sum())
    ep = load_episode(episode_copy, FileLabels("vlm", 0.5), tolerance_s=0.0)
    assert (ep.mode == IGNORE_INDEX).sum() == n - kept.num_rows  # dropped frames are unlabelled, not guessed


def test_heuristic_labels_give_known_modes(perceived: Path) -> None:
    ep = load_episode(find_episodes(perceived)[0], HeuristicLabels())
    assert set(ep.mode.tolist()) <= set(range(len(MODES)))
    assert (ep.target_slot >= 0).all()


def test_expert_targets_map_to_tracked_slots(perceived: Path) -> None:
    for path in find_episodes(perceived):
        ep = load_episode(path, FileLabels("expert"))
        labels = pq.read_table(path / "labels" / "expert.parquet").to_pydict()
        with_target = np.array([t is not None for t in labels["target_id"]])[: len(ep.mode)]
        slots = ep.target_slot[with_target]
        assert (ep.target_slot[~with_target] == 0).all()  # "none" stays none
        if len(slots):  # the oracle detector sees every object: nearly every target has its track
            assert (slots > 0).mean() > 0.8
            rows = np.flatnonzero(with_target)[slots > 0]
            assert ep.mask[rows, ep.target_slot[rows] - 1].all()


def test_track_id_labels_map_by_track_id_even_with_arena_ground_truth(episode_copy: Path) -> None:
    """A labels file marked "track" (a VLM's, say) is never read as Arena ids, though the episode has them."""
    from bot.recordings.episode import write_labels
    from bot.recordings.perceived import load_perception

    p = load_perception(episode_copy)
    rows = []
    for r in range(len(p)):
        valid = np.flatnonzero(p["mask"][r])
        track = int(p["track_id"][r, valid[-1]]) if len(valid) else None  # the farthest object's track
        rows.append({"frame": int(p["frame"][r]), "mode": "FIGHT", "target_id": track})
    write_labels(episode_copy, "vlm-test", rows, target_ids="track")
    ep = load_episode(episode_copy, label_source("vlm-test"))
    for r, row in enumerate(rows):
        if row["target_id"] is None:
            assert ep.target_slot[r] == 0
        else:
            assert ep.track_id[r, ep.target_slot[r] - 1] == row["target_id"]
    write_labels(episode_copy, "vlm-test", rows, target_ids="arena")  # the same numbers read as Arena ids
    assert not np.array_equal(
        load_episode(episode_copy, label_source("vlm-test")).target_slot, ep.target_slot
    )


def test_strategist_inputs_do_not_depend_on_labels(episode_copy: Path) -> None:
    before = load_episode(episode_copy, FileLabels("expert"))
    n = pq.read_table(episode_copy / "labels" / "expert.parquet").num_rows
    _rewrite_labels(episode_copy, {"mode": [MODES[i % len(MODES)] for i in range(n)]})
    after = load_episode(episode_copy, FileLabels("expert"))
    a, b = StrategistDataset([before], history=4, stride=2), StrategistDataset([after], history=4, stride=2)
    assert len(a) == len(b) > 1
    for i in range(len(a)):
        assert torch.equal(a[i]["x"], b[i]["x"])
    assert any(not torch.equal(a[i]["modes"], b[i]["modes"]) for i in range(len(a)))


def test_tactician_and_executor_inputs_do_not_depend_on_target_labels(episode_copy: Path) -> None:
    before = load_episode(episode_copy, FileLabels("expert"))
    n = pq.read_table(episode_copy / "labels" / "expert.parquet").num_rows
    _rewrite_labels(episode_copy, {"target_id": [None] * n})
    after = load_episode(episode_copy, FileLabels("expert"))
    for ep in (before, after):
        set_teacher_context(ep, 8)
    a, b = TacticianDataset([before]), TacticianDataset([after])
    assert len(a) == len(b) > 0
    for i in range(len(a)):
        for name in ("objects", "valid", "goal", "context"):
            assert torch.equal(a[i][name], b[i][name]), name
    assert (after.target_slot[after.target_slot >= 0] == 0).all()
    e1, e2 = ExecutorDataset([before], chunk=16), ExecutorDataset([after], chunk=16)
    for name in ("frame", "goal", "mouse", "click", "key"):
        assert torch.equal(e1[0][name], e2[0][name]), name


def test_executor_input_shows_the_previous_action_only(perceived: Path) -> None:
    ep = load_episode(find_episodes(perceived)[0], FileLabels("expert"))
    set_teacher_context(ep, 8)
    sample = ExecutorDataset([ep], chunk=len(ep.glob))[0]
    cursor = sample["frame"][:, [GLOB["cursor_x"], GLOB["cursor_y"]]]
    target = sample["mouse"].clamp(0, 1)
    assert torch.allclose(cursor[1:], target[:-1], atol=1e-6)  # row r sees the action of row r - 1
    assert torch.equal(cursor[0], torch.tensor([0.5, 0.5]))


def test_goal_of_a_row_uses_only_completed_seconds(perceived: Path) -> None:
    ep = load_episode(find_episodes(perceived)[0], FileLabels("expert"))
    goals = mode_goals(ep, 8)
    assert not goals[: ep.summary_end[0] + 1].any()  # nothing before the first second has ended
    k = 2
    ep.mode[ep.summary_end[k]] = (ep.mode[ep.summary_end[k]] + 1) % len(MODES)  # change second k's label
    changed = mode_goals(ep, 8)
    unchanged_until = ep.summary_end[k]  # rows up to the end of second k cannot know its label
    np.testing.assert_array_equal(goals[: unchanged_until + 1], changed[: unchanged_until + 1])
    assert not np.array_equal(goals, changed)


def test_strategist_windows_score_each_second_once(perceived: Path) -> None:
    ep = load_episode(find_episodes(perceived)[0], FileLabels("expert"))
    ds = StrategistDataset([ep], history=4, stride=2)
    scored = sum(int((s["modes"] != IGNORE_INDEX).sum()) for s in (ds[i] for i in range(len(ds))))
    assert scored == int((ep.summary_mode != IGNORE_INDEX).sum())
    batch = collate_strategist([ds[0], ds[len(ds) - 1]])
    assert batch["x"].shape[:2] == batch["valid"].shape == batch["modes"].shape
    assert (batch["modes"][~batch["valid"]] == IGNORE_INDEX).all()
    with pytest.raises(DatasetError, match="stride"):
        StrategistDataset([ep], history=2, stride=3)


def test_phase_summaries_cut_the_same_frames_into_other_seconds(perceived: Path) -> None:
    path = find_episodes(perceived)[0]
    p = load_perception(path)
    summary, ends = p.summaries(0.0)  # the live Summarizer over the stored Observations: the stored arrays
    np.testing.assert_array_equal(summary, p["summary"])
    np.testing.assert_array_equal(ends, p["summary_end"])
    ep = load_episode(path, FileLabels("expert"), phases=4)
    assert len(ep.phase_summaries) == 3
    t = p["t"]
    for k, (shifted, shifted_ends) in enumerate(ep.phase_summaries, start=1):
        offset = k / 4
        assert shifted.shape[1] == summary.shape[1] and not np.array_equal(shifted_ends, ends)
        # each second ends on the last frame before a boundary at (whole second + offset)
        second = np.floor(t[shifted_ends] - offset)
        np.testing.assert_array_equal(second[:-1] + 1, np.floor(t[shifted_ends[:-1] + 1] - offset))


def test_strategist_trains_on_every_phase_with_the_mode_at_each_seconds_end(perceived: Path) -> None:
    path = find_episodes(perceived)[0]
    one, four = load_episode(path, FileLabels("expert")), load_episode(path, FileLabels("expert"), phases=4)
    single, phased = (
        StrategistDataset([one], history=4, stride=2),
        StrategistDataset([four], history=4, stride=2),
    )
    assert len(phased.views) == 4 and len(phased) > 3 * len(single)
    for i in range(len(single)):  # phase 0 is the stored summary, windows unchanged
        torch.testing.assert_close(phased[i]["x"], single[i]["x"])
    summary, ends = four.phase_summaries[1]
    first = next(i for i, (v, start, _) in enumerate(phased.windows) if v == 2 and start == 0)
    torch.testing.assert_close(phased[first]["x"], torch.from_numpy(summary[:4]))
    np.testing.assert_array_equal(phased[first]["modes"].numpy(), four.mode[ends[:4]])


def test_executor_chunks_cover_the_episode_and_pad(perceived: Path) -> None:
    ep = load_episode(find_episodes(perceived)[0], FileLabels("expert"))
    set_teacher_context(ep, 8)
    ds = ExecutorDataset([ep], chunk=50)
    assert sum(len(ds[i]["frame"]) for i in range(len(ds))) == len(ep.glob)
    batch = collate_executor([ds[0], ds[len(ds) - 1]])
    assert batch["frame"].shape[:2] == batch["valid"].shape and batch["valid"][0].all()
    assert not batch["valid"][1].all()


def test_click_destinations_point_at_the_next_click_within_the_horizon() -> None:
    from training.datasets import click_destinations

    mouse = np.stack([np.linspace(0, 1, 10), np.zeros(10)], axis=1).astype(np.float32)  # (10, 2)
    click = np.zeros(10, bool)
    click[4] = True
    dest, intent = click_destinations(mouse, click, fps=1.0, horizon_s=3.0)
    assert intent.tolist() == [False, True, True, True, True] + [False] * 5  # row 0: the click is 4 s away
    assert np.allclose(dest[1:5], mouse[4])  # where the click lands, not the next cursor
    assert np.allclose(dest[0], mouse[3]) and np.allclose(dest[8], mouse[9])  # drift: the cursor 3 s later
    none, no_intent = click_destinations(mouse, np.zeros(10, bool), fps=1.0, horizon_s=3.0)
    assert not no_intent.any() and np.allclose(none[-1], mouse[-1])
