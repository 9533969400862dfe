"""Naev ship sprites: the tight box of the visible pixels of a ship at any heading, read from Naev's own data.

A ship's sprite sheet (gfx/ship/<gfx>/<gfx>.png) holds sx * sy frames, one per heading, 2*pi / (sx*sy)
apart; the frame is chosen as Naev 0.8.2 does (`gl_getSpriteFromDir`, src/opengl_render.c): heading plus half
a step, floored. The box of the frame's opaque pixels (alpha > ALPHA_MIN), centred on the ship's position,
is where the ship is drawn.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from bot.games.processes import ProcessError

ALPHA_MIN = 32  # 0..255: fainter pixels (engine glow edges, anti-aliasing) are not part of the ship
DEFAULT_FRAMES = (8, 8)  # sx, sy when the ship's <GFX> gives none (Naev's default)


@dataclass(frozen=True)
class ShipSprite:
    """Per heading frame: the opaque box relative to the sprite's centre, px (x1, y1, x2, y2), y down."""

    name: str
    frames: np.ndarray  # (sx * sy, 4) float32
    size: tuple[int, int]  # one frame's width, height
    sheet: np.ndarray  # the RGBA sprite sheet, (rows * h, cols * w, 4) uint8
    cols: int  # frames per row (sx)

    def index(self, heading_deg: float) -> int:
        """The frame Naev draws at `heading_deg` (`p:dir()`, degrees counter-clockwise from +x)."""
        n = len(self.frames)
        shard = 2.0 * math.pi / n
        heading = math.radians(heading_deg) % (2.0 * math.pi)
        return int((heading + shard / 2.0) / shard) % n

    def box(self, heading_deg: float) -> np.ndarray:
        """The ship's box offsets from its centre at `heading_deg`."""
        return self.frames[self.index(heading_deg)]

    def image(self, heading_deg: float) -> np.ndarray:
        """The RGBA frame drawn at `heading_deg`, (h, w, 4)."""
        row, col = divmod(self.index(heading_deg), self.cols)
        w, h = self.size
        return self.sheet[row * h : (row + 1) * h, col * w : (col + 1) * w]


def match_offset(
    image: np.ndarray, sprite: ShipSprite, heading_deg: float, cx: float, cy: float, search: int = 12
) -> tuple[float, float, float]:
    """Where the sprite really is in an RGB `image` against where (cx, cy) says: (dx, dy) px and the match
    score (normalised correlation over the sprite's opaque pixels). Measures the probe's alignment."""
    frame = sprite.image(heading_deg)
    w, h = sprite.size
    x0, y0 = int(round(cx - w / 2)) - search, int(round(cy - h / 2)) - search
    if x0 < 0 or y0 < 0 or x0 + w + 2 * search > image.shape[1] or y0 + h + 2 * search > image.shape[0]:
        return math.nan, math.nan, math.nan
    window = image[y0 : y0 + h + 2 * search, x0 : x0 + w + 2 * search].astype(np.float32)
    alpha = frame[..., 3:4].astype(np.float32) / 255.0
    template = (frame[..., :3][..., ::-1].astype(np.float32) * alpha).astype(np.float32)  # BGR file -> RGB
    mask = np.repeat((alpha > ALPHA_MIN / 255.0).astype(np.float32), 3, axis=2)
    scores = cv2.matchTemplate(window, template, cv2.TM_CCORR_NORMED, mask=mask)
    _, best, _, (bx, by) = cv2.minMaxLoc(scores)
    return float(bx - search), float(by - search), float(best)


def _ship_gfx(data: Path, ship: str) -> tuple[str, tuple[int, int]]:
    """(gfx name, (sx, sy)) of the ship called `ship`, from ships/*.xml."""
    for path in sorted((data / "ships").glob("*.xml")):
        root = ET.parse(path).getroot()
        if root.get("name") != ship:
            continue
        gfx = root.find("GFX")
        if gfx is None or not (gfx.text or "").strip():
            break
        sx, sy = int(gfx.get("sx", DEFAULT_FRAMES[0])), int(gfx.get("sy", DEFAULT_FRAMES[1]))
        return gfx.text.strip(), (sx, sy)
    raise ProcessError(f"{data / 'ships'}: no ship named {ship!r} with a <GFX> (Naev data)")


def _frame_boxes(sheet: np.ndarray, sx: int, sy: int) -> np.ndarray:
    """The opaque box of each frame, relative to the frame centre, in sheet order (row-major from the top)."""
    fh, fw = sheet.shape[0] // sy, sheet.shape[1] // sx
    boxes = np.zeros((sx * sy, 4), np.float32)
    for i in range(sx * sy):
        row, col = divmod(i, sx)
        alpha = sheet[row * fh : (row + 1) * fh, col * fw : (col + 1) * fw, 3]
        ys, xs = np.nonzero(alpha > ALPHA_MIN)
        if len(xs):
            boxes[i] = (xs.min() - fw / 2, ys.min() - fh / 2, xs.max() + 1 - fw / 2, ys.max() + 1 - fh / 2)
    return boxes


@cache
def load_sprite(data: Path, ship: str) -> ShipSprite:
    gfx, (sx, sy) = _ship_gfx(data, ship)
    base = gfx.split("_")[0]
    path = data / "gfx" / "ship" / base / f"{gfx}.png"
    sheet = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if sheet is None or sheet.ndim != 3 or sheet.shape[2] != 4:
        raise ProcessError(f"{path}: expected an RGBA sprite sheet for ship {ship!r}")
    boxes = _frame_boxes(sheet, sx, sy)
    return ShipSprite(ship, boxes, (sheet.shape[1] // sx, sheet.shape[0] // sy), sheet, sx)
