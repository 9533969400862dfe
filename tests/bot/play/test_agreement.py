"""The agreement of `pilot shadow` (bot/play/agreement.py) on hand-made frames: per window mode, target and
click agreement, the clicked object, the files, and the person's label file read while it grows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from bot.play.agreement import AgreementLog, FrameRecord, PersonLabels, agreement_windows, object_at
from bot.play.agreement import summary as summarise

MODES = ["FIGHT", "LOOT", "FLEE", "EXPLORE", "CAUTIOUS"]


def frame(t: float, **kw) -> FrameRecord:
    base = dict(version="base", bot_mode="EXPLORE", bot_target=0, bot_mouse=(100.0, 100.0))
    return FrameRecord(t=t, **{**base, **kw})


def test_windows_count_mode_target_and_click_agreement() -> None:
    records = [
        # window 0 (0..10 s): modes 1 of 3 labelled frames agree; one click 50 px off on object 7, bot on 7
        frame(0.0, bot_mode="", person_mode="FIGHT"),
        frame(1.0, bot_mode="FIGHT", person_mode="FIGHT"),
        frame(2.0, bot_mode="LOOT", person_mode="FIGHT", person_click=(130.0, 140.0), person_target=7,
              bot_target=7),
        frame(3.0, bot_mode="LOOT"),  # no label: not counted for the mode
        # window 2 (20..30 s), version v001: both labelled frames agree; two clicks, 0 px and 100 px off
        # the base bundle beside it on the same frames: modes wrong, target right, 200 px and 100 px off
        frame(25.0, version="v001", bot_mode="FIGHT", person_mode="FIGHT", person_click=(100.0, 100.0),
              person_target=3, bot_target=4, base_mode="LOOT", base_target=3, base_mouse=(300.0, 100.0)),
        frame(26.0, version="v001", bot_mode="FIGHT", person_mode="FIGHT", person_click=(200.0, 100.0),
              base_mode="", base_target=0, base_mouse=(100.0, 100.0)),
    ]  # fmt: skip
    windows = agreement_windows(records, window_s=10.0, hit_radius=40.0)
    assert [w["window"] for w in windows] == [0, 2]  # a window without frames has no row
    first, last = windows
    assert first["frames"] == 4 and first["mode_frames"] == 3
    assert first["mode_agreement"] == pytest.approx(1 / 3)  # "" (no decision yet) is a disagreement
    assert first["target_clicks"] == 1 and first["target_agreement"] == 1.0
    assert first["clicks"] == 1 and first["click_error_px"] == pytest.approx(50.0)
    assert first["click_hit_rate"] == 0.0 and first["version"] == "base"
    assert last["mode_agreement"] == 1.0 and last["target_agreement"] == 0.0 and last["version"] == "v001"
    assert last["click_error_px"] == pytest.approx(50.0)  # median of 0 and 100
    assert last["click_hit_rate"] == 0.5 and (last["t_start"], last["t_end"]) == (20.0, 30.0)
    assert first["complete"] and not last["complete"], "the run ended inside the last window"
    for name in ("mode_agreement", "target_agreement", "click_error_px", "click_hit_rate"):
        assert first[f"base_{name}"] == first[name], "the base bundle predicted: its own numbers"
    assert last["base_mode_agreement"] == 0.0 and last["base_target_agreement"] == 1.0
    assert last["base_click_error_px"] == pytest.approx(150.0) and last["base_click_hit_rate"] == 0.0
    totals = summarise(records, windows, hit_radius=40.0)
    assert totals["trained"]["frames"] == 2 and totals["trained"]["base_mode_agreement"] == 0.0
    assert totals["trained"]["mode_agreement"] == 1.0 and totals["last"]["window"] == 0, "the last complete"


def test_nothing_to_compare_is_none_not_zero() -> None:
    [window] = agreement_windows([frame(0.5), frame(1.5)], window_s=10.0, hit_radius=40.0)
    assert window["frames"] == 2
    assert window["mode_agreement"] is None and window["target_agreement"] is None
    assert window["click_error_px"] is None and window["click_hit_rate"] is None
    with pytest.raises(ValueError, match="window_s"):
        agreement_windows([], window_s=0, hit_radius=40.0)


def test_the_clicked_object_is_the_smallest_box_under_the_click() -> None:
    boxes = np.array([[0, 0, 200, 200], [90, 90, 110, 110], [300, 300, 320, 320]], np.float32)
    ids = np.array([1, 2, 3])
    assert object_at((100, 100), boxes, ids) == 2  # inside both: the smaller one
    assert object_at((150, 150), boxes, ids) == 1
    assert object_at((297, 310), boxes, ids) == 3  # within the margin
    assert object_at((250, 250), boxes, ids) is None
    assert object_at((10, 10), np.zeros((0, 4)), np.zeros(0, int)) is None


def test_the_log_writes_csv_and_json_as_windows_end(tmp_path: Path) -> None:
    log = AgreementLog(tmp_path, window_s=1.0, hit_radius=40.0)
    for i in range(25):  # 2.5 s at 10 frames per second
        log.add(frame(i / 10, bot_mode="FIGHT", person_mode="FIGHT" if i < 10 else "LOOT"))
    written = json.loads((tmp_path / "agreement.json").read_text())
    assert [w["window"] for w in written["windows"]] == [0, 1]  # the third window has not ended yet
    content = log.write({"note": 1})
    assert content["note"] == 1 and content["frames"] == 25
    rows = list(csv.DictReader((tmp_path / "agreement.csv").read_text().splitlines()))
    assert [float(r["mode_agreement"]) for r in rows] == [1.0, 0.0, 0.0]
    assert rows[0]["click_error_px"] == ""  # no click: empty, not 0
    summary = content["summary"]
    assert summary["first"]["mode_agreement"] == 1.0 and summary["last"]["window"] == 1, "the last complete"
    assert summary["overall"]["mode_agreement"] == pytest.approx(10 / 25)
    assert set(summary["versions"]) == {"base"} and summary["trained"]["frames"] == 0
    assert len(log.frames_file().read_text().splitlines()) == 25


def test_person_labels_are_read_as_the_file_grows(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    labels = PersonLabels(path, MODES, tolerance_s=1.0)
    assert labels.refresh() == 0 and labels.mode_at(5.0) is None  # no file yet
    path.write_text('{"t": 10.0, "mode": "FIGHT"}\n{"t": 10.5, "mode": "LO')  # the last line is half written
    assert labels.refresh() == 1
    assert labels.mode_at(9.9) is None and labels.mode_at(10.2) == "FIGHT" and labels.mode_at(11.2) is None
    with open(path, "a") as f:
        f.write('OT"}\n{"t": 11.0, "mode": "DANCE"}\nnot json\n{"t": 12.0, "mode": "FLEE"}\n')
    assert labels.refresh() == 2  # LOOT and FLEE; the unknown mode and the bad line are skipped
    assert labels.mode_at(10.7) == "LOOT" and labels.mode_at(12.5) == "FLEE"
