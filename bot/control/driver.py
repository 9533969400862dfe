"""The bot's hand: `InputDriver` sends mouse and keyboard input on a thread of its own, confined to the game
region, and easy to stop.

    control loop ──submit(x, y, click, key)──▶ mailbox (latest target wins; one pending click; key taps)
                                                   │  read every tick (~125 Hz) by the input thread
                                                   ▼
        InputDriver.tick: steer a minimum-jerk path ─▶ move ─▶ click once arrived ─▶ key taps ─▶ backend

`pause()` releases all that is held; `kill()` stops all input for good; a person moving the mouse pauses it.
Why: docs/notes/perception.md, section bot/control/driver.py.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from arena.motion import MinJerkSegment
from bot.control.backend import InputBackend
from bot.control.humanize import InputConfig, aim_error, plan_movement
from validation import fail

log = logging.getLogger(__name__)

Region = tuple[int, int, int, int]  # (left, top, width, height) screen px
Rect = tuple[float, float, float, float]  # (x1, y1, x2, y2) screen px


def check_region(region: Sequence[int]) -> Region:
    """The game region as ints; a ConfigError unless it has 4 values and a positive size."""
    ok = len(region) == 4 and region[2] > 0 and region[3] > 0
    if not ok:
        raise fail("InputDriver", "region", "(left, top, width, height) with a positive size", region)
    return tuple(int(v) for v in region)  # type: ignore[return-value]


def click_radius(size: Sequence[float], region_size: Sequence[float]) -> float:
    """Px from its centre to the nearer edge of a clicked object of `size` (w, h region fractions)."""
    return 0.5 * min(float(size[0]) * region_size[0], float(size[1]) * region_size[1])


@dataclass
class InputStats:
    """What the driver did (counters since it was built)."""

    moves: int = 0  # pointer move events sent
    clicks: int = 0  # clicks sent (button presses)
    keys: int = 0  # key taps sent
    holds: int = 0  # key presses of held keys (hold())
    clamped_targets: int = 0  # submitted targets (or click points) outside the region, clamped into it
    clamped_events: int = 0  # events whose position had to be clamped into the region when sent
    blocked_clicks: int = 0  # clicks dropped because their point is on a no-click rect (HUD panel)
    dropped_clicks: int = 0  # clicks dropped because their point was not reached in click_timeout_s
    dropped_keys: int = 0  # key taps dropped (repeated too soon, or the key queue was full)
    user_pauses: int = 0  # times the driver paused because a person moved the mouse
    latency_ms: deque = field(default_factory=lambda: deque(maxlen=4096))  # frame grab -> first event sent

    @property
    def clamped(self) -> int:
        return self.clamped_targets + self.clamped_events

    def to_dict(self) -> dict:
        names = ("moves", "clicks", "keys", "holds", "clamped_targets", "clamped_events", "blocked_clicks")
        names += ("dropped_clicks", "dropped_keys", "user_pauses")
        return {name: getattr(self, name) for name in names} | {"clamped": self.clamped}


@dataclass
class _Click:
    point: np.ndarray  # (2,) screen px, inside the region
    deadline: float  # s, driver clock
    radius: float = 0.0  # px, the click lands on what it is aimed at this close to the point (0 = arrive_px)


class _Mailbox:
    """The loop's latest wishes, read by the input thread: the aim point, one pending click, key taps."""

    def __init__(self, max_keys: int) -> None:
        self.lock = threading.Lock()
        self.aim: np.ndarray | None = None
        self.click: _Click | None = None  # a newer click request replaces an older one
        self.keys: deque[tuple[str, float]] = deque()  # (key, time requested)
        self.max_keys = max_keys
        self.frame_t: float | None = None  # grab time of the frame behind the newest target, not yet acted on
        self.hold: frozenset[str] | None = None  # keys to keep held; None = the caller holds none

    def clear(self) -> None:
        with self.lock:
            self.aim, self.click, self.frame_t, self.hold = None, None, None, None
            self.keys.clear()


