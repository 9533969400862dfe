"""`pilot train rl`: PPO fine-tuning of a policy bundle in the Arena; writes a complete bundle to --out.

Examples:
    pilot train rl --policy data/pretrained/arena --out data/policies/arena-rl
    pilot train rl --policy data/pretrained/arena --out /tmp/rl --train executor --iterations 100
    pilot train rl --policy data/pretrained/arena --out /tmp/rl --noise.miss-rate 0.15 --kl-coef 0.5
    pilot train rl ... (the same command again)   # resumes exactly after Ctrl+C
    pilot eval --policy data/policies/arena-rl --episodes 18 --seconds 60
"""

from __future__ import annotations

import copy
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bot.errors import PilotError
from bot.logs import setup_logging
from bot.perception.pipeline import Perception
from training.cli import ConfigFileError, parse
from training.distributed import StopOnSignal
from training.errors import TrainingError
from training.rl.config import RLConfig
from training.rl.env import ArenaGame
from training.rl.policy import ActorCritic
from training.rl.ppo import NonFiniteBatch, build_batch, ppo_update
from training.rl.rollout import Episode, RecordingRunner, play_episode
from training.rl.state import (
    RunState,
    check_same_run,
    frame_size,
    load_arena_bundle,
    resume,
    save,
    write_bundle,
)

log = logging.getLogger(__name__)

INTERRUPTED = 130


class TooManySkipped(TrainingError):
    """Updates were skipped `max_skipped` iterations in a row."""


@dataclass
class Setup:
    """Everything one run holds."""

    cfg: RLConfig
    run_dir: Path
    model: ActorCritic
    reference: Any  # the cloned Executor, frozen
    optimizer: torch.optim.Optimizer
    game: ArenaGame
    perception: Perception
    runner: RecordingRunner
    state: RunState


def build_optimizer(model: ActorCritic, cfg: RLConfig) -> torch.optim.AdamW:
    """AdamW, two named groups (the checkpoint names optimizer tensors by them): policy, value."""
    groups = []
    for named, lr in ((model.policy_parameters(), cfg.lr), (model.value_parameters(), cfg.value_lr)):
        groups.append({"params": [p for _, p in named], "param_names": [n for n, _ in named], "lr": lr})
    return torch.optim.AdamW(groups, weight_decay=0.0)


def setup(cfg: RLConfig) -> Setup:
    bundle = load_arena_bundle(cfg.policy)
    run_dir = cfg.out / "runs" / "rl"
    check_same_run(cfg, run_dir)
    reference = copy.deepcopy(bundle.executor).requires_grad_(False)
    torch.manual_seed(cfg.seed)  # the value head's initial weights
    model = ActorCritic(bundle.executor, cfg.train, cfg.value_hidden)
    optimizer = build_optimizer(model, cfg)
    state = resume(run_dir, model, optimizer, cfg.kl_coef)
    size = frame_size(bundle, cfg)
    game = ArenaGame(bundle.profile, size, cfg.seconds, cfg.noise, (cfg.death_penalty, cfg.reward_scale))
    perception = Perception(bundle.profile, None, size, game.fps)  # type: ignore[arg-type]  # detections given
    runner = RecordingRunner(bundle, model.executor, cfg.segment, cfg.seconds)
    n_policy = sum(p.numel() for _, p in model.policy_parameters())
    log.info(
        "pilot train rl: %s -> %s, training %s (%d parameters), frames %dx%d, seeds from %d, config %s",
        cfg.policy, cfg.out, cfg.train, n_policy, *size, cfg.seed_base, cfg,
    )  # fmt: skip
    return Setup(cfg, run_dir, model, reference, optimizer, game, perception, runner, state)


def collect(s: Setup, iteration: int, stop: Any, bar: Any = None) -> list[Episode] | None:
    """The iteration's episodes (None when interrupted)."""
    episodes = []
    tick = bar.update if bar is not None else None
    for seed in s.cfg.episode_seeds(iteration):
        sample_seed = s.cfg.seed * 1_000_003 + seed
        episode = play_episode(s.game, s.perception, s.runner, seed, sample_seed, stop, tick)
        if episode is None:
            return None
        episodes.append(episode)
    return episodes


def update(s: Setup, iteration: int, episodes: list[Episode]) -> dict[str, float]:
    """Build the batch and run PPO; a non-finite batch is skipped, counted and logged."""
    cfg, state = s.cfg, s.state
    try:
        batch = build_batch(s.model, s.reference, episodes, cfg)
    except NonFiniteBatch as exc:
        state.skipped_updates += 1
        state.skipped_in_row += 1
        log.warning(
            "iteration %d: update skipped (%s); %d skipped so far", iteration + 1, exc, state.skipped_updates
        )
        if state.skipped_in_row >= cfg.max_skipped:
            raise TooManySkipped(
                f"{state.skipped_in_row} updates in a row skipped for non-finite values"
            ) from None
        return {"skipped": 1.0}
    state.skipped_in_row = 0
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + iteration)
    policy_on = iteration >= cfg.critic_warmup
    stats = ppo_update(s.model, s.optimizer, batch, cfg, state.kl_coef, policy_on, generator)
    state.optimizer_steps += int(stats["steps"])
    state.skipped_steps += int(stats["skipped_steps"])
    return {**stats, "skipped": 0.0}


