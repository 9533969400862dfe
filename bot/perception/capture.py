"""Frame sources: where perception gets its frames. One protocol, two implementations.

    FrameSource.read() -> Frame(image RGB uint8 (H, W, 3), t seconds, index, dropped)

    MssSource     the screen through mss: a monitor, a fixed region, or the window whose title contains a
                  given text (found with python-xlib, which pynput installs), paced at a target fps
    ArenaSource   the Arena in-process: frames straight from ArenaEnv, actions applied to it (no screen)

Frames are RGB everywhere. A slow consumer lowers the frame rate, never the frames' freshness: missed 1/fps
slots are counted as dropped (docs/notes/perception.md, section bot/perception/capture.py).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from bot.errors import CaptureError
from bot.profile import GameProfile

log = logging.getLogger(__name__)


@dataclass
class Frame:
    """One captured frame."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    t: float  # s since the source started (monotonic clock, or game time for the Arena)
    index: int  # frames delivered before this one
    dropped: int = 0  # frame slots skipped so far because the consumer was late (cumulative)


class FrameSource(Protocol):
    """Anything perception can read frames from."""

    @property
    def size(self) -> tuple[int, int]:  # (width, height) px of every frame
        ...

    fps: float  # target frames per second

    def read(self) -> Frame | None:  # the next frame; None once the source has ended
        ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------------------------------ mss


@dataclass
class MssConfig:
    """What part of the screen to capture, and how fast."""

    title: str | None = None  # capture the window whose title contains this text (wins over region)
    region: tuple[int, int, int, int] | None = None  # (left, top, width, height) screen px
    monitor: int = 1  # mss monitor index when neither title nor region is given (1 = first monitor)
    fps: float = 30.0  # target frames per second
    display: str | None = None  # X display (default: $DISPLAY)

    def __post_init__(self) -> None:
        if not 0 < self.fps <= 1000:
            raise ValueError(f"fps: expected a number in (0, 1000], got {self.fps!r}")
        if self.region is not None:
            if len(self.region) != 4 or self.region[2] <= 0 or self.region[3] <= 0:
                raise ValueError(
                    f"region: expected (left, top, width, height) with a positive size, got {self.region}"
                )
            self.region = tuple(int(v) for v in self.region)
        if self.monitor < 0:
            raise ValueError(f"monitor: expected an mss monitor index >= 0, got {self.monitor}")

    @classmethod
    def from_profile(cls, profile: GameProfile, fps: float | None = None) -> MssConfig:
        window = profile.window
        return cls(title=window.title, region=window.region, monitor=window.monitor, fps=fps or profile.fps)


def _window_name(window: Any, net_wm_name: int, utf8: int) -> str:
    try:
        prop = window.get_full_property(net_wm_name, utf8)
        if prop is not None and prop.value:
            value = prop.value
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        name = window.get_wm_name()
    except Exception:  # windows can vanish while we walk the tree (Xlib raises BadWindow)
        return ""
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else (name or "")


def find_window(title: str, display: str | None = None) -> tuple[int, int, int, int]:
    """(left, top, width, height) screen px of the first viewable window whose title contains `title`."""
    try:
        from Xlib import X
        from Xlib import display as xdisplay
        from Xlib.error import DisplayError
    except ImportError:
        raise CaptureError("finding a window by title needs python-xlib (installed with pynput)") from None
    try:
        dpy = xdisplay.Display(display)
    except (DisplayError, Exception) as exc:  # Xlib raises several error types for a missing display
        raise CaptureError(
            f"cannot open X display {display or os.environ.get('DISPLAY')!r} ({exc})"
        ) from None
    try:
        root = dpy.screen().root
        net_wm_name, utf8 = dpy.intern_atom("_NET_WM_NAME"), dpy.intern_atom("UTF8_STRING")
        seen, stack = [], list(root.query_tree().children)
        while stack:
            window = stack.pop()
            try:
                attrs = window.get_attributes()
                stack.extend(window.query_tree().children)
            except Exception:  # vanished
                continue
            name = _window_name(window, net_wm_name, utf8)
            if not name or attrs.map_state != X.IsViewable:
                continue
            seen.append(name)
            if title in name:
                geometry = window.get_geometry()
                origin = root.translate_coords(window, 0, 0)
                return int(origin.x), int(origin.y), int(geometry.width), int(geometry.height)
    finally:
        dpy.close()
    raise CaptureError(f"no window whose title contains {title!r}; visible windows: {sorted(set(seen))[:20]}")


