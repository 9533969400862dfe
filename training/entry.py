"""Training entry points: `train_strategist`, `train_tactician`, `train_executor` and `pilot train <model>`.

Each is a typed dataclass config (data, model, train = the shared loop's TrainConfig, and the task's own
settings) turned into a command line by tyro. Every flag has a default that trains on this CPU for the Arena.

Precedence of settings: built-in defaults < `--config FILE.yaml|json` (nested like the flags:
`{train: {lr: 1e-3}, model: {n_layers: 2}}`) < flags on the command line. A bad config file (missing,
unparsable, unknown key, bad value) is a one-line error and exit code 2.

Examples (after `pilot demos --out data/recordings/arena` and `pilot perceive --episodes data/recordings/arena
--detector data/detectors/arena`):

    train_strategist --data.data data/recordings/arena --data.val-data data/recordings/arena-heldout
    train_strategist ... --data.test-data data/recordings/arena-test   # scored once with best/ at the end
    train_strategist --config strategist.yaml --train.epochs 40 --label-smoothing 0.05
    train_strategist --data.data data/recordings/arena --phases 4 --train.epochs 12   # 4 cuts of each second
    train_tactician --data.data data/recordings/arena --strategist data/checkpoints/strategist/best
    train_executor --data.data data/recordings/arena --chunk 64 --train.max-steps 2000
    train_strategist --train.out-dir data/checkpoints/strategist --train.resume auto   # continue a run
    pilot train strategist --help
    pilot train policy --data.data data/recordings/arena --out data/policies/arena    # all three + bundle
    pilot train detector --data data/recordings/arena-detector --out data/detectors/arena

Checkpoints land in `--train.out-dir` (last/ and best/, each a models.io folder: models.io.load_model(dir)).
best/ is chosen on the validation episodes, so its validation score flatters it; `--data.test-data` episodes
(never trained on, never used for that choice) are scored once with best/ when the run ends: the log's
"test ..." line and <out-dir>/test_metrics.json.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import tyro

from models.executor import ExecutorConfig
from models.strategist import StrategistConfig
from models.tactician import TacticianConfig
from training.datasets import DataConfig, DatasetError
from training.loop import TrainConfig, run_training

log = logging.getLogger(__name__)

C = TypeVar("C")


class ConfigFileError(ValueError):
    """A --config file is missing, unparsable or holds an unknown key or a bad value."""


def _train(out: str, metric: str, mode: str, **kw: Any) -> TrainConfig:
    return TrainConfig(out_dir=Path(out), best_metric=metric, best_mode=mode, **kw)


def _check_positive(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"{type(owner).__name__}.{name}: expected a number > 0, got {value!r}")


def _check_threads(owner: Any) -> None:
    value = owner.threads
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{type(owner).__name__}.threads: expected an int >= 0, got {value!r}")


def _optional_path(value: Any) -> Path | None:
    return None if value in (None, "") else Path(value)


@dataclass
class StrategistRun:
    """Train the Strategist: per-second summaries over a `history`-second window -> the mode."""

    data: DataConfig = field(default_factory=DataConfig)
    model: StrategistConfig = field(
        default_factory=lambda: StrategistConfig(d_model=128, n_layers=3, d_ff=512, goal_dim=32, dropout=0.1)
    )  # d_in / n_modes are set from the obs_spec and the mode set
    train: TrainConfig = field(
        default_factory=lambda: _train(
            "data/checkpoints/strategist",
            "mode_acc",
            "max",
            epochs=60,
            batch_size=16,
            lr=1e-3,
            warmup_steps=50,
        )
    )
    history: int = 60  # seconds of summaries per training window (the live history)
    stride: int = 0  # seconds between window starts; 0 = history // 2
    label_smoothing: float = 0.1  # cross-entropy label smoothing of the mode
    # each training episode is also summarised with its seconds starting k / phases s later (k < phases):
    # the same play cut into seconds at another phase, as a live run may start at any instant
    phases: int = 1
    threads: int = 1  # torch CPU threads, 0 = torch default; 1 was 30x faster than 2 on a busy 2-core CPU
    config: Path | None = None  # YAML/JSON file of defaults; flags override it

    def __post_init__(self) -> None:
        _check_positive(self, "history")
        _check_threads(self)
        if isinstance(self.phases, bool) or not isinstance(self.phases, int) or self.phases < 1:
            raise ValueError(f"StrategistRun.phases: expected an integer >= 1, got {self.phases!r}")
        if (
            isinstance(self.stride, bool)
            or not isinstance(self.stride, int)
            or not 0 <= self.stride <= self.history
        ):
            raise ValueError(
                f"StrategistRun.stride: expected 0..history ({self.history}), got {self.stride!r}"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"StrategistRun.label_smoothing: expected [0, 1), got {self.label_smoothing!r}")
        self.config = _optional_path(self.config)


@dataclass
class TacticianRun:
    """Train the Tactician: object set at ~hz + goal + global state -> the target's slot (or none)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: TacticianConfig = field(
        default_factory=lambda: TacticianConfig(d_model=64, n_heads=4, n_layers=2, d_ff=128, goal_dim=32)
    )  # d_obj / n_max / d_ctx are set from the obs_spec, goal_dim from the Strategist when given
    train: TrainConfig = field(
        default_factory=lambda: _train(
            "data/checkpoints/tactician",
            "target_acc",
            "max",
            epochs=5,  # held-out target_acc peaked by epoch 3 on 8 Arena episodes; longer overfits
            batch_size=64,
            lr=1e-3,
            warmup_steps=50,
        )
    )
    hz: float = 10.0  # decisions per second (one sample per decision)
    iou_min: float = 0.3  # IoU that matches the labelled object's true box to a tracked box
    approach_weight: float = 1.0  # weight of the approach MSE next to the target cross-entropy
    strategist: Path | None = None  # Strategist checkpoint whose goals feed the Tactician; None = mode labels
    threads: int = 1  # torch CPU threads, 0 = torch default; 1 was 30x faster than 2 on a busy 2-core CPU
    config: Path | None = None  # YAML/JSON file of defaults; flags override it

    def __post_init__(self) -> None:
        _check_positive(self, "hz", "iou_min")
        _check_threads(self)
        self.strategist, self.config = _optional_path(self.strategist), _optional_path(self.config)


