"""`pilot export` (bot/policy/onnx_export.py) and the ONNX Runtime models (bot/policy/onnx_models.py): the
exported graphs compute what the torch models compute, step by step with the state carried, the runner decides
alike on both, int8 mostly agrees, and a broken export is a one-line PolicyError naming the file."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from bot import cli
from bot.errors import PolicyError
from bot.policy.bundle import BUNDLE_FILE, PolicyBundle
from bot.policy.onnx_export import ExportConfig, agreement, export_bundle, random_steps
from bot.policy.onnx_models import ONNX_FILE, OnnxExecutor, OnnxStrategist, OnnxTactician
from bot.policy.runner import PolicyRunner

ATOL = 1e-4  # on logits, goals, offsets and states: fp32 graphs differ from torch by ~1e-7 in practice
GAMES = ["arena", "naev"]  # naev: the Executor has a held-key head
INT8_FLOOR = 0.6  # int8 decisions equal to torch's on at least this share of frames (measured 0.93-0.96)


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle
) -> Callable[[str, bool], tuple[Path, Path]]:
    """`exported(game, int8)` -> (the tiny torch bundle, its export), each made once per module."""
    made: dict[tuple[str, bool], tuple[Path, Path]] = {}

    def make(game: str, int8: bool = False) -> tuple[Path, Path]:
        if (game, int8) not in made:
            root = tmp_path_factory.mktemp(f"{game}-{'int8' if int8 else 'fp32'}")
            source = tiny_bundle(root / "torch", seed=1, game=game)
            made[game, int8] = source, export_bundle(ExportConfig(source, root / "onnx", int8=int8))
        return made[game, int8]

    return make


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=ATOL, rtol=0, err_msg=what)


# ------------------------------------------------------------------------------------- the three graphs


@pytest.mark.parametrize("game", GAMES)
def test_exported_bundle_loads_as_onnx(exported, game: str) -> None:
    source, out = exported(game)
    bundle = PolicyBundle.load(out)
    assert isinstance(bundle.strategist, OnnxStrategist) and isinstance(bundle.tactician, OnnxTactician)
    assert isinstance(bundle.executor, OnnxExecutor)
    meta = json.loads((out / BUNDLE_FILE).read_text())
    assert meta["runtime"] == "onnx" and meta["export"]["precision"] == "fp32"
    original = PolicyBundle.load(source)
    assert (bundle.profile.name, bundle.modes, bundle.inference) == (game, original.modes, original.inference)
    assert all((out / name / ONNX_FILE).is_file() for name in ("strategist", "tactician", "executor"))


@pytest.mark.parametrize("game", GAMES)
def test_strategist_step_with_its_kv_cache_beyond_the_window(exported, game: str) -> None:
    torch_b, onnx_b = (PolicyBundle.load(p) for p in exported(game))
    steps = torch_b.strategist.config.max_len + 10  # the cache fills, then slides
    g = torch.Generator().manual_seed(0)
    cache_t, cache_o = torch_b.strategist.reset(1), onnx_b.strategist.reset(1)
    for i in range(steps):
        x = torch.randn(1, torch_b.strategist.config.d_in, generator=g)
        with torch.inference_mode():
            want, cache_t = torch_b.strategist.step(x, cache_t)
        got, cache_o = onnx_b.strategist.step(x, cache_o)
        _close(got.mode_logits, want.mode_logits, f"mode_logits, step {i}")
        _close(got.goal, want.goal, f"goal, step {i}")
    assert cache_o.arrays[0].shape == tuple(cache_t.keys[0].shape)  # (1, H, max_len, Dh)


@pytest.mark.parametrize("game", GAMES)
def test_tactician_forward(exported, game: str) -> None:
    torch_b, onnx_b = (PolicyBundle.load(p) for p in exported(game))
    c, g = torch_b.tactician.config, torch.Generator().manual_seed(0)
    for n_objects, n_valid in [(c.n_max, 0), (c.n_max, 1), (c.n_max, 9), (c.n_max, c.n_max), (5, 3)]:
        valid = torch.arange(n_objects).unsqueeze(0) < n_valid
        args = (torch.randn(1, n_objects, c.d_obj, generator=g), valid,
                torch.randn(1, c.goal_dim, generator=g), torch.randn(1, c.d_ctx, generator=g))  # fmt: skip
        with torch.inference_mode():
            want = torch_b.tactician(*args)
        got = onnx_b.tactician(*args)
        finite = torch.isfinite(want.target_logits)
        assert torch.equal(torch.isfinite(got.target_logits), finite)  # -inf on the same padded slots
        _close(got.target_logits[finite], want.target_logits[finite], f"target_logits, {n_valid} objects")
        _close(got.approach, want.approach, "approach")


@pytest.mark.parametrize("game", GAMES)
def test_executor_step_with_its_mamba_state_carried(exported, game: str) -> None:
    torch_b, onnx_b = (PolicyBundle.load(p) for p in exported(game))
    c, g = torch_b.executor.config, torch.Generator().manual_seed(0)
    state_t, state_o = torch_b.executor.reset(1), onnx_b.executor.reset(1)
    heads = ["mouse_logits", "mouse_offsets", "click_logit", "key_logits"] + (
        ["held_logits"] if c.n_held else []
    )
    for i in range(40):
        args = [torch.randn(1, w, generator=g) for w in (c.d_frame, c.goal_dim, c.d_target, c.approach_dim)]
        with torch.inference_mode():
            want, state_t = torch_b.executor.step(*args, state_t)
            want_action = torch_b.executor.decode(want)
        got, state_o = onnx_b.executor.step(*args, state_o)
        for name in heads:
            _close(getattr(got, name), getattr(want, name), f"{name}, step {i}")
        action = onnx_b.executor.decode(got)
        assert torch.equal(action.click, want_action.click) and torch.equal(action.key, want_action.key)
        _close(action.mouse, want_action.mouse, f"mouse, step {i}")
        assert (action.held is None) == (not c.n_held)
        if c.n_held:
            assert torch.equal(action.held, want_action.held)
    n = c.n_layers
    for k, layer in enumerate(state_t.layers):  # the state itself, after 40 frames
        _close(torch.from_numpy(state_o.arrays[k]), layer.conv, f"conv state {k}")
        _close(torch.from_numpy(state_o.arrays[n + k]), layer.ssm, f"ssm state {k}")


# ------------------------------------------------------------------------------------------ the runner


@pytest.mark.parametrize("sample", [False, True])
@pytest.mark.parametrize("game", GAMES)
def test_runner_decides_identically(exported, game: str, sample: bool) -> None:
    """60 frames (a summary every 3rd, so ~20 Strategist steps; 20 Tactician calls): the same decisions."""
    runners = [PolicyRunner(PolicyBundle.load(p), sample=sample, seed=3) for p in exported(game)]
    for i, step in enumerate(random_steps(60, seed=1, summary_every=3)):
        want, got = (runner.act(step) for runner in runners)
        assert (got.click, got.key, got.held, got.target_id, got.mode) == (
            want.click, want.key, want.held, want.target_id, want.mode
        ), f"frame {i}"  # fmt: skip
        np.testing.assert_allclose(got.mouse, want.mouse, atol=1e-5, err_msg=f"mouse, frame {i}")
        np.testing.assert_allclose(
            got.mode_probs, want.mode_probs, atol=ATOL, err_msg=f"mode_probs, frame {i}"
        )
        np.testing.assert_allclose(got.approach, want.approach, atol=ATOL, err_msg=f"approach, frame {i}")
    assert runners[1].calls == runners[0].calls and runners[1].calls["executor"] == 60


@pytest.mark.parametrize("game", GAMES)
def test_int8_decisions_mostly_agree(exported, game: str) -> None:
    source, out = exported(game, int8=True)
    assert json.loads((out / BUNDLE_FILE).read_text())["export"]["precision"] == "int8"
    share = agreement(PolicyBundle.load(source), PolicyBundle.load(out), random_steps(200, summary_every=3))
    assert share >= INT8_FLOOR, f"int8 decisions agree with torch on {share:.1%} of frames"


# ------------------------------------------------------------------------------------- command and errors


def test_cli_export_keeps_the_detector_and_refuses_to_clobber(tmp_path: Path, tiny_bundle, capsys) -> None:
    detector = tmp_path / "det"
    detector.mkdir()
    (detector / "config.json").write_text("{}")
    (detector / "model.onnx").write_bytes(b"not read by an export")
    source, out = tiny_bundle(tmp_path / "torch", detector=detector), tmp_path / "onnx"
    argv = ["export", "--policy", str(source), "--out", str(out), "--check-steps", "8"]
    assert cli.main(argv) == 0
    assert (out / "detector" / "model.onnx").read_bytes() == b"not read by an export"
    assert PolicyBundle.load(out).detector_path == out / "detector"
    assert cli.main(argv) == 1 and "--overwrite" in capsys.readouterr().err
    assert cli.main([*argv, "--overwrite", "--int8"]) == 0
    assert json.loads((out / BUNDLE_FILE).read_text())["export"]["precision"] == "int8"
    assert cli.main(["export", "--policy", str(out), "--out", str(tmp_path / "again")]) == 1  # already ONNX
    assert not list(tmp_path.glob(".*.partial"))


def _one_line_error(folder: Path, *names: str) -> str:
    with pytest.raises(PolicyError) as info:
        PolicyBundle.load(folder)
    message = str(info.value)
    assert "\n" not in message and all(name in message for name in names), message
    return message


def test_a_corrupt_missing_or_foreign_onnx_file_is_named(exported, tmp_path: Path) -> None:
    arena, naev = (shutil.copytree(exported(game)[1], tmp_path / game) for game in GAMES)
    (arena / "tactician" / ONNX_FILE).write_bytes(b"\x08\x07 not a protobuf at all")
    _one_line_error(arena, str(arena / "tactician" / ONNX_FILE), "cannot load ONNX model")
    (arena / "tactician" / ONNX_FILE).unlink()
    _one_line_error(arena, str(arena / "tactician" / ONNX_FILE), "missing")
    shutil.copy2(exported("arena")[1] / "executor" / ONNX_FILE, naev / "executor" / ONNX_FILE)
    message = _one_line_error(naev, str(naev / "executor" / ONNX_FILE), "does not match")
    assert "n_held" in message and "n_keys" in message


def test_an_unknown_runtime_is_refused(exported, tmp_path: Path) -> None:
    out = shutil.copytree(exported("arena")[1], tmp_path / "b")
    meta = json.loads((out / BUNDLE_FILE).read_text())
    (out / BUNDLE_FILE).write_text(json.dumps({**meta, "runtime": "tflite"}))
    _one_line_error(out, "runtime", "tflite")


def test_pilot_eval_plays_an_exported_bundle(exported, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from bot.perception.detector import Detections
    from bot.play.evaluate import main

    blind = type("Blind", (), {"detect": lambda self, frame: Detections.empty()})()
    monkeypatch.setattr(PolicyBundle, "detector", lambda self, runtime="auto", threads=0: blind)
    small = ["--width", "320", "--height", "180", "--zoom", "0.25", "--seconds", "1.0"]
    assert (
        main(["--policy", str(exported("arena")[1]), "--episodes", "1", "--no-baselines", "--json", *small])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["decisions_per_s"]["executor"] == pytest.approx(30.0, rel=0.05)


def test_pilot_run_loads_an_exported_bundle(exported, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pilot run` sets up through LiveRun._load_policy (its window and input need a display: not here)."""
    from bot.play.live import LiveRun
    from bot.play.run import RunConfig

    monkeypatch.setattr(PolicyBundle, "detector", lambda self, runtime="auto", threads=0: "a detector")
    profile, detector, runner, _ = LiveRun(RunConfig(policy=exported("naev")[1], game="naev"))._load_policy()
    assert profile.name == "naev" and detector == "a detector"
    assert isinstance(runner.bundle.executor, OnnxExecutor)
    decision = runner.act(random_steps(1)[0])
    assert 0 <= decision.held < 2 ** len(profile.keys)


def test_providers_prefer_the_gpu_and_keep_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    from bot.policy.onnx_models import providers

    every = [
        "AzureExecutionProvider",
        "CPUExecutionProvider",
        "CUDAExecutionProvider",
        "TensorrtExecutionProvider",
    ]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: every)
    trt, cuda, cpu = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
    assert providers("Executor") == providers("Tactician") == [trt, cuda, cpu]
    assert providers("Strategist") == [cuda, cpu]  # its input shapes change every step: no TensorRT engines
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: every[:2])
    assert providers("Executor") == [cpu]
