"""Label sources: where the mode/target labels of an episode come from (`label_source(spec)`).

"expert" (labels/expert.parquet, the Arena expert's ground truth); "<name>" or "<name>:<min_confidence>" for
any labels/<name>.parquet (e.g. "vlm:0.7" keeps VLM answers with confidence >= 0.7; null confidence counts
as certain); "heuristic" (rules on the perceived state, for human recordings without labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa

from bot.perception.state import GLOB, OBJ
from bot.recordings.episode import open_episode
from bot.recordings.perceived import load_perception
from training.errors import DatasetError


class LabelSource(Protocol):
    """Per-frame labels of one episode: a table of frame, mode, target_id (null = none), confidence."""

    name: str

    def labels(self, episode_dir: Path) -> pa.Table: ...


@dataclass
class FileLabels:
    """labels/<source>.parquet, keeping rows whose confidence >= min_confidence (null = certain)."""

    name: str = "expert"
    min_confidence: float = 0.0

    def labels(self, episode_dir: Path) -> pa.Table:
        table = open_episode(episode_dir).labels(self.name)
        if self.min_confidence > 0 and "confidence" in table.column_names:
            conf = table.column("confidence").to_numpy(zero_copy_only=False).astype(np.float64)
            table = table.filter(pa.array(np.nan_to_num(conf, nan=1.0) >= self.min_confidence))
        return table


@dataclass
class HeuristicLabels:
    """Rules on the perceived state for recordings without labels (human play): a weak but honest teacher.

    FLEE when hp < flee_hp with an enemy close; FIGHT with an enemy in view; LOOT with loot in view;
    EXPLORE otherwise. The target is the nearest object of the mode's role (enemy / loot), as a track id.
    """

    name: str = "heuristic"
    flee_hp: float = 0.3  # hp fraction under which a close enemy means FLEE

    def labels(self, episode_dir: Path) -> pa.Table:
        if (
            Path(episode_dir) / "labels" / "heuristic.parquet"
        ).exists():  # from the actions: bot/recordings/labels.py
            return FileLabels("heuristic").labels(episode_dir)
        p = load_perception(episode_dir)
        glob, objects, mask, track = p["glob"], p["objects"], p["mask"], p["track_id"]
        modes, targets = [], []
        for r in range(len(p)):
            g = glob[r]
            if g[GLOB["hp"]] < self.flee_hp and g[GLOB["n_enemy_close"]] > 0:
                mode, role = "FLEE", None
            elif g[GLOB["n_enemy"]] > 0:
                mode, role = "FIGHT", OBJ["is_enemy"]
            elif g[GLOB["n_loot"]] > 0:
                mode, role = "LOOT", OBJ["is_loot"]
            else:
                mode, role = "EXPLORE", None
            target = None
            if role is not None:
                rows = np.flatnonzero(mask[r] & (objects[r, :, role] > 0.5))
                if len(rows):
                    target = int(track[r, rows[np.argmin(objects[r, rows, OBJ["dist_player"]])]])
            modes.append(mode)
            targets.append(target)
        return pa.table(
            {
                "frame": pa.array(p["frame"], pa.int32()),
                "mode": pa.array(modes, pa.string()),
                "target_id": pa.array(targets, pa.int32()),
                "confidence": pa.array([None] * len(modes), pa.float32()),
            }
        )


def label_source(spec: str) -> LabelSource:
    """ "expert" | "heuristic" | "<name>" | "<name>:<min_confidence>" -> a LabelSource."""
    if not isinstance(spec, str) or not spec:
        raise DatasetError(f"DataConfig.labels: expected expert, heuristic or <name>[:<conf>], got {spec!r}")
    name, _, conf = spec.partition(":")
    if name == "heuristic":
        return HeuristicLabels()
    try:
        threshold = float(conf) if conf else 0.0
    except ValueError:
        raise DatasetError(f"DataConfig.labels: expected <name>:<min_confidence>, got {spec!r}") from None
    if not 0.0 <= threshold <= 1.0:
        raise DatasetError(f"DataConfig.labels: expected a confidence in [0, 1], got {spec!r}")
    return FileLabels(name, threshold)
