"""LiveRun: one `pilot run`. Opens the screen capture, perception, the policy, the input driver, the
hotkeys and the overlay; loops frame by frame until a stop reason (--max-seconds, the kill hotkey, Ctrl+C,
SIGTERM, the game window gone, capture or input failing); then releases every key and button and closes
everything, whatever the way out. Once a second it logs a status line (bot/play/latency.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from bot.control.backend import PynputBackend, RecordingBackend
from bot.control.driver import InputDriver, Region, click_radius, hud_no_click
from bot.control.hotkeys import Hotkeys
from bot.control.humanize import InputConfig
from bot.errors import CaptureError, InputError, PilotError
from bot.perception.capture import Frame, MssConfig, MssSource, find_window
from bot.play.latency import PER_CALL, Latency
from bot.play.overlay import Overlay
from bot.profile import GameProfile

if TYPE_CHECKING:  # torch, the detector stack and the CLI config: imported for the annotations only
    from bot.perception.detector import Detector
    from bot.perception.pipeline import Perception, PerceptionStep
    from bot.play.run import RunConfig
    from bot.policy.runner import Decision, PolicyRunner

log = logging.getLogger(__name__)

WINDOW_CHECK_S = 1.0  # s between checks that the game window still exists (and has not moved)


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
        self.last_decision: tuple[PerceptionStep, Decision] | None = None  # of the latest frame
        self._stop_event = threading.Event()

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            log.info("stopping: %s", reason)
        self._stop_event.set()

    # ---------------------------------------------------------------------------------- setup

    def _load_policy(self) -> tuple[GameProfile, Detector, PolicyRunner, type[Perception]]:
        """The bundle's profile, detector and runner (run at the bundle's inference settings unless
        --tactician-hz / --snap override them), and the Perception class (imported here: they load torch,
        which `pilot run --help` need not wait for)."""
        from bot.perception.pipeline import Perception
        from bot.policy.bundle import PolicyBundle
        from bot.policy.runner import PolicyRunner

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
            return MssConfig(region=cfg.region_box, fps=cfg.fps)
        title = cfg.window or profile.window.title
        if title:
            return MssConfig(title=title, fps=cfg.fps)
        return MssConfig(region=profile.window.region, monitor=profile.window.monitor, fps=cfg.fps)

    def _driver(self, profile: GameProfile, region: Region) -> InputDriver:
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
        closers: list[Callable[[], Any]] = []
        driver: InputDriver | None = None
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

    def _loop(
        self,
        source: MssSource,
        perception: Perception,
        runner: PolicyRunner,
        driver: InputDriver,
        overlay: Overlay | None,
        profile: GameProfile,
    ) -> None:
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

    def _read(self, source: MssSource) -> Frame | None:
        try:
            frame = source.read()
        except Exception as exc:  # noqa: BLE001 - mss / Xlib raise several types when the screen goes away
            self.stop(f"frames stopped arriving ({type(exc).__name__}: {exc})")
            return None
        if frame is None:
            self.stop("the frame source ended")
        return frame

    def _window_still_there(self, source: MssSource, driver: InputDriver) -> bool:
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

    def _act(
        self,
        frame: Frame,
        origin: float,
        perception: Perception,
        runner: PolicyRunner,
        driver: InputDriver,
        profile: GameProfile,
    ) -> str:
        """Perceive, decide and hand the decision to the input thread; returns the overlay's status text."""
        grabbed = origin + frame.t
        self.latency.add("capture", (time.monotonic() - grabbed) * 1000.0)
        self.cursor, self.click = self._observed_hand(driver)
        step = perception.step(frame.image, self.cursor, self.click, frame.t)
        decision = runner.act(step)
        left, top, width, height = driver.region
        x, y = (min(1.0, max(0.0, float(v))) for v in decision.mouse)
        key = profile.keys[decision.key].key if 0 < decision.key < len(profile.keys) else None
        radius = click_radius(decision.click_size, (width, height))
        point = (left + x * width, top + y * height)
        driver.submit(*point, decision.click, key, frame_t=grabbed, click_radius=radius)
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
