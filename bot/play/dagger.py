"""`pilot dagger`: the bot plays the Arena (or, with `--game naev`, a game driven through its adapter) with a
policy bundle while the scripted expert says, on every frame, what it would have done (DAgger, Ross et al.
2011, https://arxiv.org/abs/1011.0686). Each episode (`<out>/dagger-<seed>/`) holds the bot's actions and
perception, the expert's actions (expert_* step columns) and labels/expert.parquet; a complete episode on
disk is kept, so a rerun resumes. What these labels are worth: docs/notes/play.md.

Examples:
    pilot dagger --policy data/pretrained/arena --out data/recordings/arena-dagger --episodes 16
    pilot dagger --policy data/policies/dev --out /tmp/dagger --episodes 2 --seconds 20 --workers 1
    pilot dagger --game naev --policy data/pretrained/naev --out data/naev/recordings/dagger --episodes 8 \
        --seconds 60 --workers 1     # the real Naev at its profile's window size; the scripted pilot labels
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tyro

from bot.errors import EpisodeError, PerceptionError
from bot.play.demos import STEP_COLUMNS, arena_step_row, episode_skill
from bot.play.evaluate import BotPlayer, EvalConfig, arena_config
from bot.play.workers import play_seeds
from bot.recordings.episode import EpisodeMeta, EpisodeWriter, open_episode
from bot.recordings.perceive import perception_meta
from bot.recordings.perceived import FOLDER, PerceptionRecorder, perception_info

log = logging.getLogger(__name__)

EXPERT_COLUMNS = ("expert_mouse_x", "expert_mouse_y", "expert_click", "expert_key")


@dataclass
class DaggerConfig:
    """The bot plays the Arena; every frame is labelled with the expert's action, mode and target."""

    policy: Path  # policy bundle folder whose play is recorded
    game: str = "arena"  # arena (in-process), or a game played through its adapter (naev: the real game)
    out: Path = Path("data/recordings/arena-dagger")  # receives one dagger-<seed> folder per episode
    episodes: int = 16  # episodes
    seconds: float = 120.0  # game seconds per episode
    seed: int = 5000  # episode i uses seed + i
    workers: int = 2  # processes playing episodes in parallel (spawned)
    width: int = 640  # px; the demos' size, so these episodes train beside them
    height: int = 360  # px
    zoom: float = 0.5  # Arena view scale (0.5 at 640x360 shows the world area of 1280x720 at 1.0)
    fps: int = 30  # game frames per second
    skill_min: float = 0.6  # the labelling expert's skill is drawn per seed, as in `pilot demos`
    skill_max: float = 1.0
    snap: float | None = None  # the bot's aim snap in box sizes, as in `pilot eval` (None = the bundle's)
    runtime: str = "auto"  # detector runtime: auto, onnx, torch
    threads: int = 1  # torch and detector threads per process
    crf: int = 20  # H.264 quality of the recorded video

    def __post_init__(self) -> None:
        self.policy, self.out = Path(self.policy), Path(self.out)
        for name in ("episodes", "workers", "width", "height", "fps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("seconds", "zoom"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name}: expected > 0, got {getattr(self, name)}")
        if not 0.0 <= self.skill_min <= self.skill_max <= 1.0:
            raise ValueError(
                f"--skill-min/max: expected 0 <= min <= max <= 1, got {self.skill_min}..{self.skill_max}"
            )

    def eval_config(self) -> EvalConfig:
        """The `pilot eval` settings the bot plays under (same code path, humanised input, no baselines)."""
        return EvalConfig(
            policy=self.policy, episodes=1, seconds=self.seconds, seed=self.seed, width=self.width,
            height=self.height, zoom=self.zoom, fps=self.fps, snap=self.snap, runtime=self.runtime,
            threads=self.threads, baselines=False,
        )  # fmt: skip


def episode_name(seed: int) -> str:
    return f"dagger-{seed:06d}"


def expert_columns(action: dict) -> dict[str, Any]:
    """The expert's action as the steps' expert_* columns."""
    return {
        "expert_mouse_x": float(action["mouse"][0]),
        "expert_mouse_y": float(action["mouse"][1]),
        "expert_click": bool(action["click"]),
        "expert_key": int(action["key"]),
    }


