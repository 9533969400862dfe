"""Heuristic labels from what happened (bot/recordings/labels.py): intents from clicks and keys, the
per-frame timeline,
the file it writes, its use by the training datasets, and its accuracy against the Arena expert."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bot.errors import EpisodeError
from bot.recordings.episode import LABEL_SCHEMA, EpisodeMeta, EpisodeWriter, find_episodes, open_episode
from bot.recordings.labels import LabelerConfig, evaluate, heuristic_labels, label_episode
from bot.recordings.perceived import TRACKS_SCHEMA

W, H, FPS = 320, 180, 30
KEYS = ["none", "attack", "repair", "boost"]
ENEMY = dict(id=5, cls="npc_scout", x1=220.0, y1=40.0, x2=240.0, y2=60.0)  # up-right of the ship (160, 90)
BOX = dict(id=9, cls="bonus_box", x1=60.0, y1=120.0, x2=70.0, y2=130.0)  # down-left


def gt(obj: dict) -> dict:
    return obj | dict(hp=1.0, hp_max=1.0, aggro=False, selected=False)


def px(x: float, y: float) -> dict:
    return dict(mouse_x=x / W, mouse_y=y / H)


def write_scripted(path: Path, actions: Callable[[int], dict], objects: Callable[[int], list], frames: int,
                   hp: Callable[[int], float] = lambda i: 1.0, source: str = "expert") -> Path:  # fmt: skip
    meta = EpisodeMeta(game="arena", source=source, fps=FPS, width=W, height=H, keys=KEYS)
    optional = ["gt_objects", "hp"] if source == "expert" else []
    with EpisodeWriter(path, meta, optional_fields=optional) as writer:
        for i in range(frames):
            row = dict(t=i / FPS, mouse_x=0.5, mouse_y=0.5, click=False, key=0) | actions(i)
            if source == "expert":
                row |= dict(gt_objects=[gt(o) for o in objects(i)], hp=hp(i))
            writer.append(np.zeros((H, W, 3), np.uint8), row)
    return path


def test_clicks_and_keys_become_intents_over_time(tmp_path: Path) -> None:
    def actions(i: int) -> dict:
        if i == 60:
            return px(230, 50) | dict(click=True)  # on the enemy
        if i == 66:
            return dict(key=KEYS.index("attack"))
        if i == 180:
            return px(64, 126) | dict(click=True)  # on the box
        return {}

    def objects(i: int) -> list:
        return ([ENEMY] if i < 120 else []) + ([BOX] if i < 220 else [])

    path = write_scripted(tmp_path / "ep", actions, objects, frames=300)
    rows = heuristic_labels(path, cfg=LabelerConfig(lookahead_s=0.5))
    assert [r["frame"] for r in rows] == list(range(300))
    modes = [r["mode"] for r in rows]
    assert set(modes[:44]) == {"EXPLORE"} and rows[0]["rationale"] == "idle"
    assert set(modes[45:120]) == {"FIGHT"}  # 0.5 s before the click (the approach) until the enemy is gone
    assert {r["target_id"] for r in rows[45:120]} == {5}
    assert rows[66]["rationale"] == "attack key"
    assert rows[125]["mode"] == "FIGHT" and rows[125]["target_id"] is None  # out of view for < lost_s
    assert set(modes[135:165]) == {"EXPLORE"}  # lost_s = 0.5 s after the enemy left the screen
    assert set(modes[165:235]) == {"LOOT"} and rows[180]["target_id"] == 9
    assert set(modes[235:]) == {"EXPLORE"}
    assert all(0 < r["confidence"] < 1 for r in rows)  # noisy labels say so


def test_low_hp_retreat_is_flee_and_moving_away_from_a_close_enemy_is_cautious(tmp_path: Path) -> None:
    away = px(40, 150) | dict(click=True)  # opposite the enemy, nowhere near the box

    hp_path = write_scripted(tmp_path / "flee", lambda i: away if i == 30 else {}, lambda i: [ENEMY],
                             frames=120, hp=lambda i: 0.3 if i < 90 else 0.95)  # fmt: skip
    rows = heuristic_labels(hp_path)
    assert rows[30]["mode"] == "FLEE" and rows[89]["mode"] == "FLEE"
    assert rows[95]["mode"] == "EXPLORE"  # hp recovered: the flight is over

    near = dict(ENEMY, x1=190.0, y1=70.0, x2=200.0, y2=80.0)  # within enemy_near of the ship
    calm = write_scripted(tmp_path / "calm", lambda i: away if i == 30 else {}, lambda i: [near], frames=60)
    assert heuristic_labels(calm)[30]["mode"] == "CAUTIOUS"
    toward = write_scripted(tmp_path / "toward", lambda i: px(300, 10) | dict(click=True) if i == 30 else {},
                            lambda i: [ENEMY], frames=60)  # fmt: skip
    assert heuristic_labels(toward)[30]["mode"] == "EXPLORE"  # a move towards an unselected enemy


def test_label_file_and_training_label_source(tmp_path: Path) -> None:
    from training.labels import label_source

    path = write_scripted(tmp_path / "ep", lambda i: px(230, 50) | dict(click=True) if i == 10 else {},
                          lambda i: [ENEMY], frames=40)  # fmt: skip
    written = label_episode(path)
    assert written == path / "labels" / "heuristic.parquet"
    table = pq.read_table(written)
    assert table.schema.equals(LABEL_SCHEMA)
    episode = open_episode(path)
    assert episode.label_sources() == ["heuristic"] and episode.labels("heuristic").num_rows == 40
    from_training = label_source("heuristic").labels(path)  # the recorded-play labels win over state rules
    assert from_training.column("mode").to_pylist() == table.column("mode").to_pylist()


def test_human_episode_uses_perception_tracks_and_needs_them(tmp_path: Path) -> None:
    path = write_scripted(tmp_path / "human", lambda i: px(230, 50) | dict(click=True) if i == 5 else {},
                          lambda i: [], frames=20, source="human")  # fmt: skip
    with pytest.raises(EpisodeError, match="pilot perceive"):
        label_episode(path)
    track = dict(id=42, cls=1, conf=0.9, x1=220.0, y1=40.0, x2=240.0, y2=60.0, visible=True)
    rows = [dict(frame=f, t=f / FPS, tracks=[track], detections=1, hp=1.0, shield=1.0, map_x=0.5, map_y=0.5)
            for f in range(0, 20, 2)]  # perceived every 2nd frame  # fmt: skip
    (path / "perception").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=TRACKS_SCHEMA), path / "perception" / "tracks.parquet")
    labels = heuristic_labels(path)
    assert labels[5]["mode"] == "FIGHT" and labels[5]["target_id"] == 42  # a track id, frame 5 filled from 4


@pytest.fixture(scope="module")
def expert_demos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from bot.play.demos import DemosConfig, run

    out = tmp_path_factory.mktemp("demos")
    run(DemosConfig(out=out, episodes=3, seconds=30, seed=10, width=320, height=180, zoom=0.25, workers=1))
    return find_episodes(out)


def test_accuracy_against_the_expert_beats_the_majority_class(expert_demos: list[Path]) -> None:
    result = evaluate(expert_demos, "expert")
    assert result["frames"] == 3 * 30 * FPS
    assert result["accuracy"] > result["majority_accuracy"] + 0.1, result
    assert result["target_agreement"] is not None and result["target_agreement"] > 0.7, result


def test_episodes_label_verb_writes_and_reports(expert_demos: list[Path], capsys) -> None:
    import json

    from bot.recordings.episodes import main

    assert main(["label", str(expert_demos[0]), "--against", "expert"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["episodes"] == 1 and 0 < report["accuracy"] <= 1
    assert "heuristic" in open_episode(expert_demos[0]).label_sources()
