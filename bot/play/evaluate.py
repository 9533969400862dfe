"""`pilot eval`: a policy bundle plays the Arena in-process, lock-step (the game waits for the bot, so scores
do not depend on the machine's speed); its score is compared with the expert's and a random policy's on the
same unseen seeds, with the bot's decision rates and per-stage latency. Why it is built so:
docs/notes/play.md.

Examples:
    pilot eval --policy data/pretrained/arena --episodes 3 --seconds 60
    pilot eval --policy data/policies/dev --episodes 4 --seconds 60 --workers 2 --json
    pilot eval --policy data/policies/dev --episodes 1 --seconds 30 --overlay /tmp/eval.mp4
    pilot eval --policy data/policies/dev --width 640 --height 360 --zoom 0.5 --no-baselines
    pilot eval --policy data/policies/new --against data/pretrained/arena --episodes 48 --seed 9000
    pilot eval --game naev --episodes 10 --seconds 60 --seed 100 --json   # scripted pilot vs random in Naev
    pilot eval --game naev --policy data/policies/naev --episodes 10 --seconds 60 --seed 100
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import tyro

from bot.play.workers import play_seeds
from bot.policy.bundle import STAGES as POLICY_STAGES
from bot.policy.bundle import PolicyBundle
from bot.policy.runner import PolicyRunner

log = logging.getLogger(__name__)

PERCEPTION_STAGES = ("detect", "track", "hud", "encode")
LATENCY_STAGES = (*PERCEPTION_STAGES, *POLICY_STAGES, "total", "arena")


@dataclass
class EvalConfig:
    """Play the Arena with a policy bundle; compare it with the expert and a random policy."""

    policy: Path | None = None  # policy bundle folder (`pilot train policy --out`); required for the Arena
    game: str = "arena"  # arena (in-process), or a game played through its adapter (naev: the real game)
    headless: bool = (
        True  # adapter games: on a private Xvfb per worker (--no-headless: the display in $DISPLAY)
    )
    episodes: int = 3  # episodes per policy
    seconds: float = 60.0  # game seconds per episode
    seed: int = 1000  # first seed; episode i uses seed + i (demonstrations start at 0)
    json: bool = False  # print one JSON object instead of the tables
    overlay: Path | None = None  # write the first bot episode as an overlay video (.mp4)
    workers: int = 1  # processes playing bot episodes in parallel (spawned)
    width: int = 1280  # px, game frame width
    height: int = 720  # px
    zoom: float = 1.0  # Arena view scale (0.5 at 640x360 shows the world area of 1280x720 at 1.0)
    fps: int = 30  # game frames per second
    tactician_hz: float | None = None  # Tactician decisions per game second (None = the bundle's)
    sample: bool = False  # sample actions and targets instead of taking the most likely
    snap: float | None = None  # aim at the target's centre within this many box sizes (None = the bundle's)
    runtime: str = "auto"  # detector runtime: auto, onnx, torch
    threads: int = 1  # torch and detector threads per process (1 is fastest on a shared CPU)
    baselines: bool = True  # also play the expert and the random policy on the same seeds
    # how decisions reach the game: "humanised" = pilot run's input driver (paths, click on arrival, key
    # repeat filter) ticked in game time; "direct" = the decision is the frame's action as is
    hand: Literal["humanised", "direct"] = "humanised"
    # a second bundle played on the same seeds: the paired difference policy - against, with its 95 % interval
    against: Path | None = None

    def __post_init__(self) -> None:
        if self.policy in (None, ""):
            if self.game == "arena":
                raise ValueError("--policy: expected a policy bundle folder (required for the Arena)")
            self.policy = None
        else:
            self.policy = Path(self.policy)
        self.against = None if self.against in (None, "") else Path(self.against)
        if self.against is not None and (self.game != "arena" or self.episodes < 2):
            raise ValueError("--against: expected the Arena and --episodes >= 2 (a paired comparison)")
        self.overlay = None if self.overlay in (None, "") else Path(self.overlay)
        for name in ("episodes", "workers", "width", "height", "fps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("seconds", "zoom"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name}: expected > 0, got {getattr(self, name)}")
        if self.tactician_hz is not None and not self.tactician_hz > 0:
            raise ValueError(f"--tactician-hz: expected > 0, got {self.tactician_hz}")
        if self.width % 2 or self.height % 2:
            raise ValueError(
                f"--width/--height: expected even numbers (H.264), got {self.width}x{self.height}"
            )
        if self.threads < 0:
            raise ValueError(f"--threads: expected >= 0, got {self.threads}")

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.episodes))


def arena_config(cfg: EvalConfig, render: bool = True) -> Any:
    from arena.env import ArenaConfig

    return ArenaConfig(
        width=cfg.width,
        height=cfg.height,
        zoom=cfg.zoom,
        fps=cfg.fps,
        episode_seconds=cfg.seconds,
        render=render,
    )


# ------------------------------------------------------------------------------------------------ the bot


def overlay_state(step: Any, decision: Any, info: dict, profile: Any, cursor_path: deque, status: str) -> Any:
    """What one overlay frame shows: perceived tracks, the chosen target, HUD readings, mode and its odds."""
    from bot.play.overlay import OverlayState, perceived_objects

    return OverlayState(
        objects=perceived_objects(step, profile.class_names),
        target_id=decision.target_id or None,
        mode=decision.mode or None,
        mode_probs=dict(zip(profile.modes, decision.mode_probs.tolist())) if decision.mode else None,
        hud={
            "hp": step.hud.bar("hp"),
            "shield": step.hud.bar("shield"),
            "credits": int(info["hud"]["credits"]),
        },
        cursor_path=list(cursor_path),
        status=status,
    )


class EpisodeTap(Protocol):
    """Watches a bot episode frame by frame (BotPlayer.play)."""

    def on_frame(self, frame: Any, info: dict, step: Any, action: dict) -> None: ...

    def on_end(self, perception: Any) -> None: ...


class BotPlayer:
    """The bundle, its detector and a PolicyRunner, loaded once per process; `play(seed)` plays an episode."""

    def __init__(self, cfg: EvalConfig) -> None:
        import torch

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.cfg = cfg
        self.bundle = PolicyBundle.load(cfg.policy)
        self.detector = self.bundle.detector(cfg.runtime, cfg.threads)
        self.runner = PolicyRunner(self.bundle, cfg.tactician_hz, cfg.sample, seed=0, snap=cfg.snap)

    def _hand(self, size: tuple[int, int], fps: float, seed: int) -> Any:
        """pilot run's input driver in game time (None with --hand direct)."""
        if self.cfg.hand == "direct":
            return None
        from bot.control.lockstep import LockstepHand

        profile = self.bundle.profile
        keys = [k.key or "" if i else "" for i, k in enumerate(profile.keys)]
        return LockstepHand(size, fps, keys, list(profile.hud.panels.values()), seed=seed)

    def play(
        self, seed: int, overlay: Path | None = None, progress: Any = None, tap: EpisodeTap | None = None
    ) -> dict[str, Any]:
        """One lock-step episode -> arena/rollout.py's summary + calls, ms, ran per stage (and frame).
        `tap` sees every frame with its ground truth, perception step and the action sent (bot/play/dagger.py
        records them), and the finished Perception at the end."""
        from bot.perception.capture import ArenaSource
        from bot.perception.pipeline import Perception

        cfg = self.cfg
        source = ArenaSource(arena_config(cfg), seed=seed)
        perception = Perception(self.bundle.profile, self.detector, source.size, source.fps)
        self.runner.reset()
        video = _video(overlay, cfg)
        hand = self._hand(source.size, source.fps, seed)
        cursor, click, path = (0.5, 0.5), False, deque(maxlen=12)
        ms, ran, modes = defaultdict(list), defaultdict(list), Counter()
        try:
            while True:
                mark = time.perf_counter()
                frame = source.read()
                arena_ms = (time.perf_counter() - mark) * 1000.0
                if frame is None:
                    break
                calls = dict(self.runner.calls)
                mark = time.perf_counter()
                step = perception.step(frame.image, cursor, click, frame.t)
                decision = self.runner.act(step)
                total = (time.perf_counter() - mark) * 1000.0
                action = (
                    decision.action()
                    if hand is None
                    else hand.action(decision.mouse, decision.click, decision.key, decision.click_size)
                )
                if tap is not None:
                    tap.on_frame(frame, source.info, step, action)
                source.apply(action)
                cursor, click = (action["mouse"][0], action["mouse"][1]), bool(action["click"])
                for stage, value in {**step.ms, **decision.ms, "total": total, "arena": arena_ms}.items():
                    ms[stage].append(value)
                for stage in POLICY_STAGES:
                    ran[stage].append(self.runner.calls[stage] > calls[stage])
                if decision.mode:
                    modes[decision.mode] += 1
                if progress is not None:
                    progress.update(1)
                if video is not None:
                    path.append((cursor[0] * cfg.width, cursor[1] * cfg.height))
                    status = f"seed {seed}  t {frame.t:.1f}s  step {total:.1f} ms  " + _score_line(
                        source.info
                    )
                    state = overlay_state(step, decision, source.info, self.bundle.profile, path, status)
                    video.put(_draw(frame.image, state))
        finally:
            if video is not None:
                video.close()
            source.close()
        if tap is not None:
            tap.on_end(perception)
        frames = len(ms["total"])
        return {
            "seed": seed,
            "frames": frames,
            "seconds": frames / source.fps,
            "score": _score(source.info),
            "mode_counts": {m: modes.get(m, 0) for m in self.bundle.modes},
            "calls": dict(self.runner.calls),
            "ms": {k: list(v) for k, v in ms.items()},
            "ran": {k: list(v) for k, v in ran.items()},
        }


