"""Draws what the pilot saw and decided onto a copy of a frame, so a person can watch it afterwards:
object boxes with class and track id (and the screen cues read for it: "!" attacks the player, "SEL" the
player's selected target, "ATK" the one the player fires at), the selected target, HUD values, the mode
(with probabilities when a model gives them), the cursor and its recent path, and a status line. OpenCV's
built-in Hershey font only.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from bot.perception.cues import CUE_NAMES
from bot.perception.state import CUE_ON

FONT = cv2.FONT_HERSHEY_SIMPLEX
TARGET_COLOUR = (255, 60, 60)  # RGB
CURSOR_COLOUR = (255, 255, 0)
TEXT_COLOUR = (235, 235, 235)
CUE_MARKS = {"aggressive": " !", "selected": " SEL", "attacking": " ATK"}


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
