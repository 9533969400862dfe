"""A minimum-jerk mouse movement, shared by the Arena expert's hand (arena/expert/hand.py) and the live bot's
input driver (bot/control/humanize.py), so both move the cursor the same way."""

from __future__ import annotations

import numpy as np


class MinJerkSegment:
    """One cursor movement: a quintic from (p0, v0) to p1 at rest plus a sideways bulge; ends exactly at p1.

    With v0 = 0 this is the minimum-jerk profile 10s^3 - 15s^4 + 6s^5 (Flash & Hogan 1985,
    https://doi.org/10.1523/JNEUROSCI.05-07-01688.1985). A non-zero v0 is used when re-planning mid-movement,
    so a moving target bends the path instead of restarting it.
    """

    def __init__(
        self, t0: float, duration: float, p0: np.ndarray, v0: np.ndarray, p1: np.ndarray, bulge: float
    ):
        self.t0, self.duration, self.p0, self.p1 = t0, duration, p0.copy(), p1.copy()
        vT = v0 * duration  # velocity per unit of normalised time s
        d = p1 - p0 - vT
        self.coef = (vT, 10 * d + 4 * vT, -15 * d - 7 * vT, 6 * d + 3 * vT)  # s, s^3, s^4, s^5
        chord = p1 - p0
        length = float(np.linalg.norm(chord))
        normal = np.array([-chord[1], chord[0]]) / length if length > 1e-6 else np.zeros(2)
        self.bulge = normal * bulge * length

    def done(self, t: float) -> bool:
        return t >= self.t0 + self.duration

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Position (px) and velocity (px/s) at time t; exactly (p1, 0) once finished."""
        if self.done(t):
            return self.p1.copy(), np.zeros(2)
        s = max(0.0, (t - self.t0) / self.duration)
        c1, c3, c4, c5 = self.coef
        pos = self.p0 + c1 * s + c3 * s**3 + c4 * s**4 + c5 * s**5 + self.bulge * 16 * s**2 * (1 - s) ** 2
        dpos = (
            c1 + 3 * c3 * s**2 + 4 * c4 * s**3 + 5 * c5 * s**4 + self.bulge * 32 * s * (1 - s) * (1 - 2 * s)
        )
        return pos, dpos / self.duration
