"""The Arena in a real window that a person (or the bot, through the OS) plays with mouse and keyboard.

    python -m arena.window                                   # play until the window is closed
    python -m arena.window --seconds 60 --seed 3 --score-out score.json --event-log events.jsonl
    pilot arena --width 640 --height 360                     # the same, through the project's CLI

Left click flies there, selects the NPC under the cursor, or on the minimap flies to that map point; space
toggles the attack, 1 repairs, 2 boosts. --event-log writes one JSON line per input and game event,
--score-out the final score on exit; "arena window ready WIDTHxHEIGHT" goes to stderr once the first frame
is shown. The event-log format: docs/notes/arena.md (arena/window.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from arena.env import ArenaConfig, ArenaEnv
from arena.spec import DEFAULT_FPS, DEFAULT_HEIGHT, DEFAULT_WIDTH, KEY_BINDINGS, KEYS
from arena.state import Action
from validation import check_float

log = logging.getLogger(__name__)

KEY_INDEX = {
    name: KEYS.index(action) for action, name in KEY_BINDINGS.items()
}  # pygame key name -> KEYS index


@dataclass
class WindowConfig:
    """A playable Arena window."""

    width: int = DEFAULT_WIDTH  # px
    height: int = DEFAULT_HEIGHT  # px
    fps: int = DEFAULT_FPS  # frames (and game steps) per second
    seed: int = 0  # world seed
    seconds: float = 0.0  # wall-clock seconds before closing by itself; 0 = until the window is closed
    title: str = "Orbit Pilot Arena"  # window title (the bot finds the window by it)
    event_log: Path | None = None  # JSON-lines file of every input event received and game event
    score_out: Path | None = None  # JSON file with the final info["score"], written on exit
    x: int = 0  # px, window position on the screen (SDL_VIDEO_WINDOW_POS)
    y: int = 0  # px

    def __post_init__(self) -> None:
        # The game itself validates width, height and fps through ArenaConfig when the window opens.
        ArenaConfig(width=self.width, height=self.height, fps=self.fps)
        check_float(self, "seconds", 0.0)  # 0 = until the window is closed


class InputQueue:
    """Turns pygame input events into one Action per frame; clicks and key taps beyond one per frame wait."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.mouse = (width / 2.0, height / 2.0)
        self.clicks: deque[tuple[float, float]] = deque()
        self.keys: deque[int] = deque()

    def push(self, event: Any) -> dict[str, Any] | None:
        """Take one pygame event; returns its event-log record (None for non-input events)."""
        import pygame

        if event.type == pygame.MOUSEMOTION:
            self.mouse = event.pos
            return {"type": "motion", "pos": list(event.pos)}
        if event.type in (pygame.MOUSEBUTTONDOWN, pygame.MOUSEBUTTONUP):
            down = event.type == pygame.MOUSEBUTTONDOWN
            self.mouse = event.pos
            if down and event.button == 1:
                self.clicks.append(event.pos)
            return {
                "type": "mousedown" if down else "mouseup",
                "pos": list(event.pos),
                "button": event.button,
            }
        if event.type in (pygame.KEYDOWN, pygame.KEYUP):
            name = pygame.key.name(event.key)
            if event.type == pygame.KEYDOWN and name in KEY_INDEX:
                self.keys.append(KEY_INDEX[name])
            return {"type": "keydown" if event.type == pygame.KEYDOWN else "keyup", "key": name}
        return None

    def next_action(self) -> Action:
        """This frame's action: the oldest waiting click (the cursor at its position) and key tap."""
        pos, click = self.mouse, False
        if self.clicks:
            pos, click = self.clicks.popleft(), True
        key = self.keys.popleft() if self.keys else 0
        return Action((pos[0] / self.width, pos[1] / self.height), click, key)


