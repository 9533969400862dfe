"""How fast the Arena runs headless: env steps with rendering, the simulation alone, and drawing alone.

    python -m benchmarks.bench_arena            # table
    python -m benchmarks.bench_arena --json     # one JSON object (for RESULTS.md)

Rows: `step+render` = ArenaEnv.step with random actions (sim + draw + RGB array), `sim only` =
ArenaConfig(render=False), `render only` = Renderer.render on a fixed, busy state (no stepping).
realtime_x = steps/s divided by the game's 30 fps: how many times faster than real time one core plays.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from arena.env import ArenaConfig, ArenaEnv
from arena.spec import DEFAULT_FPS, KEYS
from benchmarks.common import add_common_args, report, time_call

SIZES = ((1280, 720), (640, 360))
COLUMNS = ("case", "size", "min_ms", "median_ms", "steps_per_s", "realtime_x")


def random_actions(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "mouse": rng.random(2).astype(np.float32),
            "click": int(rng.random() < 0.05),
            "key": int(rng.integers(1, len(KEYS))) if rng.random() < 0.03 else 0,
        }
        for _ in range(n)
    ]


def bench_steps(config: ArenaConfig, number: int, repeats: int) -> dict[str, float]:
    """ms per env.step (cycling through pre-drawn random actions, resetting when truncated)."""
    env = ArenaEnv(config)
    env.reset(seed=0)
    actions = random_actions(1024)
    counter = [0]

    def one() -> None:
        counter[0] += 1
        if env.step(actions[counter[0] % len(actions)])[3]:
            env.reset()

    return time_call(one, number=number, repeats=repeats)


def bench_render(config: ArenaConfig, number: int, repeats: int) -> dict[str, float]:
    """ms per frame drawn from a fixed state ~20 s into an episode (NPCs, shots and effects around)."""
    env = ArenaEnv(config)
    env.reset(seed=0)
    for action in random_actions(600):
        env.step(action)
    return time_call(lambda: env.renderer.render(env.world), number=number, repeats=repeats)


def row(case: str, size: tuple[int, int], timing: dict[str, float]) -> dict[str, Any]:
    steps = 1000.0 / timing["min_ms"]
    return {
        "case": case,
        "size": f"{size[0]}x{size[1]}",
        **timing,
        "steps_per_s": steps,
        "realtime_x": steps / DEFAULT_FPS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=300, help="calls per timing round")
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds (min and median reported)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    rows = []
    for size in SIZES:
        cfg = {"width": size[0], "height": size[1]}
        rows.append(row("step+render", size, bench_steps(ArenaConfig(**cfg), args.number, args.repeats)))
        rows.append(row("render only", size, bench_render(ArenaConfig(**cfg), args.number, args.repeats)))
    rows.append(
        row("sim only", SIZES[0], bench_steps(ArenaConfig(render=False), args.number * 3, args.repeats))
    )
    report(
        "Arena headless speed (one process)",
        rows,
        COLUMNS,
        args.json,
        number=args.number,
        repeats=args.repeats,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