def _video(path: Path | None, cfg: EvalConfig) -> Any:
    if path is None:
        return None
    from bot.recordings.video import VideoWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    return VideoWriter(path, cfg.width, cfg.height, cfg.fps, crf=23)


def _draw(image: np.ndarray, state: Any) -> np.ndarray:
    from bot.play.overlay import draw_overlay

    return draw_overlay(image, state)


def _score(info: dict) -> dict[str, Any]:
    """The score in arena/rollout.py's summary form."""
    score = info["score"]
    kills = {cls: int(n) for cls, n in score.get("kills", {}).items()}
    return {
        "credits": int(score["credits"]),
        "kills": kills,
        "boxes": int(score["boxes"]),
        "deaths": int(score["deaths"]),
    }


def _score_line(info: dict) -> str:
    score = info["score"]
    return f"credits {score['credits']}  deaths {score['deaths']}"


_PLAYER: BotPlayer | None = None


def _init_worker(cfg: EvalConfig) -> None:
    global _PLAYER
    logging.basicConfig(level=logging.WARNING)
    _PLAYER = BotPlayer(cfg)


def _play_in_worker(seed: int) -> dict[str, Any]:
    assert _PLAYER is not None, "the pool initializer builds the player"
    return _PLAYER.play(seed, _overlay(_PLAYER.cfg, seed))


