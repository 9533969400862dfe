"""`LockstepHand`: the InputDriver of `pilot run` ticked in game time, so that in-process play (`pilot eval`)
meets the same humanised paths, arrive-before-click rule and key-repeat filter as live play."""

from __future__ import annotations

from collections.abc import Sequence

from bot.control.backend import RecordingBackend
from bot.control.driver import InputDriver, click_radius, hud_no_click
from bot.control.humanize import InputConfig


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

    def action(
        self, mouse: Sequence[float], click: bool, key: int, click_size: Sequence[float] = (0.0, 0.0)
    ) -> dict:
        """Submit one decision (mouse and the clicked object's size as region fractions), run one frame of
        the hand; the Arena action."""
        width, height = self.size
        binding = self.keys[key] if 0 < key < len(self.keys) else ""
        x, y, radius = float(mouse[0]) * width, float(mouse[1]) * height, click_radius(click_size, self.size)
        self.driver.submit(x, y, bool(click), binding or None, click_radius=radius)
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
