"""finetune_vlm's settings (FinetuneRun), its VLM label source, the Strategist/Tactician Tasks that start from
a bundle's trained weights, and the held-out scoring before and after (training/finetune.py runs them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from models.io import load_model
from models.strategist import IGNORE_INDEX
from training.config import TrainConfig
from training.datasets import (
    F_SUM,
    DataConfig,
    EpisodeArrays,
    StrategistDataset,
    TacticianDataset,
    collate_strategist,
    load_episode,
    split_episodes,
)
from training.errors import DatasetError
from training.labels import FileLabels, label_source
from training.runs import StrategistRun, TacticianRun
from training.step import evaluate
from training.tasks import StrategistTask, TacticianTask
from validation import ConfigError, check_float, check_int, fail

log = logging.getLogger(__name__)


class FinetuneError(DatasetError):
    """A bundle, label file or setting of finetune_vlm is unusable (one line naming it)."""


def _finetune_train(out: str, metric: str, epochs: int, batch_size: int) -> TrainConfig:
    # A lower LR than pretraining (1e-3) and a short EMA: the run is short and starts from trained weights.
    # 3e-4: on 6 x 10 s Arena episodes 1e-4 moved a noisy-label Strategist too little in 50 steps.
    return TrainConfig(out_dir=Path(out), best_metric=metric, best_mode="max", lr=3e-4, warmup_steps=10,
                       epochs=epochs, batch_size=batch_size, ema_decay=0.99)  # fmt: skip


@dataclass
class FinetuneRun:
    """Fine-tune a policy bundle's Strategist (optionally its Tactician) on VLM labels; write a new bundle."""

    policy: Path = Path("data/pretrained/arena")  # the bundle to start from (bundle.json + strategist/ ...)
    data: Path = Path("data/recordings/arena")  # perceived episodes holding labels/<labels>.parquet
    labels: str = ""  # VLM labels file name (`pilot label` prints it), e.g. vlm-qwen2.5vl-7b
    out: Path = Path("data/policies/arena-vlm")  # the new bundle folder (not the base bundle)
    min_confidence: float = 0.6  # VLM labels below this confidence are left out
    replay_labels: str = ""  # original labels mixed in: "" = the bundle's training labels, "none" = no replay
    replay_fraction: float = 0.25  # replay windows per VLM window (0 = VLM labels only)
    reference_labels: str = "expert"  # ground truth for the held-out report (VLM labels where it is missing)
    val_data: Path | None = None  # held-out episodes; None = val_fraction of --data by episode
    val_fraction: float = 0.2  # share of --data held out when --val-data is not given
    split_seed: int = 0  # seeds which episodes are held out (as the training entry points)
    # a frame takes the latest label at most this old; under the 1 s key-frame spacing of `pilot label`, so a
    # second whose answer was filtered out stays unlabelled instead of inheriting the previous second's
    label_tolerance_s: float = 0.95
    label_smoothing: float = 0.1  # cross-entropy label smoothing of the mode
    history: int = 60  # seconds of summaries per window (as the Strategist was trained)
    stride: int = 0  # seconds between window starts; 0 = history // 2
    train: TrainConfig = field(default_factory=lambda: _finetune_train("", "mode_acc", 20, 8))
    tactician: bool = False  # also fine-tune the Tactician on the VLM target labels (goals: new Strategist)
    tactician_train: TrainConfig = field(default_factory=lambda: _finetune_train("", "target_acc", 10, 32))
    tactician_hz: float = 10.0  # Tactician decisions per second (one sample each)
    resume: bool = False  # continue the runs in <out>/runs/ instead of starting new ones
    threads: int = 1  # torch CPU threads, 0 = torch default
    config: Path | None = None  # YAML/JSON file of defaults; flags override it

    def __post_init__(self) -> None:
        self.policy, self.data, self.out = Path(self.policy), Path(self.data), Path(self.out)
        self.val_data = None if self.val_data in (None, "") else Path(self.val_data)
        self.config = None if self.config in (None, "") else Path(self.config)
        try:
            self._validate()
        except ConfigError as exc:  # finetune_vlm's own error type, with validation's message
            raise FinetuneError(str(exc)) from None

    def _validate(self) -> None:
        check_float(self, "min_confidence", 0.0, 1.0)
        check_float(self, "replay_fraction", 0.0, 100.0)
        for name in ("val_fraction", "label_smoothing"):
            check_float(self, name, 0.0, 1.0)
            if getattr(self, name) == 1.0:  # check_float's bounds are closed
                raise fail(self, name, "a finite number in [0.0, 1.0)", 1.0)
        check_int(self, "history", 1)
        check_int(self, "stride", 0, self.history)

    @property
    def label_spec(self) -> str:
        """ "<labels>:<min_confidence>" (a threshold written into --labels wins)."""
        name, _, conf = self.labels.partition(":")
        return f"{name}:{conf or self.min_confidence}"

    @property
    def labels_name(self) -> str:
        return self.labels.partition(":")[0]


