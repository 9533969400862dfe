"""The overlay: what the pilot saw and decided, drawn onto a copy of a frame so a person can watch it
afterwards (object boxes with class, track id and screen cues, the target, HUD values, the mode and its
probabilities, the cursor path, a status line; OpenCV's Hershey font only), and `pilot run`'s live overlay,
written to an mp4 or shown in a pygame window beside the game region.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from bot.errors import PilotError
from bot.perception.cues import CUE_NAMES
from bot.perception.state import CUE_ON
from bot.profile import GameProfile

if TYPE_CHECKING:  # torch and the detector stack: imported for the annotations only
    from bot.perception.pipeline import PerceptionStep
    from bot.policy.runner import Decision
    from bot.recordings.video import VideoWriter

log = logging.getLogger(__name__)

FONT = cv2.FONT_HERSHEY_SIMPLEX
TARGET_COLOUR = (255, 60, 60)  # RGB
CURSOR_COLOUR = (255, 255, 0)
TEXT_COLOUR = (235, 235, 235)
CUE_MARKS = {"aggressive": " !", "selected": " SEL", "attacking": " ATK"}
Region = tuple[int, int, int, int]  # left, top, width, height (screen px)


@dataclass
class OverlayState:
    """Everything one overlay frame shows. Boxes are screen pixels (x1, y1, x2, y2)."""

    objects: Sequence[Mapping] = ()  # dicts with "id", "cls", "box" (optionally "conf", "cues")
    target_id: int | None = None
    mode: str | None = None
    mode_probs: Mapping[str, float] | None = None
    hud: Mapping[str, float] = field(default_factory=dict)  # e.g. hp_frac, shield_frac, credits
    cursor_path: Sequence[tuple[float, float]] = ()  # recent cursor positions in pixels, oldest first
    status: str = ""  # one line at the bottom (fps, latency, ...)


def perceived_objects(step: Any, class_names: Sequence[str]) -> list[dict]:
    """OverlayState.objects from a bot.perception.pipeline.PerceptionStep: its tracks, with their screen
    cues."""
    tracks = step.tracks
    cues = step.cues if step.cues is not None else np.zeros((len(tracks), len(CUE_NAMES)), np.float32)
    return [
        {"id": int(i), "cls": class_names[int(c)], "box": box.tolist(), "conf": float(conf),
         "cues": [name for name, value in zip(CUE_NAMES, row) if value >= CUE_ON]}
        for i, c, box, conf, row in zip(tracks.id, tracks.cls, tracks.xyxy, tracks.conf, cues)
    ]  # fmt: skip


def class_colour(name: str) -> tuple[int, int, int]:
    """A stable, bright colour per class name."""
    h = zlib.crc32(name.encode())
    return (80 + h % 176, 80 + (h >> 8) % 176, 80 + (h >> 16) % 176)


def draw_overlay(frame: np.ndarray, state: OverlayState) -> np.ndarray:
    """Return a new RGB frame with `state` drawn on top of `frame` (RGB uint8 (H, W, 3))."""
    out = np.ascontiguousarray(frame).copy()
    scale = max(0.35, out.shape[0] / 1200)
    for obj in state.objects:
        _draw_object(out, obj, obj.get("id") == state.target_id and state.target_id is not None, scale)
    _draw_cursor(out, state.cursor_path)
    _draw_panel(out, state, scale)
    return out


def _draw_object(out: np.ndarray, obj: Mapping, is_target: bool, scale: float) -> None:
    x1, y1, x2, y2 = (int(round(v)) for v in obj["box"])
    colour = TARGET_COLOUR if is_target else class_colour(str(obj.get("cls", "?")))
    cv2.rectangle(out, (x1, y1), (x2, y2), colour, 3 if is_target else 1)
    label = f"{obj.get('cls', '?')} #{obj.get('id', '?')}"
    if "conf" in obj:
        label += f" {obj['conf']:.2f}"
    label += "".join(CUE_MARKS[name] for name in obj.get("cues", ()))
    if is_target:
        label = "TARGET " + label
    cv2.putText(out, label, (x1, max(12, y1 - 4)), FONT, scale * 0.8, colour, 1, cv2.LINE_AA)


def _draw_cursor(out: np.ndarray, path: Sequence[tuple[float, float]]) -> None:
    if not path:
        return
    points = np.array([[round(x), round(y)] for x, y in path], np.int32)
    if len(points) > 1:
        cv2.polylines(out, [points], False, CURSOR_COLOUR, 1, cv2.LINE_AA)
    x, y = points[-1]
    cv2.drawMarker(out, (int(x), int(y)), CURSOR_COLOUR, cv2.MARKER_CROSS, 14, 2)


def _draw_panel(out: np.ndarray, state: OverlayState, scale: float) -> None:
    h, w = out.shape[:2]
    lines = []
    if state.mode:
        lines.append(f"mode {state.mode}")
    if state.mode_probs:
        lines.append("  ".join(f"{m[:4]} {p:.2f}" for m, p in state.mode_probs.items()))
    lines.append(f"target {state.target_id if state.target_id is not None else '-'}")
    if state.hud:
        lines.append(
            "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in state.hud.items())
        )
    step = int(24 * scale) + 4
    x0, y0 = int(w * 0.40), int(12 + step)
    for i, line in enumerate(lines):
        cv2.putText(out, line, (x0, y0 + i * step), FONT, scale * 0.9, TEXT_COLOUR, 1, cv2.LINE_AA)
    if state.status:
        cv2.putText(out, state.status, (10, h - 10), FONT, scale * 0.8, TEXT_COLOUR, 1, cv2.LINE_AA)


# ------------------------------------------------------------------------------------------------ live


class OverlayWindow:
    """The overlay in a pygame window beside the game region, never over it (the bot would see itself)."""

    TITLE = "Orbit Pilot overlay"
    MIN_SCALE = 0.15  # a smaller overlay is unreadable: refuse rather than cover the game

    def __init__(self, frame_size: tuple[int, int], region: Region, scale: float = 0.5) -> None:
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
    region: Region, frame: tuple[int, int], screen: tuple[int, int], scale: float
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

    def __init__(
        self, target: str, frame_size: tuple[int, int], fps: float, region: Region, profile: GameProfile
    ) -> None:
        self.profile = profile
        self.cursor: deque[tuple[float, float]] = deque(maxlen=int(fps))
        self.window: OverlayWindow | None = None
        self.video: VideoWriter | None = None
        if target == "window":
            self.window = OverlayWindow(frame_size, region)
        else:
            from bot.recordings.video import VideoWriter

            self.even = (frame_size[0] // 2 * 2, frame_size[1] // 2 * 2)
            self.video = VideoWriter(target, self.even[0], self.even[1], fps)
            log.info("overlay video: %s", target)

    def put(self, frame: np.ndarray, step: PerceptionStep, decision: Decision, status: str) -> None:
        h, w = frame.shape[:2]
        self.cursor.append((decision.mouse[0] * w, decision.mouse[1] * h))
        held = [k.name for i, k in enumerate(self.profile.keys) if decision.held >> i & 1]
        status = f"{status}  hold {'+'.join(held)}" if held else status  # Action v2: keys held down
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