class _EventLog:
    """JSON lines, flushed per line so that a reader (or a crash) sees every event that arrived."""

    def __init__(self, path: Path | None) -> None:
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _open_display(cfg: WindowConfig):
    """Open the window; refuse to run invisibly (pygame falls back to 'offscreen' when X is missing)."""
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    os.environ["SDL_VIDEO_WINDOW_POS"] = f"{cfg.x},{cfg.y}"
    import pygame

    pygame.display.init()
    screen = pygame.display.set_mode((cfg.width, cfg.height))
    pygame.display.set_caption(cfg.title)
    driver = pygame.display.get_driver()
    requested = os.environ.get("SDL_VIDEODRIVER")
    if os.environ.get("DISPLAY") and not requested and driver != "x11":
        pygame.display.quit()
        raise RuntimeError(f"DISPLAY is set but pygame opened the {driver!r} video driver, not 'x11'")
    if driver in ("offscreen", "dummy") and requested != driver:
        pygame.display.quit()
        raise RuntimeError(
            f"no visible display: pygame fell back to {driver!r}; set DISPLAY (e.g. under Xvfb)"
        )
    log.info("window %dx%d on video driver %s", cfg.width, cfg.height, driver)
    return screen


def _install_stop_handlers(stop: list[bool]) -> dict[int, Any]:
    """SIGTERM / SIGINT end the loop cleanly (score written); returns the previous handlers."""
    previous: dict[int, Any] = {}

    def handler(signum: int, _frame: Any) -> None:
        stop[0] = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        # Outside the main thread this raises ValueError: the close button and --seconds still work.
        with contextlib.suppress(ValueError):
            previous[sig] = signal.signal(sig, handler)
    return previous


def _pump(queue: InputQueue, events_log: _EventLog, t: float, frame: int) -> bool:
    """Feed this frame's events to the queue and the log; False once the window was closed."""
    import pygame

    open_ = True
    for event in pygame.event.get():
        if event.type == pygame.QUIT:
            open_ = False
            continue
        record = queue.push(event)
        if record is not None:
            events_log.write({"t": round(t, 4), "frame": frame, **record})
    return open_


def run_window(cfg: WindowConfig) -> dict[str, Any]:
    """Play until closed, `cfg.seconds`, SIGTERM or SIGINT; returns the final info["score"]."""
    import pygame

    screen = _open_display(cfg)
    env = ArenaEnv(
        ArenaConfig(width=cfg.width, height=cfg.height, fps=cfg.fps, episode_seconds=1e9, render=False)
    )
    _, info = env.reset(seed=cfg.seed)
    queue, events_log, clock = (
        InputQueue(cfg.width, cfg.height),
        _EventLog(cfg.event_log),
        pygame.time.Clock(),
    )
    stop, effects = [False], Counter()
    previous = _install_stop_handlers(stop)
    start = None
    try:
        while not stop[0]:
            now = time.monotonic()
            t = 0.0 if start is None else now - start
            if not _pump(queue, events_log, t, env.world.frame) or (cfg.seconds and t >= cfg.seconds):
                break
            _, _, _, _, info = env.step(queue.next_action())
            effects.update(info["events"])
            for event in info["events"]:
                events_log.write({"t": round(t, 4), "frame": env.world.frame, "type": "game", "event": event})
            screen.blit(env.render_surface(), (0, 0))
            pygame.display.flip()
            if start is None:
                start = time.monotonic()
                sys.stderr.write(f"arena window ready {cfg.width}x{cfg.height}\n")
                sys.stderr.flush()
            clock.tick(cfg.fps)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        events_log.close()
        score = {**info["score"], "effects": dict(effects)}
        _write_score(cfg.score_out, score)
        pygame.display.quit()
    log.info("window closed after %d frames; score %s", env.world.frame, info["score"])
    return score


def _write_score(path: Path | None, score: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(score) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """`pilot arena` / `python -m arena.window`: parse WindowConfig flags and play."""
    import tyro

    cfg = tyro.cli(WindowConfig, args=argv, prog="pilot arena")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_window(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