def iteration_record(episodes: list[Episode], stats: dict[str, float], rollout_s: float, update_s: float,
                     kl_coef: float) -> dict[str, float]:  # fmt: skip
    frames = sum(len(e) for e in episodes)
    return {
        "credits": sum(e.score["credits"] for e in episodes) / len(episodes),
        "deaths": sum(e.score["deaths"] for e in episodes) / len(episodes),
        "return": sum(sum(e.reward) for e in episodes) / len(episodes),
        "steps_per_s": frames / rollout_s, "rollout_s": rollout_s, "update_s": update_s,
        "kl_coef": kl_coef, **stats,
    }  # fmt: skip


def log_iteration(s: Setup, iteration: int, record: dict[str, float], writer: Any, bar: Any) -> None:
    names = {"credits": "rollout", "deaths": "rollout", "return": "rollout", "steps_per_s": "perf",
             "rollout_s": "perf", "update_s": "perf"}  # fmt: skip
    if writer is not None:
        for key, value in record.items():
            writer.add_scalar(f"{names.get(key, 'train')}/{key}", value, iteration)
        writer.add_scalar("train/skipped_updates", s.state.skipped_updates, iteration)
        writer.flush()
    running = sum(h["credits"] or 0.0 for h in s.state.history[-10:]) / len(s.state.history[-10:])
    log.info(
        "iteration %d/%d: credits %.0f (last 10: %.0f), deaths %.2f, kl_ref %.4f (weight %.3g), "
        "%.0f steps/s, update %.1f s", iteration + 1, s.cfg.iterations, record["credits"], running,
        record["deaths"], record.get("kl_ref", float("nan")), record["kl_coef"], record["steps_per_s"],
        record["update_s"],
    )  # fmt: skip
    if bar is not None:
        bar.set_postfix(it=iteration + 1, credits=f"{record['credits']:.0f}", last10=f"{running:.0f}")


def _writer(s: Setup) -> Any:
    if not s.cfg.tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(s.run_dir / "tb"), purge_step=s.state.iteration)


def _bar(s: Setup) -> Any:
    if not s.cfg.progress:
        return None
    from tqdm import tqdm

    frames = s.cfg.episodes * round(s.cfg.seconds * s.game.fps)  # per iteration
    return tqdm(total=s.cfg.iterations * frames, initial=s.state.iteration * frames, unit="frame", desc="rl")


def train(cfg: RLConfig) -> int:
    """Run (or resume) the iterations, then write the bundle; returns an exit code."""
    s = setup(cfg)
    writer, bar = _writer(s), _bar(s)
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with StopOnSignal() as stop, logging_redirect_tqdm() if bar is not None else nullcontext():
            for iteration in range(s.state.iteration, cfg.iterations):
                if not run_iteration(s, iteration, stop, writer, bar):
                    log.error(
                        "interrupted in iteration %d; the same command resumes it exactly", iteration + 1
                    )
                    return INTERRUPTED
    finally:
        for closing in (writer, bar):
            if closing is not None:
                closing.close()
    write_bundle(cfg, s.model, s.state)
    return 0


def run_iteration(s: Setup, iteration: int, stop: Any, writer: Any, bar: Any) -> bool:
    """Play, update, checkpoint one iteration; False when interrupted (nothing of it is kept)."""
    mark = time.perf_counter()
    episodes = collect(s, iteration, stop, bar)
    if episodes is None:
        return False
    rollout_s = time.perf_counter() - mark
    mark = time.perf_counter()
    stats = update(s, iteration, episodes)
    update_s = time.perf_counter() - mark
    record = iteration_record(episodes, stats, rollout_s, update_s, s.state.kl_coef)
    s.state.history.append({k: _finite(record[k]) for k in ("credits", "deaths", "return")})
    s.state.iteration = iteration + 1
    s.state.frames += sum(len(e) for e in episodes)
    s.state.kl_coef = s.cfg.next_kl(s.state.kl_coef, iteration)
    save(s.run_dir, s.model, s.optimizer, s.state)
    log_iteration(s, iteration, record, writer, bar)
    return True


def _finite(value: float) -> float | None:
    """JSON holds no NaN: a non-finite number is kept as null."""
    return value if math.isfinite(value) else None


def main(argv: list[str] | None = None) -> int:
    """`pilot train rl ...`; bad input is one line and a non-zero exit."""
    setup_logging()
    try:
        cfg = parse(RLConfig, argv, "pilot train rl", __doc__)
    except (ConfigFileError, ValueError) as exc:
        log.error("%s", str(exc).splitlines()[0])
        return 2
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return train(cfg)
    except (PilotError, TrainingError) as exc:
        log.error("%s", str(exc).splitlines()[0])
        return 1