def _overlay(cfg: EvalConfig, seed: int) -> Path | None:
    """The overlay video goes to the first episode only."""
    return cfg.overlay if seed == cfg.seed else None


# ------------------------------------------------------------------------------------------------ baselines


def play_baselines(cfg: EvalConfig) -> dict[str, list[dict[str, Any]]]:
    """The expert and the random policy on the eval seeds (ground truth, no rendering: fast)."""
    from arena.baselines import RandomPolicy, RandomPolicyConfig
    from arena.env import ArenaEnv
    from arena.expert import Expert, ExpertConfig
    from arena.rollout import play_episode

    env = ArenaEnv(arena_config(cfg, render=False))
    policies = {
        "expert": Expert(ExpertConfig.matching(env.config)),
        "random": RandomPolicy(RandomPolicyConfig(fps=cfg.fps)),
    }
    try:
        return {
            name: [play_episode(env, policy, seed=s, seconds=cfg.seconds) for s in cfg.seeds]
            for name, policy in policies.items()
        }
    finally:
        env.close()


def play_bot(cfg: EvalConfig) -> list[dict[str, Any]]:
    """The bot's episodes, in this process or on `workers` spawned processes; the first writes the overlay."""
    from tqdm import tqdm

    if cfg.workers == 1 or cfg.episodes == 1:
        player = BotPlayer(cfg)
        frames = (round(cfg.seconds * cfg.fps) + 1) * cfg.episodes
        with tqdm(total=frames, unit="frame", desc="bot", leave=False) as bar:
            return [player.play(seed, _overlay(cfg, seed), bar) for seed in cfg.seeds]
    with tqdm(total=cfg.episodes, unit="episode", desc="bot", leave=False) as bar:
        return play_seeds(
            cfg.seeds,
            _play_in_worker,
            workers=cfg.workers,
            init=_init_worker,
            init_args=(cfg,),
            episode=lambda seed: f"bot episode seed={seed}",
            on_done=lambda _seed: bar.update(),
        )