class MssSource:
    """Screen capture through mss (XShm on X11), paced at `cfg.fps`, RGB frames."""

    def __init__(self, cfg: MssConfig) -> None:
        import mss

        self.cfg, self.fps = cfg, cfg.fps
        display = cfg.display or os.environ.get("DISPLAY")
        try:
            self._sct = mss.MSS(display=display) if display else mss.MSS()
        except Exception as exc:  # mss raises ScreenShotError / XError when there is no X server
            raise CaptureError(f"cannot open the screen for capture (DISPLAY={display!r}): {exc}") from None
        self.monitor = self._resolve_region()
        self.period = 1.0 / cfg.fps
        self.index, self.dropped = 0, 0
        self._start: float | None = None
        self._next_slot = 0
        log.info("capturing %s at %.0f fps", self.monitor, cfg.fps)

    def _resolve_region(self) -> dict[str, int]:
        monitors = self._sct.monitors
        if self.cfg.title:
            left, top, width, height = find_window(self.cfg.title, self.cfg.display)
        elif self.cfg.region:
            left, top, width, height = self.cfg.region
        else:
            if self.cfg.monitor >= len(monitors):
                raise CaptureError(f"monitor {self.cfg.monitor}: only {len(monitors) - 1} monitor(s) found")
            m = monitors[self.cfg.monitor]
            left, top, width, height = m["left"], m["top"], m["width"], m["height"]
        screen = monitors[0]  # the bounding box of all monitors
        inside = left >= screen["left"] and top >= screen["top"]
        inside = inside and left + width <= screen["left"] + screen["width"]
        inside = inside and top + height <= screen["top"] + screen["height"]
        if not inside:
            raise CaptureError(
                f"capture region {(left, top, width, height)} is not inside the screen {screen}"
            )
        return {"left": left, "top": top, "width": width, "height": height}

    @property
    def size(self) -> tuple[int, int]:
        return self.monitor["width"], self.monitor["height"]

    def grab(self) -> np.ndarray:
        """The region now, RGB uint8 (H, W, 3), no pacing."""
        shot = self._sct.grab(self.monitor)
        return cv2.cvtColor(np.asarray(shot), cv2.COLOR_BGRA2RGB)

    def _wait_for_slot(self) -> None:
        now = time.monotonic()
        if self._start is None:
            self._start = now
            return
        due = self._start + self._next_slot * self.period
        if now < due:
            time.sleep(due - now)
            return
        late_slots = int((now - due) / self.period)
        if late_slots:
            self.dropped += late_slots
            self._next_slot += late_slots

    @property
    def started(self) -> float | None:
        """time.monotonic() of the first frame slot: frame.t is counted from it (None before the first
        read)."""
        return self._start

    def read(self) -> Frame:
        self._wait_for_slot()
        t = time.monotonic() - (self._start or 0.0)  # when the grab began: the frame's time
        image = self.grab()
        frame = Frame(image, t, self.index, self.dropped)
        self.index += 1
        self._next_slot += 1
        return frame

    def close(self) -> None:
        self._sct.close()

    def __enter__(self) -> MssSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------ arena


class ArenaSource:
    """The Arena in-process: `read()` returns the current frame, `apply(action)` sets the next step's action.

    The first `read()` resets the env (with `seed`); every later one steps it once with the action last given
    to `apply()` (default: the cursor stays, no click, no key). `t` is game time, so perception sees the same
    clock as in a recording of the Arena. `info` holds the latest ground truth (arena/spec.py).
    """

    def __init__(self, config: Any = None, seed: int = 0, seconds: float | None = None) -> None:
        from arena.env import ArenaConfig, ArenaEnv

        self.env = ArenaEnv(config or ArenaConfig())
        self.fps = float(self.env.config.fps)
        self.seed = seed
        self.max_frames = round(seconds * self.fps) if seconds else None
        self.index = 0
        self.info: dict | None = None
        self.cursor = (0.5, 0.5)
        self._pending: dict | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.env.config.width, self.env.config.height

    def apply(self, action: dict) -> None:
        """The action for the next step: {"mouse": (x, y) fractions, "click": 0|1, "key": index}."""
        self._pending = action

    def read(self) -> Frame | None:
        if self.info is None:
            image, self.info = self.env.reset(seed=self.seed)
        else:
            if self.max_frames is not None and self.index >= self.max_frames:
                return None
            action = self._pending or {"mouse": list(self.cursor), "click": 0, "key": 0}
            self._pending = None
            image, _reward, _terminated, truncated, self.info = self.env.step(action)
            self.cursor = (float(action["mouse"][0]), float(action["mouse"][1]))
            if truncated:
                self.max_frames = self.index + 1
        frame = Frame(image, self.index / self.fps, self.index, 0)
        self.index += 1
        return frame

    def close(self) -> None:
        self.env.close()
