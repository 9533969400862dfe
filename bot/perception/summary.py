"""Per-second summaries for the Strategist: `Summarizer` turns the Observations of each whole second into one
vector (layout: SUMMARY_FEATURES in state.py), live and offline alike; `summarize` does a whole sequence."""

from __future__ import annotations

import math

import numpy as np

from bot.perception.state import CLOSE_DIST, CUE_ON, GLOB, OBJ, STRONG_THREAT, SUMMARY_FEATURES, Observation
from bot.profile import DEFAULT_THREAT


class Summarizer:
    """One summary vector per whole second of observation time, for the Strategist (layout: SUMMARY_FEATURES).

    `add(obs)` returns the finished second's vector when `obs` is the first of a new second, else None;
    `flush()` returns the vector of the second in progress. Live and offline use the same code path
    (bot/perception/pipeline.py `Perception` builds it with `class_threat=profile.class_threats`).
    """

    def __init__(self, class_threat: tuple[float, ...] | list[float] | np.ndarray | None = None) -> None:
        """`class_threat`: threat (0..1) per profile class index; None = DEFAULT_THREAT for every enemy."""
        self._threat = None if class_threat is None else np.asarray(class_threat, np.float32)
        if self._threat is not None and (
            self._threat.ndim != 1 or not np.all((self._threat >= 0) & (self._threat <= 1))
        ):
            raise ValueError(f"class_threat: expected one number in [0, 1] per class, got {class_threat!r}")
        top = float(self._threat.max()) if self._threat is not None and len(self._threat) else 0.0
        self._top = self._threat >= top if top > 0 else None  # (C,) the most threatening classes
        self.reset()

    def reset(self) -> None:
        self._second: int | None = None
        self._rows: list[Observation] = []
        self._seen: set[int] = set()
        self._last_map = (0.5, 0.5)

    def add(self, obs: Observation) -> np.ndarray | None:
        second = math.floor(obs.t)
        out = None
        if self._second is not None and second != self._second and self._rows:
            out = self.flush()
        self._second = second
        self._rows.append(obs)
        return out

    def flush(self) -> np.ndarray | None:
        if not self._rows:
            return None
        vector = self._summarize(self._rows)
        self._rows = []
        return vector

    def _summarize(self, rows: list[Observation]) -> np.ndarray:
        g = np.stack([o.glob for o in rows])  # (n, F_GLOB)
        col = {name: g[:, i] for name, i in GLOB.items()}
        s = np.zeros(len(SUMMARY_FEATURES), np.float32)
        hp, shield = col["hp"], col["shield"]
        s[0:7] = (
            hp.mean(),
            hp.min(),
            hp[-1],
            shield.mean(),
            shield[-1],
            hp[-1] - hp[0],
            shield[-1] - shield[0],
        )
        s[7:11] = col["n_enemy"].mean(), col["n_enemy"].max(), col["n_loot"].mean(), col["n_portal"].mean()
        s[11:14] = col["near_enemy"].min(), col["near_loot"].min(), col["near_portal"].min()
        s[14] = col["n_enemy_close"].mean()
        maps = np.stack([col["map_x"], col["map_y"]], axis=1)[col["map_valid"] > 0]  # (m, 2)
        if len(maps):
            self._last_map = (float(maps[-1, 0]), float(maps[-1, 1]))
        s[15:17] = self._last_map
        n = len(rows)  # the window covers n frame intervals: n - 1 between its first and last, plus one
        span = (rows[-1].t - rows[0].t) * n / (n - 1) if n > 1 and rows[-1].t > rows[0].t else 1.0
        s[17] = min(_path_length(maps) / span * 10.0, 1.0)
        s[18] = min(_path_length(np.stack([col["cursor_x"], col["cursor_y"]], axis=1)) / span / 5.0, 1.0)
        s[19] = min(col["click"].sum() / span / 10.0, 1.0)
        s[20:23] = (col["n_enemy"] > 0).mean(), (col["n_loot"] > 0).mean(), col["player_visible"].mean()
        ids = {int(i) for o in rows for i in o.track_id[o.mask]}
        s[23] = min(len(ids - self._seen) / 10.0, 1.0)
        self._seen |= ids
        threats = [self._threats(obs) for obs in rows]  # (threat, top) per observation, read twice below
        s[24:34] = self._threat_features(rows, threats)
        s[34:42] = _hit_features(col)
        s[42:52] = self._cue_features(rows, threats, col)
        s[52:54] = col["near_enemy"][-1], col["near_loot"][-1]
        return s

    def _threats(self, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
        """(threat, is of a most threatening class) of each real object of `obs`."""
        if self._threat is None:
            threat = obs.objects[obs.mask, OBJ["is_enemy"]] * DEFAULT_THREAT["enemy"]
            return threat, np.zeros(len(threat), bool)
        cls = obs.cls[obs.mask]
        known = (cls >= 0) & (cls < len(self._threat))  # a class the profile lacks counts as harmless
        threat = np.where(known, self._threat[np.clip(cls, 0, len(self._threat) - 1)], 0.0)
        top = (
            known & self._top[np.clip(cls, 0, len(self._top) - 1)] if self._top is not None else known & False
        )
        return threat.astype(np.float32), top

    def _threat_features(self, rows: list[Observation], threats: list) -> np.ndarray:
        """Indices 24..33 of the summary: per-observation threat statistics, then over the second."""
        per = np.zeros((len(rows), 7), np.float32)  # max, sum, close sum, top, top dist, strong, strong close
        for i, (obs, (threat, top)) in enumerate(zip(rows, threats)):
            dist = obs.objects[obs.mask, OBJ["dist_player"]]
            close, strong = dist < CLOSE_DIST, threat >= STRONG_THREAT
            per[i] = (
                threat.max(initial=0.0),
                threat.sum(),
                threat[close].sum(),
                float(top.any()),
                min(float(dist[top].min(initial=1.0)), 1.0),
                strong.sum(),
                (strong & close).sum(),
            )
        return np.array(
            [
                per[:, 0].max(),
                min(per[:, 1].mean() / 3.0, 1.0),
                min(per[:, 2].mean() / 3.0, 1.0),
                min(per[-1, 1] / 3.0, 1.0),
                per[:, 3].mean(),
                per[-1, 3],
                per[:, 4].min(),
                min(per[:, 5].mean() / 5.0, 1.0),
                min(per[-1, 5] / 5.0, 1.0),
                min(per[-1, 6] / 5.0, 1.0),
            ],
            np.float32,
        )

    def _cue_features(self, rows: list[Observation], threats: list, col: dict[str, np.ndarray]) -> np.ndarray:
        """Indices 42..51 of the summary: who attacks the player, the player's own attack and target."""
        # per observation: count and top threat of the aggressive objects; top class: angry, marked, hunted
        per = np.zeros((len(rows), 5), np.float32)
        for i, (obs, (threat, top)) in enumerate(zip(rows, threats)):
            objects = obs.objects[obs.mask]
            angry = objects[:, OBJ["cue_aggressive"]] >= CUE_ON
            marked = objects[:, OBJ["cue_selected"] :].max(axis=1, initial=0.0) >= CUE_ON
            per[i] = (
                angry.sum(),
                threat[angry].max(initial=0.0),
                (top & angry).any(),
                (top & marked).any(),
                (top & angry & ~marked).any(),
            )
        return np.array(
            [
                min(per[:, 0].mean() / 5.0, 1.0),
                min(per[-1, 0] / 5.0, 1.0),
                per[:, 1].max(),
                per[-1, 1],
                (col["attack_on"] >= CUE_ON).mean(),
                float(col["target_marked"][-1] >= CUE_ON),
                per[-1, 2],
                per[-1, 3],
                per[-1, 4],
                per[:, 4].mean(),
            ],
            np.float32,
        )


def _hit_features(col: dict[str, np.ndarray]) -> np.ndarray:
    """Indices 34..41 of the summary: being hit, and the close enemies, from the global features."""
    hp_rate, shield_rate = col["hp_rate"], col["shield_rate"]
    return np.array(
        [
            (hp_rate < 0).mean(),
            (shield_rate < 0).mean(),
            hp_rate.min(),
            shield_rate.min(),
            hp_rate[-1],
            col["n_enemy_close"].max(),
            col["n_enemy_close"][-1],
            col["n_enemy"][-1],
        ],
        np.float32,
    )


def _path_length(points: np.ndarray) -> float:
    """Length of the polyline through (n, 2) points."""
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum()) if len(points) > 1 else 0.0


def summarize(
    observations: list[Observation], class_threat: tuple[float, ...] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(summaries (S, F_SUM), index of the last observation of each second) for a whole sequence."""
    summarizer, vectors, ends = Summarizer(class_threat), [], []
    for i, obs in enumerate(observations):
        vector = summarizer.add(obs)
        if vector is not None:
            vectors.append(vector)
            ends.append(i - 1)
    last = summarizer.flush()
    if last is not None:
        vectors.append(last)
        ends.append(len(observations) - 1)
    if not vectors:
        return np.zeros((0, len(SUMMARY_FEATURES)), np.float32), np.zeros(0, np.int64)
    return np.stack(vectors), np.asarray(ends, np.int64)
