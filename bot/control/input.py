"""The bot's hand: mouse and keyboard output on a thread of its own, humanised, confined, and easy to stop.

    control loop ──submit(x, y, click, key)──▶ mailbox (latest target wins; one pending click; key taps)
                                                   │  read every tick (~125 Hz) by the input thread
                                                   ▼
        InputDriver.tick: steer a minimum-jerk path ─▶ move ─▶ click once arrived ─▶ key taps ─▶ backend
                                                                                     (pynput, or a recorder)

Against the old bot's defects (original-system.md 1.9, 1.10): the loop never waits for input (it only writes
the mailbox); a click is sent only once the path has finished and the cursor is within `arrive_px` of the
clicked point; a new target re-plans the path from the cursor's current position *and velocity* (the quintic
of the Arena expert's hand, arena/expert.py), so paths bend instead of restarting from rest every frame; a
key is a tap (press, a short human hold, release) whose release is scheduled, never slept for; every key and
button pressed is remembered and released on pause, stop, kill, an exception in the thread, and at exit.

Every event is clamped to the game region (screen px) and clamps are counted; clicks aimed at a HUD panel
(`no_click` rects) are dropped and counted. `pause()` releases everything and stops moving; `kill()` stops
all input at once and for good: it takes the send lock, so no event can leave after it returns.

`Hotkeys` listens for global start / pause / kill keys (pynput Listener; F9 / F10 / F12 by default). pynput
also hears the bot's own key presses; those keys are ignored (and may not be hotkeys).

Backends: `PynputBackend` (X11/Windows/macOS through pynput; key names as pynput spells them: "space", "1",
"f9", "ctrl") and `RecordingBackend` (records events, sends nothing: unit tests and `pilot run --dry-run`).
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
from typing import Protocol

import numpy as np

from arena.expert import _Segment as MinJerkSegment  # quintic from (p0, v0) to p1 at rest, with a bulge
from bot.errors import PilotError

log = logging.getLogger(__name__)

Region = tuple[int, int, int, int]  # (left, top, width, height) screen px
Rect = tuple[float, float, float, float]  # (x1, y1, x2, y2) screen px


class InputError(PilotError):
    """Input cannot be sent: no display for pynput, an unknown key name, a hotkey that is also a game key."""


# ------------------------------------------------------------------------------------------------ config


@dataclass
class InputConfig:
    """How the hand moves, clicks and taps keys."""

    rate_hz: float = 125.0  # input thread ticks per second (cursor updates)
    arrive_px: float = 4.0  # px, a click is sent only with the finished path's cursor this close to its point
    speed_bits_s: float = 14.0  # Fitts' throughput: movement time = min_move_s + log2(1 + D / W) / speed
    target_px: float = 16.0  # px, W in Fitts' law: the width of what is aimed at
    min_move_s: float = 0.04  # s, the shortest movement
    replan_s: float = 0.03  # s, minimum time between two re-plans of a movement towards a moving target
    retarget_px: float = 3.0  # px, a target that moved less than this does not re-plan a running movement
    jitter_px: float = 1.5  # px, std of the aim error drawn once per movement (capped at 0.6 * arrive_px)
    curve_frac: float = 0.05  # std of a long path's sideways bulge, as a fraction of its length
    click_hold_s: tuple[float, float] = (0.05, 0.11)  # s, range of a click's button hold
    click_gap_s: float = 0.12  # s, minimum time from one click's release to the next press
    click_timeout_s: float = 1.0  # s, a click whose point is not reached in this time is dropped
    key_hold_s: tuple[float, float] = (0.05, 0.11)  # s, range of a key tap's hold
    key_gap_s: float = 0.08  # s, minimum time from one tap's release to the next press
    # A policy asks for a tap on several frames in a row, and a second tap would undo a toggle (attack);
    # the Arena expert never repeats a key within 1 s either (arena/expert.py Keyboard.request).
    key_repeat_s: float = 1.0  # s, a request for a key tapped (or queued) this recently is dropped
    key_queue: int = 4  # key taps that may wait; more are dropped
    user_move_px: float = 40.0  # px, pointer this far from where the bot left it = a person's hand (0 = off)
    seed: int | None = None  # RNG seed of the jitter, bulge and hold times (None = random)

    def __post_init__(self) -> None:
        positive = ("rate_hz", "arrive_px", "speed_bits_s", "target_px", "min_move_s", "click_timeout_s")
        for name in positive:
            _check(name, getattr(self, name), getattr(self, name) > 0, "> 0")
        non_negative = (
            "replan_s", "retarget_px", "jitter_px", "curve_frac", "click_gap_s", "key_gap_s",
            "key_repeat_s", "user_move_px",
        )  # fmt: skip
        for name in non_negative:
            _check(name, getattr(self, name), getattr(self, name) >= 0, ">= 0")
        for name in ("click_hold_s", "key_hold_s"):
            low, high = getattr(self, name)
            _check(
                name, getattr(self, name), 0 < low <= high <= 1.0, "(low, high) with 0 < low <= high <= 1 s"
            )
        _check("key_queue", self.key_queue, self.key_queue >= 1, ">= 1")


def _check(name: str, value: object, ok: bool, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")


def check_region(region: Sequence[int]) -> Region:
    ok = len(region) == 4 and region[2] > 0 and region[3] > 0
    if not ok:
        raise ValueError(f"region: expected (left, top, width, height) with a positive size, got {region!r}")
    return tuple(int(v) for v in region)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ backends


class InputBackend(Protocol):
    """Where events go. Positions are screen px; `button` is the left mouse button."""

    def position(self) -> tuple[int, int]: ...

    def move(self, x: int, y: int) -> None: ...

    def press_button(self) -> None: ...

    def release_button(self) -> None: ...

    def press_key(self, key: str) -> None: ...

    def release_key(self, key: str) -> None: ...


@dataclass
class InputEvent:
    t: float  # the recording backend's clock, s
    kind: str  # move | button_down | button_up | key_down | key_up
    x: int = 0  # px, the pointer when the event was sent
    y: int = 0
    key: str = ""


class RecordingBackend:
    """Records events instead of sending them: unit tests and dry runs."""

    def __init__(
        self,
        start: tuple[int, int] = (0, 0),
        clock: Callable[[], float] = time.monotonic,
        max_events: int | None = None,  # keep about this many recent events (a long dry run); None = all
    ) -> None:
        self.pointer = (int(start[0]), int(start[1]))
        self.clock, self.max_events = clock, max_events
        self.events: list[InputEvent] = []

    def _record(self, kind: str, key: str = "") -> None:
        self.events.append(InputEvent(self.clock(), kind, self.pointer[0], self.pointer[1], key))
        if self.max_events is not None and len(self.events) > 2 * self.max_events:
            del self.events[: -self.max_events]

    def position(self) -> tuple[int, int]:
        return self.pointer

    def move(self, x: int, y: int) -> None:
        self.pointer = (x, y)
        self._record("move")

    def press_button(self) -> None:
        self._record("button_down")

    def release_button(self) -> None:
        self._record("button_up")

    def press_key(self, key: str) -> None:
        self._record("key_down", key)

    def release_key(self, key: str) -> None:
        self._record("key_up", key)

    def of(self, *kinds: str) -> list[InputEvent]:
        return [e for e in self.events if e.kind in kinds]


def pynput_key(name: str):
    """The pynput key for a name: a `Key` member ("space", "f9", "ctrl") or a single character ("1", "a")."""
    from pynput import keyboard

    if name in keyboard.Key.__members__:
        return keyboard.Key[name]
    if len(name) == 1:
        return keyboard.KeyCode.from_char(name)
    raise InputError(f"key {name!r}: expected a pynput Key name (space, f9, ctrl, ...) or one character")


def _import_pynput():
    try:
        from pynput import keyboard, mouse
    except ImportError as exc:  # pynput raises ImportError when it cannot reach the X server
        raise InputError(f"cannot send input: pynput has no usable backend here ({exc})") from None
    return keyboard, mouse


class PynputBackend:
    """Real input through pynput (XTEST on X11). Key names are checked when the backend is built."""

    def __init__(self, keys: Sequence[str] = ()) -> None:
        keyboard, mouse = _import_pynput()
        self._mouse, self._keyboard = mouse.Controller(), keyboard.Controller()
        self._button = mouse.Button.left
        self._keys = {name: pynput_key(name) for name in keys}

    def _key(self, name: str):
        if name not in self._keys:
            self._keys[name] = pynput_key(name)
        return self._keys[name]

    def position(self) -> tuple[int, int]:
        x, y = self._mouse.position
        return int(x), int(y)

    def move(self, x: int, y: int) -> None:
        self._mouse.position = (x, y)

    def press_button(self) -> None:
        self._mouse.press(self._button)

    def release_button(self) -> None:
        self._mouse.release(self._button)

    def press_key(self, key: str) -> None:
        self._keyboard.press(self._key(key))

    def release_key(self, key: str) -> None:
        self._keyboard.release(self._key(key))

    def close(self) -> None:
        """Drop the controllers: pynput closes their X connections when they are collected."""
        self._mouse = self._keyboard = None  # type: ignore[assignment]


# ------------------------------------------------------------------------------------------------ driver


@dataclass
class InputStats:
    """What the driver did (counters since it was built)."""

    moves: int = 0  # pointer move events sent
    clicks: int = 0  # clicks sent (button presses)
    keys: int = 0  # key taps sent
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
        names = ("moves", "clicks", "keys", "clamped_targets", "clamped_events", "blocked_clicks")
        names += ("dropped_clicks", "dropped_keys", "user_pauses")
        return {name: getattr(self, name) for name in names} | {"clamped": self.clamped}


@dataclass
class _Click:
    point: np.ndarray  # (2,) screen px, inside the region
    deadline: float  # s, driver clock


class _Mailbox:
    """The loop's latest wishes, read by the input thread: the aim point, one pending click, key taps."""

    def __init__(self, max_keys: int) -> None:
        self.lock = threading.Lock()
        self.aim: np.ndarray | None = None
        self.click: _Click | None = None  # a newer click request replaces an older one
        self.keys: deque[tuple[str, float]] = deque()  # (key, time requested)
        self.max_keys = max_keys
        self.frame_t: float | None = None  # grab time of the frame behind the newest target, not yet acted on

    def clear(self) -> None:
        with self.lock:
            self.aim, self.click, self.frame_t = None, None, None
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
        self, x: float, y: float, click: bool = False, key: str | None = None, frame_t: float | None = None
    ) -> None:
        """The newest target (screen px), a click request at it, a key tap; never blocks on input."""
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
                    self._mail.click = _Click(point, now + self.cfg.click_timeout_s)
            if key:
                self._request_key(key, now)

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
        cfg = self.cfg
        if self._seg is not None:
            pos, vel = self._seg.at(now)
        else:
            pos, vel = self._pos.copy(), np.zeros(2)
        err = self.rng.normal(0.0, cfg.jitter_px, 2)
        limit = 0.6 * cfg.arrive_px
        norm = float(np.linalg.norm(err))
        end, _ = self._clamp(aim + (err * (limit / norm) if norm > limit else err))
        dist = float(np.linalg.norm(end - pos))
        duration = cfg.min_move_s + math.log2(1.0 + dist / cfg.target_px) / cfg.speed_bits_s
        bulge = float(self.rng.normal(0.0, cfg.curve_frac)) if dist > 40 else 0.0
        self._seg = MinJerkSegment(now, duration, pos, vel, end, bulge)
        self._seg_aim, self._last_plan = aim.copy(), now

    def _arrived(self, now: float, point: np.ndarray) -> bool:
        finished = self._seg is None or self._seg.done(now)
        return finished and float(np.linalg.norm(self._pos - point)) <= self.cfg.arrive_px

    def _maybe_click(self, now: float, click: _Click | None) -> bool:
        if click is None or self._button_up_at is not None or now < self._next_click:
            return False
        if now > click.deadline:
            self.stats.dropped_clicks += 1
            self._take_click(click)
            return False
        if not self._arrived(now, click.point):
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
        self._backend_call(self.backend.press_key, key)
        self._recent_keys[key] = self.clock()
        self._last_tap[key] = now
        self.stats.keys += 1
        self._key_held = (key, now + float(self.rng.uniform(*self.cfg.key_hold_s)))
        return True

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
        """Release the held button and key (the send lock is held); never raises."""
        if self._killed:
            return
        if self._button_up_at is not None:
            self._button_up_at = None
            self._safe(self.backend.release_button)
        if self._key_held is not None:
            key, _ = self._key_held
            self._key_held = None
            self._safe(self.backend.release_key, key)

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


