"""How well the bot agrees with a person, frame by frame and per window of play (`pilot shadow`): the mode
against the person's mode labels, the target against the object the person clicked, the aim against the
click position (error in px, hit rate within a radius); the same for the base bundle on the same frames
(base_*), the control. Also the person's label file, read as it grows.

    records = [FrameRecord(t=0.0, version="base", bot_mode="FIGHT", bot_target=3, bot_mouse=(100, 80),
                           person_mode="FIGHT", person_click=(110, 80), person_target=3)]
    windows = agreement_windows(records, window_s=10.0, hit_radius=40.0)
"""

from __future__ import annotations

import bisect
import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MEASURES = ("mode_agreement", "target_agreement", "click_error_px", "click_hit_rate")
WINDOW_FIELDS = (
    "window", "t_start", "t_end", "complete", "version", "frames", "mode_frames", "target_clicks", "clicks",
    *MEASURES, *(f"base_{m}" for m in MEASURES),
)  # fmt: skip


@dataclass
class FrameRecord:
    """The bot's prediction on one frame beside what the person did on it (px of the captured frame)."""

    t: float  # s since the shadow run's first frame
    version: str  # the policy version that predicted ("base" = the bundle given)
    bot_mode: str  # "" before the Strategist's first decision
    bot_target: int  # track id, 0 = none
    bot_mouse: tuple[float, float]  # where the bot aims, px
    person_mode: str | None = None  # the person's mode label at this frame, None = no label
    person_click: tuple[float, float] | None = None  # where the person clicked in this frame, px
    person_target: int | None = None  # track id of the object under that click, None = no object clicked
    person_mouse: tuple[float, float] | None = None  # the person's pointer (or click) in this frame, px
    # the base bundle's prediction on the same frame, run beside a fine-tuned version (None: the bot's is it)
    base_mode: str | None = None
    base_target: int | None = None
    base_mouse: tuple[float, float] | None = None


def object_at(
    point: tuple[float, float], boxes: np.ndarray, ids: np.ndarray, margin: float = 4.0
) -> int | None:
    """Id of the smallest box (K, 4) x1 y1 x2 y2 px holding `point` (with `margin` px to spare), or None."""
    if len(boxes) == 0:
        return None
    x, y = point
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    inside = (
        (boxes[:, 0] - margin <= x)
        & (x <= boxes[:, 2] + margin)
        & (boxes[:, 1] - margin <= y)
        & (y <= boxes[:, 3] + margin)
    )
    if not inside.any():
        return None
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    candidates = np.flatnonzero(inside)
    return int(ids[candidates[np.argmin(area[candidates])]])


