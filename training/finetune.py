"""`finetune_vlm`: fine-tune a policy bundle's Strategist (and optionally its Tactician) on VLM labels.

Writes a new, complete bundle (--out) with the fine-tuned model(s) and a "finetuned" record holding the
held-out mode accuracy before and after; the training run lives in <out>/runs/ (--resume continues it).
Labels, replay and the held-out split: docs/notes/training.md. Examples (after `pilot label ...`):

    finetune_vlm --policy data/pretrained/arena --data data/recordings/arena --labels vlm-qwen2.5vl-7b \\
        --out data/policies/arena-vlm
    finetune_vlm ... --min-confidence 0.8 --replay-fraction 0.5 --train.lr 5e-5 --tactician
    finetune_vlm ... --resume    # continue an interrupted fine-tuning run in <out>/runs/
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from bot.errors import PilotError
from bot.logs import setup_logging
from bot.policy.bundle import BUNDLE_FILE, bundle_inference, read_bundle_json, write_bundle_json
from models.errors import ConfigError, ModelsError
from models.io import load_model, save_model
from training.checkpoint import find_checkpoint, versions
from training.cli import ConfigFileError, parse
from training.config import TrainConfig
from training.datasets import split_episodes
from training.errors import DatasetError
from training.finetune_tasks import (
    FinetuneError,
    FinetuneRun,
    FinetuneStrategistTask,
    FinetuneTacticianTask,
    heldout_strategist,
    heldout_tactician,
    label_counts,
    reference_for,
    vlm_source,
)
from training.labels import label_source
from training.loop import run_training

log = logging.getLogger(__name__)

RUNS = "runs"


# ------------------------------------------------------------------------------------------------ bundle


def read_bundle(folder: Path) -> dict[str, Any]:
    """bundle.json of a policy bundle (bot/policy/bundle.py checks format, version, obs_spec), with a
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
    write_bundle_json(out, new, bundle_inference(bundle, cfg.policy / BUNDLE_FILE))  # the base's settings
    log.info("fine-tuned policy bundle written to %s", out)
    return out


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


def main(argv: list[str] | None = None) -> int:
    """`finetune_vlm`: see the module docstring. Exit 0 done, 1 error, 2 bad --config file."""
    setup_logging()
    try:
        cfg = parse(FinetuneRun, argv, "finetune_vlm", __doc__)
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
