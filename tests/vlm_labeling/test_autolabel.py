"""`pilot autolabel` on tiny Arena demos: proposals, clusters that separate classes, names, labels against
the ground truth, the YOLO dataset, resuming, and the bad inputs (each a one-line error, nothing lost)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bot.cli import main as pilot
from bot.profile import load_profile
from bot.recordings.episode import EpisodeMeta, EpisodeWriter, find_episodes
from training.autolabel_score import score_boxes, scripted_names
from vlm_labeling.autolabel import pipeline
from vlm_labeling.autolabel.cli import run
from vlm_labeling.autolabel.config import AutolabelConfig
from vlm_labeling.autolabel.errors import AutolabelError
from vlm_labeling.autolabel.proposals import ProposalConfig, ProposalFinder
from vlm_labeling.autolabel.store import read_decisions

pytestmark = pytest.mark.timeout(300)
PROFILE = load_profile("arena")


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 4 s expert episodes at 320x180, zoom 0.5 (player, portal and a few NPCs in view)."""
    from bot.play.demos import DemosConfig
    from bot.play.demos import run as demos_run

    out = tmp_path_factory.mktemp("autolabel") / "demos"
    demos_run(DemosConfig(out=out, episodes=2, seconds=4, width=320, height=180, zoom=0.5, workers=1, seed=0))
    return out


@pytest.fixture
def data(demos: Path, tmp_path: Path) -> Path:
    """A private copy of the demos (labels are written into the episodes)."""
    return Path(shutil.copytree(demos, tmp_path / "data"))


