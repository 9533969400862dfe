"""finetune_vlm: a complete new bundle with a "finetuned" record, clear errors, and the point of it all: a
Strategist pretrained on corrupted labels, fine-tuned on (noisy but better) VLM labels from `pilot label`
against a fake VLM server, gets more held-out seconds right against the Arena's ground truth."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bot.cli import main as pilot
from bot.recordings.episode import find_episodes, open_episode, write_labels
from bot.recordings.perceived import load_perception
from models.io import load_model
from training.checkpoint import find_checkpoint
from training.datasets import DataConfig
from training.finetune import main as finetune
from training.policy import PolicyRun, write_bundle
from training.runs import StrategistRun, TacticianRun, run_strategist, run_tactician
from vlm_labeling.fake_server import FakeVLMServer, GroundTruthPolicy, truth_from_labels

QUIET = ["--train.no-progress", "--train.no-tensorboard", "--tactician-train.no-progress",
         "--tactician-train.no-tensorboard"]  # fmt: skip
# A systematic corruption (not uniform noise, which a model averages away): the majority label of a state
# becomes the wrong mode, so a model trained on it is confidently wrong.
WRONG = {"FIGHT": "EXPLORE", "LOOT": "EXPLORE", "FLEE": "CAUTIOUS", "CAUTIOUS": "FIGHT", "EXPLORE": "LOOT"}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def write_noisy_labels(episode_dir: Path, p: float = 0.7, seed: int = 0) -> None:
    """labels/noisy.parquet: the expert's labels with whole seconds switched to WRONG[mode] with prob. p."""
    episode = open_episode(episode_dir)
    rows = episode.labels("expert").to_pylist()
    flip = np.random.default_rng(seed).random(int(episode.num_frames / episode.meta.fps) + 2) < p
    for row in rows:
        if flip[int(row["frame"] // episode.meta.fps)]:
            row["mode"], row["target_id"] = WRONG[row["mode"]], None
    write_labels(episode_dir, "noisy", rows)


def tiny_strategist(data: Path, labels: str, out: Path, epochs: int) -> Path:
    run = StrategistRun()
    run.data = DataConfig(data=data, labels=labels)
    run.model.d_model, run.model.n_heads, run.model.n_layers, run.model.d_ff, run.model.goal_dim = (
        32,
        2,
        1,
        64,
        8,
    )
    run.history, run.stride = 16, 8
    run.train.out_dir, run.train.epochs, run.train.batch_size, run.train.warmup_steps = out, epochs, 2, 5
    run.train.progress = run.train.tensorboard = False
    assert run_strategist(run) == 0
    return find_checkpoint(out, "best") or find_checkpoint(out, "last")


def tiny_tactician(data: Path, labels: str, strategist: Path, out: Path) -> Path:
    run = TacticianRun(strategist=strategist)
    run.data = DataConfig(data=data, labels=labels)
    run.model.d_model, run.model.n_heads, run.model.n_layers, run.model.d_ff = 32, 2, 1, 64
    run.train.out_dir, run.train.epochs, run.train.batch_size = out, 3, 16
    run.train.progress = run.train.tensorboard = False
    assert run_tactician(run) == 0
    return find_checkpoint(out, "best") or find_checkpoint(out, "last")


def bundle_of(data: Path, labels: str, checkpoints: dict[str, Path], out: Path) -> Path:
    return write_bundle(PolicyRun(out=out, data=DataConfig(data=data, labels=labels)), checkpoints)


def weights(folder: Path) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in load_model(folder).parameters()])


# ------------------------------------------------------------------------------------------------ fast


