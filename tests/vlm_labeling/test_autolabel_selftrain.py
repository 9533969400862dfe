"""YOLO self-training on `pilot autolabel`'s labels (training/autolabel.py), 1 epoch at a tiny input size:
the audit stops the run once with one line, a scripted auditor answers, the rerun resumes and relabels."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bot.profile import load_profile
from training.autolabel import SelfTrainConfig, SelfTrainError
from training.autolabel import run as selftrain
from training.autolabel_score import scripted_audit, scripted_names
from vlm_labeling.autolabel.cli import run
from vlm_labeling.autolabel.config import AutolabelConfig
from vlm_labeling.autolabel.store import read_decisions

pytestmark = pytest.mark.timeout(600)  # about 20 s: 1 epoch at 64 px
PROFILE = load_profile("arena")


def test_self_training_audits_once_then_relabels_every_frame(tmp_path: Path):
    from bot.play.demos import DemosConfig
    from bot.play.demos import run as demos_run

    data, work = tmp_path / "data", tmp_path / "work"
    demos_run(DemosConfig(out=data, episodes=2, seconds=4, width=320, height=180, zoom=0.5, workers=1))
    run(AutolabelConfig(data=data, out=work, review=False, stop_after="clusters"))
    names = tmp_path / "names.json"
    names.write_text(json.dumps(scripted_names(work, data, PROFILE)))
    run(AutolabelConfig(data=data, out=work, review=False, names=names))
    # 1 epoch: the detector is barely trained, so it is tracked at any confidence (the loop is under test)
    tiny = dict(epochs=1, imgsz=64, batch=8, conf=0.001, track_high=0.001, track_new=0.001, min_track_s=0.1)
    cfg = SelfTrainConfig(work=work, data=data, rounds=1, audit_size=12, extra={"workers": 0}, **tiny)
    with pytest.raises(SelfTrainError, match="audit is not answered yet"):
        selftrain(cfg)
    items = json.loads((work / "audit" / "items.json").read_text())
    assert 0 < len(items) <= 12 and (work / "audit" / f"item_{items[0]['item']}.png").exists()
    (work / "audit" / "answers.json").write_text(json.dumps(scripted_audit(items, data, PROFILE)))
    summary = selftrain(cfg)
    assert (
        summary["rounds"][0]["round"] == 1
        and (work / "selftrain" / "round_1" / "dataset" / "data.yaml").exists()
    )
    named = pq.read_table(work / "selftrain" / "round_0" / "expert-000000.parquet").to_pylist()
    table = pq.read_table(data / "expert-000000" / "labels" / "boxes-auto.parquet")
    assert table.schema.metadata[b"round"] == b"1"
    rows = {tuple(r.values()) for r in table.to_pylist()}
    named = {tuple(r.values()) for r in named}
    assert named <= rows  # the named boxes stay; detections above the threshold are added
    cut = summary["rounds"][0]["threshold"]
    assert all(r[-1] >= cut - 1e-6 for r in rows - named)  # conf, float32 in the file
    audits = [d for d in read_decisions(work) if d["what"] == "audit detection"]
    assert len(audits) == len(items) and all(d["human"] for d in audits)
    assert selftrain(cfg) == summary  # finished rounds are not redone
