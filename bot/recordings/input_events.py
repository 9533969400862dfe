"""Mouse and keyboard events of a person playing: `PynputInput` listens (pynput: XRecord on X11) and stamps
each event on arrival, `EventBuffer` hands them to the recorder in time order, and `format_event` /
`parse_event` are their text form in steps.parquet's `events` column ("<t> <kind> <args>", t in episode
seconds, x/y in region px)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bot.errors import CaptureError

_MODIFIERS = ("ctrl", "shift", "alt", "cmd")


@dataclass
class InputEvent:
    """One mouse or keyboard event on the recorder's clock (time.monotonic seconds)."""

    t: float  # s, monotonic
    kind: str  # move | down | up | scroll | press | release
    x: int = 0  # screen px (mouse kinds)
    y: int = 0
    button: str = ""  # left | right | middle (down / up)
    key: str = ""  # normalised key name (press / release), e.g. "space", "1", "ctrl", "f9"
    dx: int = 0  # scroll steps
    dy: int = 0


def format_event(event: InputEvent, t0: float, region: Sequence[int]) -> str:
    """Text of one event for steps.events: "<t> <kind> <args>", t in episode s, x/y in region px."""
    t, x, y = event.t - t0, event.x - region[0], event.y - region[1]
    if event.kind == "move":
        return f"{t:.4f} move {x} {y}"
    if event.kind in ("down", "up"):
        return f"{t:.4f} {event.kind} {event.button} {x} {y}"
    if event.kind == "scroll":
        return f"{t:.4f} scroll {event.dx} {event.dy} {x} {y}"
    return f"{t:.4f} {event.kind} {event.key}"


def parse_event(text: str) -> dict[str, Any]:
    """Inverse of format_event: {"t", "kind", and "x", "y", "button", "key", "dx", "dy" as they apply}."""
    parts = text.split()
    record: dict[str, Any] = {"t": float(parts[0]), "kind": parts[1]}
    kind, args = parts[1], parts[2:]
    if kind == "move":
        record.update(x=int(args[0]), y=int(args[1]))
    elif kind in ("down", "up"):
        record.update(button=args[0], x=int(args[1]), y=int(args[2]))
    elif kind == "scroll":
        record.update(dx=int(args[0]), dy=int(args[1]), x=int(args[2]), y=int(args[3]))
    else:
        record.update(key=args[0])
    return record


def key_name(key: Any) -> str:
    """A pynput key (or a plain string) -> the name profiles use: "space", "1", "a", "ctrl", "f9"."""
    if isinstance(key, str):
        return key.lower()
    name = getattr(key, "name", None)  # pynput.keyboard.Key members
    if name:
        for modifier in _MODIFIERS:  # ctrl_l / ctrl_r -> ctrl
            if name in (f"{modifier}_l", f"{modifier}_r"):
                return modifier
        return name
    char = getattr(key, "char", None)
    if char:
        return char.lower()
    vk = getattr(key, "vk", None)
    return f"vk{vk}" if vk is not None else "unknown"


class InputSource(Protocol):
    """Where input events come from: pynput live, a script in tests."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def position(self) -> tuple[int, int]:  # the cursor now, screen px
        ...

    def drain(self, until: float) -> list[InputEvent]:  # events with t < until, in time order
        ...


class EventBuffer:
    """Thread-safe store of events pushed by listener threads, drained in time order by the recorder."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[InputEvent] = []

    def push(self, event: InputEvent) -> None:
        with self._lock:
            self._events.append(event)

    def drain(self, until: float) -> list[InputEvent]:
        with self._lock:
            events = sorted(self._events, key=lambda e: e.t)  # two listener threads may interleave
            cut = next((i for i, e in enumerate(events) if e.t >= until), len(events))
            self._events = events[cut:]
        return events[:cut]


class PynputInput:
    """Mouse and keyboard listeners (pynput: XRecord on X11); events are timestamped on arrival."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        try:
            from pynput import keyboard, mouse
        except ImportError as exc:  # pynput needs a display (X11: $DISPLAY) at import time
            raise CaptureError(f"cannot listen to mouse and keyboard: {exc}".splitlines()[0]) from None
        self.clock, self.buffer = clock, EventBuffer()
        self._mouse = mouse.Listener(on_move=self._move, on_click=self._click, on_scroll=self._scroll)
        self._keyboard = keyboard.Listener(on_press=self._press, on_release=self._release)
        self._controller = mouse.Controller()

    def _move(self, x: float, y: float) -> None:
        self.buffer.push(InputEvent(self.clock(), "move", int(x), int(y)))

    def _click(self, x: float, y: float, button: Any, pressed: bool) -> None:
        kind = "down" if pressed else "up"
        self.buffer.push(InputEvent(self.clock(), kind, int(x), int(y), button=getattr(button, "name", "?")))

    def _scroll(self, x: float, y: float, dx: float, dy: float) -> None:
        self.buffer.push(InputEvent(self.clock(), "scroll", int(x), int(y), dx=int(dx), dy=int(dy)))

    def _press(self, key: Any) -> None:
        self.buffer.push(InputEvent(self.clock(), "press", key=key_name(key)))

    def _release(self, key: Any) -> None:
        self.buffer.push(InputEvent(self.clock(), "release", key=key_name(key)))

    def start(self) -> None:
        self._mouse.start()
        self._keyboard.start()
        self._mouse.wait()
        self._keyboard.wait()

    def stop(self) -> None:
        self._mouse.stop()
        self._keyboard.stop()

    def position(self) -> tuple[int, int]:
        x, y = self._controller.position
        return int(x), int(y)

    def drain(self, until: float) -> list[InputEvent]:
        return self.buffer.drain(until)