class LockstepHand:
    """The InputDriver of `pilot run`, ticked in game time, for in-process play (`pilot eval`).

    Each frame, `action(mouse, click, key)` submits the policy's decision exactly as the live loop does,
    ticks the driver through one frame interval at its rate on a simulated clock, and turns what it sent
    (pointer, button presses, key presses) into the Arena's action for that frame. So the bot evaluated
    in-process meets the same humanised paths, arrive-before-click rule and key-repeat filter as live.
    """

    def __init__(
        self,
        size: tuple[int, int],
        fps: float,
        keys: Sequence[str],
        hud_panels: Sequence[Sequence[float]] = (),
        seed: int = 0,
    ) -> None:
        width, height = size
        self.size, self.period, self.t = (width, height), 1.0 / fps, 0.0
        self.keys = list(keys)  # key bindings by action index; index 0 (none) is ""
        self.backend = RecordingBackend((width // 2, height // 2), clock=lambda: self.t)
        region = (0, 0, width, height)
        cfg = InputConfig(seed=seed, user_move_px=0.0)  # nobody else holds this mouse
        self.driver = InputDriver(
            self.backend, region, cfg, no_click=hud_no_click(hud_panels, region), clock=lambda: self.t
        )
        self.driver.resume()

    def action(self, mouse: Sequence[float], click: bool, key: int) -> dict:
        """Submit one decision (mouse as region fractions), run one frame of the hand; the Arena action."""
        width, height = self.size
        binding = self.keys[key] if 0 < key < len(self.keys) else ""
        self.driver.submit(float(mouse[0]) * width, float(mouse[1]) * height, bool(click), binding or None)
        self.backend.events.clear()  # what the hand sends during this frame only
        start, ticks = self.t, max(1, round(self.period * self.driver.cfg.rate_hz))
        for i in range(1, ticks + 1):
            self.t = start + i * self.period / ticks
            self.driver.tick(self.t)
        sent = self.backend.events
        pressed = [e.key for e in sent if e.kind == "key_down"]
        x, y = self.backend.pointer
        return {
            "mouse": [x / width, y / height],
            "click": int(any(e.kind == "button_down" for e in sent)),
            "key": self.keys.index(pressed[0]) if pressed and pressed[0] in self.keys else 0,
        }


# ------------------------------------------------------------------------------------------------ hotkeys


@dataclass
class HotkeyConfig:
    """Global hotkeys (pynput key names)."""

    start: str = "f9"  # start / resume acting
    pause: str = "f10"  # pause / resume
    kill: str = "f12"  # stop all input for good and end the run

    def __post_init__(self) -> None:
        names = [self.start, self.pause, self.kill]
        for name in ("start", "pause", "kill"):
            value = getattr(self, name)
            _check(name, value, isinstance(value, str) and bool(value), "a pynput key name such as f9")
        _check("hotkeys", names, len(set(names)) == 3, "three different keys")

    def check_against(self, game_keys: Sequence[str]) -> None:
        """A hotkey that the bot itself presses would stop or start it by itself."""
        clash = sorted({self.start, self.pause, self.kill} & set(game_keys))
        if clash:
            raise InputError(f"hotkeys {clash} are also game keys the policy presses; choose others")

    def describe(self) -> str:
        return (
            f"{self.start.upper()} = start, {self.pause.upper()} = pause/resume, {self.kill.upper()} = kill"
        )


def key_name(key: object) -> str:
    """A pynput key (Key member or KeyCode) as the name HotkeyConfig uses ("f9", "space", "a")."""
    name = getattr(key, "name", None)
    if isinstance(name, str):
        return name
    char = getattr(key, "char", None)
    return char.lower() if isinstance(char, str) else str(key)


class Hotkeys:
    """A pynput keyboard Listener that calls on_start / on_pause / on_kill once per key press."""

    def __init__(
        self,
        cfg: HotkeyConfig,
        on_start: Callable[[], None],
        on_pause: Callable[[], None],
        on_kill: Callable[[], None],
        ignore: Callable[[str], bool] = lambda name: False,
    ) -> None:
        self.cfg, self.ignore = cfg, ignore
        self.actions = {cfg.start: on_start, cfg.pause: on_pause, cfg.kill: on_kill}
        self._down: set[str] = set()  # debounce: a held key fires once
        self._listener = None

    def handle_press(self, name: str) -> None:
        if name in self._down or name not in self.actions or self.ignore(name):
            return
        self._down.add(name)
        log.info("hotkey %s", name.upper())
        self.actions[name]()

    def handle_release(self, name: str) -> None:
        self._down.discard(name)

    def start(self) -> Hotkeys:
        keyboard, _ = _import_pynput()
        self._listener = keyboard.Listener(
            on_press=lambda key, *_: self.handle_press(key_name(key)),
            on_release=lambda key, *_: self.handle_release(key_name(key)),
        )
        self._listener.daemon = True
        self._listener.start()
        self._listener.wait()
        return self

    def stop(self) -> None:
        if self._listener is not None:
            stop_listener(self._listener)
            self._listener = None


def stop_listener(listener, timeout: float = 2.0) -> None:
    """Stop a pynput Listener and wait for its thread.

    pynput 1.8 on X11 disables its RECORD context on the very connection that is blocked reading it, so after
    the first event the thread only ends at the next input event; disabling the context from the listener's
    other connection ends it now (and Xvfb can go away without a broken-pipe traceback in that thread).
    """
    listener.stop()
    display, context = getattr(listener, "_display_stop", None), getattr(listener, "_context", None)
    if display is not None and context is not None:
        try:
            display.record_disable_context(context)
            display.flush()
        except Exception:  # noqa: BLE001 - already closed: the thread has ended anyway
            pass
    listener.join(timeout)
