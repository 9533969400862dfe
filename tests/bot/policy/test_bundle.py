"""Policy bundles (bot/policy/bundle.py): loading errors name the file or field, the inference settings are
read from either format version, and the bundle `pilot train policy` writes loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.errors import PolicyError
from bot.perception.state import OBS_SPEC
from bot.policy.bundle import (
    BUNDLE_FILE,
    BUNDLE_VERSION,
    SNAP_BOXES,
    V1_INFERENCE,
    InferenceSettings,
    PolicyBundle,
    read_bundle_json,
    write_bundle_json,
)
from bot.policy.runner import PolicyRunner
from models.io import save_model


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# ------------------------------------------------------------------------------------------------ loading


def test_load_tiny_bundle(bundle_dir: Path) -> None:
    bundle = PolicyBundle.load(bundle_dir)
    assert bundle.profile.name == "arena" and bundle.modes == list(bundle.profile.modes)
    assert not any(m.training for m in (bundle.strategist, bundle.tactician, bundle.executor))
    assert bundle.detector_path is None
    with pytest.raises(PolicyError, match="detector: none recorded"):
        bundle.detector()


def test_copied_detector_resolves_inside_the_bundle(bundle_dir: Path) -> None:
    _edit_json(bundle_dir / BUNDLE_FILE, detector={"path": "detector", "copied": True})
    bundle = PolicyBundle.load(bundle_dir)
    assert bundle.detector_path == bundle_dir / "detector"
    with pytest.raises(PolicyError, match="detector.*missing"):
        bundle.detector()


def test_missing_bundle_json(bundle_dir: Path) -> None:
    (bundle_dir / BUNDLE_FILE).unlink()
    with pytest.raises(PolicyError, match=rf"{BUNDLE_FILE}: missing"):
        PolicyBundle.load(bundle_dir)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such policy bundle"):
        PolicyBundle.load(tmp_path / "nowhere")


def test_wrong_format_version(bundle_dir: Path) -> None:
    _edit_json(bundle_dir / BUNDLE_FILE, format_version=99)
    with pytest.raises(PolicyError, match=rf"{BUNDLE_FILE}: format_version: expected 2 \(or 1\), got 99"):
        PolicyBundle.load(bundle_dir)


def test_other_obs_spec(bundle_dir: Path) -> None:
    _edit_json(bundle_dir / BUNDLE_FILE, obs_spec={**OBS_SPEC.to_dict(), "version": OBS_SPEC.version + 1})
    with pytest.raises(PolicyError, match=rf"{BUNDLE_FILE}: obs_spec.*re-train"):
        PolicyBundle.load(bundle_dir)


def test_missing_model_folder(bundle_dir: Path) -> None:
    import shutil

    shutil.rmtree(bundle_dir / "tactician")
    with pytest.raises(PolicyError, match=r"tactician: missing \(models.tactician"):
        PolicyBundle.load(bundle_dir)


def test_wrong_model_class(bundle_dir: Path) -> None:
    from models.io import load_model

    save_model(bundle_dir / "tactician", load_model(bundle_dir / "strategist"))
    with pytest.raises(PolicyError, match=r"tactician/config.json: expected class 'Tactician'"):
        PolicyBundle.load(bundle_dir)


def test_models_that_do_not_fit_the_profile(bundle_dir: Path) -> None:
    from models.executor import Executor
    from models.io import load_model

    executor = load_model(bundle_dir / "executor")
    save_model(
        bundle_dir / "executor", Executor(type(executor.config)(**{**executor.config.__dict__, "n_keys": 2}))
    )
    with pytest.raises(PolicyError, match="executor.n_keys: expected"):
        PolicyBundle.load(bundle_dir)


# ------------------------------------------------------------------------------------------------ inference


def _set_inference(bundle_dir: Path, version: int, inference: object = None) -> None:
    """bundle.json with format_version `version` and `inference` (None: no such section)."""
    path = bundle_dir / BUNDLE_FILE
    data = json.loads(path.read_text())
    data["format_version"] = version
    data.pop("inference", None)
    if inference is not None:
        data["inference"] = inference
    path.write_text(json.dumps(data))


def test_version_2_bundles_carry_the_settings_the_runner_uses(bundle_dir: Path) -> None:
    _set_inference(bundle_dir, 2, {"tactician_hz": 5, "snap_boxes": 12.5})
    bundle = PolicyBundle.load(bundle_dir)
    assert bundle.inference == InferenceSettings(tactician_hz=5.0, snap_boxes=12.5)
    runner = PolicyRunner(bundle)
    assert (runner.period, runner.snap) == (pytest.approx(0.2), 12.5)
    override = PolicyRunner(bundle, tactician_hz=10.0, snap=0.0)  # the command line's --tactician-hz, --snap
    assert (override.period, override.snap) == (pytest.approx(0.1), 0.0)


def test_version_1_bundles_run_as_they_always_did(bundle_dir: Path) -> None:
    _set_inference(bundle_dir, 1)
    bundle = PolicyBundle.load(bundle_dir)
    assert bundle.inference == V1_INFERENCE == InferenceSettings(tactician_hz=10.0, snap_boxes=40.0)
    bundle.inference.snap_boxes = 1.0
    assert V1_INFERENCE.snap_boxes == 40.0, "each bundle gets its own copy"
    runner = PolicyRunner(PolicyBundle.load(bundle_dir))
    assert (runner.period, runner.snap) == (pytest.approx(0.1), 40.0)


@pytest.mark.parametrize(
    ("version", "inference", "error"),
    [
        (2, None, r"inference: missing"),
        (2, 10.0, r"inference: expected an object \{tactician_hz, snap_boxes, held_thresholds\}, got 10.0"),
        (
            2,
            {"tactician_hz": 10, "snap_boxes": 40, "held_thresholds": [0.3, 1.0]},
            r"inference: InferenceSettings.held_thresholds: expected a list of probabilities in \(0, 1\)",
        ),
        (
            2,
            {"tactician_hz": 10, "snap_boxes": 40, "held_thresholds": "low"},
            r"inference: InferenceSettings.held_thresholds: expected a list.*got 'low'",
        ),
        (2, {"tactician_hz": 0, "snap_boxes": 40}, r"inference: InferenceSettings.tactician_hz: expected"),
        (
            2,
            {"tactician_hz": "fast", "snap_boxes": 40},
            r"inference: InferenceSettings.tactician_hz: .*got 'fast'",
        ),
        (2, {"tactician_hz": 10, "snap_boxes": -1}, r"inference: InferenceSettings.snap_boxes: .*got -1"),
        (2, {"tactician_hz": 10}, r"inference.snap_boxes: missing"),
        (2, {"tactician_hz": 10, "snap_boxes": 40, "fps": 30}, r"inference: .*unknown \['fps'\]"),
        (1, {"tactician_hz": 10, "snap_boxes": 40}, r"inference: a format_version 1 bundle has none"),
    ],
)
def test_a_malformed_inference_section_names_the_field(
    bundle_dir: Path, version: int, inference: object, error: str
) -> None:
    _set_inference(bundle_dir, version, inference)
    with pytest.raises(PolicyError, match=rf"{BUNDLE_FILE}: {error}"):
        PolicyBundle.load(bundle_dir)


def test_write_bundle_json_stamps_the_format_and_round_trips(bundle_dir: Path) -> None:
    content = json.loads((bundle_dir / BUNDLE_FILE).read_text())
    del content["format"], content["format_version"], content["inference"]
    path = write_bundle_json(bundle_dir, content, InferenceSettings(tactician_hz=7.5, snap_boxes=3.0))
    assert path == bundle_dir / BUNDLE_FILE and not (bundle_dir / (BUNDLE_FILE + ".tmp")).exists()
    assert read_bundle_json(path)["format_version"] == BUNDLE_VERSION
    assert PolicyBundle.load(bundle_dir).inference == InferenceSettings(tactician_hz=7.5, snap_boxes=3.0)


def test_the_bundle_training_writes_loads_with_its_runs_tactician_rate(
    bundle_dir: Path, tmp_path: Path
) -> None:
    # training/policy.py writes bundle.json through bot/policy/bundle.py (the format's one home); what it
    # writes must load, with the rate the Executor was trained under and the tuned aim snap
    from training.policy import PolicyRun, write_bundle
    from training.runs import ExecutorRun

    checkpoints = {}
    for name in ("strategist", "tactician", "executor"):
        (bundle_dir / name / "trainer_state.json").write_text("{}")
        checkpoints[name] = bundle_dir / name
    cfg = PolicyRun(out=tmp_path / "trained", executor=ExecutorRun(tactician_hz=6.0))
    bundle = PolicyBundle.load(write_bundle(cfg, checkpoints))
    assert bundle.inference == InferenceSettings(tactician_hz=6.0, snap_boxes=SNAP_BOXES)
    assert bundle.meta["format_version"] == BUNDLE_VERSION


def test_the_shipped_bundle_keeps_the_settings_it_always_ran_with(arena_policy: Path) -> None:
    from bot.policy.bundle import bundle_inference

    path = arena_policy / BUNDLE_FILE
    data = read_bundle_json(path)
    assert data["format_version"] == BUNDLE_VERSION == 2
    assert bundle_inference(data, path) == V1_INFERENCE
