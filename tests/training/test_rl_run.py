"""`pilot train rl` end to end on a tiny bundle: a loadable bundle, exact resume after Ctrl+C, non-finite
rewards skipped and counted, bad input refused in one line."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest
from safetensors.torch import load_file

import training.rl.env as rl_env
from bot.policy.bundle import PolicyBundle
from training.entry import main as train_main
from training.rl.run import INTERRUPTED, main

TINY = ["--episodes", "1", "--seconds", "2", "--segment", "16", "--minibatch", "2", "--epochs", "2",
        "--critic-warmup", "1", "--width", "320", "--height", "180", "--threads", "1", "--no-progress",
        "--lr", "3e-3"]  # fmt: skip


def run(policy: Path, out: Path, iterations: int, *extra: str) -> int:
    return main(["--policy", str(policy), "--out", str(out), "--iterations", str(iterations), *TINY, *extra])


def tensors(folder: Path) -> dict:
    return {
        name: load_file(str(folder / name))
        for name in ("executor/model.safetensors", "runs/rl/last/raw.safetensors",
                     "runs/rl/last/optimizer.safetensors")
    }  # fmt: skip


def assert_identical(a: dict, b: dict) -> None:
    for name in a:
        assert a[name].keys() == b[name].keys(), name
        for key in a[name]:
            assert a[name][key].equal(b[name][key]), f"{name}: {key}"


def rl_state(out: Path) -> dict:
    return json.loads((out / "runs/rl/last/config.json").read_text())["rl"]


def test_two_iterations_write_a_loadable_bundle_with_trained_heads(tmp_path: Path, tiny_bundle) -> None:
    base = tiny_bundle(tmp_path / "B")
    assert (
        train_main(["rl", "--policy", str(base), "--out", str(tmp_path / "B2"), "--iterations", "2", *TINY])
        == 0
    )
    bundle = PolicyBundle.load(tmp_path / "B2")  # what `pilot eval --policy B2` loads
    original = PolicyBundle.load(base)
    assert bundle.profile.name == "arena" and bundle.inference == original.inference
    moved = not bundle.executor.keys.weight.equal(original.executor.keys.weight)
    kept = bundle.executor.layers[0].mixer.in_proj.weight.equal(
        original.executor.layers[0].mixer.in_proj.weight
    )
    assert moved and kept  # --train heads: the heads trained (after 1 warm-up iteration), the trunk did not
    record = json.loads((tmp_path / "B2/bundle.json").read_text())["rl"]
    assert record["iterations"] == 2 and len(record["history"]) == 2 and record["seeds"] == [20000, 20001]
    assert list((tmp_path / "B2/runs/rl/tb").glob("events.out.tfevents.*"))


def test_resume_after_ctrl_c_is_bit_identical(
    tmp_path: Path, tiny_bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tiny_bundle(tmp_path / "B")
    assert run(base, tmp_path / "straight", 3, "--train", "executor") == 0

    calls = {"n": 0}
    step = rl_env.ArenaGame.step

    def interrupting_step(self, action):  # Ctrl+C in the middle of the second iteration's episode
        calls["n"] += 1
        if calls["n"] == 60 + 30:
            os.kill(os.getpid(), signal.SIGINT)
        return step(self, action)

    monkeypatch.setattr(rl_env.ArenaGame, "step", interrupting_step)
    assert run(base, tmp_path / "resumed", 3, "--train", "executor") == INTERRUPTED
    assert rl_state(tmp_path / "resumed")["iteration"] == 1  # the interrupted iteration left nothing behind
    monkeypatch.setattr(rl_env.ArenaGame, "step", step)
    assert run(base, tmp_path / "resumed", 3, "--train", "executor") == 0
    assert rl_state(tmp_path / "resumed") == rl_state(tmp_path / "straight")
    assert_identical(tensors(tmp_path / "straight"), tensors(tmp_path / "resumed"))


def test_a_longer_rerun_continues_exactly(tmp_path: Path, tiny_bundle) -> None:
    base = tiny_bundle(tmp_path / "B")
    assert run(base, tmp_path / "straight", 2) == 0
    assert run(base, tmp_path / "stepwise", 1) == 0
    assert run(base, tmp_path / "stepwise", 2) == 0  # --iterations may grow on resume
    assert_identical(tensors(tmp_path / "straight"), tensors(tmp_path / "stepwise"))


@pytest.mark.parametrize(
    "reward, what",
    [(float("nan"), "reward"), (3e38, "adv")],  # 3e38 is a finite float32; its discounted sum is not
)
def test_non_finite_rewards_and_advantages_skip_the_update_and_are_counted(
    tmp_path: Path, tiny_bundle, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    reward: float, what: str,
) -> None:  # fmt: skip
    base = tiny_bundle(tmp_path / "B")
    monkeypatch.setattr(rl_env, "arena_reward", lambda *a: reward)
    assert run(base, tmp_path / "B2", 2, "--max-skipped", "3") == 0
    state = rl_state(tmp_path / "B2")
    assert state["skipped_updates"] == 2 and state["optimizer_steps"] == 0
    assert f"update skipped (non-finite {what} in episode seed 20000)" in caplog.text
    original = PolicyBundle.load(base).executor.state_dict()
    trained = PolicyBundle.load(tmp_path / "B2").executor.state_dict()
    assert all(trained[k].equal(v) for k, v in original.items())


def test_too_many_skipped_updates_stop_the_run_in_one_line(
    tmp_path: Path, tiny_bundle, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    base = tiny_bundle(tmp_path / "B")
    monkeypatch.setattr(rl_env, "arena_reward", lambda *a: float("inf"))
    assert run(base, tmp_path / "B2", 3, "--max-skipped", "2") == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["2 updates in a row skipped for non-finite values"]


def test_a_bundle_for_another_game_is_refused(
    tmp_path: Path, tiny_bundle, caplog: pytest.LogCaptureFixture
) -> None:
    naev = tiny_bundle(tmp_path / "naev", game="naev")
    assert run(naev, tmp_path / "B2", 1) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "a bundle for 'naev' cannot play 'arena'" in errors[0]
    assert not (tmp_path / "B2").exists()


def test_a_different_run_in_the_same_out_is_refused(
    tmp_path: Path, tiny_bundle, caplog: pytest.LogCaptureFixture
) -> None:
    base = tiny_bundle(tmp_path / "B")
    assert run(base, tmp_path / "B2", 1) == 0
    assert run(base, tmp_path / "B2", 1, "--kl-coef", "0.5") == 1
    assert "holds a run with --kl-coef 0.2, not 0.5" in caplog.text


def test_bad_flags_are_one_line_errors(capsys: pytest.CaptureFixture) -> None:
    for flag, message in (
        (["--lr", "-1"], "--lr: expected > 0, got -1.0"),
        (["--noise.miss-rate", "2"], "--noise.miss-rate: expected a number in [0, 1], got 2.0"),
        (["--seed-base", "1000"], "--seed-base: expected >= 10000, got 1000"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(flag)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_frames_are_rendered_at_the_bundles_detector_size(tmp_path: Path, tiny_bundle) -> None:
    from training.rl.config import RLConfig
    from training.rl.state import frame_size

    detector = tmp_path / "detector"
    detector.mkdir()
    (detector / "config.json").write_text(json.dumps({"frame_size": [640, 360]}))
    with_detector = PolicyBundle.load(tiny_bundle(tmp_path / "B", detector=detector))
    without = PolicyBundle.load(tiny_bundle(tmp_path / "C"))
    cfg = RLConfig(policy=tmp_path / "B", out=tmp_path / "out")
    assert frame_size(with_detector, cfg) == (640, 360)
    assert frame_size(without, cfg) == (1280, 720)  # the profile's window
    cfg.width, cfg.height = 320, 180
    assert frame_size(with_detector, cfg) == (320, 180)
