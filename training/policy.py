"""`pilot train policy`: train the Strategist, then the Tactician, then the Executor; write a policy bundle.

    Strategist (labels) ──goal──▶ Tactician (goals from the trained Strategist) ──target, approach──▶
    Executor (goals from the Strategist, targets/approach from the trained Tactician)

Each model trains through the shared loop into `<out>/runs/<model>/` (resumable: run the same command again
with `--resume` to continue every stage from its last checkpoint); its best/ weights (last/ when it never
validated) are copied into the bundle:

    <out>/
        bundle.json     {"format": "orbit-pilot-policy", "format_version": 1, "profile", "obs_spec", "modes",
                         "detector": {"path", "copied"}, "models": {name: folder}, "metrics" (each
                         model's validation at its best/, and "test" with --data.test-data), "data",
                         "versions"}
        detector/       copy of --detector (when --copy-detector and a detector is given)
        strategist/     models.io folder: models.io.load_model(<out>/strategist)
        tactician/
        executor/
        runs/           the training runs (checkpoints, TensorBoard)

What the live bot feeds each model (the training inputs, training/datasets.py):
    Strategist  step(summary)    one Summarizer row per completed second -> goal (zeros before the first)
    Tactician   objects, mask, goal, context = glob, at ~10 Hz -> slot; keep the chosen object's TRACK ID
    Executor    every frame: glob, goal, target = the chosen track's current object row (zeros when none or
                gone), approach (held from the last Tactician decision) -> mouse, click, key

Examples:
    pilot train policy --data.data data/recordings/arena --data.val-data data/recordings/arena-heldout \\
        --out data/policies/arena --detector data/detectors/arena
    pilot train policy --config policy.yaml --strategist.train.epochs 80 --out data/policies/arena
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.perception.state import OBS_SPEC
from models.io import load_model, save_model
from models.strategist import MODES
from training.checkpoint import find_checkpoint, read_config, versions
from training.datasets import DataConfig
from training.entry import (
    ExecutorRun,
    StrategistRun,
    TacticianRun,
    run_executor,
    run_strategist,
    run_tactician,
)
from training.loop import TEST_FILE

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "orbit-pilot-policy"
BUNDLE_VERSION = 1
BUNDLE_FILE = "bundle.json"
MODELS = ("strategist", "tactician", "executor")


@dataclass
class PolicyRun:
    """Train the three models in order on the same episodes and write a policy bundle."""

    data: DataConfig = field(default_factory=DataConfig)  # used by all three (their own `data` is ignored)
    # the models that also train on data.extra_data (DAgger episodes): the expert's modes on the bot's states
    # are sound labels, its clicks and keys there are not (bot/play/dagger.py), so by default the
    # Strategist only
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

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ValueError(f"PolicyRun.threads: expected an int >= 0, got {self.threads!r}")
        self.detector = None if self.detector in (None, "") else Path(self.detector)
        self.config = None if self.config in (None, "") else Path(self.config)
        self.extra_data_models = tuple(self.extra_data_models)
        unknown = sorted(set(self.extra_data_models) - set(MODELS))
        if unknown:
            raise ValueError(f"PolicyRun.extra_data_models: expected names among {MODELS}, got {unknown}")


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


def run_policy(cfg: PolicyRun) -> int:
    """Train strategist -> tactician -> executor, then write the bundle; returns an exit code."""
    runs = {name: cfg.out / "runs" / name for name in MODELS}
    code = run_strategist(_stage(cfg, "strategist", cfg.strategist))
    if code:
        return code
    tactician = _stage(cfg, "tactician", cfg.tactician)
    tactician.strategist = _trained(runs["strategist"])
    if code := run_tactician(tactician):
        return code
    executor = _stage(cfg, "executor", cfg.executor)
    executor.strategist, executor.tactician = tactician.strategist, _trained(runs["tactician"])
    if code := run_executor(executor):
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
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "profile": cfg.profile,
        "obs_spec": OBS_SPEC.to_dict(),
        "modes": list(MODES),
        "detector": detector,
        "models": {name: name for name in checkpoints},
        "metrics": {k: {m: v for m, v in d.items() if m != "config"} for k, d in metrics.items()},
        "data": metrics.get("strategist", {}).get("config", {}).get("data", {}),
        "versions": versions(),
    }
    tmp = out / (BUNDLE_FILE + ".tmp")
    tmp.write_text(json.dumps(bundle, indent=2, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(out / BUNDLE_FILE)
    log.info("policy bundle written to %s", out)
    return out
