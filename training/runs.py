"""The per-model training runs: one config per model (data, model, train = the loop's TrainConfig, and the
task's own settings) and the function that trains it. Every default trains on this CPU for the Arena.

    run_strategist(StrategistRun())   run_tactician(TacticianRun())   run_executor(ExecutorRun())
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.executor import ExecutorConfig
from models.strategist import StrategistConfig
from models.tactician import TacticianConfig
from training.config import TrainConfig
from training.datasets import DataConfig
from training.loop import run_training
from training.tasks import ExecutorTask, StrategistTask, TacticianTask
from validation import check_float, check_int, fail


def _train(out: str, metric: str, mode: str, **kw: Any) -> TrainConfig:
    return TrainConfig(out_dir=Path(out), best_metric=metric, best_mode=mode, **kw)


def _optional_path(value: Any) -> Path | None:
    return None if value in (None, "") else Path(value)


@dataclass
class StrategistRun:
    """Train the Strategist: per-second summaries over a `history`-second window -> the mode."""

    data: DataConfig = field(default_factory=DataConfig)
    model: StrategistConfig = field(
        default_factory=lambda: StrategistConfig(d_model=128, n_layers=3, d_ff=512, goal_dim=32, dropout=0.1)
    )  # d_in / n_modes are set from the obs_spec and the mode set; label_smoothing is the loss's
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
    # each training episode is also summarised with its seconds starting k / phases s later (k < phases):
    # the same play cut into seconds at another phase, as a live run may start at any instant
    phases: int = 1
    threads: int = 1  # torch CPU threads, 0 = torch default; 1 was 30x faster than 2 on a busy 2-core CPU
    config: Path | None = None  # YAML/JSON file of defaults; flags override it

    def __post_init__(self) -> None:
        check_int(self, "history", 1)
        check_int(self, "threads", 0)
        if isinstance(self.phases, bool) or not isinstance(self.phases, int) or self.phases < 1:
            raise fail(self, "phases", "an integer >= 1", self.phases)
        check_int(self, "stride", 0, self.history)
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
        for name in ("hz", "iou_min"):
            check_float(self, name, 0.0, low_open=True)
        check_int(self, "threads", 0)
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
        check_int(self, "chunk", 1)
        for name in ("tactician_hz", "iou_min"):
            check_float(self, name, 0.0, low_open=True)
        check_float(self, "click_horizon_s", 0.0)
        check_int(self, "threads", 0)
        for name in ("click_balance", "key_balance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise fail(self, name, "a number in [0, 1]", value)
        self.strategist, self.tactician = _optional_path(self.strategist), _optional_path(self.tactician)
        self.config = _optional_path(self.config)


def run_strategist(cfg: StrategistRun) -> int:
    """Train the Strategist as `cfg` says; the exit code of run_training."""
    return run_training(StrategistTask(cfg), cfg.train)


def run_tactician(cfg: TacticianRun) -> int:
    """Train the Tactician as `cfg` says; the exit code of run_training."""
    return run_training(TacticianTask(cfg), cfg.train)


def run_executor(cfg: ExecutorRun) -> int:
    """Train the Executor as `cfg` says; the exit code of run_training."""
    return run_training(ExecutorTask(cfg), cfg.train)
