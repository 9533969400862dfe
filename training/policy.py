"""`pilot train policy`: train the Strategist, then the Tactician, then the Executor; write a policy bundle.

    Strategist (labels) ──goal──▶ Tactician (goals from the trained Strategist) ──target, approach──▶
    Executor (goals from the Strategist, targets/approach from the trained Tactician)

Each stage trains into `<out>/runs/<model>/` (`--resume` continues them); its best/ weights go into the bundle
(bot/policy/bundle.py holds the format). Examples:

    pilot train policy --data.data data/recordings/arena --data.val-data data/recordings/arena-heldout \\
        --out data/policies/arena --detector data/detectors/arena
    pilot train policy --config training/configs/arena_policy.yaml --out data/policies/arena
    pilot train policy --init data/pretrained/arena --data.data data/shadow/recordings --out data/policies/ft
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bot.errors import PilotError
from bot.perception.state import OBS_SPEC
from bot.policy.bundle import (
    BUNDLE_FILE,
    SNAP_BOXES,
    InferenceSettings,
    bundle_inference,
    read_bundle_json,
    write_bundle_json,
)
from models.errors import CheckpointError
from models.io import load_model, save_model
from models.layers import Normalizer
from models.strategist import MODES
from training.checkpoint import find_checkpoint, read_config, versions
from training.datasets import DataConfig
from training.loop import TEST_FILE, run_training
from training.runs import ExecutorRun, StrategistRun, TacticianRun
from training.tasks import MUTED_STD, ExecutorTask, StrategistTask, TacticianTask
from validation import check_int, fail

log = logging.getLogger(__name__)

MODELS = ("strategist", "tactician", "executor")
TASKS = {"strategist": StrategistTask, "tactician": TacticianTask, "executor": ExecutorTask}


@dataclass
class PolicyRun:
    """Train the three models in order on the same episodes and write a policy bundle."""

    data: DataConfig = field(default_factory=DataConfig)  # used by all three (their own `data` is ignored)
    # the models that also train on data.extra_data (DAgger episodes): the expert's modes on the bot's states
    # are sound labels; its plan's clicks and keys there (arena/expert/labeller.py) did not make a better
    # Executor in the Arena (docs/notes/play.md, bot/play/dagger.py), so by default the Strategist only
    extra_data_models: tuple[str, ...] = ("strategist",)
    out: Path = Path("data/policies/arena")  # bundle folder
    detector: Path | None = None  # detector folder or file the bundle references (or copies)
    copy_detector: bool = True  # copy the detector into <out>/detector (else reference its path)
    profile: str = "arena"  # game profile name recorded in the bundle
    resume: bool = False  # continue each stage from <out>/runs/<model>/last
    threads: int = 1  # torch CPU threads, 0 = torch default; 1 was 30x faster than 2 on a busy 2-core CPU
    strategist: StrategistRun = field(default_factory=StrategistRun)  # its data/out_dir are set here
    tactician: TacticianRun = field(default_factory=TacticianRun)  # its strategist comes from stage 1
    executor: ExecutorRun = field(default_factory=ExecutorRun)  # its strategist/tactician from stages 1, 2
    config: Path | None = None  # YAML/JSON file of defaults; flags override it
    # a policy bundle to start from (fine-tuning): each model keeps its architecture and weights
    init: Path | None = None

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.init = None if self.init in (None, "") else Path(self.init)
        check_int(self, "threads", 0)
        self.detector = None if self.detector in (None, "") else Path(self.detector)
        self.config = None if self.config in (None, "") else Path(self.config)
        self.extra_data_models = tuple(self.extra_data_models)
        unknown = sorted(set(self.extra_data_models) - set(MODELS))
        if unknown:
            raise fail(self, "extra_data_models", f"names among {MODELS}", unknown)


def _stage(cfg: PolicyRun, name: str, stage: Any) -> Any:
    keep_extra = name in cfg.extra_data_models
    stage.data = cfg.data if keep_extra else dataclasses.replace(cfg.data, extra_data=())
    stage.train.out_dir = cfg.out / "runs" / name
    stage.train.resume = "auto" if cfg.resume else ""
    return stage


def _trained(run_dir: Path) -> Path:
    best = find_checkpoint(run_dir, "best")
    folder = best or find_checkpoint(run_dir, "last")
    if folder is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint after training")
    return folder


def init_models(folder: Path) -> dict[str, Path]:
    """--init: the model folder of each stage in the bundle at `folder`; CheckpointError on a bad one."""
    try:
        data = read_bundle_json(folder / BUNDLE_FILE)
    except PilotError as exc:
        raise CheckpointError(f"PolicyRun.init: {exc}") from None
    models = data.get("models") or {}
    found = {name: folder / str(models.get(name, name)) for name in MODELS}
    for name, path in found.items():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"PolicyRun.init: {path}: no {name} model in the bundle {folder}")
    return found


def start_from(task: Any, folder: Path) -> Any:
    """Make `task.build_model` start from the model saved in `folder`: its weights and the normalisation
    statistics it was trained with. A Normalizer never fitted (an untrained bundle's: mean 0, std 1) takes
    the statistics fitted on this run's data, and columns the run mutes (ignore_cursor) stay muted."""
    build = task.build_model

    def build_model() -> Any:
        fresh = build()  # this data's statistics, the task's loss weights, the run's muted columns
        model = load_model(folder, type(fresh).__name__)
        if model.config != fresh.config:  # e.g. a bundle of another observation spec or game's keys
            raise CheckpointError(f"PolicyRun.init: {folder}: expected a model of config {fresh.config}, "
                                  f"got {model.config}")  # fmt: skip
        ours = dict(fresh.named_modules())
        for name, norm in model.named_modules():
            if isinstance(norm, Normalizer):
                _merge_normalizer(norm, ours[name])
        return model

    task.build_model = build_model
    return task


@torch.no_grad()
def _merge_normalizer(norm: Normalizer, fresh: Normalizer) -> None:
    if bool((norm.mean == 0).all() and (norm.std == 1).all()):
        norm.mean.copy_(fresh.mean)
        norm.std.copy_(fresh.std)
    muted = fresh.std >= MUTED_STD
    norm.mean[muted], norm.std[muted] = 0.0, MUTED_STD


def _train_stage(cfg: PolicyRun, name: str, stage: Any, init: dict[str, Path] | None) -> int:
    if init is not None:
        stage.model = load_model(init[name]).config  # the bundle's architecture
    task = TASKS[name](stage)
    if init is not None:
        start_from(task, init[name])
    return run_training(task, stage.train)


def run_policy(cfg: PolicyRun) -> int:
    """Train strategist -> tactician -> executor, then write the bundle; returns an exit code."""
    runs = {name: cfg.out / "runs" / name for name in MODELS}
    init = init_models(cfg.init) if cfg.init is not None else None
    if code := _train_stage(cfg, "strategist", _stage(cfg, "strategist", cfg.strategist), init):
        return code
    tactician = _stage(cfg, "tactician", cfg.tactician)
    tactician.strategist = _trained(runs["strategist"])
    if code := _train_stage(cfg, "tactician", tactician, init):
        return code
    executor = _stage(cfg, "executor", cfg.executor)
    executor.strategist, executor.tactician = tactician.strategist, _trained(runs["tactician"])
    if code := _train_stage(cfg, "executor", executor, init):
        return code
    write_bundle(cfg, {name: _trained(folder) for name, folder in runs.items()})
    return 0


def write_bundle(cfg: PolicyRun, checkpoints: dict[str, Path]) -> Path:
    """Copy each model's weights into <out>/<name>/ and write bundle.json; returns the bundle folder."""
    out = cfg.out
    metrics: dict[str, Any] = {}
    for name, folder in checkpoints.items():
        save_model(out / name, load_model(folder))
        state = json.loads((folder / "trainer_state.json").read_text())
        # the latest validation of the run; NaN (an F1 of a class never seen) becomes null in JSON
        metrics[name] = {k: None if v != v else v for k, v in state.get("last_metrics", {}).items()}
        metrics[name]["checkpoint"] = str(folder)
        metrics[name]["config"] = read_config(folder).get("metadata", {})
        test = folder.parent / TEST_FILE  # data.test_data scored with this checkpoint when the run ended
        if test.exists():
            metrics[name]["test"] = json.loads(test.read_text())["metrics"]
    detector: dict[str, Any] = {"path": None, "copied": False}
    if cfg.detector is not None:
        if cfg.copy_detector:
            target = out / "detector"
            shutil.rmtree(target, ignore_errors=True)
            if cfg.detector.is_dir():
                shutil.copytree(
                    cfg.detector, target, ignore=shutil.ignore_patterns("dataset", "train", "runs")
                )
            else:
                target.mkdir(parents=True)
                shutil.copy2(cfg.detector, target / cfg.detector.name)
            detector = {"path": "detector", "copied": True}
        else:
            detector = {"path": str(cfg.detector.resolve()), "copied": False}
    bundle = {
        "profile": cfg.profile,
        "obs_spec": OBS_SPEC.to_dict(),
        "modes": list(MODES),
        "detector": detector,
        "models": {name: name for name in checkpoints},
        "metrics": {k: {m: v for m, v in d.items() if m != "config"} for k, d in metrics.items()},
        "data": metrics.get("strategist", {}).get("config", {}).get("data", {}),
        "versions": versions(),
    }
    # the live runner holds each Tactician decision as long as the Executor saw it held in training
    snap = SNAP_BOXES  # --init: the aim snap the base bundle was tuned with stays
    if cfg.init is not None:
        snap = bundle_inference(read_bundle_json(cfg.init / BUNDLE_FILE), cfg.init).snap_boxes
    write_bundle_json(out, bundle, InferenceSettings(cfg.executor.tactician_hz, snap))
    log.info("policy bundle written to %s", out)
    return out
