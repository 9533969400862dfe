"""Presets (`--preset gpu`): parsed from training/configs/, applied over --config and under flags."""

from __future__ import annotations

import pytest

from training.cli import ConfigFileError
from training.config import PRESETS_DIR, pop_preset, preset_values
from training.entry import parse_run
from training.policy import PolicyRun
from training.runs import ExecutorRun, StrategistRun, TacticianRun

RUNS = {"strategist": StrategistRun, "tactician": TacticianRun, "executor": ExecutorRun}


@pytest.mark.parametrize(
    ("argv", "rest", "name"),
    [
        (["--preset", "gpu", "--train.lr", "1"], ["--train.lr", "1"], "gpu"),
        (["--train.lr", "1", "--preset=gpu"], ["--train.lr", "1"], "gpu"),
        (["--train.lr", "1"], ["--train.lr", "1"], None),
    ],
)
def test_pop_preset(argv, rest, name):
    assert pop_preset(argv) == (rest, name)


@pytest.mark.parametrize("section", list(RUNS))
def test_gpu_preset_sets_the_speed_fields_of_each_model(section):
    cfg = parse_run(RUNS[section], ["--preset", "gpu"], "train", section)
    default = RUNS[section]()
    assert cfg.train.device == "cuda" and cfg.train.bf16 == "auto" and cfg.threads == 0
    assert cfg.train.batch_size > default.train.batch_size
    assert cfg.train.compile is (section != "executor")
    assert cfg.train.lr == default.train.lr and cfg.model == default.model  # speed settings only


def test_flags_win_over_the_preset():
    argv = ["--preset", "gpu", "--train.batch-size", "3", "--train.no-compile", "--threads=2"]
    cfg = parse_run(StrategistRun, argv, "train_strategist", "strategist")
    assert (cfg.train.batch_size, cfg.train.compile, cfg.threads, cfg.train.device) == (3, False, 2, "cuda")


def test_policy_reads_the_whole_preset_over_its_config_file():
    recipe = str(PRESETS_DIR / "arena_policy.yaml")
    argv = ["--config", recipe, "--preset", "gpu", "--executor.train.batch_size", "5"]
    cfg = parse_run(PolicyRun, argv, "pilot train policy", None)
    assert cfg.threads == 0 and cfg.strategist.train.batch_size == 64  # preset over the recipe's 8
    assert cfg.strategist.train.lr == 0.001 and cfg.strategist.model.d_model == 64  # the recipe's
    assert cfg.executor.train.batch_size == 5 and cfg.tactician.train.compile


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ConfigFileError, match=r"--preset tpu: no such preset \(expected one of .*'gpu'"):
        preset_values("tpu", "strategist", [])
