"""`pilot episodes ls|show|check` (bot/recordings/episodes.py): listing, statistics + contact sheet, and an
integrity
check that reports every corrupt, truncated or unfinished file with a non-zero exit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from bot.recordings.episode import EpisodeMeta, EpisodeWriter, write_labels
from bot.recordings.episodes import check_episode, main

W, H, FPS, FRAMES = 160, 96, 30, 60
KEYS = ["none", "attack", "repair", "boost"]


def frame(i: int) -> np.ndarray:
    image = np.zeros((H, W, 3), np.uint8)
    image[:, : (i * 3) % W] = (200, 80, 40)
    return image


def row(i: int) -> dict:
    return dict(t=i / FPS, mouse_x=0.25, mouse_y=0.5, click=i % 20 == 0, key=1 if i == 30 else 0,
                keys_down=[], buttons_down=[], events=[f"{i / FPS:.4f} move 40 48"])  # fmt: skip


def human_episode(path: Path, finish: bool = True) -> Path:
    meta = EpisodeMeta(game="arena", source="human", fps=FPS, width=W, height=H, keys=KEYS,
                       region=[0, 0, W, H], extra={"dropped_frames": 2})  # fmt: skip
    writer = EpisodeWriter(
        path, meta, optional_fields=["keys_down", "buttons_down", "events"], flush_every=20
    )
    for i in range(FRAMES):
        writer.append(frame(i), row(i))
    if finish:
        writer.close()
    else:  # what a killed recorder leaves: parts and a video, meta.json still says incomplete
        writer.steps.flush()
        writer.video.close()
    write_labels(path, "heuristic", [dict(frame=i, mode="EXPLORE", target_id=None, confidence=0.3,
                                          rationale="idle") for i in range(FRAMES)])  # fmt: skip
    return path


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return human_episode(tmp_path_factory.mktemp("good") / "human-0")


def copy_of(good: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(good, tmp_path / "root" / good.name))


def test_ls_lists_each_episode(good: Path, tmp_path: Path, capsys) -> None:
    root = copy_of(good, tmp_path).parent
    human_episode(root / "human-1")
    assert main(["ls", str(root), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["episode"] for r in rows] == ["human-0", "human-1"]
    assert rows[0] | {"episode": None} == {
        "episode": None, "source": "human", "game": "arena", "frames": FRAMES, "seconds": 2.0,
        "size": f"{W}x{H}", "state": "complete", "labels": "heuristic", "perceived": False, "dropped": 2,
    }  # fmt: skip
    assert main(["ls", str(root)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["episode", "source", "game", "frames"] and len(table) == 3


def test_show_prints_stats_and_writes_a_contact_sheet(good: Path, tmp_path: Path, capsys) -> None:
    sheet = tmp_path / "sheet.png"
    assert main(["show", str(good), "--sheet", str(sheet), "--count", "6", "--columns", "3",
                 "--thumb-width", "80"]) == 0  # fmt: skip
    stats = json.loads(capsys.readouterr().out)
    assert stats["contact_sheet"] == str(sheet) and stats["frames"] == FRAMES
    assert stats["clicks"] == 3 and stats["key_taps"] == {"attack": 1} and stats["input_events"] == FRAMES
    assert stats["labels"] == {"heuristic": {"EXPLORE": FRAMES}} and stats["achieved_fps"] == pytest.approx(
        30
    )
    image = cv2.imread(str(sheet))
    assert image.shape == (2 * round(H * 80 / W), 3 * 80, 3)


def test_check_passes_a_good_episode(good: Path, capsys) -> None:
    assert main(["check", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK") and "1 ok, 0 with problems" in out


def test_check_flags_a_recovered_episode(tmp_path: Path, capsys) -> None:
    path = human_episode(tmp_path / "killed", finish=False)
    result = check_episode(path)
    assert not result.errors and result.status == "WARN" and "RECOVERED" in result.warnings[0]
    assert main(["check", str(path)]) == 0  # readable: a warning, not a failure
    assert main(["check", str(path), "--strict"]) == 1
    assert "RECOVERED" in capsys.readouterr().out


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


CORRUPTIONS = {
    "meta.json garbage": (lambda p: (p / "meta.json").write_text("{oops"), "meta.json: unreadable JSON"),
    "unknown schema": (
        lambda p: (p / "meta.json").write_text(
            json.dumps(json.loads((p / "meta.json").read_text()) | {"schema_version": 99})
        ),
        "schema_version 99 is not supported",
    ),
    "truncated steps": (lambda p: _truncate(p / "steps.parquet"), "steps.parquet: unreadable parquet"),
    "truncated video": (lambda p: _truncate(p / "video.mp4"), "video.mp4"),
    "missing video": (lambda p: (p / "video.mp4").unlink(), "video.mp4: missing"),
    "corrupt labels": (
        lambda p: (p / "labels" / "heuristic.parquet").write_bytes(b"PAR1junk"),
        "labels/heuristic",
    ),
    "frame count": (
        lambda p: (p / "meta.json").write_text(
            json.dumps(json.loads((p / "meta.json").read_text()) | {"frames": FRAMES + 5})
        ),
        f"has {FRAMES} rows, meta.json says {FRAMES + 5} frames",
    ),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_check_reports_corrupt_and_truncated_files(name: str, good: Path, tmp_path: Path, capsys) -> None:
    path = copy_of(good, tmp_path)
    human_episode(path.parent / "human-ok")  # a good neighbour does not hide the bad one
    corrupt, message = CORRUPTIONS[name]
    corrupt(path)
    assert main(["check", str(path.parent)]) == 1
    out = capsys.readouterr().out
    bad = next(line for line in out.splitlines() if line.startswith("ERROR"))
    assert "human-0" in bad and message in bad, out
    assert "1 ok, 1 with problems" in out


def test_usage_errors(capsys) -> None:
    assert main([]) == 2
    assert main(["frobnicate", "x"]) == 2
    assert "unknown verb" in capsys.readouterr().err
