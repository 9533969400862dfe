"""Appearance of a crop, for clustering: colour histogram + HOG + perceptual hash + size.

    crop (h, w, 3) RGB ──foreground (V above the crop's border)──▶ RGB histogram, 4 bins a channel (64)
        ──32x32 grey──▶ HOG (144) and 64-bit DCT hash (64, as ±1)      + log width, log height (2)

Each block is scaled to unit length and weighted (`FeatureWeights`), so no block wins by its dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SIDE = 32  # px, crops are resized to SIDE x SIDE for HOG and the hash
CELL = 8  # px, HOG cell side
BINS = 9  # HOG orientation bins over 0..180 degrees


@dataclass
class FeatureWeights:
    """Relative weight of each block of the appearance vector."""

    colour: float = 1.0  # foreground colour histogram: sprites of one kind share a palette
    hog: float = 0.6  # shape (turns with the sprite, so it counts less than colour)
    phash: float = 0.4  # coarse layout
    size: float = 1.2  # on-screen size: one kind of sprite is drawn at one size


def crop(frame: np.ndarray, box: np.ndarray, pad: int = 1) -> np.ndarray:
    """The pixels of `box` (xyxy px) grown by `pad` px, clipped to the frame; at least 1x1."""
    h, w = frame.shape[:2]
    x1, y1 = int(max(0, np.floor(box[0]) - pad)), int(max(0, np.floor(box[1]) - pad))
    x2, y2 = int(min(w, np.ceil(box[2]) + pad)), int(min(h, np.ceil(box[3]) + pad))
    return frame[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)]


def foreground(patch: np.ndarray) -> np.ndarray:
    """(h, w) bool: pixels clearly brighter than the patch's border (the sprite, not the space around)."""
    v = patch.max(axis=2).astype(np.float32)
    border = np.concatenate([v[0], v[-1], v[:, 0], v[:, -1]])
    mask = v > np.median(border) + 20.0
    return mask if mask.any() else np.ones_like(mask)


def colour_histogram(patch: np.ndarray) -> np.ndarray:
    """(64,) RGB histogram (4 bins a channel) of the foreground pixels, summing to 1."""
    pixels = patch[foreground(patch)] // 64
    index = pixels[:, 0].astype(np.int64) * 16 + pixels[:, 1] * 4 + pixels[:, 2]
    hist = np.bincount(index, minlength=64).astype(np.float32)
    return hist / max(hist.sum(), 1.0)


def hog_cells(grey: np.ndarray) -> np.ndarray:
    """(144,) histograms of oriented gradients: 4x4 cells of 8 px, 9 unsigned orientations, each 2x2 block
    of cells L2-normalised and the four block-normalised copies of a cell summed (Dalal & Triggs,
    simplified: OpenCV 5 has no HOGDescriptor in its main module)."""
    g = grey.astype(np.float32)
    gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=1), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=1)
    magnitude, angle = cv2.cartToPolar(gx, gy, angleInDegrees=True)
    bins = ((angle % 180.0) / (180.0 / BINS)).astype(np.int64) % BINS
    cells = SIDE // CELL
    cell_of = (np.arange(SIDE) // CELL)[:, None] * cells + (np.arange(SIDE) // CELL)[None, :]
    hist = np.bincount((cell_of * BINS + bins).ravel(), magnitude.ravel(), cells * cells * BINS)
    hist = hist.reshape(cells, cells, BINS)
    # norm[i, j]: L2 norm of the block of cells (i..i+1, j..j+1)
    norm = np.sqrt(
        (hist[:-1, :-1] ** 2 + hist[1:, :-1] ** 2 + hist[:-1, 1:] ** 2 + hist[1:, 1:] ** 2).sum(-1)
    )
    out = np.zeros_like(hist)
    for dy in (0, 1):
        for dx in (0, 1):  # cell (a, b) in the block starting at (a - dy, b - dx)
            out[dy : dy + cells - 1, dx : dx + cells - 1] += hist[
                dy : dy + cells - 1, dx : dx + cells - 1
            ] / (norm[..., None] + 1e-6)
    return out.ravel().astype(np.float32)


def phash(grey: np.ndarray) -> np.ndarray:
    """(64,) the perceptual hash (DCT of the 32x32 grey image, 8x8 low frequencies above their median)."""
    low = cv2.dct(grey.astype(np.float32))[:8, :8].ravel()
    return np.where(low > np.median(low[1:]), 1.0, -1.0).astype(np.float32)


def describe(patch: np.ndarray, box: np.ndarray, weights: FeatureWeights) -> np.ndarray:
    """(274,) float32 appearance vector of one crop (see the module docstring)."""
    grey = cv2.resize(cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    hog = hog_cells(grey)
    wh = np.log(np.maximum(box[2:] - box[:2], 1.0)).astype(np.float32)
    blocks = [
        _unit(colour_histogram(patch)) * weights.colour,
        _unit(hog) * weights.hog,
        _unit(phash(grey)) * weights.phash,
        wh * weights.size,  # not normalised: a size ratio of 1.5 is a log difference of 0.4
    ]
    return np.concatenate(blocks).astype(np.float32)


def thumbnail(patch: np.ndarray, side: int) -> np.ndarray:
    """`patch` fitted into a side x side RGB tile (aspect kept, centred on black)."""
    h, w = patch.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
    small = cv2.resize(patch, size, interpolation=interp)
    tile = np.zeros((side, side, 3), np.uint8)
    y, x = (side - size[1]) // 2, (side - size[0]) // 2
    tile[y : y + size[1], x : x + size[0]] = small
    return tile


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-6)