# ------------------------------------------------------------------------------------------------ labels


def vlm_source(spec: str) -> FileLabels:
    """The VLM labels file; its target ids are track ids (`pilot label` marks the file so: write_labels)."""
    source = label_source(spec)
    if not isinstance(source, FileLabels):
        raise FinetuneError(f"--labels: expected a labels file name such as vlm-<model>, got {spec!r}")
    return source


def label_counts(paths: list[Path], name: str, min_confidence: float) -> dict[str, int]:
    """VLM labels in the files of `paths`, and how many pass the confidence threshold."""
    total = kept = 0
    for path in paths:
        file = path / "labels" / f"{name}.parquet"
        if not file.is_file():
            raise FinetuneError(f"{file}: missing (label the episodes first: pilot label --data ...)")
        table = FileLabels(name, 0.0).labels(path)
        total += table.num_rows
        kept += (
            FileLabels(name, min_confidence).labels(path).num_rows if min_confidence > 0 else table.num_rows
        )
    return {"labels": total, "labels_kept": kept}


# ------------------------------------------------------------------------------------------------ tasks


class _VLMEpisodes:
    """Episode loading with the VLM label source (track-id targets) instead of DataConfig.labels."""

    data: DataConfig
    source: FileLabels
    iou_min: float

    def episodes(self) -> tuple[list[EpisodeArrays], list[EpisodeArrays]]:
        if self._split is None:  # type: ignore[has-type]
            train_paths, val_paths = split_episodes(self.data)
            self._paths = (train_paths, val_paths, [])  # fine-tuning scores held-out itself (no test_data)
            load = [
                [load_episode(p, self.source, self.data.label_tolerance_s, self.iou_min) for p in paths]
                for paths in (train_paths, val_paths)
            ]
            self._prepare(load[0] + load[1])  # type: ignore[attr-defined]
            self._split = (load[0], load[1])
        return self._split


class FinetuneStrategistTask(_VLMEpisodes, StrategistTask):
    """The Strategist task starting from trained weights, on VLM labels plus replayed original labels."""

    name = "strategist"

    def __init__(self, cfg: FinetuneRun, base: Path, replay_labels: str | None) -> None:
        self.base = base
        config = load_model(base, "Strategist").config
        if config.d_in != F_SUM:
            raise FinetuneError(
                f"{base}: the Strategist reads {config.d_in} summary features, this build {F_SUM}"
            )
        data = _data_config(cfg, cfg.label_spec)
        super().__init__(StrategistRun(data=data, model=config, history=cfg.history, stride=cfg.stride))
        self.model_cfg = config  # exactly the trained model's
        self.label_smoothing = cfg.label_smoothing  # fine-tuning's own setting, not the base model's
        self.source = vlm_source(cfg.label_spec)
        self.replay_labels, self.replay_fraction, self.seed = (
            replay_labels,
            cfg.replay_fraction,
            cfg.train.seed,
        )
        self.counts: dict[str, int] = {}

    def build_model(self) -> nn.Module:
        return load_model(self.base, "Strategist")  # its normalisation statistics stay as trained

    def train_dataset(self) -> Dataset:
        train, _ = self.episodes()
        vlm = _labelled_windows(StrategistDataset(train, self.history, self.stride))
        if not len(vlm):
            raise FinetuneError(
                f"--labels {self.data.labels}: no training second keeps a label (lower --min-confidence?)"
            )
        self.counts = {"seconds": _labelled_seconds(train), "vlm_windows": len(vlm), "replay_windows": 0}
        if not self.replay_labels or self.replay_fraction == 0:
            return vlm
        assert self._paths is not None, "episodes() sets the paths"
        replay_cfg = DataConfig(data=self.data.data, labels=self.replay_labels,
                                label_tolerance_s=self.data.label_tolerance_s)  # fmt: skip
        source = label_source(replay_cfg.labels)
        episodes = [
            load_episode(p, source, replay_cfg.label_tolerance_s, self.iou_min) for p in self._paths[0]
        ]
        replay = _labelled_windows(StrategistDataset(episodes, self.history, self.stride))
        n = min(len(replay), max(1, round(self.replay_fraction * len(vlm))))
        chosen = np.sort(np.random.default_rng(self.seed).choice(len(replay), n, replace=False))
        self.counts["replay_windows"] = n
        return ConcatDataset([vlm, Subset(replay, chosen.tolist())])

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "finetuned_from": str(self.base), "replay_labels": self.replay_labels,
                "replay_fraction": self.replay_fraction}  # fmt: skip


