"""`pilot train calibrate` (training/calibrate.py): per-key held thresholds fitted on held-out episodes, saved
in the bundle and used by the live runner (bot/policy/runner.py via Executor.decode)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from bot.errors import PolicyError
from bot.policy.bundle import BUNDLE_FILE, PolicyBundle
from bot.policy.runner import PolicyRunner, held_logit_thresholds
from bot.recordings.perceived import load_perception
from training.calibrate import calibrate, fit_thresholds, main, replay_held


def test_each_key_gets_the_threshold_with_the_best_f1() -> None:
    rng = np.random.default_rng(0)
    true = np.zeros((400, 3), bool)
    true[::4, 0] = True  # key 0: held a quarter of the time, its p only ever reaches ~0.3 when held
    true[1::2, 1] = True  # key 1: confident and right at 0.5 already
    p = np.stack(
        [
            np.where(true[:, 0], 0.3, 0.1) + rng.uniform(-0.04, 0.04, 400),
            np.where(true[:, 1], 0.9, 0.1),
            rng.uniform(0, 0.2, 400),  # key 2: never held
        ],
        axis=1,
    )
    thresholds, report = fit_thresholds(p, true)
    assert 0.15 <= thresholds[0] <= 0.25
    assert report[0]["f1_at_0.5"] == 0.0 and report[0]["f1"] == 1.0
    assert report[0]["pred_rate"] == pytest.approx(0.25)
    assert thresholds[1] == 0.5 and report[1]["f1"] == 1.0  # ties go to the threshold nearest 0.5
    assert thresholds[2] == 0.5 and report[2]["held_rate"] == 0.0


def test_the_runner_holds_a_key_above_the_bundles_threshold(
    tmp_path: Path, tiny_bundle, perceived: Path
) -> None:
    folder = tiny_bundle(tmp_path / "bundle", game="naev")
    bundle = PolicyBundle.load(folder)
    n_held = bundle.executor.config.n_held
    assert n_held > 0
    episode = _with_held(perceived, tmp_path / "held")[0]
    p, _ = replay_held(bundle, episode)
    assert p.shape[1] == n_held and ((p > 0) & (p < 1)).all()
    low, high = float(p.min()) * 0.9, min(0.999, float(p.max()) * 1.1 + 1e-3)
    for threshold, expect_all in ((low, True), (high, False)):
        bundle.inference.held_thresholds = [threshold] * n_held
        runner = PolicyRunner(bundle)
        held = _replay_masks(runner, episode)
        full = (1 << n_held) - 1
        assert all(mask == (full if expect_all else 0) for mask in held), threshold
    logits = held_logit_thresholds([0.5, 0.25])
    assert logits is not None and torch.allclose(logits, torch.tensor([0.0, float(np.log(1 / 3))]))
    assert held_logit_thresholds([]) is None


def test_calibrate_saves_thresholds_the_bundle_then_loads(
    tmp_path: Path, tiny_bundle, perceived: Path
) -> None:
    folder = tiny_bundle(tmp_path / "bundle", game="naev")
    data = tmp_path / "held"
    _with_held(perceived, data)
    before = (folder / BUNDLE_FILE).read_text()
    fit = calibrate(folder, data, dry_run=True)
    assert (folder / BUNDLE_FILE).read_text() == before, "--dry-run leaves the bundle alone"
    assert fit["frames"] > 300 and len(fit["held_thresholds"]) == len(fit["keys"])
    thrust = fit["keys"]["thrust"]
    assert thrust["held_rate"] == pytest.approx(0.5, abs=0.1) and thrust["f1"] >= thrust["f1_at_0.5"]
    assert fit["keys"]["fire"]["threshold"] == 0.5, "a key the episodes never hold keeps 0.5"
    assert main(["--policy", str(folder), "--data", str(data)]) == 0
    saved = json.loads((folder / BUNDLE_FILE).read_text())
    assert saved["inference"]["held_thresholds"] == fit["held_thresholds"]
    assert saved["calibration"]["frames"] == fit["frames"]
    assert PolicyBundle.load(folder).inference.held_thresholds == fit["held_thresholds"]


def test_bad_input_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, tiny_bundle, perceived: Path, caplog: pytest.LogCaptureFixture
) -> None:
    arena = tiny_bundle(tmp_path / "arena")
    with pytest.raises(PolicyError, match="no held-key head"):
        calibrate(arena, perceived, dry_run=True)
    naev = tiny_bundle(tmp_path / "naev", game="naev")
    (tmp_path / "empty").mkdir()
    assert main(["--policy", str(naev), "--data", str(tmp_path / "empty")]) == 1
    assert "empty: no episodes" in caplog.text
    content = json.loads((naev / BUNDLE_FILE).read_text())
    content["inference"]["held_thresholds"] = [0.3, 0.4]  # the Executor holds 7 keys
    (naev / BUNDLE_FILE).write_text(json.dumps(content))
    with pytest.raises(PolicyError, match=r"inference.held_thresholds: expected 7 .*got 2"):
        PolicyBundle.load(naev)


def _with_held(perceived: Path, data: Path) -> list[Path]:
    """A copy of the perceived episodes whose steps hold thrust (bit 1) every other second."""
    shutil.copytree(perceived, data)
    for steps_file in data.glob("*/steps.parquet"):
        steps = pq.read_table(steps_file)
        held = ((steps.column("frame").to_numpy() // 30) % 2 * 0b10).astype(np.int32)
        pq.write_table(steps.append_column("held", pa.array(held, pa.int32())), steps_file)
    return sorted(p.parent for p in data.glob("*/steps.parquet"))


def _replay_masks(runner: PolicyRunner, episode: Path) -> list[int]:
    """The held masks the runner decides over the episode's stored perception."""
    return [runner.act(step).held for step in load_perception(episode).replay()]
