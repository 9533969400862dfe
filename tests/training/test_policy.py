"""`pilot train policy --init BUNDLE` (training/policy.py): fine-tuning starts from the bundle's weights and
architecture, fits the statistics an untrained bundle never had, keeps the run's muted cursor, and a bad
bundle is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.io import load_model
from training.entry import policy_main
from training.tasks import MUTED_STD

FLAGS = [
    "--data.val-fraction", "0", "--strategist.history", "4", "--strategist.stride", "2",
    "--strategist.train.batch-size", "2", "--executor.train.batch-size", "2",
]  # fmt: skip
for _model in ("strategist", "tactician", "executor"):
    FLAGS += [
        f"--{_model}.train.max-steps",
        "3",
        f"--{_model}.train.no-tensorboard",
        f"--{_model}.train.no-progress",
    ]


def test_init_fine_tunes_the_bundle_it_is_given(tmp_path: Path, perceived: Path, tiny_bundle) -> None:
    base = tiny_bundle(tmp_path / "base", seed=3)
    json_path = base / "bundle.json"
    json_path.write_text(json_path.read_text().replace('"snap_boxes": 40.0', '"snap_boxes": 12.0'))
    out = tmp_path / "tuned"
    assert policy_main(["--init", str(base), "--out", str(out), "--data.data", str(perceived), *FLAGS]) == 0
    for name, cls in (("strategist", "Strategist"), ("tactician", "Tactician"), ("executor", "Executor")):
        before, after = load_model(base / name, cls), load_model(out / name, cls)
        assert after.config == before.config, f"{name}: the bundle's architecture, not the run's default"
        moved = [
            k for k, v in after.state_dict().items()
            if v.dtype.is_floating_point and not torch.equal(v, before.state_dict()[k])
        ]  # fmt: skip
        assert moved, f"{name}: fine-tuning changed nothing"
    # the untrained bundle's Normalizers (mean 0, std 1) were fitted on the data; the cursor stays muted
    executor = load_model(out / "executor", "Executor")
    assert not torch.equal(executor.norm_frame.std, torch.ones_like(executor.norm_frame.std))
    assert (executor.norm_frame.std >= MUTED_STD).sum() == 2, "cursor_x, cursor_y muted (ignore_cursor)"
    assert json.loads((out / "bundle.json").read_text())["inference"]["snap_boxes"] == 12.0


def test_init_with_no_bundle_or_another_architecture_fails_in_one_line(
    tmp_path: Path, perceived: Path, tiny_bundle, caplog: pytest.LogCaptureFixture
) -> None:
    args = ["--out", str(tmp_path / "out"), "--data.data", str(perceived), *FLAGS]
    assert policy_main(["--init", str(tmp_path / "nope"), *args]) == 1
    assert "PolicyRun.init" in caplog.text and "nope" in caplog.text
    base = tiny_bundle(tmp_path / "naev", game="naev")  # Naev's keys: another Executor head
    caplog.clear()
    assert policy_main(["--init", str(base), *args, "--out", str(tmp_path / "out2")]) == 1
    assert "PolicyRun.init" in caplog.text and "expected a model of config" in caplog.text
