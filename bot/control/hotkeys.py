"""Global start / pause / kill hotkeys (a pynput keyboard Listener; F9 / F10 / F12 by default). pynput also
hears the bot's own key presses: those keys are ignored, and may not be hotkeys."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.control.backend import import_pynput
from bot.errors import InputError
from validation import fail

log = logging.getLogger(__name__)


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
            if not (isinstance(value, str) and value):
                raise fail(self, name, "a pynput key name such as f9", value)
        if len(set(names)) != 3:
            raise fail(self, "hotkeys", "three different keys", names)

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
        keyboard, _ = import_pynput()
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
