"""`pilot train calibrate`: a bundle's held-key thresholds, fitted on held-out episodes.

Each key gets the probability threshold with the best F1 on held-out demonstrations, replayed through the
live PolicyRunner on their stored perception (keys never held keep 0.5). Why: docs/notes/training.md.

    pilot train calibrate --policy data/pretrained/naev --data data/naev/recordings/heldout
    pilot train calibrate --policy B --data HELDOUT --dry-run      # print the fit, leave the bundle alone

The fit (each key's F1 at 0.5 and at its threshold) is printed as JSON and saved in bundle.json ("inference":
{"held_thresholds"}, "calibration"). Choose the episodes from seeds no evaluation reports.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bot.errors import PilotError, PolicyError
from bot.logs import setup_logging
from bot.policy.bundle import PolicyBundle, write_bundle_json
from bot.policy.runner import PolicyRunner
from bot.recordings.episode import find_episodes, open_episode
from bot.recordings.perceived import load_perception
from models.executor import held_bits
from training.metrics import binary_f1

log = logging.getLogger(__name__)

GRID = np.round(np.linspace(0.05, 0.95, 19), 2)  # candidate thresholds


def replay_held(bundle: PolicyBundle, episode: Path) -> tuple[np.ndarray, np.ndarray]:
    """(p (T, n_held) float, held (T, n_held) bool): the bundle's held-key probabilities on each perceived
    frame of `episode`, stepped as live (the Strategist on each completed second, the Tactician at its rate),
    and the keys the demonstrator held there."""
    perceived = load_perception(episode)
    n_held = bundle.executor.config.n_held
    held_column = open_episode(episode).steps().column("held").to_numpy(zero_copy_only=False)
    frames = perceived["frame"]
    if len(frames) and int(frames.max()) >= len(held_column):
        raise PolicyError(
            f"{episode}: perception covers frame {int(frames.max())}, steps end at {len(held_column)}"
        )
    runner = PolicyRunner(bundle)
    probabilities = []
    for step in perceived.replay():
        runner.act(step)
        assert runner.held_logits is not None
        probabilities.append(torch.sigmoid(runner.held_logits[0]).numpy())
    truth = held_bits(torch.from_numpy(held_column[frames].astype(np.int64)), n_held).bool().numpy()
    return np.asarray(probabilities, np.float32).reshape(-1, n_held), truth


def f1(pred: np.ndarray, true: np.ndarray) -> float:
    return binary_f1(torch.from_numpy(pred), torch.from_numpy(true))


def fit_thresholds(p: np.ndarray, true: np.ndarray) -> tuple[list[float], list[dict[str, Any]]]:
    """Per key, the grid threshold with the best F1 (ties: the one nearest 0.5); 0.5 for keys never held.
    Returns the thresholds and per key {"threshold", "f1_at_0.5", "f1", "held_rate", "pred_rate"}."""
    thresholds, report = [], []
    for k in range(true.shape[1]):
        column, held = p[:, k], true[:, k]
        best = 0.5
        if held.any():
            scores = [(f1(column > t, held), -abs(t - 0.5), t) for t in GRID]
            best = float(max(scores)[2])
        thresholds.append(best)
        report.append(
            {
                "threshold": best,
                "f1_at_0.5": f1(column > 0.5, held),
                "f1": f1(column > best, held),
                "held_rate": float(held.mean()) if len(held) else 0.0,
                "pred_rate": float((column > best).mean()) if len(held) else 0.0,
            }
        )
    return thresholds, report


def calibrate(policy: Path, data: Path, dry_run: bool = False) -> dict[str, Any]:
    """Fit the held-key thresholds of the bundle `policy` on the perceived episodes under `data` and (unless
    `dry_run`) save them in its bundle.json; returns the fit."""
    bundle = PolicyBundle.load(policy)
    n_held = bundle.executor.config.n_held
    if n_held == 0:
        raise PolicyError(
            f"{policy}: the Executor has no held-key head (its game only taps keys): nothing to calibrate"
        )
    episodes = find_episodes(data)
    if not episodes:
        raise PolicyError(
            f"{data}: no episodes (expected folders with meta.json, perceived by `pilot perceive`)"
        )
    bundle.inference = replace(bundle.inference, held_thresholds=[])  # the fit sees the raw probabilities
    parts = [replay_held(bundle, episode) for episode in episodes]
    p, true = np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])
    thresholds, report = fit_thresholds(p, true)
    keys = [k.name for k in bundle.profile.keys][:n_held]
    fit = {
        "episodes": [str(e) for e in episodes],
        "frames": int(len(p)),
        "keys": {name: row for name, row in zip(keys, report, strict=True)},
        "held_thresholds": thresholds,
    }
    if not dry_run:
        inference = replace(bundle.inference, held_thresholds=thresholds)
        path = write_bundle_json(policy, {**bundle.meta, "calibration": fit}, inference)
        log.info("held-key thresholds %s saved in %s", thresholds, path)
    return fit


def main(argv: list[str] | None = None) -> int:
    """`pilot train calibrate ...`; bad input is one line and a non-zero exit."""
    parser = argparse.ArgumentParser(
        prog="pilot train calibrate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--policy", type=Path, required=True, help="the policy bundle folder to calibrate")
    parser.add_argument("--data", type=Path, required=True, help="held-out episodes with stored perception")
    parser.add_argument("--dry-run", action="store_true", help="print the fit; leave bundle.json as it is")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    setup_logging()
    torch.set_num_threads(max(1, args.threads))
    try:
        fit = calibrate(args.policy, args.data, args.dry_run)
    except PilotError as exc:
        log.error("%s", str(exc).splitlines()[0])
        return 1
    sys.stdout.write(json.dumps(fit, indent=2) + "\n")
    return 0
