"""`pilot run`: play a game live, through the screen, the mouse and the keyboard, with a policy bundle.

    game window ──MssSource (paced fps)──▶ frame ──Perception──▶ step ──PolicyRunner──▶ Decision
         ▲                                                                            │ mouse (region
         └─────── pynput ◀── InputDriver thread (humanised, clamped to the window) ◀──┘ fractions), click, key

Safety first (original-system.md 1.10): the bot starts PAUSED and acts only after the start hotkey (F9),
unless `--start-now`; F10 pauses and resumes; F12 kills: input stops at once for good and the run ends.
Moving the mouse by hand also pauses it. Every key and button is released on every way out: the end of
--max-seconds, the kill hotkey, Ctrl+C, SIGTERM, the game window closing (checked every second), capture
errors, exceptions.
`--dry-run` does everything except send input (the driver records what it would have sent).

The cursor and click fed to perception are what the bot's hand did before the frame: where the driver last put
the pointer and whether it clicked (a recording holds a person's actual cursor and clicks, not their aim; a
pointer moved by a person pauses the bot). Once a second a status line logs fps,
per-stage latency p50/p95 in ms (capture, detect, track, hud, encode, strategist, tactician, executor, total
= frame grab to the target handed to the input thread; input = frame grab to the first input event sent),
mode, target, actions/s and clamps. `--summary FILE` writes the run's totals and latency percentiles as JSON.
`--overlay FILE.mp4` records what the bot saw and decided; `--overlay window` shows it in a pygame window
placed beside the game region.

Examples:
    pilot run --game arena --policy data/pretrained/arena                    # F9 to start
    pilot run --game arena --policy data/pretrained/arena --start-now --max-seconds 60 --summary run.json
    pilot run --game darkorbit --policy data/policies/do --region 0,80,1920,1000 --dry-run --overlay window
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tyro

from bot.control.input import (
    HotkeyConfig,
    Hotkeys,
    InputConfig,
    InputDriver,
    InputError,
    PynputBackend,
    RecordingBackend,
    hud_no_click,
)
from bot.errors import CaptureError, PilotError
from bot.perception.capture import Frame, MssConfig, MssSource, find_window
from bot.play.overlay import OverlayState, draw_overlay, perceived_objects
from bot.profile import GameProfile

log = logging.getLogger(__name__)

STAGES = (
    "capture",
    "detect",
    "track",
    "hud",
    "encode",
    "strategist",
    "tactician",
    "executor",
    "total",
    "input",
)
PER_CALL = ("strategist", "tactician")  # stages that run on some frames only (1 Hz, tactician_hz)
WINDOW_CHECK_S = 1.0  # s between checks that the game window still exists (and has not moved)


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
    tactician_hz: float = 10.0  # Tactician decisions per second
    snap: float = 40.0  # aim at the chosen target's centre within this many box sizes (= policy.SNAP_BOXES)
    start_key: str = "f9"  # hotkey: start / resume
    pause_key: str = "f10"  # hotkey: pause / resume
    kill_key: str = "f12"  # hotkey: stop all input for good and end the run
    status_s: float = 1.0  # s between status lines
    seed: int | None = None  # seed of the input humaniser's randomness

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


def parse_region(text: str) -> tuple[int, int, int, int]:
    try:
        left, top, width, height = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--region: expected X,Y,W,H integers, got {text!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"--region: expected a positive width and height, got {text!r}")
    return left, top, width, height


# ------------------------------------------------------------------------------------------------ latency


class Latency:
    """Per-stage milliseconds: the whole run (for the summary) and the last status period."""

    def __init__(self, keep: int = 100_000) -> None:
        self.run: dict[str, deque[float]] = {s: deque(maxlen=keep) for s in STAGES}
        self.recent: dict[str, list[float]] = {s: [] for s in STAGES}

    def add(self, stage: str, ms: float) -> None:
        self.run[stage].append(ms)
        self.recent[stage].append(ms)

    def status(self) -> str:
        parts = []
        for stage in STAGES:
            values = self.recent[stage]
            if values:
                p50, p95 = np.percentile(values, [50, 95])
                parts.append(f"{stage} {p50:.1f}/{p95:.1f}")
            values.clear()
        return " ".join(parts)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for stage, values in self.run.items():
            if values:
                p50, p95 = np.percentile(list(values), [50, 95])
                out[stage] = {"p50": float(p50), "p95": float(p95), "mean": float(np.mean(values))}
        return out


# ------------------------------------------------------------------------------------------------ overlay


class OverlayWindow:
    """The overlay in a pygame window beside the game region, never over it (the bot would see itself)."""

    TITLE = "Orbit Pilot overlay"
    MIN_SCALE = 0.15  # a smaller overlay is unreadable: refuse rather than cover the game

    def __init__(self, frame_size: tuple[int, int], region: tuple[int, int, int, int], scale: float = 0.5):
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import pygame

        self.pygame = pygame
        pygame.display.init()
        info = pygame.display.Info()
        placed = place_beside(region, frame_size, (info.current_w, info.current_h), scale)
        if placed is None:
            pygame.display.quit()
            raise PilotError(
                f"--overlay window: no room beside the game region {region} on the "
                f"{info.current_w}x{info.current_h} screen; use --overlay FILE.mp4"
            )
        (x, y), self.size = placed
        os.environ["SDL_VIDEO_WINDOW_POS"] = f"{x},{y}"
        self.screen = pygame.display.set_mode(self.size)
        pygame.display.set_caption(self.TITLE)

    def show(self, rgb: np.ndarray) -> None:
        pygame = self.pygame
        surface = pygame.surfarray.make_surface(np.ascontiguousarray(rgb.swapaxes(0, 1)))
        self.screen.blit(pygame.transform.smoothscale(surface, self.size), (0, 0))
        pygame.display.flip()
        pygame.event.pump()

    def close(self) -> None:
        self.pygame.display.quit()


def place_beside(
    region: tuple[int, int, int, int], frame: tuple[int, int], screen: tuple[int, int], scale: float
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """((x, y), (w, h)) of the largest overlay, at most `scale` times the frame, that fits on the screen
    right of, left of, below or above the game region without covering it; None when none is readable."""
    left, top, width, height = region
    right, bottom = left + width, top + height
    best = None
    for side, room_w, room_h in (
        ("right", screen[0] - right, screen[1]),
        ("left", left, screen[1]),
        ("below", screen[0], screen[1] - bottom),
        ("above", screen[0], top),
    ):
        fit = min(scale, room_w / frame[0], room_h / frame[1])
        if fit >= OverlayWindow.MIN_SCALE and (best is None or fit > best[1]):
            best = (side, fit)
    if best is None:
        return None
    side, fit = best
    w, h = int(frame[0] * fit), int(frame[1] * fit)
    beside_y = min(max(top, 0), screen[1] - h)  # level with the game, as far as the screen allows
    beside_x = min(max(left, 0), screen[0] - w)
    x, y = {
        "right": (right, beside_y),
        "left": (left - w, beside_y),
        "below": (beside_x, bottom),
        "above": (beside_x, top - h),
    }[side]
    return (x, y), (w, h)


class Overlay:
    """Draws each frame's perception and decision; writes it to an mp4 or shows it in a window."""

    def __init__(self, target: str, frame_size: tuple[int, int], fps: float, region, profile: GameProfile):
        self.profile = profile
        self.cursor: deque[tuple[float, float]] = deque(maxlen=int(fps))
        self.window: OverlayWindow | None = None
        self.video = None
        if target == "window":
            self.window = OverlayWindow(frame_size, region)
        else:
            from bot.recordings.video import VideoWriter

            self.even = (frame_size[0] // 2 * 2, frame_size[1] // 2 * 2)
            self.video = VideoWriter(target, self.even[0], self.even[1], fps)
            log.info("overlay video: %s", target)

    def put(self, frame: np.ndarray, step: Any, decision: Any, status: str) -> None:
        h, w = frame.shape[:2]
        self.cursor.append((decision.mouse[0] * w, decision.mouse[1] * h))
        state = OverlayState(
            objects=perceived_objects(step, self.profile.class_names),
            target_id=decision.target_id or None,
            mode=decision.mode or None,
            mode_probs=dict(zip(self.profile.modes, decision.mode_probs.tolist())) or None,
            hud={"hp": step.hud.bar("hp"), "shield": step.hud.bar("shield")},
            cursor_path=list(self.cursor),
            status=status,
        )
        image = draw_overlay(frame, state)
        if self.window is not None:
            self.window.show(image)
        if self.video is not None:
            self.video.put(np.ascontiguousarray(image[: self.even[1], : self.even[0]]))

    def close(self) -> None:
        if self.window is not None:
            self.window.close()
        if self.video is not None:
            self.video.close()


# ------------------------------------------------------------------------------------------------ the loop


class LiveRun:
    """One live run: open everything, loop until a stop reason, release and close everything."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.stop_reason: str | None = None
        self.latency = Latency()
        self.modes: Counter[str] = Counter()
        self.frames, self.dropped = 0, 0
        self.cursor, self.click = (0.5, 0.5), False  # what the hand did before this frame (region fractions)
        self._clicks_seen = 0
        self.last_decision: Any = None
        self._stop_event = threading.Event()

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            log.info("stopping: %s", reason)
        self._stop_event.set()

    # ---------------------------------------------------------------------------------- setup

    def _load_policy(self):
        from bot.perception.pipeline import Perception
        from bot.policy.runner import PolicyBundle, PolicyRunner

        bundle = PolicyBundle.load(self.cfg.policy)
        if bundle.profile.name != self.cfg.game:
            raise PilotError(
                f"--game: the bundle {self.cfg.policy} plays {bundle.profile.name!r}, got {self.cfg.game!r}"
            )
        detector = bundle.detector(self.cfg.runtime, self.cfg.threads)
        runner = PolicyRunner(bundle, tactician_hz=self.cfg.tactician_hz, snap=self.cfg.snap)
        return bundle.profile, detector, runner, Perception

    def _source_config(self, profile: GameProfile) -> MssConfig:
        cfg = self.cfg
        if cfg.region is not None:
            return MssConfig(region=parse_region(cfg.region), fps=cfg.fps)
        title = cfg.window or profile.window.title
        if title:
            return MssConfig(title=title, fps=cfg.fps)
        return MssConfig(region=profile.window.region, monitor=profile.window.monitor, fps=cfg.fps)

    def _driver(self, profile: GameProfile, region: tuple[int, int, int, int]) -> InputDriver:
        keys = [k.key for k in profile.keys[1:] if k.key]
        self.cfg.hotkeys.check_against(keys)
        left, top, width, height = region
        centre = (left + width // 2, top + height // 2)
        backend = RecordingBackend(centre, max_events=10_000) if self.cfg.dry_run else PynputBackend(keys)
        no_click = hud_no_click(list(profile.hud.panels.values()), region)
        return InputDriver(backend, region, InputConfig(seed=self.cfg.seed), no_click=no_click)

    def _hotkeys(self, driver: InputDriver) -> Hotkeys | None:
        hotkeys = Hotkeys(
            self.cfg.hotkeys,
            on_start=driver.resume,
            on_pause=lambda: driver.resume() if driver.paused else driver.pause(),
            on_kill=lambda: (driver.kill(), self.stop(f"killed by the {self.cfg.kill_key.upper()} hotkey")),
            ignore=driver.injected_recently,
        )
        try:
            return hotkeys.start()
        except InputError as exc:
            if not self.cfg.dry_run:
                raise InputError(f"no kill switch, so no input: the hotkey listener failed ({exc})") from None
            log.warning("hotkeys unavailable in this dry run: %s", exc)
            return None

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT (Ctrl+C) end the loop; everything is then released and closed."""
        previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers, finally still runs
                previous[sig] = signal.signal(sig, lambda s, _f: self.stop(signal.Signals(s).name))
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # ---------------------------------------------------------------------------------- run

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        profile, detector, runner, Perception = self._load_policy()
        closers: list[Any] = []
        driver = None
        try:
            with self._signals():
                source = MssSource(self._source_config(profile))
                closers.append(source.close)
                region = tuple(source.monitor[k] for k in ("left", "top", "width", "height"))
                perception = Perception(profile, detector, source.size, source.fps)
                driver = self._driver(profile, region)
                hotkeys = self._hotkeys(driver)
                if hotkeys is not None:
                    closers.append(hotkeys.stop)
                overlay = Overlay(cfg.overlay, source.size, cfg.fps, region, profile) if cfg.overlay else None
                if overlay is not None:
                    closers.append(overlay.close)
                self._announce(region, profile)
                driver.start(paused=not cfg.start_now)
                runner.reset()
                self._loop(source, perception, runner, driver, overlay, profile)
        finally:
            if driver is not None:
                driver.stop()
            for close in reversed(closers):
                with contextlib.suppress(Exception):
                    close()
            if driver is not None and isinstance(driver.backend, PynputBackend):
                driver.backend.close()
        summary = self._summary(driver, profile)
        if cfg.summary is not None:
            cfg.summary.parent.mkdir(parents=True, exist_ok=True)
            cfg.summary.write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def _announce(self, region: tuple[int, ...], profile: GameProfile) -> None:
        cfg = self.cfg
        mode = "DRY RUN (no input is sent)" if cfg.dry_run else "LIVE"
        log.info(
            "%s: %s in region %s at %.0f fps, policy %s", mode, profile.name, region, cfg.fps, cfg.policy
        )
        state = "acting now" if cfg.start_now else f"PAUSED until {cfg.start_key.upper()}"
        log.info("%s. Hotkeys: %s. Ctrl+C also stops.", state, cfg.hotkeys.describe())

    def _loop(self, source, perception, runner, driver: InputDriver, overlay, profile: GameProfile) -> None:
        cfg = self.cfg
        origin = time.monotonic()  # MssSource's clock starts at the first read(), i.e. now (frame.t origin)
        last_status, next_window = origin, origin + WINDOW_CHECK_S
        status_frames, status_actions = 0, driver.stats.clicks + driver.stats.keys
        while not self._stop_event.is_set():
            now = time.monotonic()
            if cfg.max_seconds and now - origin >= cfg.max_seconds:
                self.stop(f"--max-seconds {cfg.max_seconds:g} reached")
                break
            if now >= next_window:
                next_window = now + WINDOW_CHECK_S
                if not self._window_still_there(source, driver):
                    break
            if driver.error is not None:
                self.stop(f"input failed: {driver.error}")
                break
            frame = self._read(source)
            if frame is None:
                break
            status = self._act(frame, origin, perception, runner, driver, profile)
            status_frames += 1
            if overlay is not None:
                overlay.put(frame.image, *self.last_decision, status)
            if (now := time.monotonic()) - last_status >= cfg.status_s:
                actions = driver.stats.clicks + driver.stats.keys
                self._status(status_frames, actions - status_actions, driver, now - last_status)
                last_status, status_frames, status_actions = now, 0, actions

    def _read(self, source) -> Frame | None:
        try:
            frame = source.read()
        except Exception as exc:  # noqa: BLE001 - mss / Xlib raise several types when the screen goes away
            self.stop(f"frames stopped arriving ({type(exc).__name__}: {exc})")
            return None
        if frame is None:
            self.stop("the frame source ended")
        return frame

    def _window_still_there(self, source, driver: InputDriver) -> bool:
        title = source.cfg.title
        if not title:
            return True
        try:
            rect = find_window(title, source.cfg.display)
        except CaptureError as exc:
            driver.pause()
            self.stop(f"the game window is gone ({exc})")
            return False
        old = tuple(source.monitor[k] for k in ("left", "top", "width", "height"))
        if rect[2:] != old[2:]:
            driver.pause()
            self.stop(f"the game window changed size from {old[2:]} to {rect[2:]}")
            return False
        if rect != old:  # moved: follow it
            log.info("the game window moved to %s", rect[:2])
            source.monitor.update(left=rect[0], top=rect[1])
            dx, dy = rect[0] - old[0], rect[1] - old[1]
            driver.region = rect
            driver.no_click = [(x1 + dx, y1 + dy, x2 + dx, y2 + dy) for x1, y1, x2, y2 in driver.no_click]
        return True

    def _act(self, frame: Frame, origin: float, perception, runner, driver: InputDriver, profile) -> str:
        grabbed = origin + frame.t
        self.latency.add("capture", (time.monotonic() - grabbed) * 1000.0)
        self.cursor, self.click = self._observed_hand(driver)
        step = perception.step(frame.image, self.cursor, self.click, frame.t)
        decision = runner.act(step)
        left, top, width, height = driver.region
        x, y = (min(1.0, max(0.0, float(v))) for v in decision.mouse)
        key = profile.keys[decision.key].key if 0 < decision.key < len(profile.keys) else None
        driver.submit(left + x * width, top + y * height, decision.click, key, frame_t=grabbed)
        self.latency.add("total", (time.monotonic() - grabbed) * 1000.0)
        for stage, ms in {**step.ms, **decision.ms}.items():
            if stage in PER_CALL and ms == 0.0:  # not due this frame: its latency is per call
                continue
            if stage in self.latency.run:
                self.latency.add(stage, ms)
        self.frames += 1
        self.dropped = frame.dropped
        self.modes[decision.mode or "-"] += 1
        self.last_decision = (step, decision)
        return f"{'paused' if driver.paused else 'active'} {decision.mode or '-'} target {decision.target_id}"

    def _observed_hand(self, driver: InputDriver) -> tuple[tuple[float, float], bool]:
        """The cursor and click perception sees: what the hand did since the last frame, as in a recording.

        Not the policy's aim: the Executor aims at where the next click lands and the driver draws the path,
        while every model was trained on a person's actual cursor and actual clicks.
        """
        point, clicks = driver.hand()
        clicked, self._clicks_seen = clicks > self._clicks_seen, clicks
        if point is None:
            return self.cursor, clicked
        left, top, width, height = driver.region
        x = min(1.0, max(0.0, (point[0] - left) / width))
        y = min(1.0, max(0.0, (point[1] - top) / height))
        return (x, y), clicked

    def _status(self, frames: int, actions: int, driver: InputDriver, seconds: float) -> None:
        while driver.stats.latency_ms:
            self.latency.add("input", driver.stats.latency_ms.popleft())
        _, decision = self.last_decision
        state = "LIVE"
        if driver.killed or driver.paused:
            state = "KILLED" if driver.killed else "PAUSED"
        elif self.cfg.dry_run:
            state = "DRY"
        log.info(
            "%s fps %.1f dropped %d | ms p50/p95 %s | mode %s target %d | actions/s %.1f | clamped %d",
            state,
            frames / seconds,
            self.dropped,
            self.latency.status(),
            decision.mode or "-",
            decision.target_id,
            actions / seconds,
            driver.stats.clamped,
        )

    def _summary(self, driver: InputDriver | None, profile: GameProfile) -> dict[str, Any]:
        if driver is not None:
            while driver.stats.latency_ms:
                self.latency.add("input", driver.stats.latency_ms.popleft())
        stats = driver.stats.to_dict() if driver is not None else {}
        return {
            "game": profile.name,
            "policy": str(self.cfg.policy),
            "dry_run": self.cfg.dry_run,
            "region": list(driver.region) if driver is not None else None,
            "frames": self.frames,
            "dropped_frames": self.dropped,
            "killed": bool(driver is not None and driver.killed),
            "stop_reason": self.stop_reason,
            **stats,
            "modes": dict(self.modes),
            "latency_ms": self.latency.summary(),
        }


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(RunConfig, args=argv, prog="pilot run", description=__doc__)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = LiveRun(cfg).run()
    log.info(
        "run ended (%s): %d frames, %d clicks, %d keys, %d clamped",
        summary["stop_reason"],
        summary["frames"],
        summary.get("clicks", 0),
        summary.get("keys", 0),
        summary.get("clamped", 0),
    )
    return 0