def _mean(values: Sequence[bool | float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _measures(records: Sequence[FrameRecord], hit_radius: float, base: bool) -> dict[str, Any]:
    """MEASURES of the bot's predictions (`base`: of the base bundle's) against the person."""

    def pick(r: FrameRecord) -> tuple[str, int, tuple[float, float]]:
        if base and r.base_mouse is not None:
            return r.base_mode or "", int(r.base_target or 0), r.base_mouse
        return r.bot_mode, r.bot_target, r.bot_mouse

    modes = [pick(r)[0] == r.person_mode for r in records if r.person_mode is not None]
    targets = [pick(r)[1] == r.person_target for r in records if r.person_target is not None]
    errors = [math.dist(pick(r)[2], r.person_click) for r in records if r.person_click is not None]
    values = (_mean(modes), _mean(targets), float(np.median(errors)) if errors else None,
              _mean([e <= hit_radius for e in errors]))  # fmt: skip
    return dict(zip(MEASURES, values))


def window_stats(records: Sequence[FrameRecord], hit_radius: float) -> dict[str, Any]:
    """Agreement over `records` (one window), the bot's and on the same frames the base bundle's
    (base_*): None where nothing could be compared."""
    base = _measures(records, hit_radius, base=True)
    return {
        "version": records[-1].version if records else None,
        "frames": len(records),
        "mode_frames": sum(r.person_mode is not None for r in records),
        "target_clicks": sum(r.person_target is not None for r in records),
        "clicks": sum(r.person_click is not None for r in records),
        **_measures(records, hit_radius, base=False),
        **{f"base_{name}": value for name, value in base.items()},
    }


def agreement_windows(records: Sequence[FrameRecord], window_s: float, hit_radius: float) -> list[dict]:
    """One row of WINDOW_FIELDS per `window_s` of play that holds frames, in time order; `complete` is False
    for the last one (the run ended inside it)."""
    if window_s <= 0:
        raise ValueError(f"window_s: expected > 0, got {window_s!r}")
    groups: dict[int, list[FrameRecord]] = {}
    for record in records:
        groups.setdefault(int(record.t // window_s), []).append(record)
    last = max(groups) if groups else 0
    return [
        {"window": k, "t_start": k * window_s, "t_end": (k + 1) * window_s, "complete": k < last,
         **window_stats(groups[k], hit_radius)}
        for k in sorted(groups)
    ]  # fmt: skip


def summary(records: Sequence[FrameRecord], windows: list[dict], hit_radius: float) -> dict[str, Any]:
    """The first and the last complete window (the run went on past its end; the last window if none is),
    the whole run, the frames of fine-tuned versions (`trained`), and each version's share of the run."""
    versions: dict[str, list[FrameRecord]] = {}
    for record in records:
        versions.setdefault(record.version, []).append(record)
    return {
        "first": windows[0] if windows else None,
        "last": ([w for w in windows if w["complete"]] or windows or [None])[-1],
        "overall": window_stats(records, hit_radius),
        # every frame a fine-tuned version predicted, beside the base bundle on the same frames
        "trained": window_stats(
            [r for r in records if r.base_mouse is not None and r.version != "base"], hit_radius
        ),  # fmt: skip
        "versions": {name: window_stats(rows, hit_radius) for name, rows in versions.items()},
    }


class AgreementLog:
    """Collects FrameRecords; writes <out>/agreement.csv (one row per window) and agreement.json."""

    def __init__(self, out: Path, window_s: float, hit_radius: float) -> None:
        self.out, self.window_s, self.hit_radius = Path(out), window_s, hit_radius
        self.records: list[FrameRecord] = []
        self._written_window = -1

    def add(self, record: FrameRecord) -> None:
        """Keep `record`; once a window has ended, rewrite the files (so a crash keeps what was measured)."""
        window = int(record.t // self.window_s)
        if self.records and window > self._written_window + 1:  # the windows before this one are over
            self._written_window = window - 1
            self.write()
        self.records.append(record)

    def write(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write both files; returns the JSON content."""
        windows = agreement_windows(self.records, self.window_s, self.hit_radius)
        content = {
            "window_s": self.window_s,
            "hit_radius_px": self.hit_radius,
            "frames": len(self.records),
            "windows": windows,
            "summary": summary(self.records, windows, self.hit_radius),
            **(extra or {}),
        }
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / "agreement.json.tmp"
        tmp.write_text(json.dumps(content, indent=2) + "\n")
        tmp.replace(self.out / "agreement.json")
        with open(self.out / "agreement.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=WINDOW_FIELDS)
            writer.writeheader()
            writer.writerows({k: _csv_value(row[k]) for k in WINDOW_FIELDS} for row in windows)
        return content

    def frames_file(self) -> Path:
        """Every frame's record as JSON lines (<out>/frames.jsonl), for a closer look."""
        path = self.out / "frames.jsonl"
        with open(path, "w") as f:
            for record in self.records:
                f.write(json.dumps(asdict(record)) + "\n")
        return path


def _csv_value(value: Any) -> Any:
    return "" if value is None else round(value, 4) if isinstance(value, float) else value


class PersonLabels:
    """The person's mode labels: JSON lines {"t": unix time s, "mode": str, ...}, appended while they play.

    `refresh()` reads the lines added since the last call (a partly written last line waits); `mode_at(t)`
    is the latest label at most `tolerance_s` older than `t`.
    """

    def __init__(self, path: Path, modes: Sequence[str], tolerance_s: float = 1.0) -> None:
        self.path, self.modes, self.tolerance_s = Path(path), set(modes), tolerance_s
        self.times: list[float] = []
        self.labels: list[str] = []
        self._offset = 0

    def refresh(self) -> int:
        """Read new complete lines; returns how many labels were added. A bad line is skipped, logged."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        end = data.rfind(b"\n") + 1
        self._offset += end
        added = 0
        for line in data[:end].decode("utf-8", "replace").splitlines():
            if line.strip() and self._add(line):
                added += 1
        return added

    def _add(self, line: str) -> bool:
        try:
            record = json.loads(line)
            t, mode = float(record["t"]), str(record["mode"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s: skipped a line (%s): %.80s", self.path, exc, line)
            return False
        if mode not in self.modes:
            log.warning("%s: skipped mode %r, expected one of %s", self.path, mode, sorted(self.modes))
            return False
        if self.times and t < self.times[-1]:
            log.warning("%s: skipped a label out of time order (t %.3f)", self.path, t)
            return False
        self.times.append(t)
        self.labels.append(mode)
        return True

    def mode_at(self, t: float) -> str | None:
        i = bisect.bisect_right(self.times, t) - 1
        if i < 0 or t - self.times[i] > self.tolerance_s:
            return None
        return self.labels[i]
