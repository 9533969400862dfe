"""Entry points: each main(argv) trains a tiny config in a temp dir, resumes, documents itself, fails well."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from models.io import load_model
from training.checkpoint import find_checkpoint
from training.cli import ConfigFileError, parse
from training.entry import executor_main, main, strategist_main, tactician_main
from training.runs import ExecutorRun, StrategistRun
from training.tasks import StrategistTask

TINY = {
    "strategist": ["--model.d-model", "32", "--model.n-heads", "2", "--model.n-layers", "1",
                   "--model.d-ff", "64", "--model.goal-dim", "8", "--history", "4", "--stride", "2",
                   "--phases", "2", "--train.batch-size", "2"],
    "tactician": ["--model.d-model", "32", "--model.n-heads", "2", "--model.n-layers", "1",
                  "--model.d-ff", "64", "--model.goal-dim", "8", "--train.batch-size", "8"],
    "executor": ["--model.d-model", "16", "--model.n-layers", "1", "--model.goal-dim", "8",
                 "--model.mouse-bins-x", "4", "--model.mouse-bins-y", "4", "--chunk", "32",
                 "--train.batch-size", "2"],
}  # fmt: skip
MAINS = {"strategist": strategist_main, "tactician": tactician_main, "executor": executor_main}


def _argv(name: str, perceived: Path, out: Path, steps: int) -> list[str]:
    return [
        *TINY[name], "--data.data", str(perceived), "--data.val-fraction", "0.3", "--train.out-dir", str(out),
        "--train.max-steps", str(steps), "--train.warmup-steps", "1", "--train.no-progress",
        "--train.no-tensorboard",
    ]  # fmt: skip


def _state(folder: Path) -> dict:
    return json.loads((folder / "trainer_state.json").read_text())


@pytest.mark.parametrize("name", ["strategist", "tactician", "executor"])
def test_entry_point_trains_checkpoints_and_resumes(name: str, perceived: Path, tmp_path: Path) -> None:
    out = tmp_path / name
    assert MAINS[name](_argv(name, perceived, out, 2)) == 0
    last = find_checkpoint(out, "last")
    assert last is not None and _state(last)["step"] == 2
    assert type(load_model(last)).__name__ == name.capitalize()  # a models.io folder
    assert main([name, *_argv(name, perceived, out, 4), "--train.resume", "auto"]) == 0  # via `pilot train`
    assert _state(out / "last")["step"] == 4
    if name == "strategist":
        assert json.loads((last / "config.json").read_text())["metadata"]["phases"] == 2


@pytest.mark.parametrize("name", ["strategist", "tactician", "executor", "policy"])
def test_help_lists_examples(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "Examples" in text and "--config" in text


def test_pilot_train_dispatch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0 and "strategist" in capsys.readouterr().out
    assert main(["nonsense"]) == 2 and "unknown model" in capsys.readouterr().err
    assert main([]) == 2


def test_config_file_sets_defaults_and_flags_win(perceived: Path, tmp_path: Path) -> None:
    config = tmp_path / "s.yaml"
    config.write_text("train:\n  lr: 0.002\n  epochs: 3\nhistory: 8\nmodel:\n  n_layers: 1\n")
    cfg = parse(StrategistRun, ["--config", str(config), "--train.epochs", "5"], "test")
    assert (cfg.train.lr, cfg.train.epochs, cfg.history, cfg.model.n_layers) == (0.002, 5, 8, 1)
    assert cfg.model.label_smoothing == 0.1  # the default where neither sets it
    as_json = tmp_path / "s.json"
    as_json.write_text(json.dumps({"model": {"label_smoothing": 0.2}}))
    assert parse(StrategistRun, ["--config", str(as_json)], "test").model.label_smoothing == 0.2


def test_label_smoothing_is_the_model_knob_and_acts(perceived: Path, tmp_path: Path) -> None:
    data = ["--data.data", str(perceived), "--data.val-fraction", "0.3"]
    losses = []
    for smoothing in ("0.0", "0.3"):
        cfg = parse(StrategistRun, [*TINY["strategist"], *data, "--model.label-smoothing", smoothing], "test")
        task = StrategistTask(cfg)
        torch.manual_seed(0)
        model = task.build_model().eval()  # same weights both times, no dropout
        batch = task.collate([task.train_dataset()[i] for i in range(2)])
        losses.append(float(task.loss(model, batch)[0].detach()))
        assert task.metadata()["label_smoothing"] == float(smoothing)
    assert losses[0] != pytest.approx(losses[1])
    with pytest.raises(SystemExit) as exit_info:  # the old run-level flag is gone, not silently ignored
        parse(StrategistRun, ["--label-smoothing", "0.1"], "test")
    assert exit_info.value.code == 2
    old_key = tmp_path / "old.yaml"
    old_key.write_text("label_smoothing: 0.1\n")
    with pytest.raises(ConfigFileError, match="unknown key 'label_smoothing'"):
        parse(StrategistRun, ["--config", str(old_key)], "test")


def test_shipped_policy_config_resolves() -> None:
    from training.policy import PolicyRun

    path = Path(__file__).resolve().parents[2] / "training" / "configs" / "arena_policy.yaml"
    cfg = parse(PolicyRun, ["--config", str(path)], "test")
    assert cfg.strategist.model.label_smoothing == 0.1 and cfg.strategist.model.dropout == 0.3
    assert (cfg.strategist.history, cfg.strategist.stride, cfg.executor.click_balance) == (60, 10, 0.3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: [unclosed", "not valid"),
        ("trian:\n  lr: 1\n", "unknown key 'trian'"),
        ("train:\n  lr: -1\n", "TrainConfig.lr"),
        ("- a list\n", "expected a mapping"),
        ("threads: -1\n", "StrategistRun.threads"),
        (None, "unreadable"),
    ],
)
def test_bad_config_file_is_a_one_line_error(
    text: str | None, message: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bad.yaml"
    if text is not None:
        path.write_text(text)
    with caplog.at_level(logging.ERROR):
        assert strategist_main(["--config", str(path)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0]


def test_test_data_is_scored_with_the_best_checkpoint(
    perceived: Path, perceived_factory: Any, tmp_path: Path
) -> None:
    test = perceived_factory(tmp_path / "test", 1, 6, 10)  # seed 10: an episode no other folder holds
    out = tmp_path / "strategist"
    assert strategist_main([*_argv("strategist", perceived, out, 2), "--data.test-data", str(test)]) == 0
    record = json.loads((out / "test_metrics.json").read_text())
    assert record["checkpoint"] == "best" and record["samples"] >= 1
    assert 0.0 <= record["metrics"]["mode_acc"] <= 1.0 and "mode_f1_macro" in record["metrics"]
    meta = json.loads((out / "best" / "config.json").read_text())["metadata"]["data"]
    assert meta["test_episodes"] == ["expert-000010"] and meta["test_root"] == str(test)
    assert "expert-000010" not in meta["train_episodes"] + meta["val_episodes"]


def test_missing_data_is_a_one_line_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert strategist_main(["--data.data", str(tmp_path), "--train.out-dir", str(tmp_path / "o")]) == 1
    assert any("no perceived episodes" in r.getMessage() for r in caplog.records)


def test_policy_trains_in_order_and_writes_a_bundle(
    perceived: Path, perceived_factory: Any, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    test = perceived_factory(tmp_path / "test", 1, 6, 10)
    detector = tmp_path / "det"
    detector.mkdir()
    (detector / "model.onnx").write_bytes(b"onnx")
    extra = tmp_path / "dagger"  # stands for `pilot dagger` episodes: only the Strategist trains on them
    shutil.copytree(sorted(perceived.glob("expert-*"))[0], extra / "dagger-000000")
    argv = ["policy", "--data.data", str(perceived), "--data.val-fraction", "0.3", "--out", str(out),
            "--detector", str(detector), "--data.extra-data", str(extra),
            "--data.test-data", str(test)]  # fmt: skip
    for name in ("strategist", "tactician", "executor"):
        tiny = [a.replace("--", f"--{name}.", 1) if a.startswith("--") else a for a in TINY[name]]
        argv += [*tiny, f"--{name}.train.max-steps", "2", f"--{name}.train.no-progress"]
    argv += [
        "--strategist.model.goal-dim",
        "8",
        "--tactician.model.goal-dim",
        "8",
        "--executor.model.goal-dim",
        "8",
    ]
    assert main(argv) == 0
    bundle = json.loads((out / "bundle.json").read_text())
    assert bundle["format"] == "orbit-pilot-policy" and bundle["obs_spec"]["name"] == "orbit-obs"
    assert bundle["detector"] == {"path": "detector", "copied": True}
    assert (out / "detector" / "model.onnx").read_bytes() == b"onnx"
    for name in ("strategist", "tactician", "executor"):
        assert type(load_model(out / bundle["models"][name])).__name__ == name.capitalize()
        test_metrics = json.loads((out / "runs" / name / "test_metrics.json").read_text())["metrics"]
        assert bundle["metrics"][name]["test"] == test_metrics  # each model scored on the test episode
    meta = json.loads((out / "runs" / "tactician" / "last" / "config.json").read_text())["metadata"]
    assert meta["goal_source"].endswith("strategist/best") or meta["goal_source"].endswith("strategist/last")
    executor = json.loads((out / "runs" / "executor" / "last" / "config.json").read_text())["metadata"]
    assert "tactician" in executor["target_source"]
    strategist = json.loads((out / "runs" / "strategist" / "last" / "config.json").read_text())["metadata"]
    assert "dagger-000000" in strategist["data"]["train_episodes"]
    for data in (meta["data"], executor["data"]):
        assert "dagger-000000" not in data["train_episodes"] and data["extra_roots"] == []


@pytest.mark.parametrize("name", ["click_balance", "key_balance"])
def test_executor_rare_event_balance_is_validated(name: str) -> None:
    assert getattr(ExecutorRun(**{name: 1.0}), name) == 1.0
    with pytest.raises(ValueError, match=f"ExecutorRun.{name}: expected a number in \\[0, 1\\], got 1.5"):
        ExecutorRun(**{name: 1.5})


def test_extra_data_models_are_validated() -> None:
    from training.policy import PolicyRun

    assert PolicyRun().extra_data_models == ("strategist",)
    assert PolicyRun(extra_data_models=["strategist", "executor"]).extra_data_models == (
        "strategist",
        "executor",
    )
    with pytest.raises(
        ValueError, match=r"PolicyRun.extra_data_models: expected names among .*\['planner'\]"
    ):
        PolicyRun(extra_data_models=("planner",))


def test_strategist_phases_are_validated() -> None:
    assert StrategistRun().phases == 1 and StrategistRun(phases=4).phases == 4
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="StrategistRun.phases: expected an integer >= 1"):
            StrategistRun(phases=bad)
