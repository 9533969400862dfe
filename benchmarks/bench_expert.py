"""Play quality of the scripted expert against the random baseline in the Arena, plus the expert's act() cost.

Each policy plays the same seeds; the table gives mean ± std over seeds of credits, kills, boxes and deaths,
then the expert's mode frequencies (% of frames) and the expert/random credit ratio. Never pass/fail.

    .venv/bin/python -m benchmarks.bench_expert                       # 5 seeds x 180 s at 640x360
    .venv/bin/python -m benchmarks.bench_expert --seeds 10 --seconds 120 --skill 0.5 --json
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

from arena import spec
from arena.baselines import RandomPolicy, RandomPolicyConfig
from arena.expert import Expert, ExpertConfig
from arena.rollout import play_episode
from benchmarks.common import add_common_args, percentiles_ms, report


class _TimedPolicy:
    """Wraps a policy and records how long each act() takes."""

    def __init__(self, policy: Any):
        self.policy, self.samples_s = policy, []

    def reset(self, seed: int | None = None) -> None:
        self.policy.reset(seed)

    def act(self, info: dict) -> tuple[dict, dict]:
        start = time.perf_counter()
        out = self.policy.act(info)
        self.samples_s.append(time.perf_counter() - start)
        return out


def make_env(width: int, height: int, zoom: float, render: bool) -> Any:
    """The Arena at the given view; without drawing unless asked (both policies read `info` only)."""
    from arena.env import ArenaConfig, ArenaEnv

    return ArenaEnv(ArenaConfig(width=width, height=height, zoom=zoom, render=render))


def _mean_std(values: Sequence[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {std:.1f}"


def summarise(name: str, episodes: list[dict]) -> dict[str, Any]:
    scores = [e["score"] for e in episodes]
    row: dict[str, Any] = {"policy": name, "episodes": len(episodes)}
    row["credits"] = _mean_std([s["credits"] for s in scores])
    row["kills"] = _mean_std([sum(s["kills"].values()) for s in scores])
    for cls in spec.NPC_CLASSES:
        row[cls] = _mean_std([s["kills"][cls] for s in scores])
    row["boxes"] = _mean_std([s["boxes"] for s in scores])
    row["deaths"] = _mean_std([s["deaths"] for s in scores])
    row["credits_mean"] = statistics.mean(s["credits"] for s in scores)
    return row


def mode_frequencies(episodes: list[dict]) -> dict[str, float]:
    totals = {m: sum(e["mode_counts"][m] for e in episodes) for m in spec.MODES}
    frames = max(1, sum(totals.values()))
    return {m: round(100.0 * n / frames, 1) for m, n in totals.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="episodes per policy (seeds 0..N-1)")
    parser.add_argument("--seconds", type=float, default=180.0, help="game seconds per episode")
    parser.add_argument("--skill", type=float, default=ExpertConfig.skill, help="expert skill 0..1")
    parser.add_argument("--width", type=int, default=640, help="frame width, px")
    parser.add_argument("--height", type=int, default=360, help="frame height, px")
    parser.add_argument(
        "--zoom", type=float, default=0.5, help="screen px per world px (0.5 at 640x360 = 720p view)"
    )
    parser.add_argument("--render", action="store_true", help="draw every frame too (slower; same play)")
    add_common_args(parser)
    args = parser.parse_args(argv)

    env = make_env(args.width, args.height, args.zoom, args.render)
    expert = _TimedPolicy(Expert(ExpertConfig.matching(env.config, skill=args.skill)))
    random_policy = RandomPolicy(RandomPolicyConfig())
    results = {"expert": [], "random": []}
    for seed in range(args.seeds):
        results["expert"].append(play_episode(env, expert, seed, args.seconds))
        results["random"].append(play_episode(env, random_policy, seed, args.seconds))
    rows = [summarise(name, eps) for name, eps in results.items()]
    ratio = rows[0]["credits_mean"] / max(rows[1]["credits_mean"], 1e-9)
    columns = ["policy", "episodes", "credits", "kills", *spec.NPC_CLASSES, "boxes", "deaths"]
    report(
        f"Arena expert (skill {args.skill}) vs random, {args.seeds} seeds x {args.seconds:.0f} s, "
        f"{args.width}x{args.height} zoom {args.zoom}",
        rows,
        columns,
        args.json,
        mode_frequency_pct=mode_frequencies(results["expert"]),
        expert_random_credit_ratio=round(ratio, 2)
        if rows[1]["credits_mean"] > 0
        else "inf (random scored 0)",
        expert_act_cost=percentiles_ms(expert.samples_s),
    )


if __name__ == "__main__":
    main()
