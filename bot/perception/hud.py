"""Reads the HUD from a frame with numpy: bar fill fractions (hp, shield) and the player's minimap position.

Regions and colours come from the game profile (`hud:`), as fractions of the frame, so nothing here knows a
game or a resolution. A bar's reading is the fraction of its filled columns; the minimap position is the
centroid of the marker colour's pixels (how and why: docs/notes/perception.md, section bot/perception/hud.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bot.profile import BarSpec, HudSpec, MinimapSpec, Rect


@dataclass
class HudReading:
    """One frame's HUD values."""

    bars: dict[str, float] = field(default_factory=dict)  # bar name -> fill fraction 0..1
    minimap: tuple[float, float] | None = None  # player marker (x, y) as fractions of the minimap

    def bar(self, name: str, default: float = 1.0) -> float:
        """A bar's reading; `default` when the profile has no such bar."""
        return self.bars.get(name, default)


def pixel_rect(region: Rect, width: int, height: int) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) integer px of a fractional region, rounded the way the Arena draws its HUD."""
    x1, y1 = round(region[0] * width), round(region[1] * height)
    x2, y2 = max(x1 + 1, round(region[2] * width)), max(y1 + 1, round(region[3] * height))
    return x1, y1, x2, y2


def colour_mask(patch: np.ndarray, colour: tuple[int, int, int], tolerance: float) -> np.ndarray:
    """(...) bool: pixels of `patch` (..., 3) RGB uint8 within `tolerance` (RGB distance) of `colour`."""
    diff = patch.astype(np.int32) - np.asarray(colour, np.int32)
    return np.einsum("...c,...c->...", diff, diff) <= tolerance * tolerance


def read_bar(frame: np.ndarray, bar: BarSpec) -> float:
    """Fill fraction of a bar: filling right, the share of filled columns; filling up, the height of the
    highest filled row above the base (Naev draws a marker line and an icon across its bars: rows under
    them do not match the colour, yet the fill goes on above them)."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = pixel_rect(bar.region, w, h)
    if bar.direction == "up":
        mask = colour_mask(frame[y1:y2, x1:x2], bar.colour, bar.tolerance)
        if mask.size == 0:
            return 0.0
        filled = np.flatnonzero(mask.mean(axis=1) >= bar.column_fill)  # rows, top = 0
        return float((mask.shape[0] - filled[0]) / mask.shape[0]) if len(filled) else 0.0
    if y2 - y1 > 4:  # stay off the bar's frame/anti-aliased edge rows
        y1, y2 = y1 + 1, y2 - 1
    mask = colour_mask(frame[y1:y2, x1:x2], bar.colour, bar.tolerance)
    if mask.size == 0:
        return 0.0
    filled = mask.mean(axis=0) >= bar.column_fill
    return float(filled.mean())


def read_minimap(frame: np.ndarray, minimap: MinimapSpec) -> tuple[float, float] | None:
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = pixel_rect(minimap.region, w, h)
    mask = colour_mask(frame[y1:y2, x1:x2], minimap.marker, minimap.tolerance)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    # +0.5: a pixel's centre, so a marker on the last column reads just under 1
    return float((xs.mean() + 0.5) / (x2 - x1)), float((ys.mean() + 0.5) / (y2 - y1))


class HudReader:
    """Reads every bar and the minimap of a profile's HUD from RGB frames."""

    def __init__(self, hud: HudSpec) -> None:
        self.hud = hud

    def read(self, frame: np.ndarray) -> HudReading:
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frame: expected RGB (H, W, 3), got shape {frame.shape}")
        bars = {name: read_bar(frame, bar) for name, bar in self.hud.bars.items()}
        minimap = read_minimap(frame, self.hud.minimap) if self.hud.minimap is not None else None
        return HudReading(bars, minimap)