class InputDriver:
    """Humanised, confined, stoppable mouse and keyboard output on its own thread.

    `start(paused=True)` starts the thread (paused: nothing is sent until `resume()`); the loop calls
    `submit(x, y, click, key)` each frame with screen px; `stop()` ends it and releases everything.
    Tests call `tick(now)` directly (no thread) with a synthetic clock.
    """

    def __init__(
        self,
        backend: InputBackend,
        region: Sequence[int],
        cfg: InputConfig | None = None,
        no_click: Sequence[Rect] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend, self.cfg, self.clock = backend, cfg or InputConfig(), clock
        self.region = check_region(region)
        self.no_click = [tuple(float(v) for v in r) for r in no_click]
        self.rng = np.random.default_rng(self.cfg.seed)
        self.stats = InputStats()
        self.error: BaseException | None = None
        self._mail = _Mailbox(self.cfg.key_queue)
        self._send_lock = threading.RLock()  # every backend call holds it; kill() takes it to stop for good
        self._paused, self._killed, self._stopping = True, False, False
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        # hand state (input thread only)
        self._pos: np.ndarray | None = None  # px, the hand's (sub-pixel) position
        self._last_sent: tuple[int, int] | None = None  # px where the pointer was last put or found
        self._seg: MinJerkSegment | None = None
        self._seg_aim: np.ndarray | None = None  # the un-jittered point the running segment was planned for
        self._last_plan = -math.inf
        self._button_up_at: float | None = None  # a held button's release time
        self._next_click = -math.inf
        self._key_held: tuple[str, float] | None = None  # (key, release time)
        self._holding: set[str] = set()  # keys pressed through hold() and not yet released
        self._next_key = -math.inf
        self._last_tap: dict[str, float] = {}
        self._recent_keys: dict[str, float] = {}  # key -> last press time, for Hotkeys to ignore

    # ---------------------------------------------------------------------------------- the loop's side

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def killed(self) -> bool:
        return self._killed

    def submit(
        self,
        x: float,
        y: float,
        click: bool = False,
        key: str | None = None,
        frame_t: float | None = None,
        click_radius: float = 0.0,
    ) -> None:
        """The newest target (screen px), a click request at it, a key tap; never blocks on input.

        `click_radius` (px): the click is aimed at an object whose box reaches this far from the point (half
        its smaller side), so it may go once the cursor is well inside it (0.6 of that), as a person clicks
        a moving ship; 0 = a place, clicked within `arrive_px`.
        """
        if self._killed or self._paused or self.error is not None:
            return
        point, clamped = self._clamp(np.array([x, y], float))
        now = self.clock()
        with self._mail.lock:
            self.stats.clamped_targets += int(clamped)
            self._mail.aim = point
            if frame_t is not None:
                self._mail.frame_t = frame_t
            if click:
                if self._on_no_click(point):
                    self.stats.blocked_clicks += 1
                    log.debug("click at %s blocked: on a no-click panel", point.tolist())
                else:
                    deadline = now + self.cfg.click_timeout_s
                    self._mail.click = _Click(point, deadline, max(0.0, float(click_radius)))
            if key:
                self._request_key(key, now)

    def hold(self, keys: frozenset[str] | set[str], tap: str | None = None) -> None:
        """Keep exactly `keys` held from the next tick on (the others held this way are released), and tap
        `tap`:
        the Action of games flown with keys held together (Naev: thrust + turn + fire)."""
        if self._killed or self._paused or self.error is not None:
            return
        with self._mail.lock:
            self._mail.hold = frozenset(keys)
            if tap:
                self._request_key(tap, self.clock())

    def _request_key(self, key: str, now: float) -> None:
        queued = any(k == key for k, _ in self._mail.keys)
        held = self._key_held is not None and self._key_held[0] == key
        recent = now - self._last_tap.get(key, -math.inf) < self.cfg.key_repeat_s
        if queued or held or recent or len(self._mail.keys) >= self._mail.max_keys:
            self.stats.dropped_keys += 1
        else:
            self._mail.keys.append((key, now))

    def pause(self) -> None:
        """Stop moving and release everything held; submissions are ignored until resume()."""
        if not self._paused:
            log.info("input paused")
        self._paused = True
        self._mail.clear()
        self.release_all()

    def resume(self) -> None:
        """Start (again) from wherever the pointer is now; a killed driver stays dead."""
        if self._killed or self.error is not None:
            return
        if self._paused:
            log.info("input active")
        with self._send_lock:
            self._reset_hand()
            self._paused = False

    def kill(self) -> None:
        """Stop all input now and for good: nothing is sent after this returns."""
        with self._send_lock:
            if not self._killed:
                log.warning("input killed")
            self._release_held_locked()
            self._killed = True
        self._mail.clear()
        self._wake.set()

    def release_all(self) -> None:
        """Release every key and button the driver holds (safe from any thread)."""
        with self._send_lock:
            self._release_held_locked()

    def hand(self) -> tuple[tuple[int, int] | None, int]:
        """Where the pointer was last put or found (screen px; None before the first tick), clicks sent."""
        return self._last_sent, self.stats.clicks

    def injected_recently(self, key: str, within_s: float = 1.0) -> bool:
        """True if the driver pressed `key` in the last `within_s` seconds (Hotkeys ignore those)."""
        pressed = self._recent_keys.get(key)
        return pressed is not None and self.clock() - pressed < within_s

    # ---------------------------------------------------------------------------------- thread

    def start(self, paused: bool = True) -> InputDriver:
        if self._thread is not None:
            raise RuntimeError("InputDriver.start: already started")
        self._paused = True
        if not paused:
            self.resume()
        self._thread = threading.Thread(target=self._run, name="input", daemon=True)
        self._thread.start()
        atexit.register(self.release_all)
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """End the thread and release everything held. Safe to call more than once."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._mail.clear()  # nothing wished for is pressed again
        self.release_all()
        atexit.unregister(self.release_all)

    def _run(self) -> None:
        period = 1.0 / self.cfg.rate_hz
        try:
            while not (self._stopping or self._killed):
                self.tick(self.clock())
                self._wake.wait(period)
        except Exception as exc:  # noqa: BLE001 - reported through self.error, input released below
            log.exception("input thread failed; input stopped")
            self.error = exc
        finally:
            self.release_all()

    # ---------------------------------------------------------------------------------- one tick

    def tick(self, now: float) -> None:
        """Advance the hand to time `now`: release what is due, steer, move, click, tap."""
        with self._send_lock:
            if self._killed or self._paused:
                return
            self._release_due(now)
            if self._pos is None:
                self._reset_hand()
            if self._user_took_over():
                return
            with self._mail.lock:
                aim, click, frame_t = self._mail.aim, self._mail.click, self._mail.frame_t
                self._mail.frame_t = None
            sent = self._move(now, click.point if click is not None else aim)
            sent |= self._maybe_click(now, click)
            sent |= self._maybe_tap(now)
            sent |= self._apply_holds()
            if sent and frame_t is not None:
                self.stats.latency_ms.append((self.clock() - frame_t) * 1000.0)
            elif frame_t is not None:
                with self._mail.lock:  # nothing went out yet: measure at the first event that does
                    if self._mail.frame_t is None:
                        self._mail.frame_t = frame_t

    def _reset_hand(self) -> None:
        x, y = self.backend.position()
        self._last_sent = (int(x), int(y))
        self._pos, _ = self._clamp(np.array([x, y], float))  # a pointer outside the region enters at its edge
        self._seg, self._seg_aim, self._last_plan = None, None, -math.inf

    def _user_took_over(self) -> bool:
        limit = self.cfg.user_move_px
        if not limit or self._last_sent is None:
            return False
        x, y = self.backend.position()
        if float(np.hypot(x - self._last_sent[0], y - self._last_sent[1])) <= limit:
            return False
        log.warning("the mouse was moved by hand (%d, %d): input paused", x, y)
        self.stats.user_pauses += 1
        self._paused = True
        self._release_held_locked()
        return True

    def _move(self, now: float, aim: np.ndarray | None) -> bool:
        if self._button_up_at is not None:  # a click is held: the hand stays still (no drag)
            return False
        if aim is not None:
            self._steer(now, aim)
        if self._seg is None:
            return False
        pos, _ = self._seg.at(now)
        target = np.round(pos)
        if self._pos is not None and np.array_equal(target, np.round(self._pos)):
            self._pos = pos
            return False
        self._pos = pos
        self._send_move(target)
        return True

    def _steer(self, now: float, aim: np.ndarray) -> None:
        """Plan, re-plan (from the current velocity) or keep the movement towards `aim`."""
        if self._seg is None or self._seg_aim is None:
            if float(np.linalg.norm(aim - self._pos)) > 0.5:
                self._plan(now, aim)
            return
        drift = float(np.linalg.norm(aim - self._seg_aim))
        if self._seg.done(now):
            if drift > 0.5 and float(np.linalg.norm(aim - self._pos)) > 0.5:
                self._plan(now, aim)
        elif drift > self.cfg.retarget_px and now - self._last_plan >= self.cfg.replan_s:
            self._plan(now, aim)

    def _plan(self, now: float, aim: np.ndarray) -> None:
        if self._seg is not None:
            pos, vel = self._seg.at(now)
        else:
            pos, vel = self._pos.copy(), np.zeros(2)
        end, _ = self._clamp(aim + aim_error(self.cfg, self.rng))
        self._seg = plan_movement(self.cfg, self.rng, now, pos, vel, end)
        self._seg_aim, self._last_plan = aim.copy(), now

    def _arrived(self, now: float, click: _Click) -> bool:
        """The cursor is on the click's point, and its movement has ended there or ends there: a path that
        keeps re-planning towards a moving ship never ends, yet a person clicks once they are on it."""
        tolerance = max(self.cfg.arrive_px, 0.6 * click.radius)
        if float(np.linalg.norm(self._pos - click.point)) > tolerance:
            return False
        seg = self._seg
        return seg is None or seg.done(now) or float(np.linalg.norm(seg.p1 - click.point)) <= tolerance

    def _maybe_click(self, now: float, click: _Click | None) -> bool:
        if click is None or self._button_up_at is not None or now < self._next_click:
            return False
        if now > click.deadline:
            self.stats.dropped_clicks += 1
            self._take_click(click)
            return False
        if not self._arrived(now, click):
            return False
        self._take_click(click)
        self._backend_call(self.backend.press_button)
        self.stats.clicks += 1
        self._button_up_at = now + float(self.rng.uniform(*self.cfg.click_hold_s))
        return True

    def _take_click(self, click: _Click) -> None:
        with self._mail.lock:
            if self._mail.click is click:
                self._mail.click = None

    def _maybe_tap(self, now: float) -> bool:
        if self._key_held is not None or now < self._next_key:
            return False
        with self._mail.lock:
            if not self._mail.keys:
                return False
            key, _ = self._mail.keys.popleft()
        if key in self._holding:  # already down through hold(): a tap would release it
            self.stats.dropped_keys += 1
            return False
        self._backend_call(self.backend.press_key, key)
        self._recent_keys[key] = self.clock()
        self._last_tap[key] = now
        self.stats.keys += 1
        self._key_held = (key, now + float(self.rng.uniform(*self.cfg.key_hold_s)))
        return True

    def _apply_holds(self) -> bool:
        """Release the held keys no longer wanted, press the newly wanted ones (not one a tap is holding)."""
        with self._mail.lock:
            wanted = self._mail.hold
        if wanted is None:
            return False
        for key in sorted(self._holding - wanted):
            self._holding.discard(key)
            self._backend_call(self.backend.release_key, key)
        tapping = self._key_held[0] if self._key_held is not None else None
        pressed = sorted(wanted - self._holding - {tapping})
        for key in pressed:
            self._backend_call(self.backend.press_key, key)
            self._holding.add(key)
            self._recent_keys[key] = self.clock()
            self.stats.holds += 1
        return bool(pressed)

    def _release_due(self, now: float) -> None:
        if self._button_up_at is not None and now >= self._button_up_at:
            self._button_up_at = None
            self._backend_call(self.backend.release_button)
            self._next_click = now + self.cfg.click_gap_s
        if self._key_held is not None and now >= self._key_held[1]:
            key, _ = self._key_held
            self._key_held = None
            self._backend_call(self.backend.release_key, key)
            self._next_key = now + self.cfg.key_gap_s

    def _release_held_locked(self) -> None:
        """Release the held button and keys (the send lock is held); never raises."""
        if self._killed:
            return
        if self._button_up_at is not None:
            self._button_up_at = None
            self._safe(self.backend.release_button)
        if self._key_held is not None:
            key, _ = self._key_held
            self._key_held = None
            self._safe(self.backend.release_key, key)
        for key in sorted(self._holding):
            self._safe(self.backend.release_key, key)
        self._holding.clear()

    def _safe(self, call: Callable, *args: object) -> None:
        try:
            call(*args)
        except Exception:  # noqa: BLE001 - releasing must go on (the display may be gone)
            log.exception("releasing input failed")

    # ---------------------------------------------------------------------------------- events

    def _backend_call(self, call: Callable, *args: object) -> None:
        if not self._killed:
            call(*args)

    def _send_move(self, target: np.ndarray) -> None:
        point, clamped = self._clamp(target)
        self.stats.clamped_events += int(clamped)
        self._last_sent = (int(point[0]), int(point[1]))
        self._backend_call(self.backend.move, *self._last_sent)
        self.stats.moves += 1

    def _clamp(self, point: np.ndarray) -> tuple[np.ndarray, bool]:
        left, top, width, height = self.region
        low = np.array([left, top], float)
        high = np.array([left + width - 1, top + height - 1], float)
        clamped = np.clip(point, low, high)
        return clamped, bool(np.any(clamped != point))

    def _on_no_click(self, point: np.ndarray) -> bool:
        x, y = float(point[0]), float(point[1])
        return any(x1 <= x <= x2 and y1 <= y <= y2 for x1, y1, x2, y2 in self.no_click)


def hud_no_click(hud_panels: Sequence[Sequence[float]], region: Sequence[int]) -> list[Rect]:
    """The profile's HUD panels (fractions of the game region) as no-click rects in screen px."""
    left, top, width, height = region
    return [
        (left + x1 * width, top + y1 * height, left + x2 * width, top + y2 * height)
        for x1, y1, x2, y2 in hud_panels
    ]
