"""Where the hand's events go: the InputBackend protocol, `PynputBackend` (real input through pynput: XTEST
on X11, Windows, macOS; key names as pynput spells them: "space", "1", "f9", "ctrl") and `RecordingBackend`
(records events, sends nothing: unit tests and `pilot run --dry-run`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.errors import InputError


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


def import_pynput():
    """pynput's keyboard and mouse modules; an InputError when it has no backend here (no X server)."""
    try:
        from pynput import keyboard, mouse
    except ImportError as exc:  # pynput raises ImportError when it cannot reach the X server
        raise InputError(f"cannot send input: pynput has no usable backend here ({exc})") from None
    return keyboard, mouse


class PynputBackend:
    """Real input through pynput (XTEST on X11). Key names are checked when the backend is built."""

    def __init__(self, keys: Sequence[str] = ()) -> None:
        keyboard, mouse = import_pynput()
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
