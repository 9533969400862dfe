"""`pilot run`: play a game live, through the screen, the mouse and the keyboard, with a policy bundle.
The bot starts PAUSED: F9 starts, F10 pauses, F12 kills (input stops for good); moving the mouse by hand
pauses it. `--dry-run` sends no input. The loop itself: bot/play/live.py; why: docs/notes/play.md.

Examples:
    pilot run --game arena --policy data/pretrained/arena                    # F9 to start
    pilot run --game arena --policy data/pretrained/arena --start-now --max-seconds 60 --summary run.json
    pilot run --game darkorbit --policy data/policies/do --region 0,80,1920,1000 --dry-run --overlay window
    pilot run --game naev --policy data/policies/naev --launch --no-headless     # starts Naev, then F9
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import tyro

from bot.control.hotkeys import HotkeyConfig
from bot.play.live import LiveRun

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """Play a game live with a policy bundle (see the module docstring)."""

    policy: Path  # a policy bundle folder (`pilot train policy --out`)
    game: str = "arena"  # game profile name; must be the bundle's
    dry_run: bool = False  # perceive and decide, send no input
    max_seconds: float = 0.0  # s of play before stopping by itself (0 = until killed / Ctrl+C)
    overlay: str = ""  # "window" (a pygame window beside the game) or FILE.mp4; "" = none
    start_now: bool = False  # act at once instead of waiting for the start hotkey
    fps: float = 30.0  # frames captured (and decisions taken) per second
    window: str | None = None  # capture the window whose title contains this (default: the profile's title)
    region: str | None = None  # capture this screen region instead: "X,Y,W,H" px
    summary: Path | None = None  # write the run's summary JSON here at exit
    runtime: str = "auto"  # detector runtime: auto, onnx, torch
    threads: int = 0  # detector threads (0 = the runtime's default)
    tactician_hz: float | None = None  # Tactician decisions per second (None = the bundle's)
    snap: float | None = None  # aim at the target's centre within this many box sizes (None = the bundle's)
    start_key: str = "f9"  # hotkey: start / resume
    pause_key: str = "f10"  # hotkey: pause / resume
    kill_key: str = "f12"  # hotkey: stop all input for good and end the run
    status_s: float = 1.0  # s between status lines
    seed: int | None = None  # seed of the input humaniser's randomness
    launch: bool = False  # start the game first through its adapter (naev), play it, end it with the run
    headless: bool = (
        True  # with --launch: the game on a private Xvfb (--no-headless: the display in $DISPLAY)
    )

    def __post_init__(self) -> None:
        if not 0 < self.fps <= 240:
            raise ValueError(f"--fps: expected a number in (0, 240], got {self.fps}")
        if self.max_seconds < 0:
            raise ValueError(f"--max-seconds: expected >= 0 (0 = no limit), got {self.max_seconds}")
        if self.status_s <= 0:
            raise ValueError(f"--status-s: expected > 0, got {self.status_s}")
        if self.overlay and self.overlay != "window" and not self.overlay.endswith(".mp4"):
            raise ValueError(f"--overlay: expected 'window' or a FILE.mp4, got {self.overlay!r}")
        if self.region is not None:
            parse_region(self.region)
        self.hotkeys  # noqa: B018 - validates the three keys

    @property
    def hotkeys(self) -> HotkeyConfig:
        return HotkeyConfig(self.start_key, self.pause_key, self.kill_key)

    @property
    def region_box(self) -> tuple[int, int, int, int] | None:
        """--region as (left, top, width, height) px; None when not given."""
        return None if self.region is None else parse_region(self.region)


def parse_region(text: str) -> tuple[int, int, int, int]:
    try:
        left, top, width, height = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--region: expected X,Y,W,H integers, got {text!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"--region: expected a positive width and height, got {text!r}")
    return left, top, width, height


def run_launched(cfg: RunConfig) -> dict:
    """Start the game through its adapter (its scenario, no probe read), play it live, end it. The summary
    also says how many cores the game and the bot used while it played (both share this machine)."""
    import resource
    import time

    from bot.games import adapter_for
    from bot.games.processes import cpu_seconds

    with adapter_for(cfg.game).launch(seed=cfg.seed or 0, headless=cfg.headless) as game:
        cfg.region = ",".join(str(v) for v in game.region)
        start = time.monotonic(), cpu_seconds(game.pid), resource.getrusage(resource.RUSAGE_SELF)
        summary = LiveRun(cfg).run()
        wall = max(time.monotonic() - start[0], 1e-9)
        used = resource.getrusage(resource.RUSAGE_SELF)
        bot_cpu = used.ru_utime + used.ru_stime - start[2].ru_utime - start[2].ru_stime
        summary["game_cpu_cores"] = round((cpu_seconds(game.pid) - start[1]) / wall, 3)
        summary["bot_cpu_cores"] = round(bot_cpu / wall, 3)
        if cfg.summary is not None:  # LiveRun wrote it before these were known
            cfg.summary.write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(RunConfig, args=argv, prog="pilot run", description=__doc__)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = run_launched(cfg) if cfg.launch else LiveRun(cfg).run()
    log.info(
        "run ended (%s): %d frames, %d clicks, %d keys, %d clamped",
        summary["stop_reason"],
        summary["frames"],
        summary.get("clicks", 0),
        summary.get("keys", 0),
        summary.get("clamped", 0),
    )
    return 0
