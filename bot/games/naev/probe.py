"""The ground-truth probe's output read back: one ProbeFrame per line of <work>/probe.jsonl, and the screen
boxes
of every pilot in a captured frame. For measuring, demonstrations and labels only: the live bot never reads
it.

Times: the probe stamps each line with `naev.ticks()` (ms of SDL's monotonic clock since Naev started). The
reader keeps the smallest (arrival - stamp) seen as the clock offset, so a frame captured at time.monotonic()
`t` is matched with the line stamped nearest before `t - offset`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.errors import PilotError
from bot.games.naev.sprites import load_sprite


class ProbeError(PilotError):
    """The probe wrote something unreadable, or went silent."""


@dataclass(frozen=True)
class ProbeFrame:
    seq: int
    frames: int  # game updates (rendered frames) since the scenario started
    t_ms: int  # naev.ticks() when written
    kills: int  # hostiles the player destroyed, running count
    deaths: int  # times the player's armour fell under the scenario's death_armour
    dealt: float  # damage the player dealt, running sum (Naev units)
    taken: float  # damage the player took, running sum
    energy: float  # player energy %
    target: int  # the player's target pilot id, -1 = none
    pilots: tuple[
        dict[str, Any], ...
    ]  # id, ship, x, y, vx, vy, dir, armour, shield, disabled, hostile, player
    arrived: float  # time.monotonic() when we read it

    @property
    def player(self) -> dict[str, Any]:
        for p in self.pilots:
            if p["player"]:
                return p
        raise ProbeError(f"probe line {self.seq}: no pilot is the player")

    def others(self) -> list[dict[str, Any]]:
        return [p for p in self.pilots if not p["player"]]


def parse_line(line: str, arrived: float) -> ProbeFrame:
    try:
        d = json.loads(line)
        return ProbeFrame(
            int(d["seq"]), int(d["frames"]), int(d["t_ms"]), int(d["kills"]), int(d["deaths"]),
            float(d["dealt"]), float(d["taken"]), float(d["energy"]), int(d["target"]), tuple(d["pilots"]),
            arrived,
        )  # fmt: skip
    except (ValueError, KeyError, TypeError) as exc:
        raise ProbeError(f"probe line is not a probe frame ({exc}): {line[:120]!r}") from None


class ProbeReader:
    """Follows probe.jsonl as Naev writes it; `latest()` raises ProbeError after `silence_s` without a
    line."""

    def __init__(self, path: Path, silence_s: float = 5.0) -> None:
        self.path, self.silence_s = Path(path), silence_s
        self._file = None
        self._partial = ""
        self._last: ProbeFrame | None = None
        self._last_arrival = time.monotonic()
        self.offset = float("inf")  # s: monotonic arrival - probe stamp, the smallest seen

    def poll(self) -> list[ProbeFrame]:
        """The lines written since the last call (complete lines only)."""
        if self._file is None:
            if not self.path.exists():
                return []
            self._file = open(self.path, encoding="utf-8")  # noqa: SIM115 - kept open while following
        chunk = self._file.read()
        if not chunk:
            return []
        now = time.monotonic()
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()
        frames = [parse_line(line, now) for line in lines if line.strip()]
        if frames:
            self._last, self._last_arrival = frames[-1], now
            self.offset = min(self.offset, min(now - f.t_ms / 1000.0 for f in frames))
        return frames

    def latest(self) -> ProbeFrame:
        """The newest frame; ProbeError when none came for silence_s (Naev frozen, crashed or paused)."""
        self.poll()
        return self.check_fresh()

    def check_fresh(self) -> ProbeFrame:
        """The newest frame already read (no new read); ProbeError when it is older than silence_s."""
        silent = time.monotonic() - self._last_arrival
        if silent > self.silence_s:
            seen = f"line {self._last.seq}" if self._last else "no line at all"
            raise ProbeError(f"{self.path}: the Naev probe went silent for {silent:.1f} s (last: {seen})")
        if self._last is None:
            raise ProbeError(f"{self.path}: no probe line yet")
        return self._last

    def wait_first(self, timeout_s: float) -> ProbeFrame:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.poll():
                return self._last  # type: ignore[return-value]
            time.sleep(0.05)
        raise ProbeError(
            f"{self.path}: Naev wrote no probe line within {timeout_s:.0f} s (scenario not reached)"
        )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def screen_centre(frame: ProbeFrame, pilot: dict[str, Any], size: tuple[int, int]) -> tuple[float, float]:
    """Where `pilot` is drawn, image px: the camera is locked on the player at zoom 1 (Naev's y points up)."""
    me = frame.player
    return size[0] / 2 + (pilot["x"] - me["x"]), size[1] / 2 - (pilot["y"] - me["y"])


def screen_boxes(frame: ProbeFrame, size: tuple[int, int], data: Path) -> list[dict[str, Any]]:
    """Every pilot's box in image pixels, camera on the player at zoom 1: sx = W/2 + (x - px),
    sy = H/2 - (y - py) (Naev's y points up). Boxes wholly off screen are left out."""
    width, height = size
    out = []
    for p in frame.pilots:
        cx, cy = screen_centre(frame, p, size)
        x1, y1, x2, y2 = load_sprite(data, p["ship"]).box(p["dir"])
        box = (cx + x1, cy + y1, cx + x2, cy + y2)
        if box[2] <= 0 or box[3] <= 0 or box[0] >= width or box[1] >= height:
            continue
        out.append({**p, "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3]})
    return out
