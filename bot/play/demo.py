"""`pilot demo`, what `scripts/demo.sh` runs for a newcomer: the bot plays the Arena with the shipped policy
(data/pretrained/arena), first live in a window when a display exists (`pilot run` through the screen, mouse
and keyboard; it waits for F9), then in-process on unseen seeds (`pilot eval`), writing `<out>/overlay.mp4`
and printing the bot / expert / random table. `--game naev`: the real Naev is started on a private display
and the bot (data/pretrained/naev) plays it live through the screen and X input, writing the overlay video,
then `pilot eval --game naev` plays the bot, the scripted pilot and random input on unseen seeds.
More: docs/notes/play.md.

Examples:
    pilot demo                                      # 3 seeds x 60 s, window if a display exists
    pilot demo --window off --episodes 1 --seconds 20
    pilot demo --game naev --episodes 2 --seconds 30 --live-seconds 30
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tyro

from bot.errors import PilotError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
READY = "arena window ready"


@dataclass
class DemoConfig:
    """The bot plays a game with a policy bundle: live (the Arena in a window when possible, an adapter game
    on its private display), then an evaluation."""

    game: str = "arena"  # arena, or a game played through its adapter (naev)
    policy: Path | None = None  # policy bundle folder (default: data/pretrained/<game>)
    out: Path = Path("data/runs/demo")  # folder for overlay.mp4 and summary.json
    episodes: int = 3  # evaluation episodes (seeds seed .. seed + episodes - 1)
    seconds: float = 60.0  # game seconds per evaluation episode
    seed: int = 1000  # first evaluation seed (demonstrations use 0..)
    workers: int = 2  # processes playing evaluation episodes in parallel
    window: Literal["auto", "on", "off"] = "auto"  # live play in a window: auto = when a display exists
    live_seconds: float = 60.0  # s the live run lasts (it waits for F9 before acting)

    def __post_init__(self) -> None:
        self.policy = REPO / "data/pretrained" / self.game if self.policy is None else Path(self.policy)
        self.out = Path(self.out)
        for name in ("episodes", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("seconds", "live_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')}: expected > 0, got {getattr(self, name)}")


def display_available() -> bool:
    """Whether an X display answers (a real desktop or Xvfb); pygame and mss both need one for live play."""
    if not os.environ.get("DISPLAY"):
        return False
    try:
        from Xlib import display
        from Xlib.error import DisplayError

        display.Display().close()
        return True
    except (DisplayError, OSError, ImportError):
        return False


def _wait_for_ready(game: subprocess.Popen, timeout_s: float = 60.0) -> None:
    ready = threading.Event()

    def read() -> None:
        for line in game.stderr:
            if line.startswith(READY):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(timeout_s):
        game.kill()
        raise PilotError(f"pilot arena: no {READY!r} line within {timeout_s:.0f} s")


def play_live(cfg: DemoConfig) -> dict[str, Any]:
    """`pilot arena` in a window + `pilot run` on it; returns the run summary with the game's final score."""
    pilot = [sys.executable, "-m", "bot.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        score, summary = Path(tmp) / "score.json", Path(tmp) / "run.json"
        game_cmd = [*pilot, "arena", "--seconds", str(cfg.live_seconds + 30), "--score-out", str(score)]
        game = subprocess.Popen(game_cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for_ready(game)
            print(
                f"\nlive: the bot plays the Arena window for {cfg.live_seconds:.0f} s once you press F9 "
                "(F10 pauses, F12 stops it; moving the mouse yourself pauses it)",
                flush=True,
            )
            run_cmd = [*pilot, "run", "--game", "arena", "--policy", str(cfg.policy)]
            run_cmd += ["--max-seconds", str(cfg.live_seconds), "--summary", str(summary)]
            code = subprocess.run(run_cmd, cwd=REPO).returncode
            if code != 0:
                raise PilotError(f"pilot run exited with {code}")
        finally:
            if game.poll() is None:
                game.terminate()
            game.wait(timeout=30)
        result = json.loads(summary.read_text()) if summary.exists() else {}
        result["score"] = json.loads(score.read_text()) if score.exists() else None
        return result


def play_launched(cfg: DemoConfig) -> dict[str, Any]:
    """`pilot run --launch`: the adapter starts the game on a private display, the bot plays it live through
    the screen and X input from the first frame, and the overlay video is written; returns the run summary."""
    summary = cfg.out / "live.json"
    run_cmd = [sys.executable, "-m", "bot.cli", "run", "--game", cfg.game, "--policy", str(cfg.policy)]
    run_cmd += ["--launch", "--start-now", "--max-seconds", str(cfg.live_seconds)]
    run_cmd += ["--overlay", str(cfg.out / "overlay.mp4"), "--summary", str(summary)]
    print(f"\nlive: the bot plays {cfg.game} for {cfg.live_seconds:.0f} s on a private display", flush=True)
    code = subprocess.run(run_cmd, cwd=REPO).returncode
    if code != 0:
        raise PilotError(f"pilot run --game {cfg.game} --launch exited with {code}")
    return json.loads(summary.read_text()) if summary.exists() else {}


def live_line(result: dict[str, Any]) -> str:
    score = result.get("score") or {}
    total = result.get("latency_ms", {}).get("total", {})
    return (
        f"live run ({result.get('stop_reason', '?')}): {result.get('frames', 0)} frames, "
        f"{result.get('clicks', 0)} clicks, {result.get('keys', 0)} keys, "
        + (f"credits {score.get('credits', '?')}, " if score else "")
        + f"frame->decision p50 {total.get('p50', float('nan')):.1f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(DemoConfig, args=argv, prog="pilot demo", description=__doc__)
    from bot.play.evaluate import EvalConfig, run

    if not (cfg.policy / "bundle.json").exists():
        raise PilotError(
            f"{cfg.policy}: no bundle.json (expected a policy bundle, e.g. data/pretrained/arena)"
        )
    cfg.out.mkdir(parents=True, exist_ok=True)
    if cfg.game != "arena":
        return _demo_adapter_game(cfg)
    live: dict[str, Any] | None = None
    if cfg.window == "on" or (cfg.window == "auto" and display_available()):
        live = play_live(cfg)
        print(live_line(live))
    overlay = cfg.out / "overlay.mp4"
    evaluation = EvalConfig(
        policy=cfg.policy, episodes=cfg.episodes, seconds=cfg.seconds, seed=cfg.seed, overlay=overlay,
        workers=cfg.workers,
    )  # fmt: skip
    log.info("evaluating %s on seeds %s (overlay video: %s)", cfg.policy, evaluation.seeds, overlay)
    result, text = run(evaluation)
    print(text)
    (cfg.out / "summary.json").write_text(json.dumps({"live": live, "eval": result}, indent=2) + "\n")
    return 0


def _demo_adapter_game(cfg: DemoConfig) -> int:
    """Live play with the overlay video, then the bot / scripted pilot / random table on unseen seeds."""
    from bot.games import adapter_for
    from bot.play.adapter_runs import evaluate, tables
    from bot.policy.bundle import load_bundle_for

    adapter_for(cfg.game)  # a game without an adapter is refused by name before anything starts
    load_bundle_for(cfg.policy, cfg.game)
    live = play_launched(cfg)
    print(live_line(live))
    result = evaluate(
        cfg.game, cfg.episodes, cfg.seconds, cfg.seed, cfg.workers, (1280, 720), policy=cfg.policy
    )
    print(tables(result))
    print(f"\noverlay video: {cfg.out / 'overlay.mp4'}")
    (cfg.out / "summary.json").write_text(json.dumps({"live": live, "eval": result}, indent=2) + "\n")
    return 0
