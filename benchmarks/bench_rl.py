"""Speed of `pilot train rl` on this machine: one episode played as training plays it, timed per stage (the
Arena's simulation and drawing, ground truth through the noise model, perception, the policy), then the
PPO update of that episode for each choice of trained parameters (heads, executor).

    .venv/bin/python -m benchmarks.bench_rl --policy data/pretrained/arena --seconds 30 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import add_common_args, apply_threads, format_table, machine_summary
from bot.perception.pipeline import Perception
from training.rl.config import RLConfig
from training.rl.env import ArenaGame
from training.rl.policy import ActorCritic
from training.rl.ppo import build_batch, ppo_update
from training.rl.rollout import RecordingRunner
from training.rl.run import build_optimizer
from training.rl.state import frame_size, load_arena_bundle


def timed_episode(cfg: RLConfig, bundle: Any, model: ActorCritic) -> tuple[Any, dict[str, list[float]]]:
    """One episode with the loop of training/rl/rollout.py's play_episode, each stage timed (seconds)."""
    size = frame_size(bundle, cfg)
    game = ArenaGame(bundle.profile, size, cfg.seconds, cfg.noise, (cfg.death_penalty, cfg.reward_scale))
    perception = Perception(bundle.profile, None, size, game.fps)  # type: ignore[arg-type]
    runner = RecordingRunner(bundle, model.executor, cfg.segment, cfg.seconds)
    rng, times = np.random.default_rng(0), {k: [] for k in ("arena", "noise", "perception", "policy")}
    step = game.reset(cfg.seed_base)
    perception.reset()
    runner.begin(cfg.seed_base, 0)
    cursor, click = (0.5, 0.5), False
    while not step.done:
        marks = [time.perf_counter()]
        detections = game.detections(rng)
        marks.append(time.perf_counter())
        seen = perception.step(step.image, cursor, click, step.t, detections=detections)
        marks.append(time.perf_counter())
        action = runner.act(seen).action()
        marks.append(time.perf_counter())
        step = game.step(action)
        marks.append(time.perf_counter())
        runner.episode.reward.append(step.reward)
        cursor, click = (action["mouse"][0], action["mouse"][1]), bool(action["click"])
        for name, a, b in zip(("noise", "perception", "policy", "arena"), marks, marks[1:]):
            times[name].append(b - a)
    runner.episode.score = dict(step.score)
    game.close()
    return runner.episode, times


def update_seconds(cfg: RLConfig, bundle: Any, episode: Any, train: str) -> float:
    model = ActorCritic(copy.deepcopy(bundle.executor), train, cfg.value_hidden)
    reference = copy.deepcopy(bundle.executor).requires_grad_(False)
    optimizer = build_optimizer(model, cfg)
    mark = time.perf_counter()
    batch = build_batch(model, reference, [episode], cfg)
    ppo_update(model, optimizer, batch, cfg, cfg.kl_coef, True, torch.Generator().manual_seed(0))
    return time.perf_counter() - mark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policy", type=Path, default=Path("data/pretrained/arena"))
    parser.add_argument("--seconds", type=float, default=30.0, help="game seconds of the timed episode")
    add_common_args(parser)
    args = parser.parse_args(argv)
    load = apply_threads(args)
    cfg = RLConfig(policy=args.policy, out=Path("/nonexistent"), seconds=args.seconds)
    bundle = load_arena_bundle(args.policy)
    model = ActorCritic(copy.deepcopy(bundle.executor), "heads", cfg.value_hidden)
    episode, times = timed_episode(cfg, bundle, model)
    frames = len(episode)
    rows = [{"stage": k, "ms_per_frame": 1000 * float(np.mean(v))} for k, v in times.items()]
    total = sum(sum(v) for v in times.values())
    rows.append(
        {"stage": "total (steps/s)", "ms_per_frame": 1000 * total / frames, "steps_per_s": frames / total}
    )
    for train in ("heads", "executor"):
        seconds = update_seconds(cfg, bundle, episode, train)
        stage = f"update {train} ({cfg.epochs} epochs)"
        rows.append({"stage": stage, "ms_per_frame": 1000 * seconds / frames, "seconds": seconds})
    size = frame_size(bundle, cfg)
    result = {"machine": machine_summary(), "load_1min": load, "frames": frames, "size": size, "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{frames} frames at {result['size'][0]}x{result['size'][1]}, load {load:.2f}")
        print(format_table(rows, ["stage", "ms_per_frame", "steps_per_s", "seconds"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
