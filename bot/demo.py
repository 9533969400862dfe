"""`pilot demo`: the main job on the built-in Arena, what `scripts/demo.sh` runs for a newcomer.

The scripted expert plays the Arena headless; every frame, with the objects' boxes and ids, the expert's mode
and target, the HUD values and the cursor path drawn on it, goes to an overlay video. Then the expert and a
random policy play the same unseen seeds and a table compares their scores.

Examples:
    pilot demo                                   # 60 s overlay video + 3 seeds x 60 s comparison
    pilot demo --seconds 20 --eval-seeds 2 --eval-seconds 30
"""

from __future__ import annotations

import json
import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tyro

from bot.overlay import OverlayState, draw_overlay
from bot.report import format_table, mean_std
from bot.video import VideoWriter

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """The expert plays the Arena: an overlay video and an expert-vs-random score table."""

    out: Path = Path("data/runs/demo")  # folder for overlay.mp4 and summary.json
    seconds: float = 60.0  # game seconds shown in the overlay video
    seed: int = 0  # seed of the overlay episode
    width: int = 1280  # px
    height: int = 720  # px
    fps: int = 30  # frames per second
    eval_seeds: int = 3  # seeds for the expert-vs-random comparison (0 = skip it)
    eval_seconds: float = 60.0  # game seconds per comparison episode
    eval_seed: int = 1000  # first comparison seed (never used for demonstrations by default)

    def __post_init__(self) -> None:
        for name in ("seconds", "width", "height", "fps", "eval_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')}: expected > 0, got {getattr(self, name)}")
        if self.eval_seeds < 0:
            raise ValueError(f"--eval-seeds: expected >= 0, got {self.eval_seeds}")


def overlay_state(info: dict, labels: dict, cursor_path: deque) -> OverlayState:
    hud = info["hud"]
    return OverlayState(
        objects=info["objects"],
        target_id=labels.get("target_id"),
        mode=labels.get("mode"),
        hud={
            "hp": float(hud["hp_frac"]),
            "shield": float(hud["shield_frac"]),
            "credits": int(hud["credits"]),
        },
        cursor_path=list(cursor_path),
        status=f"t {info['time']:.1f}s  credits {info['score']['credits']}  deaths {info['score']['deaths']}",
    )


def write_overlay_video(cfg: DemoConfig) -> dict[str, Any]:
    """The expert plays one episode; each frame it saw, annotated with its decision, goes to overlay.mp4."""
    from arena.env import ArenaConfig, ArenaEnv
    from arena.expert import Expert, ExpertConfig

    env = ArenaEnv(ArenaConfig(width=cfg.width, height=cfg.height, fps=cfg.fps, episode_seconds=cfg.seconds))
    expert = Expert(ExpertConfig.matching(env.config, seed=cfg.seed))
    video = VideoWriter(cfg.out / "overlay.mp4", cfg.width, cfg.height, cfg.fps, crf=23)
    cursor_path: deque = deque(maxlen=12)
    frame, info = env.reset(seed=cfg.seed)
    expert.reset(cfg.seed)
    try:
        for _ in range(round(cfg.seconds * cfg.fps)):
            action, labels = expert.act(info)
            cursor_path.append(
                (float(action["mouse"][0]) * cfg.width, float(action["mouse"][1]) * cfg.height)
            )
            video.put(draw_overlay(frame, overlay_state(info, labels, cursor_path)))
            frame, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
    finally:
        video.close()
        env.close()
    return info["score"]


def compare_policies(cfg: DemoConfig) -> list[dict[str, Any]]:
    """Expert and random policy on the same seeds; one table row per policy."""
    from arena.baselines import RandomPolicy
    from arena.env import ArenaConfig, ArenaEnv
    from arena.expert import Expert, ExpertConfig
    from arena.rollout import play_episode

    seeds = range(cfg.eval_seed, cfg.eval_seed + cfg.eval_seeds)
    # Scores need no pixels (both policies read ground truth), so the env skips rendering: 5x faster.
    env = ArenaEnv(
        ArenaConfig(
            width=cfg.width, height=cfg.height, fps=cfg.fps, episode_seconds=cfg.eval_seconds, render=False
        )
    )
    policies = {
        "expert": Expert(ExpertConfig.matching(env.config)),
        "random": RandomPolicy(),
    }
    rows = []
    for name, policy in policies.items():
        summaries = [play_episode(env, policy, seed=s, seconds=cfg.eval_seconds) for s in seeds]
        rows.append(summary_row(name, summaries))
    env.close()
    return rows


def summary_row(name: str, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    credits = [s["score"]["credits"] for s in summaries]
    kills = [sum(s["score"]["kills"].values()) for s in summaries]
    modes: dict[str, int] = {}
    for s in summaries:
        for mode, count in s["mode_counts"].items():
            modes[mode] = modes.get(mode, 0) + count
    total = sum(modes.values())
    return {
        "policy": name,
        "credits (mean ± std)": mean_std(credits),
        "credits_mean": sum(credits) / len(credits),
        "kills": mean_std(kills),
        "boxes": mean_std([s["score"]["boxes"] for s in summaries]),
        "deaths": mean_std([s["score"]["deaths"] for s in summaries]),
        "modes": " ".join(f"{m[:4]} {100 * c / total:.0f}%" for m, c in modes.items()) if total else "-",
    }


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(DemoConfig, args=argv, prog="pilot demo", description=__doc__)
    cfg.out.mkdir(parents=True, exist_ok=True)
    log.info("expert plays seed %d for %.0f s -> %s", cfg.seed, cfg.seconds, cfg.out / "overlay.mp4")
    score = write_overlay_video(cfg)
    print(f"overlay video: {cfg.out / 'overlay.mp4'}  (expert score on seed {cfg.seed}: {score})")
    rows = compare_policies(cfg) if cfg.eval_seeds else []
    if rows:
        columns = ["policy", "credits (mean ± std)", "kills", "boxes", "deaths", "modes"]
        last = cfg.eval_seed + cfg.eval_seeds - 1
        print(f"\nexpert vs random, seeds {cfg.eval_seed}..{last}, {cfg.eval_seconds:.0f} s each:")
        print(format_table(rows, columns))
        random_mean = rows[1]["credits_mean"]
        ratio = rows[0]["credits_mean"] / random_mean if random_mean > 0 else float("inf")
        print(f"expert / random credits: {ratio:.1f}x")
    (cfg.out / "summary.json").write_text(json.dumps({"overlay_score": score, "comparison": rows}, indent=2))
    return 0