@dataclass
class ExecutorRun:
    """Train the Executor: frame-rate chunks of state + goal/target/approach -> mouse, click, key."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ExecutorConfig = field(
        default_factory=lambda: ExecutorConfig(
            d_model=64, n_layers=2, goal_dim=32, mouse_bins_x=16, mouse_bins_y=16
        )
    )  # d_frame / d_target / n_keys are set from the obs_spec and the episodes
    train: TrainConfig = field(
        default_factory=lambda: _train(
            "data/checkpoints/executor",
            # best = the lowest error to the next click's point, not the loss: the loss turns up after ~5
            # epochs (over-confident click/key probabilities) while pointing and play keep improving; on
            # seeds 1003-1008 the loss-best Executor (epoch 5, 137 px) scored 453 credits a minute, the
            # epoch-25 one (130 px) 748
            "mouse_px",
            "min",
            epochs=40,  # held-out mouse error 40 px after 10 epochs, 21 px after 40 (8 Arena episodes)
            batch_size=8,
            lr=1e-3,
            warmup_steps=50,
        )
    )
    chunk: int = 64  # frames per training sequence
    tactician_hz: float = 10.0  # rate of the Tactician decisions the Executor sees
    iou_min: float = 0.3  # see TacticianRun.iou_min (teacher-forced targets)
    click_balance: float = 0.5  # click loss pos_weight = (no-click / click frames) ** this; 0 = unweighted
    key_balance: float = 0.5  # key class weight = (no-key / key frames) ** this; 0 = unweighted
    ignore_cursor: bool = (
        True  # blind the Executor to the previous cursor (copycat problem, training/tasks.py)
    )
    # mouse/click targets: the next click's point and "a click is coming" within this many s (the live hand
    # draws the path and clicks on arrival); 0 = the next frame's cursor and click (copies the cursor)
    click_horizon_s: float = 2.0
    strategist: Path | None = None  # Strategist checkpoint for the goals; None = mode labels
    tactician: Path | None = None  # Tactician checkpoint for target and approach; None = target labels
    threads: int = 1  # torch CPU threads, 0 = torch default; 1 was 30x faster than 2 on a busy 2-core CPU
    config: Path | None = None  # YAML/JSON file of defaults; flags override it

    def __post_init__(self) -> None:
        _check_positive(self, "chunk", "tactician_hz", "iou_min")
        if not (isinstance(self.click_horizon_s, int | float) and self.click_horizon_s >= 0):
            raise ValueError(
                f"ExecutorRun.click_horizon_s: expected a number >= 0, got {self.click_horizon_s!r}"
            )
        _check_threads(self)
        for name in ("click_balance", "key_balance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"ExecutorRun.{name}: expected a number in [0, 1], got {value!r}")
        self.strategist, self.tactician = _optional_path(self.strategist), _optional_path(self.tactician)
        self.config = _optional_path(self.config)


# ------------------------------------------------------------------------------------------- config files


def load_config_file(path: Path) -> dict[str, Any]:
    """A YAML or JSON mapping; ConfigFileError naming the file otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"--config {path}: unreadable ({exc.strerror or exc})") from None
    try:
        if Path(path).suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigFileError(
            f"--config {path}: not valid {Path(path).suffix[1:] or 'YAML'} ({first})"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"--config {path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def apply_overrides(instance: C, values: dict[str, Any], where: str, prefix: str = "") -> C:
    """A copy of the dataclass `instance` with `values` (nested dicts for nested configs) replaced."""
    fields = {f.name: f for f in dataclasses.fields(instance)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            raise ConfigFileError(
                f"{where}: unknown key {prefix + str(key)!r} (expected one of {sorted(fields)})"
            )
        current = getattr(instance, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[name] = apply_overrides(current, value, where, f"{prefix}{name}.")
        else:
            changes[name] = value
    try:
        return dataclasses.replace(instance, **changes)  # type: ignore[type-var]
    except (ValueError, TypeError) as exc:
        raise ConfigFileError(f"{where}: {str(exc).splitlines()[0]}") from None


def _config_path(argv: list[str]) -> Path | None:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
    return None


def parse(cls: type[C], argv: list[str] | None, prog: str) -> C:
    """defaults < --config file < flags, as described in the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    default = cls()
    path = _config_path(argv)
    if path is not None and "--help" not in argv and "-h" not in argv:
        default = apply_overrides(default, load_config_file(path), f"--config {path}")
    doc = f"{(cls.__doc__ or '').strip()}\n\n{__doc__}"
    return tyro.cli(cls, args=argv, default=default, prog=prog, description=doc)


def setup_logging() -> None:
    """One logging configuration for the command lines (library code only logs)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# ------------------------------------------------------------------------------------------------ runs


def run_strategist(cfg: StrategistRun) -> int:
    from training.tasks import StrategistTask

    stride = cfg.stride or max(1, cfg.history // 2)
    task = StrategistTask(cfg.data, cfg.model, cfg.history, stride, cfg.label_smoothing, cfg.phases)
    return run_training(task, cfg.train)


def run_tactician(cfg: TacticianRun) -> int:
    from training.tasks import TacticianTask

    task = TacticianTask(cfg.data, cfg.model, cfg.hz, cfg.iou_min, cfg.approach_weight, cfg.strategist)
    return run_training(task, cfg.train)


def run_executor(cfg: ExecutorRun) -> int:
    from training.tasks import ExecutorTask

    task = ExecutorTask(
        cfg.data, cfg.model, cfg.chunk, cfg.strategist, cfg.tactician, cfg.tactician_hz, cfg.iou_min,
        cfg.click_balance, cfg.key_balance, cfg.ignore_cursor, cfg.click_horizon_s,
    )  # fmt: skip
    return run_training(task, cfg.train)


def _main(cls: type[C], run: Any, argv: list[str] | None, prog: str) -> int:
    setup_logging()
    try:
        cfg = parse(cls, argv, prog)
    except ConfigFileError as exc:
        log.error("%s", exc)
        return 2
    if getattr(cfg, "threads", 0) > 0:
        import torch

        torch.set_num_threads(cfg.threads)
    try:
        return run(cfg)
    except (DatasetError, FileNotFoundError) as exc:
        log.error("%s", str(exc).splitlines()[0])
        return 1
    except Exception as exc:
        from models.errors import ConfigError, ModelsError

        if isinstance(exc, ModelsError | ConfigError):
            log.error("%s", str(exc).splitlines()[0])
            return 1
        raise


def strategist_main(argv: list[str] | None = None) -> int:
    """`train_strategist` / `pilot train strategist`."""
    return _main(StrategistRun, run_strategist, argv, "train_strategist")


def tactician_main(argv: list[str] | None = None) -> int:
    """`train_tactician` / `pilot train tactician`."""
    return _main(TacticianRun, run_tactician, argv, "train_tactician")


def executor_main(argv: list[str] | None = None) -> int:
    """`train_executor` / `pilot train executor`."""
    return _main(ExecutorRun, run_executor, argv, "train_executor")


def policy_main(argv: list[str] | None = None) -> int:
    """`pilot train policy`: the three models in order, then a policy bundle (training/policy.py)."""
    from training.policy import PolicyRun, run_policy

    return _main(PolicyRun, run_policy, argv, "pilot train policy")


def detector_main(argv: list[str] | None = None) -> int:
    from training.detector import main as detector

    return detector(argv)


COMMANDS = {
    "strategist": strategist_main,
    "tactician": tactician_main,
    "executor": executor_main,
    "policy": policy_main,
    "detector": detector_main,
}
USAGE = "usage: pilot train {" + ",".join(COMMANDS) + "} [--help] [flags]"


def main(argv: list[str] | None = None) -> int:
    """`pilot train <strategist|tactician|executor|policy|detector> ...`: run that entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(f"{USAGE}\n\n{__doc__}")
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        sys.stderr.write(f"pilot train: unknown model {argv[0]!r}; {USAGE}\n")
        return 2
    return COMMANDS[argv[0]](argv[1:])


# ---------------------------------------------------------------------------------------- console scripts


def train_strategist() -> int:
    sys.exit(strategist_main())


def train_tactician() -> int:
    sys.exit(tactician_main())


def train_executor() -> int:
    sys.exit(executor_main())


def train_detector() -> int:
    sys.exit(detector_main())


def finetune_vlm() -> int:
    from training.finetune import main as finetune

    sys.exit(finetune())