class FinetuneTacticianTask(_VLMEpisodes, TacticianTask):
    """The Tactician task starting from trained weights, on VLM target labels, goals from `strategist`."""

    name = "tactician"

    def __init__(self, cfg: FinetuneRun, base: Path, strategist: Path) -> None:
        self.base = base
        config = load_model(base, "Tactician").config
        data = _data_config(cfg, cfg.label_spec)
        super().__init__(TacticianRun(data=data, model=config, hz=cfg.tactician_hz, strategist=strategist))
        if self.model_cfg.goal_dim != config.goal_dim:
            raise FinetuneError(
                f"{base}: the Tactician's goal_dim {config.goal_dim} does not fit the Strategist's"
            )
        self.model_cfg = config
        self.source = vlm_source(cfg.label_spec)

    def build_model(self) -> nn.Module:
        return load_model(self.base, "Tactician")


def _data_config(cfg: FinetuneRun, labels: str) -> DataConfig:
    return DataConfig(
        data=cfg.data,
        val_data=cfg.val_data,
        val_fraction=cfg.val_fraction,
        split_seed=cfg.split_seed,
        labels=labels,
        label_tolerance_s=cfg.label_tolerance_s,
    )


def _labelled_windows(dataset: StrategistDataset) -> StrategistDataset:
    """Drop windows without a single scored label (all filtered out): they would give an empty loss."""
    dataset.windows = [
        w for i, w in enumerate(dataset.windows) if (dataset[i]["modes"] != IGNORE_INDEX).any()
    ]
    return dataset


def _labelled_seconds(episodes: list[EpisodeArrays]) -> int:
    return int(sum((e.summary_mode != IGNORE_INDEX).sum() for e in episodes))


# ------------------------------------------------------------------------------------------------ held-out


def heldout_strategist(
    task: StrategistTask, model: nn.Module, paths: list[Path], spec: str
) -> dict[str, Any]:
    """Mode metrics of `model` on the episodes `paths` against the labels `spec`."""
    source = label_source(spec)
    episodes = [load_episode(p, source, task.data.label_tolerance_s) for p in paths]
    dataset = StrategistDataset(episodes, task.history, task.stride)
    loader = DataLoader(dataset, batch_size=16, shuffle=False, collate_fn=collate_strategist)
    metrics = evaluate(task, model, loader)
    return {"mode_acc": metrics["mode_acc"], "mode_f1_macro": metrics["mode_f1_macro"],
            "seconds": _labelled_seconds(episodes)}  # fmt: skip


def heldout_tactician(
    cfg: FinetuneRun, tactician: Path, strategist: Path, paths: list[Path], spec: str
) -> dict[str, Any]:
    """Target accuracy of a Tactician (goals from `strategist`) on `paths` against the labels `spec`."""
    base = load_model(tactician, "Tactician")
    data = _data_config(cfg, spec)
    task = TacticianTask(
        TacticianRun(data=data, model=base.config, hz=cfg.tactician_hz, strategist=strategist)
    )
    source = vlm_source(spec) if spec.startswith(cfg.labels_name) else label_source(spec)
    episodes = [load_episode(p, source, data.label_tolerance_s, task.iou_min) for p in paths]
    task._prepare(episodes)  # the documented hook: goals from the Strategist
    dataset = TacticianDataset(episodes, cfg.tactician_hz)
    if not len(dataset):
        return {"target_acc": None, "decisions": 0}
    loader = DataLoader(dataset, batch_size=64, shuffle=False, collate_fn=task.collate)
    return {"target_acc": evaluate(task, base, loader)["target_acc"], "decisions": len(dataset)}


def reference_for(cfg: FinetuneRun, paths: list[Path]) -> str:
    """--reference-labels when every held-out episode has that file, else the VLM labels themselves."""
    name = cfg.reference_labels.partition(":")[0]
    if name == "heuristic" or all((p / "labels" / f"{name}.parquet").is_file() for p in paths):
        return cfg.reference_labels
    log.warning("held-out episodes lack labels/%s.parquet: reporting against the VLM labels", name)
    return cfg.label_spec