class DaggerTap:
    """BotPlayer.play's tap: writes each frame with the bot's action, the expert's action and labels, and the
    bot's own perception of it."""

    def __init__(self, directory: Path, cfg: DaggerConfig, seed: int, player: BotPlayer) -> None:
        from arena import spec
        from arena.expert import ExpertConfig
        from arena.expert.labeller import StateLabeller

        view = arena_config(cfg.eval_config())
        skill = episode_skill(cfg, seed)  # the draw `pilot demos` makes (reads skill_min / skill_max)
        self.labeller = StateLabeller(ExpertConfig.matching(view, skill=skill, seed=seed))  # seeded
        self.directory, self.player, self.cfg = directory, player, cfg
        expert = asdict(self.labeller.expert.cfg)
        # "plan": the expert_* columns are its plan's answer to the state (arena/expert/labeller.py)
        dagger = {"labels": "expert", "actions": "plan", "expert": expert, "snap": player.runner.snap}
        meta = EpisodeMeta(
            game="arena", source="bot", fps=cfg.fps, width=cfg.width, height=cfg.height,
            keys=list(spec.KEYS), modes=list(spec.MODES), classes=list(spec.CLASSES), seed=seed,
            extra={
                "policy": str(cfg.policy),
                "dagger": dagger,
                "arena": asdict(view),
                "arena_spec_version": spec.SPEC_VERSION,
            },
        )  # fmt: skip
        self.writer = EpisodeWriter(directory, meta, (*STEP_COLUMNS, *EXPERT_COLUMNS), crf=cfg.crf)
        self.perception = PerceptionRecorder()

    def on_frame(self, frame: Any, info: dict, step: Any, action: dict) -> None:
        expert_action, labels = self.labeller.label(info)
        self.labeller.observe(action)  # what reached the game: the memory its next answers read
        index = self.writer.append(frame.image, arena_step_row(action, info) | expert_columns(expert_action))
        self.writer.add_label("expert", index, labels["mode"], labels["target_id"])
        self.perception.add(index, step)

    def on_end(self, perception: Any) -> None:
        """Close the episode, then store the perception beside it (an episode without it is redone)."""
        self.writer.close()
        profile, detector = self.player.bundle.profile, self.player.detector
        size = (self.cfg.width, self.cfg.height)
        meta = perception_meta(self.directory.name, profile, detector, size, self.cfg.fps, every=1)
        self.perception.write(self.directory / FOLDER, meta, perception.summarizer.flush())


def record_episode(player: BotPlayer, cfg: DaggerConfig, seed: int) -> dict[str, Any]:
    """Play and write one episode; returns `pilot eval`'s per-episode summary of the bot's play."""
    directory = cfg.out / episode_name(seed)
    tap = DaggerTap(directory, cfg, seed, player)
    try:
        result = player.play(seed, tap=tap)
    finally:
        tap.writer.close()  # an interrupted episode stays readable; pending_seeds() redoes it
    return {"seed": seed, "episode": directory.name, "score": result["score"], "modes": result["mode_counts"]}


def is_done(directory: Path) -> bool:
    """A complete episode whose perception is stored (written last, so the episode is whole)."""
    try:
        perception_info(directory)
        return open_episode(directory).meta.complete
    except (EpisodeError, PerceptionError):
        return False


def pending_seeds(cfg: DaggerConfig) -> list[int]:
    """Seeds whose episode is not done; unfinished folders are removed to be played again."""
    seeds = []
    for seed in range(cfg.seed, cfg.seed + cfg.episodes):
        directory = cfg.out / episode_name(seed)
        if is_done(directory):
            log.info("keeping complete episode %s", directory)
            continue
        if directory.exists():
            log.warning("replaying unfinished episode %s", directory)
            shutil.rmtree(directory)
        seeds.append(seed)
    return seeds


_WORKER: tuple[BotPlayer, DaggerConfig] | None = None  # this worker process's player and config


def _init_worker(cfg: DaggerConfig) -> None:
    global _WORKER
    logging.basicConfig(level=logging.WARNING)
    _WORKER = (BotPlayer(cfg.eval_config()), cfg)


def _record_in_worker(seed: int) -> dict[str, Any]:
    assert _WORKER is not None, "the pool initializer builds the player"
    return record_episode(*_WORKER, seed)


def run(cfg: DaggerConfig) -> list[dict[str, Any]]:
    """Record every pending episode, in this process or on `workers` spawned ones."""
    from tqdm import tqdm

    seeds = pending_seeds(cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    if not seeds:
        return []
    if cfg.workers == 1 or len(seeds) == 1:
        player = BotPlayer(cfg.eval_config())
        return [record_episode(player, cfg, s) for s in tqdm(seeds, unit="episode", desc="dagger")]
    with tqdm(total=len(seeds), unit="episode", desc="dagger") as bar:
        return play_seeds(
            seeds,
            _record_in_worker,
            workers=cfg.workers,
            init=_init_worker,
            init_args=(cfg,),
            episode=lambda seed: str(cfg.out / episode_name(seed)),
            on_done=lambda _seed: bar.update(),
        )


def run_adapter_game(cfg: DaggerConfig) -> int:
    """The bundle plays the game through its adapter at its profile's window size; the game's scripted pilot
    labels every frame."""
    from bot.play.adapter_runs import record_dagger
    from bot.profile import load_profile

    size = load_profile(cfg.game).window.size
    results = record_dagger(
        cfg.game, cfg.policy, cfg.out, cfg.episodes, cfg.seconds, cfg.seed, cfg.workers, size
    )
    for r in results:
        log.info("seed %s: bot score/min %s kills %s deaths %s", r["seed"], r["score_per_min"], r["kills"],
                 r["deaths"])  # fmt: skip
    log.info("%d episode(s) recorded in %s", len(results), cfg.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(DaggerConfig, args=argv, prog="pilot dagger", description=__doc__)
    if cfg.game != "arena":
        return run_adapter_game(cfg)
    results = run(cfg)
    for r in results:
        score = r["score"]
        log.info(
            "%s: bot credits %s kills %s boxes %s deaths %s",
            r["episode"],
            score["credits"],
            sum(score["kills"].values()),
            score["boxes"],
            score["deaths"],
        )
    log.info("%d episode(s) recorded in %s", len(results), cfg.out)
    return 0
