"""`finetune_vlm`: fine-tune a policy bundle's Strategist (and optionally its Tactician) on VLM labels.

    BUNDLE/strategist ──────────────────────────────────────────────────────┐ (weights and normalisation kept)
    <data>/<episode>/labels/<labels>.parquet, confidence >= min ──▶ windows ─┼─▶ training/loop.py ──▶ BUNDLE2
    original labels (bundle.json data.labels) of the same training episodes ─┘    (low LR, label smoothing)
        ──▶ replay windows, `replay_fraction` of the VLM windows, so what the policy knew is not forgotten
    held-out episodes: mode accuracy before and after, against labels/expert.parquet (the Arena's ground
    truth) when every held-out episode has it, else against the VLM labels (the report names which)

BUNDLE2 is a complete bundle: a copy of BUNDLE (detector, executor, ... ; not its runs/) with the fine-tuned
model(s) in place, bundle.json's metrics updated and a "finetuned" record (labels, confidence threshold,
counts, held-out accuracy before and after, training settings, the base bundle). The training run itself
lives in BUNDLE2/runs/<model>-finetune/ (resumable with --resume). Models not fine-tuned (the Executor, the
Tactician without --tactician) were trained on the base Strategist's goal embedding, which fine-tuning moves:
the record lists them as "unchanged_models" (retrain them with `train_executor --strategist BUNDLE2/...`).

VLM target ids are track ids (the VLM chose among the tracked objects listed in its prompt), so the label
file says so (bot/recordings/episode.py write_labels), and the dataset maps them onto slots by track id.

Held-out split: `--val-data`, else the same seeded `--val-fraction` of the episodes as the training entry
points (training/datasets.py `split_episodes`), so fine-tuning on the data the bundle was trained on holds out
the same episodes the bundle was validated on.

Examples (after `pilot label --data data/recordings/arena --model qwen2.5vl:7b ...`):

    finetune_vlm --policy data/pretrained/arena --data data/recordings/arena --labels vlm-qwen2.5vl-7b \\
        --out data/policies/arena-vlm
    finetune_vlm --policy data/pretrained/arena --data data/recordings/arena --labels vlm-qwen2.5vl-7b \\
        --out data/policies/arena-vlm --min-confidence 0.8 --replay-fraction 0.5 --train.lr 5e-5 --tactician
    finetune_vlm --policy data/policies/human --data data/recordings/darkorbit --labels vlm-gpt-4o-mini \\
        --out data/policies/human-vlm --replay-labels heuristic --reference-labels vlm-gpt-4o-mini
    finetune_vlm ... --resume    # continue an interrupted fine-tuning run in <out>/runs/
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from bot.errors import PilotError
from bot.policy.runner import read_bundle_json
from models.errors import ConfigError, ModelsError
from models.io import load_model, save_model
from models.strategist import IGNORE_INDEX
from training.checkpoint import find_checkpoint, versions
from training.datasets import (
    F_SUM,
    DataConfig,
    DatasetError,
    EpisodeArrays,
    FileLabels,
    StrategistDataset,
    TacticianDataset,
    collate_strategist,
    label_source,
    load_episode,
    split_episodes,
)
from training.entry import ConfigFileError, _config_path, apply_overrides, load_config_file, setup_logging
from training.loop import TrainConfig, evaluate, run_training
from training.policy import BUNDLE_FILE
from training.tasks import StrategistTask, TacticianTask

log = logging.getLogger(__name__)

RUNS = "runs"


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
        # name -> (upper bound, whether the bound itself is allowed)
        bounds = {
            "min_confidence": (1.0, True),
            "replay_fraction": (100.0, True),
            "val_fraction": (1.0, False),
            "label_smoothing": (1.0, False),
        }
        for name, (high, closed) in bounds.items():
            value = getattr(self, name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or value < 0 or value > high or (value == high and not closed):
                bound = f"<= {high:g}" if closed else f"< {high:g}"
                raise FinetuneError(f"FinetuneRun.{name}: expected a number >= 0 and {bound}, got {value!r}")
        if isinstance(self.history, bool) or not isinstance(self.history, int) or self.history < 1:
            raise FinetuneError(f"FinetuneRun.history: expected an int >= 1, got {self.history!r}")
        if (
            isinstance(self.stride, bool)
            or not isinstance(self.stride, int)
            or not 0 <= self.stride <= self.history
        ):
            raise FinetuneError(
                f"FinetuneRun.stride: expected 0..history ({self.history}), got {self.stride!r}"
            )

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


# ------------------------------------------------------------------------------------------------ bundle


def read_bundle(folder: Path) -> dict[str, Any]:
    """bundle.json of a policy bundle (bot/policy/runner.py checks format, version, obs_spec), with a
    strategist."""
    path = folder / BUNDLE_FILE
    bundle = read_bundle_json(path)
    if "strategist" not in bundle.get("models", {}):
        raise FinetuneError(f"{path}: the bundle has no strategist model to fine-tune")
    return bundle


def model_dir(bundle_dir: Path, bundle: dict[str, Any], name: str) -> Path:
    folder = bundle_dir / bundle.get("models", {}).get(name, name)
    if not (folder / "config.json").is_file():
        raise FinetuneError(f"{folder}: missing model folder of the bundle's {name}")
    return folder


def trained_folder(run_dir: Path) -> Path:
    """best/ of a run (it validated), else last/."""
    folder = find_checkpoint(run_dir, "best") or find_checkpoint(run_dir, "last")
    if folder is None:
        raise FinetuneError(f"{run_dir}: no checkpoint after training")
    return folder


def write_finetuned_bundle(
    cfg: FinetuneRun, bundle: dict[str, Any], models: dict[str, Path], record: dict
) -> Path:
    """Copy the base bundle into cfg.out (not its runs/), put the fine-tuned models in, update bundle.json."""
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    skip = {RUNS, BUNDLE_FILE, *(bundle["models"].get(name, name) for name in models)}
    for item in sorted(cfg.policy.iterdir()):
        if item.name in skip or item.name.endswith(".tmp"):
            continue
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        if item.is_dir():
            shutil.copytree(item, target)
        else:
            shutil.copy2(item, target)
    metrics = dict(bundle.get("metrics", {}))
    for name, folder in models.items():
        save_model(out / bundle["models"].get(name, name), load_model(folder))
        state = json.loads((folder / "trainer_state.json").read_text())
        metrics[name] = {k: None if v != v else v for k, v in state.get("last_metrics", {}).items()}
        metrics[name]["checkpoint"] = str(folder)
    new = {**bundle, "metrics": metrics, "finetuned": record, "versions": versions()}
    tmp = out / (BUNDLE_FILE + ".tmp")
    tmp.write_text(json.dumps(new, indent=2, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(out / BUNDLE_FILE)
    log.info("fine-tuned policy bundle written to %s", out)
    return out


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
        super().__init__(
            data, config, cfg.history, cfg.stride or max(1, cfg.history // 2), cfg.label_smoothing
        )
        self.model_cfg = config  # exactly the trained model's
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
        super().__init__(_data_config(cfg, cfg.label_spec), config, cfg.tactician_hz, strategist=strategist)
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
    task = TacticianTask(data, base.config, cfg.tactician_hz, strategist=strategist)
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


# ------------------------------------------------------------------------------------------------ run


def _replay_labels(cfg: FinetuneRun, bundle: dict[str, Any]) -> str | None:
    spec = cfg.replay_labels or bundle.get("data", {}).get("labels") or ""
    if spec in ("", "none") or cfg.replay_fraction == 0:
        return None
    label_source(spec)  # validates
    return spec


def _check_out(cfg: FinetuneRun) -> None:
    if cfg.out.resolve() == cfg.policy.resolve():
        raise FinetuneError(f"--out {cfg.out}: expected a new folder, not the base bundle")
    if (cfg.out / BUNDLE_FILE).exists() and not cfg.resume:
        raise FinetuneError(f"--out {cfg.out}: already holds a bundle; choose a new folder or pass --resume")


def _stage_train(train: TrainConfig, cfg: FinetuneRun, name: str) -> TrainConfig:
    train.out_dir = cfg.out / RUNS / f"{name}-finetune"
    train.resume = "auto" if cfg.resume else ""
    return train


def _fit_batch(train: TrainConfig, size: int) -> None:
    if size < train.batch_size:
        log.info("batch_size %d -> %d: only %d training windows", train.batch_size, size, size)
        train.batch_size = max(1, size)


def finetune_strategist(cfg: FinetuneRun, bundle: dict[str, Any], record: dict[str, Any]) -> Path | None:
    """Fine-tune the Strategist; fills `record`; returns its checkpoint folder (None if training failed)."""
    base = model_dir(cfg.policy, bundle, "strategist")
    replay = _replay_labels(cfg, bundle)
    task = FinetuneStrategistTask(cfg, base, replay)
    train_paths, val_paths = split_episodes(task.data)
    if not val_paths:
        raise FinetuneError("no held-out episodes: pass --val-data or a --val-fraction > 0")
    record["counts"] = label_counts(train_paths, cfg.labels_name, float(task.source.min_confidence))
    reference = reference_for(cfg, val_paths)
    before = heldout_strategist(task, load_model(base, "Strategist"), val_paths, reference)
    train = _stage_train(cfg.train, cfg, "strategist")
    _fit_batch(train, len(task.train_dataset()))
    if run_training(task, train):
        return None
    folder = trained_folder(train.out_dir)
    after = heldout_strategist(task, load_model(folder, "Strategist"), val_paths, reference)
    record["counts"] |= {
        **task.counts,
        "train_episodes": len(train_paths),
        "heldout_episodes": len(val_paths),
    }
    record["replay_labels"] = replay
    record["heldout"] = {"reference": reference, "episodes": [p.name for p in val_paths],
                         "strategist": {"before": before, "after": after}}  # fmt: skip
    record["train"] = {"strategist": train.to_json()}
    return folder


def finetune_tactician(
    cfg: FinetuneRun, bundle: dict[str, Any], strategist: Path, record: dict[str, Any]
) -> Path | None:
    """Fine-tune the Tactician on the VLM targets with goals from the fine-tuned Strategist."""
    base = model_dir(cfg.policy, bundle, "tactician")
    task = FinetuneTacticianTask(cfg, base, strategist)
    _, val_paths = split_episodes(task.data)
    reference = record["heldout"]["reference"]
    old_strategist = model_dir(cfg.policy, bundle, "strategist")
    before = heldout_tactician(cfg, base, old_strategist, val_paths, reference)
    train = _stage_train(cfg.tactician_train, cfg, "tactician")
    _fit_batch(train, len(task.train_dataset()))
    if run_training(task, train):
        return None
    folder = trained_folder(train.out_dir)
    after = heldout_tactician(cfg, folder, strategist, val_paths, reference)
    record["heldout"]["tactician"] = {"before": before, "after": after}
    record["train"]["tactician"] = train.to_json()
    return folder


def run_finetune(cfg: FinetuneRun) -> int:
    """Fine-tune, then write the new bundle and print the before/after table; returns an exit code."""
    if not cfg.labels:
        raise FinetuneError(
            "--labels: expected the labels file name, e.g. vlm-qwen2.5vl-7b (see pilot label)"
        )
    bundle = read_bundle(cfg.policy)
    _check_out(cfg)
    record: dict[str, Any] = {
        "labels": cfg.labels_name,
        "min_confidence": float(vlm_source(cfg.label_spec).min_confidence),
        "replay_fraction": cfg.replay_fraction,
        "label_smoothing": cfg.label_smoothing,
        "base": str(cfg.policy),
        "base_finetuned": bundle.get("finetuned"),
        "data": str(cfg.data),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    models: dict[str, Path] = {}
    strategist = finetune_strategist(cfg, bundle, record)
    if strategist is None:
        return 1
    models["strategist"] = strategist
    if cfg.tactician:
        tactician = finetune_tactician(cfg, bundle, strategist, record)
        if tactician is None:
            return 1
        models["tactician"] = tactician
    record["models"] = sorted(models)
    stale = sorted(set(bundle["models"]) - set(models) - {"detector"})
    if stale:
        # The goal embedding feeds the mode head, so it moves with the modes; downstream models saw the old
        # goals. Not measured here how much live play suffers from that.
        log.warning("%s keep(s) the goals of the base Strategist (not fine-tuned here)", ", ".join(stale))
    record["unchanged_models"] = stale
    write_finetuned_bundle(cfg, bundle, models, record)
    print(format_report(record))
    return 0


def format_report(record: dict[str, Any]) -> str:
    """The before/after lines printed at the end."""
    held, counts = record["heldout"], record["counts"]
    lines = [
        f"labels {record['labels']} (confidence >= {record['min_confidence']:g}): {counts['labels_kept']} of "
        f"{counts['labels']} kept, {counts.get('seconds', 0)} training seconds, "
        f"{counts.get('vlm_windows', 0)} VLM + {counts.get('replay_windows', 0)} replay windows "
        f"({record['replay_labels'] or 'no replay'})",
        f"held-out: {len(held['episodes'])} episode(s), reference labels {held['reference']}",
    ]
    s = held["strategist"]
    lines.append(f"  strategist mode_acc {s['before']['mode_acc']:.3f} -> {s['after']['mode_acc']:.3f}   "
                 f"macro F1 {s['before']['mode_f1_macro']:.3f} -> {s['after']['mode_f1_macro']:.3f}   "
                 f"({s['after']['seconds']} s)")  # fmt: skip
    if "tactician" in held:
        t = held["tactician"]
        before, after = _fmt(t["before"]["target_acc"]), _fmt(t["after"]["target_acc"])
        lines.append(f"  tactician target_acc {before} -> {after}   ({t['after']['decisions']} decisions)")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def parse(argv: list[str] | None) -> FinetuneRun:
    """defaults < --config file < flags, as the training entry points (training/entry.py)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    default = FinetuneRun()
    path = _config_path(argv)
    if path is not None and "--help" not in argv and "-h" not in argv:
        default = apply_overrides(default, load_config_file(path), f"--config {path}")
    return tyro.cli(FinetuneRun, args=argv, default=default, prog="finetune_vlm", description=__doc__)


def main(argv: list[str] | None = None) -> int:
    """`finetune_vlm`: see the module docstring. Exit 0 done, 1 error, 2 bad --config file."""
    setup_logging()
    try:
        cfg = parse(argv)
    except ConfigFileError as exc:
        log.error("%s", exc)
        return 2
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        return run_finetune(cfg)
    except (DatasetError, PilotError, ModelsError, ConfigError, FileNotFoundError) as exc:
        log.error("%s", str(exc).splitlines()[0])
        return 1


if __name__ == "__main__":
    sys.exit(main())
