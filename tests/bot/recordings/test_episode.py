"""The episode format: write -> read round trip, crash safety, and clear errors for bad files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bot.errors import EpisodeError
from bot.recordings.episode import EpisodeMeta, EpisodeWriter, find_episodes, open_episode, write_labels

KEYS = ["none", "attack", "repair", "boost"]
W, H, FPS = 160, 96, 30


def make_meta(**overrides) -> EpisodeMeta:
    values = dict(game="arena", source="expert", fps=FPS, width=W, height=H, keys=KEYS, classes=["player"])
    values.update(overrides)
    return EpisodeMeta(**values)


def pattern_frame(i: int) -> np.ndarray:
    """A textured frame whose content encodes i, so decoded frames can be matched to their index."""
    yy, xx = np.mgrid[0:H, 0:W]
    frame = np.zeros((H, W, 3), np.uint8)
    frame[..., 0] = (xx * 2 + i * 7) % 256
    frame[..., 1] = (yy * 3) % 256
    frame[..., 2] = (i * 40) % 256
    return frame


def step_row(i: int) -> dict:
    return dict(
        t=i / FPS,
        mouse_x=(i % 10) / 10,
        mouse_y=0.25,
        click=i % 7 == 0,
        key=i % 4,
        hp=1.0 - i / 1000,
        gt_objects=[
            dict(id=1, cls="player", x1=1, y1=2, x2=3, y2=4, hp=5, hp_max=6, aggro=False, selected=False)
        ],
    )


def write_episode(path: Path, frames: int = 75) -> None:
    with EpisodeWriter(
        path, make_meta(seed=3), optional_fields=["hp", "gt_objects"], flush_every=20
    ) as writer:
        for i in range(frames):
            writer.append(pattern_frame(i), step_row(i))
            writer.add_label("expert", i, "FIGHT" if i < 40 else "LOOT", target_id=7 if i % 2 else None)


def test_round_trip(tmp_path: Path) -> None:
    write_episode(tmp_path / "ep", frames=75)
    episode = open_episode(tmp_path / "ep")
    assert episode.meta.complete and not episode.recovered
    assert episode.meta.frames == episode.num_frames == 75
    assert episode.meta.seed == 3 and episode.meta.keys == KEYS
    steps = episode.steps().to_pylist()
    assert [row["frame"] for row in steps] == list(range(75))
    for i in (0, 13, 74):
        expected = step_row(i)
        assert steps[i]["key"] == expected["key"] and steps[i]["click"] == expected["click"]
        assert steps[i]["mouse_x"] == pytest.approx(expected["mouse_x"], abs=1e-6)
        assert steps[i]["gt_objects"][0]["cls"] == "player"
    labels = episode.labels("expert").to_pylist()
    assert episode.label_sources() == ["expert"]
    assert [row["mode"] for row in labels[38:42]] == ["FIGHT", "FIGHT", "LOOT", "LOOT"]
    assert labels[3]["target_id"] == 7 and labels[4]["target_id"] is None
    # Lossy video, but every decoded frame must be closest to its own index's frame.
    decoded = dict(episode.frames())
    assert sorted(decoded) == list(range(75))
    for i in (0, 31, 74):
        errors = [
            np.abs(decoded[i].astype(int) - pattern_frame(j).astype(int)).mean() for j in range(i - 1, i + 2)
        ]
        assert int(np.argmin(errors)) == 1 and errors[1] < 6.0
    # Seeking into the middle yields the right indices.
    assert [i for i, _ in episode.frames(40, 46, every=2)] == [40, 42, 44]
    assert np.array_equal(episode.frame(50), decoded[50])
    assert find_episodes(tmp_path) == [tmp_path / "ep"]


def test_keyboard_interrupt_still_finalises(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), EpisodeWriter(tmp_path / "ep", make_meta()) as writer:
        for i in range(10):
            writer.append(
                pattern_frame(i), {k: v for k, v in step_row(i).items() if k not in ("hp", "gt_objects")}
            )
        raise KeyboardInterrupt
    episode = open_episode(tmp_path / "ep")
    assert episode.meta.complete and episode.num_frames == 10


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_episode import EpisodeWriter, make_meta, step_row, pattern_frame
    writer = EpisodeWriter({path!r}, make_meta(), optional_fields=["hp", "gt_objects"], flush_every=15)
    for i in range(200):
        writer.append(pattern_frame(i), step_row(i))
        writer.add_label("expert", i, "EXPLORE")
    import time; time.sleep(1.0)  # let the encoder thread drain, as a long recording would
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_killed_writer_loses_at_most_the_last_seconds(tmp_path: Path) -> None:
    path = tmp_path / "ep"
    code = KILLED_WRITER.format(tests=str(Path(__file__).parent), path=str(path))
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[3], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    episode = open_episode(path)
    assert episode.recovered and not episode.meta.complete
    # Steps are flushed every 15 frames (0.5 s), the video per 1 s fragment: at most ~2 s lost of 200 frames.
    assert 200 - 2 * FPS <= episode.num_frames <= 200
    decoded = [i for i, _ in episode.frames()]
    assert decoded == list(range(episode.num_frames))
    assert episode.labels("expert").num_rows == episode.num_frames


def test_corrupt_meta_names_the_file(tmp_path: Path) -> None:
    write_episode(tmp_path / "ep", frames=10)
    (tmp_path / "ep" / "meta.json").write_text("{not json")
    with pytest.raises(EpisodeError, match=r"meta\.json: unreadable JSON"):
        open_episode(tmp_path / "ep")


def test_unknown_schema_version(tmp_path: Path) -> None:
    write_episode(tmp_path / "ep", frames=10)
    meta_path = tmp_path / "ep" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["schema_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(EpisodeError, match=r"meta\.json: schema_version 99 is not supported"):
        open_episode(tmp_path / "ep")


def test_held_keys_round_trip_and_older_episodes_read_as_action_v1(tmp_path: Path) -> None:
    meta = make_meta(keys=["none", "thrust", "left", "right", "fire", "target"])
    with EpisodeWriter(tmp_path / "v2", meta, optional_fields=["held", "hp", "gt_objects"]) as writer:
        for i in range(6):
            writer.append(
                pattern_frame(i), {**step_row(i), "key": 0, "held": (1 << 1 | 1 << 4) if i % 2 else 0}
            )
    episode = open_episode(tmp_path / "v2")
    assert episode.meta.action_version == 2
    assert episode.held().tolist() == [0, 18, 0, 18, 0, 18]
    write_episode(tmp_path / "old", frames=5)  # an Arena episode: no held column, written before the version
    meta_path = tmp_path / "old" / "meta.json"
    data = json.loads(meta_path.read_text())
    del data["action_version"]
    meta_path.write_text(json.dumps(data))
    old = open_episode(tmp_path / "old")
    assert old.meta.action_version == 1 and old.held().tolist() == [0] * 5
    data["action_version"] = 3
    meta_path.write_text(json.dumps(data))
    with pytest.raises(EpisodeError, match=r"meta\.json: action_version 3 is not supported"):
        open_episode(tmp_path / "old")


def test_truncated_steps_names_the_file(tmp_path: Path) -> None:
    write_episode(tmp_path / "ep", frames=10)
    steps = tmp_path / "ep" / "steps.parquet"
    steps.write_bytes(steps.read_bytes()[: steps.stat().st_size // 2])
    with pytest.raises(EpisodeError, match=r"steps\.parquet: unreadable parquet"):
        open_episode(tmp_path / "ep").steps()


def test_row_count_disagreement_is_reported(tmp_path: Path) -> None:
    write_episode(tmp_path / "ep", frames=10)
    meta_path = tmp_path / "ep" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["frames"] = 12
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(EpisodeError, match=r"has 10 rows, meta\.json says 12 frames"):
        open_episode(tmp_path / "ep").steps()


def test_a_file_without_a_video_stream_names_the_file(tmp_path: Path) -> None:
    """Garbage can parse as a container of other streams (~0.5 % of random 4 KB did): an EpisodeError."""
    import av

    write_episode(tmp_path / "ep", frames=10)
    with av.open(str(tmp_path / "ep" / "video.mp4"), "w", format="wav") as container:  # audio only
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(EpisodeError, match=r"video\.mp4: undecodable video \(no video stream\)"):
        list(open_episode(tmp_path / "ep").frames())


def test_garbage_video_names_the_file(tmp_path: Path) -> None:
    write_episode(tmp_path / "ep", frames=10)
    (tmp_path / "ep" / "video.mp4").write_bytes(os.urandom(4096))
    with pytest.raises(EpisodeError, match=r"video\.mp4: undecodable video"):
        list(open_episode(tmp_path / "ep").frames())


def test_missing_pieces(tmp_path: Path) -> None:
    with pytest.raises(EpisodeError, match="meta.json: missing"):
        open_episode(tmp_path)
    write_episode(tmp_path / "ep", frames=5)
    (tmp_path / "ep" / "video.mp4").unlink()
    with pytest.raises(EpisodeError, match=r"video\.mp4: missing"):
        open_episode(tmp_path / "ep")


def test_writer_validates_its_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="EpisodeMeta.source"):
        make_meta(source="robot")
    with pytest.raises(ValueError, match="optional_fields: unknown step columns"):
        EpisodeWriter(tmp_path / "a", make_meta(), optional_fields=["wat"])
    with EpisodeWriter(tmp_path / "b", make_meta()) as writer:
        with pytest.raises(ValueError, match=r"frame: expected uint8 \(96, 160, 3\)"):
            writer.append(np.zeros((10, 10, 3), np.uint8), {})
        with pytest.raises(ValueError, match=r"missing columns \['click'"):
            writer.append(pattern_frame(0), dict(t=0.0, mouse_x=0.1, mouse_y=0.1, key=0))
        with pytest.raises(ValueError, match="label mode"):
            writer.add_label("expert", 0, "DANCE")
    with pytest.raises(EpisodeError, match="already holds an episode"):
        EpisodeWriter(tmp_path / "b", make_meta())


def test_write_labels_replaces_a_source(tmp_path: Path) -> None:
    write_episode(tmp_path / "ep", frames=10)
    write_labels(
        tmp_path / "ep", "heuristic", [dict(frame=i, mode="EXPLORE", confidence=0.5) for i in range(10)]
    )
    import pyarrow as pa
    import pyarrow.parquet as pq

    boxes = pa.table({"frame": [0], "cls": [1], "x1": [0.0], "y1": [0.0], "x2": [4.0], "y2": [4.0]})
    pq.write_table(boxes, tmp_path / "ep" / "labels" / "boxes-auto.parquet")  # `pilot autolabel`'s boxes
    episode = open_episode(tmp_path / "ep")
    assert episode.label_sources() == ["expert", "heuristic"]  # detector boxes are not mode labels
    assert episode.labels("heuristic")["confidence"].to_pylist() == [0.5] * 10
