"""`pilot demos` and `pilot eval` for a game driven through its adapter (bot/games/<game>/adapter.py): the
real
game on a private display per worker, its scripted pilot and a random player on the same seeds.

The Arena keeps its in-process path (demos.py, evaluate.py); every other game goes through here, so nothing
game-specific is written in play code.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from bot.errors import EpisodeError
from bot.games import adapter_for
from bot.play.workers import play_seeds
from bot.policy.bundle import load_bundle_for
from bot.recordings.episode import open_episode

log = logging.getLogger(__name__)

_WORKER: dict[str, Any] = {}  # this worker process's job: game, out, seconds, ...


def _init_worker(job: dict[str, Any]) -> None:
    _WORKER.clear()
    _WORKER.update(job)


def _play_in_worker(seed: int) -> dict[str, Any]:
    job = _WORKER
    out = Path(job["out"]) / f"{job['prefix']}-{seed:06d}" if job.get("out") else None
    adapter = adapter_for(job["game"])
    width, height = job["size"]
    return adapter.play(
        seed,
        job["seconds"],
        pilot=job["pilot"],
        width=width,
        height=height,
        headless=job["headless"],
        out=out,
        label_with=job.get("label_with"),
    )


def _complete(directory: Path) -> bool:
    """True when a complete episode is there; an unfinished or broken one is removed (written again)."""
    if not directory.exists():
        return False
    try:
        if open_episode(directory).meta.complete:
            log.info("keeping complete episode %s", directory)
            return True
    except EpisodeError as exc:
        log.warning("rewriting %s (%s)", directory, exc)
    shutil.rmtree(directory)
    return False


def record_demos(
    game: str, out: Path, episodes: int, seconds: float, seed: int, workers: int, size: tuple[int, int],
    headless: bool = True,
) -> list[dict[str, Any]]:  # fmt: skip
    """The scripted pilot's episodes `expert-<seed>` in `out`; complete ones on disk are kept."""
    seeds = [s for s in range(seed, seed + episodes) if not _complete(out / f"expert-{s:06d}")]
    out.mkdir(parents=True, exist_ok=True)
    job = dict(game=game, out=str(out), prefix="expert", seconds=seconds, pilot="scripted")
    job |= dict(size=size, headless=headless)
    return play_seeds(
        seeds, _play_in_worker, workers=workers, init=_init_worker, init_args=(job,), fresh=True,
        episode=lambda s: str(out / f"expert-{s:06d}"),
    )  # fmt: skip


def record_dagger(
    game: str, policy: Path, out: Path, episodes: int, seconds: float, seed: int, workers: int,
    size: tuple[int, int], headless: bool = True,
) -> list[dict[str, Any]]:  # fmt: skip
    """DAgger episodes `dagger-<seed>` in `out`: the bundle plays, the scripted pilot labels every frame
    (expert_* columns, labels/expert.parquet); complete ones on disk are kept."""
    load_bundle_for(policy, game)  # a bad bundle, or one for another game, fails before any game starts
    seeds = [s for s in range(seed, seed + episodes) if not _complete(out / f"dagger-{s:06d}")]
    out.mkdir(parents=True, exist_ok=True)
    job = dict(game=game, out=str(out), prefix="dagger", seconds=seconds, pilot=str(policy), size=size)
    job |= dict(headless=headless, label_with="scripted")
    return play_seeds(
        seeds, _play_in_worker, workers=workers, init=_init_worker, init_args=(job,), fresh=True,
        episode=lambda s: str(out / f"dagger-{s:06d}"),
    )  # fmt: skip


def evaluate(
    game: str, episodes: int, seconds: float, seed: int, workers: int, size: tuple[int, int],
    headless: bool = True, policy: Path | None = None, baselines: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """A policy bundle ("bot", when given), the scripted pilot ("expert") and random input (unless not
    `baselines`) on the same seeds, scored by the game's own score; `bot_expert_ratio` as the Arena's eval
    reports it. `frames_per_s` is the rate the player actually saw frames at (a busy machine lowers it)."""
    adapter = adapter_for(game)
    if policy is not None:
        load_bundle_for(policy, game)  # a bad bundle, or one for another game, fails before any game starts
    seeds = list(range(seed, seed + episodes))
    players = [("bot", str(policy))] if policy is not None else []
    if baselines or policy is None:
        players += [("expert", "scripted"), ("random", "random")]
    policies: dict[str, Any] = {}
    for name, pilot in players:
        job = dict(
            game=game, out=None, prefix=name, seconds=seconds, pilot=pilot, size=size, headless=headless
        )
        results = play_seeds(
            seeds, _play_in_worker, workers=workers, init=_init_worker, init_args=(job,), fresh=True,
            episode=lambda s, n=name: f"{game} {n} seed {s}",
        )  # fmt: skip
        policies[name] = {**adapter.summarise(results), **frame_rate(results), "episodes": results}
    ratio = None
    if "bot" in policies and "expert" in policies and policies["expert"]["score_per_min_mean"] > 0:
        ratio = policies["bot"]["score_per_min_mean"] / policies["expert"]["score_per_min_mean"]
    return {"game": game, "seeds": seeds, "seconds": seconds, "policies": policies, "bot_expert_ratio": ratio}


def frame_rate(results: list[dict[str, Any]]) -> dict[str, float]:
    """Mean and lowest frames per second over the episodes (each episode's frames / seconds)."""
    rates = [r["frames"] / r["seconds"] for r in results if r.get("seconds")]
    if not rates:
        return {}
    return {"frames_per_s_mean": sum(rates) / len(rates), "frames_per_s_min": min(rates)}


def tables(result: dict[str, Any]) -> str:
    seeds = result["seeds"]
    rows = [f"{result['game']}: {len(seeds)} seed(s) from {seeds[0]}, {result['seconds']:.0f} s each"]
    rows.append(f"{'policy':8} {'score/min':>10} {'+-':>7} {'kills/min':>10} {'deaths/min':>11} {'fps':>6}")
    for name, stats in result["policies"].items():
        rows.append(
            f"{name:8} {stats['score_per_min_mean']:10.1f} {stats['score_per_min_std']:7.1f} "
            f"{stats['kills_per_min']:10.2f} {stats['deaths_per_min']:11.2f} "
            f"{stats.get('frames_per_s_mean', float('nan')):6.1f}"
        )
    if result["bot_expert_ratio"] is not None:
        rows.append(f"bot / expert score: {result['bot_expert_ratio']:.3f}")
    return "\n".join(rows)