@pytest.fixture
def small(perceived: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the 3 tiny episodes with hand-made VLM labels, and a bundle trained on the expert labels."""
    data = Path(shutil.copytree(perceived, tmp_path / "episodes"))
    for i, path in enumerate(find_episodes(data)):
        p = load_perception(path)
        expert = {r["frame"]: r for r in open_episode(path).labels("expert").to_pylist()}
        frames = p["frame"][p["summary_end"]].tolist()
        rows = [{**expert[f], "confidence": 0.4 if (i + k) % 3 == 0 else 0.9, "rationale": "by hand",
                 "target_id": None} for k, f in enumerate(frames)]  # fmt: skip
        write_labels(path, "vlm-hand", rows)
    best = tiny_strategist(data, "expert", tmp_path / "pre", epochs=2)
    bundle = bundle_of(data, "expert", {"strategist": best}, tmp_path / "bundle")
    (bundle / "detector").mkdir()
    (bundle / "detector" / "model.onnx").write_bytes(b"not really onnx")
    return data, bundle


def test_finetune_writes_a_complete_bundle_with_a_record(small: tuple[Path, Path], tmp_path: Path) -> None:
    data, bundle = small
    out = tmp_path / "bundle2"
    argv = ["--policy", str(bundle), "--data", str(data), "--labels", "vlm-hand", "--out", str(out),
            "--val-fraction", "0.3", "--history", "16", "--stride", "8", "--train.max-steps", "3",
            *QUIET]  # fmt: skip
    assert finetune(argv) == 0
    meta = json.loads((out / "bundle.json").read_text())
    record = meta["finetuned"]
    assert record["labels"] == "vlm-hand" and record["min_confidence"] == 0.6
    assert record["counts"]["labels"] == 12 and record["counts"]["labels_kept"] == 8  # 2 train episodes
    assert record["replay_labels"] == "expert" and record["counts"]["replay_windows"] >= 1
    held = record["heldout"]
    assert held["reference"] == "expert" and held["episodes"] == ["expert-000002"]
    for when in ("before", "after"):
        assert 0.0 <= held["strategist"][when]["mode_acc"] <= 1.0
    assert meta["metrics"]["strategist"]["checkpoint"].startswith(str(out / "runs" / "strategist-finetune"))
    assert (out / "detector" / "model.onnx").read_bytes() == b"not really onnx"  # the rest is copied
    assert not torch.equal(weights(out / "strategist"), weights(bundle / "strategist"))
    assert "finetuned" not in json.loads((bundle / "bundle.json").read_text())  # the base is untouched
    assert finetune(argv) == 1  # --out holds a bundle now: refused without --resume


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--labels": "vlm-nothing"}, "vlm-nothing.parquet: missing"),
        ({"--out": "BUNDLE"}, "not the base bundle"),
        ({"--labels": ""}, "--labels: expected"),
        ({"--policy": "NOWHERE"}, "bundle.json: missing"),
    ],
)
def test_bad_inputs_are_one_line_errors(
    change: dict[str, str],
    message: str,
    small: tuple[Path, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data, bundle = small
    flags = {
        "--policy": str(bundle),
        "--data": str(data),
        "--labels": "vlm-hand",
        "--out": str(tmp_path / "b2"),
    }
    flags |= {
        k: str(bundle) if v == "BUNDLE" else str(tmp_path / v) if v == "NOWHERE" else v
        for k, v in change.items()
    }
    assert finetune([x for kv in flags.items() for x in kv] + QUIET) == 1
    assert message in caplog.text
    assert not (tmp_path / "b2" / "bundle.json").exists()


def test_console_script_help_has_examples(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from training.entry import finetune_vlm

    monkeypatch.setattr(sys, "argv", ["finetune_vlm", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        finetune_vlm()
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "Examples" in text and "finetune_vlm --policy" in text and "--min-confidence" in text


# ------------------------------------------------------------------------------------------------ the point


@pytest.fixture(scope="module")
def arena(perceived_factory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 perceived expert episodes of 10 s (2 held out by the default split) with labels/noisy.parquet."""
    data = perceived_factory(tmp_path_factory.mktemp("finetune"), 6, 10, 100)
    for path in find_episodes(data):
        write_noisy_labels(path)
    return data


def test_vlm_labels_fix_a_strategist_pretrained_on_corrupted_labels(arena: Path, tmp_path: Path) -> None:
    data = Path(shutil.copytree(arena, tmp_path / "episodes"))
    strategist = tiny_strategist(data, "noisy", tmp_path / "pre", epochs=40)
    tactician = tiny_tactician(data, "noisy", strategist, tmp_path / "tac")
    bundle = bundle_of(data, "noisy", {"strategist": strategist, "tactician": tactician}, tmp_path / "bundle")
    policy = GroundTruthPolicy(truth_from_labels(data), noise=0.15, seed=1)  # 15 % wrong, at low confidence
    with FakeVLMServer(policy) as server:
        code = pilot(
            ["label", "--data", str(data), "--base-url", server.base_url, "--model", "fake", "--no-progress"]
        )
    assert code == 0 and policy.wrong  # some answers were wrong
    out = tmp_path / "bundle2"
    argv = ["--policy", str(bundle), "--data", str(data), "--labels", "vlm-fake", "--out", str(out),
            "--history", "16", "--stride", "8", "--train.batch-size", "1", "--train.epochs", "40",
            "--tactician", *QUIET]  # fmt: skip
    assert finetune(argv) == 0
    record = json.loads((out / "bundle.json").read_text())["finetuned"]
    s = record["heldout"]["strategist"]
    print("strategist", s, "tactician", record["heldout"]["tactician"], "counts", record["counts"])
    assert record["heldout"]["reference"] == "expert" and s["after"]["seconds"] == 20
    assert record["counts"]["labels_kept"] < record["counts"]["labels"]  # low-confidence answers left out
    assert record["unchanged_models"] == []  # both models that read the goal were fine-tuned
    assert record["replay_labels"] == "noisy"  # mixed with the original (here: bad) labels, and still better
    # 20 held-out seconds (steps of 0.05): 0.45 -> 0.65 with obs spec 3's summaries (0.25 -> 0.70 with spec 2)
    assert s["after"]["mode_acc"] >= s["before"]["mode_acc"] + 0.15
    t = record["heldout"]["tactician"]
    assert t["after"]["target_acc"] >= t["before"]["target_acc"]
    assert sorted(p.name for p in out.iterdir()) == ["bundle.json", "runs", "strategist", "tactician"]
