"""`pilot demos`: the scripted expert plays the Arena and every episode is written in the episode format
(video + steps with ground truth + labels/expert.parquet), several episodes at once on worker processes.

Examples:
    pilot demos --out data/recordings/arena --episodes 8 --seconds 180 --seed 0 --workers 2
    pilot demos --game naev --out data/recordings/naev --episodes 4 --seconds 120 --workers 1
    pilot demos --out /tmp/demos --episodes 2 --seconds 20 --width 640 --height 360

Episode i is played with seed `seed + i` and named `expert-<seed>`; an episode already complete on disk
is kept (so an interrupted run resumes where it stopped), an unfinished one is written again. Ctrl+C stops
at once: the episodes being played are removed (they would be shorter than asked) and none starts after.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tyro

from bot.errors import EpisodeError
from bot.play.workers import SPAWN, play_seeds
from bot.recordings.episode import EpisodeMeta, EpisodeWriter, open_episode

log = logging.getLogger(__name__)

STEP_COLUMNS = (
    "gt_objects",
    "hp",
    "shield",
    "credits",
    "deaths",
    "player_x",
    "player_y",
    "selected_id",
    "attacking",
    "in_safe_zone",
    "events",
)
PROGRESS_EVERY = 30  # frames between progress messages from a worker


@dataclass
class DemosConfig:
    """Write expert demonstration episodes of the Arena (or of a game driven through its adapter)."""

    out: Path = Path("data/recordings/arena")  # folder that receives one sub-folder per episode
    game: str = "arena"  # arena (in-process), or a game played through its adapter (naev: the real game)
    headless: bool = (
        True  # adapter games: on a private Xvfb per worker (--no-headless: the display in $DISPLAY)
    )
    episodes: int = 4  # number of episodes
    seconds: float = 120.0  # game seconds per episode
    seed: int = 0  # episode i uses seed + i
    workers: int = 2  # worker processes (episodes run in parallel)
    width: int = 1280  # px
    height: int = 720  # px
    zoom: float = 1.0  # view scale; 0.5 at 640x360 shows the same world area as 1280x720 at 1.0
    fps: int = 30  # frames per second
    skill_min: float = 0.6  # each episode's expert skill is drawn from [skill_min, skill_max] by its seed
    skill_max: float = 1.0
    crf: int = 20  # H.264 quality (lower = better, larger)

    def __post_init__(self) -> None:
        for name in ("episodes", "workers", "width", "height", "fps", "zoom"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name}: expected > 0, got {getattr(self, name)}")
        if self.seconds <= 0:
            raise ValueError(f"--seconds: expected > 0, got {self.seconds}")
        if not 0.0 <= self.skill_min <= self.skill_max <= 1.0:
            raise ValueError(
                f"--skill-min/max: expected 0 <= min <= max <= 1, got {self.skill_min}..{self.skill_max}"
            )


def episode_name(seed: int) -> str:
    return f"expert-{seed:06d}"


def arena_step_row(action: dict, info: dict) -> dict[str, Any]:
    """One steps.parquet row from the action taken on a frame and the ground truth of that frame."""
    player, score, hud = info["player"], info["score"], info["hud"]
    objects = []
    for obj in info["objects"]:
        x1, y1, x2, y2 = obj["box"]
        objects.append(
            dict(id=obj["id"], cls=obj["cls"], x1=x1, y1=y1, x2=x2, y2=y2, hp=obj["hp"], hp_max=obj["hp_max"])
            | dict(aggro=bool(obj.get("aggro", False)), selected=bool(obj.get("selected", False)))
        )
    return dict(
        t=info["time"],
        mouse_x=float(action["mouse"][0]),
        mouse_y=float(action["mouse"][1]),
        click=bool(action["click"]),
        key=int(action["key"]),
        gt_objects=objects,
        hp=hud["hp_frac"],
        shield=hud["shield_frac"],
        credits=int(score["credits"]),
        deaths=int(score["deaths"]),
        player_x=player["pos"][0],
        player_y=player["pos"][1],
        selected_id=player["selected"],
        attacking=bool(player["attacking"]),
        in_safe_zone=bool(player["in_safe_zone"]),
        events=list(info["events"]),
    )


def episode_skill(cfg: DemosConfig, seed: int) -> float:
    import numpy as np

    return float(np.random.default_rng(seed).uniform(cfg.skill_min, cfg.skill_max))


def record_episode(cfg: DemosConfig, seed: int, progress: Any = None) -> dict[str, Any]:
    """Play one expert episode and write it; returns the rollout summary."""
    from arena import spec
    from arena.env import ArenaConfig, ArenaEnv
    from arena.expert import Expert, ExpertConfig
    from arena.rollout import play_episode

    directory = cfg.out / episode_name(seed)
    skill = episode_skill(cfg, seed)
    env = ArenaEnv(
        ArenaConfig(
            width=cfg.width, height=cfg.height, zoom=cfg.zoom, fps=cfg.fps, episode_seconds=cfg.seconds
        )
    )
    expert = Expert(ExpertConfig.matching(env.config, skill=skill, seed=seed))
    meta = EpisodeMeta(
        game="arena",
        source="expert",
        fps=cfg.fps,
        width=cfg.width,
        height=cfg.height,
        keys=list(spec.KEYS),
        modes=list(spec.MODES),
        classes=list(spec.CLASSES),
        seed=seed,
        extra={
            "expert": asdict(expert.cfg),
            "arena": asdict(env.config),
            "arena_spec_version": spec.SPEC_VERSION,
        },
    )
    try:
        with EpisodeWriter(directory, meta, optional_fields=STEP_COLUMNS, crf=cfg.crf) as writer:

            def on_step(index: int, frame: Any, action: dict, labels: dict, info: dict) -> None:
                writer.append(frame, arena_step_row(action, info))
                writer.add_label("expert", index, labels["mode"], labels["target_id"])
                if progress is not None and (index + 1) % PROGRESS_EVERY == 0:
                    progress.put(PROGRESS_EVERY)

            summary = play_episode(env, expert, seed=seed, seconds=cfg.seconds, on_step=on_step)
    except KeyboardInterrupt:
        # The writer closes what it has as a complete (shorter) episode, right for a person's recording;
        # a demo cut short is not the requested one, and a rerun keeps complete episodes: remove it.
        shutil.rmtree(directory, ignore_errors=True)
        raise
    finally:
        env.close()
    return {"seed": seed, "episode": directory.name, "skill": skill, **summary}


_WORKER: tuple[DemosConfig, Any] | None = None  # this worker process's config and progress queue


def _init_worker(cfg: DemosConfig, progress: Any) -> None:
    global _WORKER
    _WORKER = (cfg, progress)


def _record_in_worker(seed: int) -> dict[str, Any]:
    assert _WORKER is not None, "the pool initializer sets the config"
    cfg, progress = _WORKER
    return record_episode(cfg, seed, progress)


def pending_seeds(cfg: DemosConfig) -> list[int]:
    """Seeds whose episode is not complete on disk; unfinished folders are removed to be written again."""
    seeds = []
    for seed in range(cfg.seed, cfg.seed + cfg.episodes):
        directory = cfg.out / episode_name(seed)
        if directory.exists():
            try:
                if open_episode(directory).meta.complete:
                    log.info("keeping complete episode %s", directory)
                    continue
            except EpisodeError as exc:
                log.warning("rewriting %s (%s)", directory, exc)
            shutil.rmtree(directory)
        seeds.append(seed)
    return seeds


def run(cfg: DemosConfig) -> list[dict[str, Any]]:
    """Write every pending episode; a worker's failure stops the run with that episode's error."""
    from tqdm import tqdm

    if cfg.game != "arena":
        from bot.play.adapter_runs import record_demos

        return record_demos(
            cfg.game,
            cfg.out,
            cfg.episodes,
            cfg.seconds,
            cfg.seed,
            cfg.workers,
            (cfg.width, cfg.height),
            cfg.headless,
        )

    seeds = pending_seeds(cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    progress = SPAWN.Queue()  # frames recorded, from every worker

    with tqdm(total=round(cfg.seconds * cfg.fps) * len(seeds), unit="frame", desc="demos") as bar:

        def drain() -> None:
            while not progress.empty():
                bar.update(progress.get())

        results = play_seeds(
            seeds,
            _record_in_worker,
            workers=cfg.workers,
            init=_init_worker,
            init_args=(cfg, progress),
            episode=lambda seed: str(cfg.out / episode_name(seed)),
            tick=drain,
        )
        bar.update(bar.total - bar.n)
    return results


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(DemosConfig, args=argv, prog="pilot demos", description=__doc__)
    results = run(cfg)
    for r in results:
        if cfg.game != "arena":
            log.info(
                "%s seed %d: score %.0f, kills %d, deaths %d",
                cfg.game,
                r["seed"],
                r["score"],
                r["kills"],
                r["deaths"],
            )
            continue
        score = r.get("score", {})
        log.info(
            "%s skill %.2f: credits %s kills %s boxes %s deaths %s",
            r["episode"],
            r["skill"],
            score.get("credits"),
            score.get("kills"),
            score.get("boxes"),
            score.get("deaths"),
        )
    log.info("wrote %d episode(s) to %s", len(results), cfg.out)
    return 0