# ------------------------------------------------------------------------------------------------ report


def policy_stats(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Numbers of one policy over its episodes (JSON)."""
    credits = [s["score"]["credits"] for s in summaries]
    modes: Counter = Counter()
    for s in summaries:
        modes.update(s["mode_counts"])
    total = sum(modes.values())
    stats = {
        "credits_mean": float(np.mean(credits)),
        "credits_std": float(np.std(credits)),
        "kills_mean": float(np.mean([sum(s["score"]["kills"].values()) for s in summaries])),
        "boxes_mean": float(np.mean([s["score"]["boxes"] for s in summaries])),
        "deaths_mean": float(np.mean([s["score"]["deaths"] for s in summaries])),
        "modes": {m: c / total for m, c in modes.items()} if total else {},
        "episodes": [{"seed": s["seed"], "seconds": s["seconds"], **s["score"]} for s in summaries],
    }
    return stats


def decision_rates(summaries: list[dict[str, Any]]) -> dict[str, float]:
    """Calls of each model per game second, over all bot episodes."""
    seconds = sum(s["seconds"] for s in summaries)
    return {stage: sum(s["calls"][stage] for s in summaries) / seconds for stage in POLICY_STAGES}


def latency(summaries: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage: p50/p95 ms per frame, and p50/p95 ms per call for the models that do not run every frame."""
    out = {}
    for stage in LATENCY_STAGES:
        values = np.concatenate([np.asarray(s["ms"].get(stage, []), np.float64) for s in summaries])
        if not len(values):
            continue
        row = {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95))}
        if stage in POLICY_STAGES:
            ran = np.concatenate([np.asarray(s["ran"][stage], bool) for s in summaries])
            called = values[ran] if ran.any() else np.zeros(1)
            row |= {
                "call_p50": float(np.percentile(called, 50)),
                "call_p95": float(np.percentile(called, 95)),
            }
        out[stage] = row
    return out


def report(cfg: EvalConfig, bot: list[dict[str, Any]], baselines: dict[str, list[dict[str, Any]]]) -> dict:
    """The JSON report: per-policy numbers, the bot/expert credit ratio, rates and latency."""
    policies = {"bot": policy_stats(bot), **{name: policy_stats(s) for name, s in baselines.items()}}
    expert = policies.get("expert", {}).get("credits_mean")
    ratio = policies["bot"]["credits_mean"] / expert if expert else None
    return {
        "policy": str(cfg.policy),
        "seeds": cfg.seeds,
        "seconds": cfg.seconds,
        "frame_size": [cfg.width, cfg.height],
        "zoom": cfg.zoom,
        "fps": cfg.fps,
        "policies": policies,
        "bot_expert_ratio": ratio,
        "decisions_per_s": decision_rates(bot),
        "latency_ms": latency(bot),
        "overlay": None if cfg.overlay is None else str(cfg.overlay),
    }


