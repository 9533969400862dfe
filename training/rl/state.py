"""Where an RL run stands and how it is kept: the base bundle checked, the per-iteration checkpoint (weights,
optimizer, RNG, iteration, KL weight, history) for exact resume, and the finished bundle.

    OUT/runs/rl/config.json  the resolved RLConfig     OUT/runs/rl/last/  training/checkpoint.py's folder
    OUT/runs/rl/tb/          TensorBoard               OUT/bundle.json, executor/, ...  the new bundle
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

from bot.errors import PolicyError
from bot.policy.bundle import (
    BUNDLE_FILE,
    PolicyBundle,
    bundle_inference,
    load_bundle_for,
    read_bundle_json,
    write_bundle_json,
)
from models.io import save_model
from training.checkpoint import (
    TrainerState,
    capture_rng,
    find_checkpoint,
    load_checkpoint,
    read_config,
    restore_rng,
    save_checkpoint,
    versions,
)
from training.errors import CheckpointError
from training.rl.config import RLConfig
from training.rl.policy import ActorCritic

log = logging.getLogger(__name__)

GAME = "arena"
RESUMABLE = {"iterations", "progress", "tensorboard", "threads", "max_skipped"}  # may change on resume


@dataclass
class RunState:
    """The loop's own state, saved in the checkpoint's config.json ("rl")."""

    iteration: int = 0  # iterations finished
    kl_coef: float = 0.0  # the KL weight of the next iteration
    optimizer_steps: int = 0
    skipped_updates: int = 0  # iterations whose update was skipped (non-finite reward or advantage)
    skipped_in_row: int = 0
    skipped_steps: int = 0  # minibatch steps skipped (non-finite loss or gradient)
    frames: int = 0  # game frames played
    history: list[dict[str, float]] = field(default_factory=list)  # per iteration: credits, deaths, ...


def load_arena_bundle(folder: Path) -> PolicyBundle:
    """The base bundle; PolicyError when it is made for another game or exported to ONNX."""
    bundle = load_bundle_for(folder, GAME)  # pilot train rl plays the Arena only
    if bundle.meta.get("runtime", "torch") != "torch":
        raise PolicyError(f"{folder}: an exported ({bundle.meta['runtime']}) bundle; train the torch one")
    return bundle


def frame_size(bundle: PolicyBundle, cfg: RLConfig) -> tuple[int, int]:
    """--width/--height, else the bundle's detector's frame size, else the profile's window size."""
    if cfg.width:
        return cfg.width, cfg.height
    if bundle.detector_path is not None and (bundle.detector_path / "config.json").is_file():
        size = json.loads((bundle.detector_path / "config.json").read_text()).get("frame_size")
        if isinstance(size, list) and len(size) == 2:
            return int(size[0]), int(size[1])
    return tuple(bundle.profile.window.size)  # type: ignore[return-value]


def config_json(cfg: RLConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def check_same_run(cfg: RLConfig, run_dir: Path) -> None:
    """Save the resolved config, or on resume check it matches the saved one (except RESUMABLE fields)."""
    path = run_dir / "config.json"
    ours = config_json(cfg)
    if path.is_file():
        saved = json.loads(path.read_text())
        for key in sorted(set(ours) | set(saved)):
            if key not in RESUMABLE and ours.get(key) != saved.get(key):
                raise CheckpointError(
                    f"{cfg.out}: holds a run with --{key.replace('_', '-')} {saved.get(key)!r}, "
                    f"not {ours.get(key)!r}; use another --out or the same settings"
                )
    elif (cfg.out / BUNDLE_FILE).exists():
        raise CheckpointError(f"--out {cfg.out}: already holds a bundle that no RL run of it wrote")
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ours, indent=2, sort_keys=True) + "\n")


def save(run_dir: Path, model: ActorCritic, optimizer: torch.optim.Optimizer, state: RunState) -> None:
    """The checkpoint of a finished iteration (atomic: training/checkpoint.py)."""
    trainer = TrainerState(
        step=state.optimizer_steps, epoch=state.iteration, skipped_steps=state.skipped_steps,
        rng=[capture_rng()],
    )  # fmt: skip
    save_checkpoint(run_dir / "last", model, None, optimizer, trainer, {"rl": dataclasses.asdict(state)})


def resume(run_dir: Path, model: ActorCritic, optimizer: torch.optim.Optimizer, kl_coef: float) -> RunState:
    """The saved RunState with weights, optimizer and RNGs restored; a fresh one when there is none."""
    folder = find_checkpoint(run_dir)
    if folder is None:
        return RunState(kl_coef=kl_coef)
    trainer = load_checkpoint(folder, model, None, optimizer)
    saved = read_config(folder).get("rl")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{folder / 'config.json'}: the 'rl' state is missing")
    if trainer.rng:
        restore_rng(trainer.rng[0])
    state = RunState(**saved)
    log.info("resuming %s after iteration %d (KL weight %.4g)", run_dir, state.iteration, state.kl_coef)
    return state


def write_bundle(cfg: RLConfig, model: ActorCritic, state: RunState) -> Path:
    """OUT as a complete bundle: a copy of --policy (not its runs/) with the trained Executor."""
    base = read_bundle_json(cfg.policy / BUNDLE_FILE)
    executor_dir = base["models"]["executor"]
    for item in cfg.policy.iterdir():
        if item.name in ("runs", BUNDLE_FILE, executor_dir):
            continue
        target = cfg.out / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
    save_model(cfg.out / executor_dir, model.executor)
    record = {
        "base": str(cfg.policy), "train": cfg.train, "iterations": state.iteration, "frames": state.frames,
        "seeds": [cfg.seed_base, cfg.seed_base + state.iteration * cfg.episodes - 1],
        "skipped_updates": state.skipped_updates, "history": state.history, "config": config_json(cfg),
    }  # fmt: skip
    content = {**base, "rl": record, "versions": versions()}
    write_bundle_json(cfg.out, content, bundle_inference(base, cfg.policy / BUNDLE_FILE))
    log.info("RL-tuned policy bundle written to %s", cfg.out)
    return cfg.out