@pytest.fixture(scope="module")
def clustered(demos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work folder holding the demos' clusters (`--stop-after clusters`)."""
    work = tmp_path_factory.mktemp("autolabel-work") / "work"
    run(AutolabelConfig(data=demos, out=work, review=False, stop_after="clusters"))
    return work


@pytest.fixture
def work(clustered: Path, tmp_path: Path) -> Path:
    """A private copy of the clustered work folder."""
    return Path(shutil.copytree(clustered, tmp_path / "work"))


def config(data: Path, work: Path, **kw) -> AutolabelConfig:
    return AutolabelConfig(data=data, out=work, review=False, **kw)


def named_run(data: Path, work: Path, **kw) -> dict:
    """Cluster, name the clusters as a careful person would (from the ground truth), then label."""
    run(config(data, work, stop_after="clusters", **kw))
    names = work.parent / "names.json"
    names.write_text(json.dumps(scripted_names(work, data, PROFILE)))
    return run(config(data, work, names=names, **kw))


def error_lines(capsys) -> list[str]:
    """The command's error lines on stderr (logging and progress bars aside)."""
    return [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("pilot autolabel: error:")
    ]


# ------------------------------------------------------------------------------------------------ proposals


def test_a_sprite_still_on_screen_moves_against_a_panning_background_and_the_hud_is_masked():
    rng = np.random.default_rng(0)
    stars = rng.integers(0, [320, 180], size=(150, 2))
    finder = ProposalFinder(ProposalConfig(), 320, 180, panels=[(0.0, 0.0, 0.25, 0.2)])
    for step in range(3):
        frame = np.full((180, 320, 3), 8, np.uint8)
        for x, y in (stars + [3 * step, -2 * step]) % [320, 180]:
            frame[y, x] = 200
        frame[80:96, 150:170] = (220, 60, 60)  # a sprite the camera follows: still on screen
        frame[5:25, 10:60] = 255  # HUD panel
        props = finder.step(frame)
    assert finder.shift == pytest.approx((3.0, -2.0), abs=0.5)
    (box,) = props.xyxy[props.xyxy[:, 0] > 100]  # the stars are too small to be proposals
    assert box.tolist() == [150, 80, 170, 96] and props.moving[props.xyxy[:, 0] > 100].all()
    assert not (props.xyxy[:, 0] < 80).any()  # nothing under the panel


def test_template_matching_finds_the_sprite_where_no_label_is_and_not_under_the_hud():
    from vlm_labeling.autolabel.proposals import valid_mask
    from vlm_labeling.autolabel.templates import Sprite, TemplateConfig, match_frame

    sprite = np.random.default_rng(1).integers(60, 255, size=(12, 14, 3), dtype=np.uint8)
    frame = np.full((180, 320, 3), 10, np.uint8)
    for x, y in ((50, 40), (200, 100), (10, 5)):
        frame[y : y + 12, x : x + 14] = sprite
    labelled = np.array([[50, 40, 64, 52]], np.float32)
    valid = valid_mask([(0.0, 0.0, 0.2, 0.2)], 320, 180)
    ((cls, box, score),) = match_frame(
        frame, [Sprite("npc_scout", sprite)], labelled, TemplateConfig(), valid
    )
    assert cls == "npc_scout" and box.tolist() == [200, 100, 214, 112] and score > 0.99


# ------------------------------------------------------------------------------------------------ pipeline


def test_clusters_file_and_montages_separate_arena_classes(data: Path, work: Path):
    summary = run(config(data, work, stop_after="clusters"))
    clusters = json.loads((work / "clusters.json").read_text())
    assert summary["clusters"] == len(clusters) >= 2 and [c["id"] for c in clusters] == list(
        range(len(clusters))
    )
    for cluster in clusters:
        assert set(cluster) == {"id", "size", "montage", "members"} and cluster["size"] == len(
            cluster["members"]
        )
        assert (work / cluster["montage"]).is_file()
        m = cluster["members"][0]
        assert set(m) == {"episode", "frame", "x1", "y1", "x2", "y2"} and 0 <= m["x1"] < m["x2"] <= 320
    assert [c["size"] for c in clusters] == sorted((c["size"] for c in clusters), reverse=True)
    names = scripted_names(work, data, PROFILE)
    assert len(set(names.values()) - {"ignore"}) >= 2  # at least two Arena classes get clusters of their own


def test_named_clusters_give_labels_close_to_the_ground_truth_and_a_trainable_dataset(data: Path, work: Path):
    summary = named_run(data, work)
    episodes = find_episodes(data)
    for path in episodes:
        table = pq.read_table(path / "labels" / "boxes-auto.parquet")
        assert table.column_names == ["frame", "cls", "x1", "y1", "x2", "y2", "conf"]
        assert set(table.column("cls").to_pylist()) <= set(PROFILE.class_names)
    score = score_boxes(episodes, PROFILE, frames="all")
    assert score["precision"] >= 0.85 and score["recall"] >= 0.6, score  # round 0, 8 s of video
    from training.detector import dataset_classes

    yaml = work / "dataset" / "data.yaml"
    assert dataset_classes(yaml) == PROFILE.class_names
    images = sorted((work / "dataset" / "images").rglob("*.png"))
    assert len(images) == summary["labels"]["dataset"]["train"] + summary["labels"]["dataset"]["val"] == 40
    lines = [
        line.split()
        for p in (work / "dataset" / "labels").rglob("*.txt")
        for line in p.read_text().splitlines()
    ]
    assert lines and all(
        0 <= int(c) < len(PROFILE.class_names) and 0 < float(w) <= 1 for c, _, _, w, _ in lines
    )
    decisions = read_decisions(work)
    assert len(decisions) == summary["clusters"] and all(
        d["human"] and d["what"] == "name cluster" for d in decisions
    )


def test_a_rerun_resumes_without_recomputing_finished_stages(data: Path, work: Path, monkeypatch):
    first = named_run(data, work)
    calls = []

    def fail(*args, **kwargs):
        raise AssertionError("recomputed a finished stage")

    def counted(*args, **kwargs):
        calls.append(args[0].name)
        return original(*args, **kwargs)

    original = pipeline.track_episode
    for name in ("episode_crops", "cluster_crops"):
        monkeypatch.setattr(pipeline.C, name, fail)
    monkeypatch.setattr(pipeline, "_recover", fail)
    monkeypatch.setattr(pipeline, "track_episode", fail)
    names = work.parent / "names.json"
    assert run(config(data, work, names=names)) == first
    (work / "episodes" / "expert-000000" / "tracks.parquet").unlink()  # as if killed mid-way
    monkeypatch.setattr(pipeline, "track_episode", counted)
    assert run(config(data, work, names=names)) == first and calls == ["expert-000000"]
    assert len(read_decisions(work)) == first["clusters"]  # a names file read again decides nothing anew


# ------------------------------------------------------------------------------------------------ bad input


def test_unnamed_clusters_stop_with_one_line_and_the_rerun_with_names_resumes(data: Path, work: Path, capsys):
    assert pilot(["autolabel", "--data", str(data), "--out", str(work), "--no-review"]) == 1
    (err,) = error_lines(capsys)
    assert "clusters.json: clusters [0, 1" in err and "have no name" in err
    assert (work / "clusters.json").exists() and not (work / "dataset").exists()
    names = work.parent / "names.json"
    names.write_text(json.dumps(scripted_names(work, data, PROFILE)))
    assert (
        pilot(["autolabel", "--data", str(data), "--out", str(work), "--no-review", "--names", str(names)])
        == 0
    )
    assert (work / "dataset" / "data.yaml").exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"0": "npc_bos"}', "cluster 0: unknown class 'npc_bos'"),
        ('{"999": "player"}', "key '999' is not a cluster id"),
        ("{not json", "not readable as JSON"),
        ('["player"]', "expected an object"),
    ],
)
def test_a_bad_names_file_is_one_line_naming_the_file(data, work, tmp_path, capsys, content, expected):
    names = tmp_path / "names.json"
    names.write_text(content)
    assert pilot(["autolabel", "--data", str(data), "--out", str(work), "--names", str(names)]) == 1
    (err,) = error_lines(capsys)
    assert str(names) in err and expected in err
    assert (work / "clusters.json").exists() and not (work / "names.json").exists()


def still_episode(path: Path, frames: int = 20) -> Path:
    meta = EpisodeMeta(game="arena", source="human", fps=30, width=320, height=180, keys=["none"])
    image = np.full((180, 320, 3), 10, np.uint8)
    image[60:80, 100:130] = 200
    with EpisodeWriter(path, meta) as writer:
        for _ in range(frames):
            writer.append(image, {"t": 0.0, "mouse_x": 0.5, "mouse_y": 0.5, "click": False, "key": 0})
    return path


def test_episodes_without_motion_are_skipped_with_a_warning(data: Path, tmp_path: Path, caplog):
    still = still_episode(data / "still")
    with caplog.at_level(logging.WARNING):
        summary = run(config(data, tmp_path / "work", stop_after="clusters"))
    assert summary["episodes"] == 3 and summary["episodes_with_motion"] == 2
    assert any(f"{still / 'video.mp4'}: no motion in 20 frames" in r.getMessage() for r in caplog.records)
    with pytest.raises(AutolabelError, match="no episode has motion"):
        run(config(still, tmp_path / "work-still"))


def test_the_box_tables_of_both_layers_agree():
    from training.autolabel import BOXES_SCHEMA as TRAINING
    from vlm_labeling.autolabel.labels import BOXES_SCHEMA as LABELLING

    assert TRAINING.equals(LABELLING)