def tables(cfg: EvalConfig, result: dict, bot: list[dict], baselines: dict[str, list[dict]]) -> str:
    """The score table (bot/play/demo.py's summary rows) and the latency table, as text."""
    from bot.play.report import format_table, summary_row

    rates = result["decisions_per_s"]
    rows = [summary_row("bot", bot)] + [summary_row(name, s) for name, s in baselines.items()]
    rows[0]["decisions/s S T E"] = " ".join(f"{rates[s]:.3g}" for s in POLICY_STAGES)
    columns = ["policy", "credits (mean ± std)", "kills", "boxes", "deaths", "modes", "decisions/s S T E"]
    lines = [
        f"{cfg.policy} on seeds {cfg.seeds[0]}..{cfg.seeds[-1]}, {cfg.seconds:g} s each, "
        f"{cfg.width}x{cfg.height} zoom {cfg.zoom:g}:",
        format_table(rows, columns),
    ]
    if result["bot_expert_ratio"] is not None:
        lines.append(f"bot / expert credits: {result['bot_expert_ratio']:.3f}")
    latency_rows = [
        {"stage": stage, **{k: round(v, 3) for k, v in row.items()}}
        for stage, row in result["latency_ms"].items()
    ]
    lines += [
        "\nper-stage latency, ms (p50/p95 per frame; call_* over the frames where the model ran; "
        "total = perception + policy; arena = the game itself):",
        format_table(latency_rows, ["stage", "p50", "p95", "call_p50", "call_p95"]),
    ]
    if cfg.overlay is not None:
        lines.append(f"\noverlay video: {cfg.overlay}")
    return "\n".join(lines)


def warn_training_seeds(bundle: PolicyBundle, seeds: list[int]) -> None:
    """Warn when an eval seed is one the bundle's episodes were recorded with (names expert-<seed>)."""
    names = (bundle.meta.get("data") or {}).get("train_episodes") or []
    trained = {int(m.group(1)) for n in names if (m := re.fullmatch(r"\w+-(\d+)", str(n)))}
    overlap = sorted(trained & set(seeds))
    if overlap:
        log.warning(
            "eval seeds %s were training episodes of %s: the score is not a held-out one",
            overlap,
            bundle.folder,
        )


def run(cfg: EvalConfig) -> tuple[dict[str, Any], str]:
    """Play the bot (and the baselines, and --against); returns the JSON report and its text tables."""
    warn_training_seeds(PolicyBundle.load(cfg.policy), cfg.seeds)  # a bad bundle fails here, before any play
    if cfg.against is not None:
        warn_training_seeds(PolicyBundle.load(cfg.against), cfg.seeds)
    bot = play_bot(cfg)
    other = play_bot(dataclasses.replace(cfg, policy=cfg.against, overlay=None)) if cfg.against else None
    baselines = play_baselines(cfg) if cfg.baselines else {}
    result = report(cfg, bot, baselines)
    text = tables(cfg, result, bot, baselines)
    if other is not None:
        result["against"], line = against_report(cfg, bot, other)
        text += "\n\n" + line
    return result, text


def against_report(cfg: EvalConfig, bot: list[dict], other: list[dict]) -> tuple[dict[str, Any], str]:
    """--against: the other bundle's numbers and the paired credit difference, as JSON and a text line."""
    from bot.play.paired import paired_difference, paired_line

    def by_seed(episodes: list[dict], name: str) -> list[float]:
        return [e["score"][name] for e in sorted(episodes, key=lambda e: e["seed"])]

    paired = paired_difference(by_seed(bot, "credits"), by_seed(other, "credits"))
    deaths = paired_difference(by_seed(bot, "deaths"), by_seed(other, "deaths"))
    result = {"policy": str(cfg.against), **policy_stats(other)}
    result |= {"paired_credits": paired, "paired_deaths": deaths}
    return result, paired_line(str(cfg.policy), str(cfg.against), paired)


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(EvalConfig, args=argv, prog="pilot eval", description=__doc__)
    if cfg.game != "arena":
        from bot.play import adapter_runs

        result = adapter_runs.evaluate(
            cfg.game,
            cfg.episodes,
            cfg.seconds,
            cfg.seed,
            cfg.workers,
            (cfg.width, cfg.height),
            cfg.headless,
            cfg.policy,
            cfg.baselines,
        )
        print(json.dumps(result, indent=2, allow_nan=False) if cfg.json else adapter_runs.tables(result))
        return 0
    result, text = run(cfg)
    print(json.dumps(result, indent=2, allow_nan=False) if cfg.json else text)
    return 0
