"""Heuristic mode/target labels for recorded play, derived from WHAT HAPPENED: the clicks and key taps in
steps.parquet, read against the objects on screen at that moment. Noisy by design.

    steps (click, mouse, key) ──▶ intents (frame, mode, target, why) ──▶ timeline ──▶ labels/heuristic
    objects per frame (gt_objects of an Arena episode, else perception/tracks.parquet) ─┘

The intent rules, how they become a timeline, and the measured accuracy: docs/notes/recordings.md, section
bot/recordings/labels.py (figures: benchmarks/RESULTS.md, "Recording (issue 7)").
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from bot.errors import EpisodeError
from bot.profile import GameProfile, load_profile
from bot.recordings.episode import Episode, open_episode, write_labels

log = logging.getLogger(__name__)

SOURCE = "heuristic"
TARGET_MODES = ("FIGHT", "LOOT")


@dataclass
class LabelerConfig:
    """Thresholds of the action-based labeler (times in s, distances as fractions of the frame width)."""

    margin: float = 0.02  # a click this close to a box counts as on it
    loot_reach: float = 0.06  # a move click this close to a loot box is going for it
    lookahead_s: float = 0.8  # an intent labels the frames this long before its action (the approach)
    hold_s: float = 3.0  # a move intent without a target lasts this long after its last action
    flee_hp: float = 0.5  # hp fraction under which moving away from enemies is FLEE
    recover_hp: float = 0.85  # hp fraction at which a flight ends
    enemy_near: float = 0.3  # an enemy within this of the ship (frame widths) is close
    lost_s: float = 0.5  # a FIGHT / LOOT target out of view this long ends the intent

    def __post_init__(self) -> None:
        for name in ("margin", "loot_reach", "lookahead_s", "hold_s", "enemy_near", "lost_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"LabelerConfig.{name}: expected >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.flee_hp < self.recover_hp <= 1.0:
            raise ValueError(
                f"LabelerConfig.flee_hp/recover_hp: expected 0 <= flee_hp < recover_hp <= 1, "
                f"got {self.flee_hp}, {self.recover_hp}"
            )


@dataclass
class Obj:
    id: int
    role: str  # enemy | loot | portal | neutral
    box: tuple[float, float, float, float]  # screen px

    @property
    def centre(self) -> np.ndarray:
        x1, y1, x2, y2 = self.box
        return np.array([(x1 + x2) / 2, (y1 + y2) / 2])


@dataclass
class Intent:
    frame: int
    mode: str
    target: int | None
    confidence: float
    why: str


# ------------------------------------------------------------------------------------------------ inputs


def scene_objects(episode: Episode, profile: GameProfile) -> list[list[Obj]]:
    """Objects on screen per step frame: gt_objects when recorded, else the stored perception tracks."""
    steps = episode.steps()
    roles = {c.name: c.role for c in profile.classes}
    n = steps.num_rows
    if "gt_objects" in steps.column_names:
        rows = steps.column("gt_objects").to_pylist()
        return [[_obj(o["id"], roles.get(o["cls"], "ignore"), o) for o in objs or []] for objs in rows]
    path = episode.dir / "perception" / "tracks.parquet"
    if not path.exists():
        raise EpisodeError(
            path, "missing: label needs objects (run `pilot perceive` or `pilot record --perceive`)"
        )
    tracks = pq.read_table(path, columns=["frame", "tracks"]).to_pylist()
    per_frame: list[list[Obj]] = [[] for _ in range(n)]
    for row in tracks:
        if row["frame"] < n:
            objs = [t for t in row["tracks"] or [] if t["visible"]]
            per_frame[row["frame"]] = [_obj(t["id"], profile.classes[t["cls"]].role, t) for t in objs]
    return _forward_fill(per_frame, [r["frame"] for r in tracks])


def _obj(obj_id: int, role: str, o: dict[str, Any]) -> Obj:
    return Obj(int(obj_id), role, (float(o["x1"]), float(o["y1"]), float(o["x2"]), float(o["y2"])))


def _forward_fill(per_frame: list[list[Obj]], perceived: list[int]) -> list[list[Obj]]:
    """Frames perception skipped (--every N) get the objects of the last perceived frame."""
    seen = set(perceived)
    last: list[Obj] = []
    for i in range(len(per_frame)):
        if i in seen:
            last = per_frame[i]
        else:
            per_frame[i] = last
    return per_frame


def hp_series(episode: Episode) -> np.ndarray | None:
    """Player hp fraction per step frame: recorded (Arena), else perceived from the HUD, else None."""
    steps = episode.steps()
    if "hp" in steps.column_names:
        return steps.column("hp").to_numpy(zero_copy_only=False).astype(np.float64)
    path = episode.dir / "perception" / "tracks.parquet"
    if not path.exists():
        return None
    table = pq.read_table(path, columns=["frame", "hp"]).to_pydict()
    hp = np.full(steps.num_rows, np.nan)
    for frame, value in zip(table["frame"], table["hp"]):
        if frame < len(hp) and value is not None:
            hp[frame] = value
    for i in range(1, len(hp)):  # forward fill skipped frames
        if np.isnan(hp[i]):
            hp[i] = hp[i - 1]
    return np.nan_to_num(hp, nan=1.0)


# ------------------------------------------------------------------------------------------------ intents


class Labeler:
    """Action-based labels for one episode: `intents()` then `timeline()`."""

    def __init__(self, episode: Episode, profile: GameProfile, cfg: LabelerConfig | None = None) -> None:
        self.cfg = cfg or LabelerConfig()
        self.episode, self.profile = episode, profile
        meta = episode.meta
        self.size = np.array([meta.width, meta.height], np.float64)
        self.ship = np.array(profile.player.anchor) * self.size
        self.fps = float(meta.fps)
        steps = episode.steps()
        self.click = steps.column("click").to_numpy(zero_copy_only=False).astype(bool)
        self.mouse = np.stack([steps.column(c).to_numpy() for c in ("mouse_x", "mouse_y")], 1) * self.size
        self.key = steps.column("key").to_numpy().astype(np.int64)
        self.key_names = list(meta.keys)
        self.objects = scene_objects(episode, profile)
        hp = hp_series(episode)
        self.hp = hp if hp is not None else np.ones(len(self.click))
        minimap = profile.hud.panels.get("minimap") or (
            profile.hud.minimap.region if profile.hud.minimap else None
        )
        self.minimap = np.array(minimap) * np.tile(self.size, 2) if minimap else None

    def _px(self, fraction: float) -> float:
        return fraction * self.size[0]

    def _under(self, frame: int, pos: np.ndarray, roles: tuple[str, ...], pad: float) -> Obj | None:
        best, best_d = None, np.inf
        for o in self.objects[frame]:
            x1, y1, x2, y2 = o.box
            if o.role in roles and x1 - pad <= pos[0] <= x2 + pad and y1 - pad <= pos[1] <= y2 + pad:
                d = float(np.linalg.norm(o.centre - pos))
                if d < best_d:
                    best, best_d = o, d
        return best

    def _enemies(self, frame: int) -> list[Obj]:
        return [o for o in self.objects[frame] if o.role == "enemy"]

    def _on_minimap(self, pos: np.ndarray) -> bool:
        return self.minimap is not None and bool(
            np.all(pos >= self.minimap[:2]) and np.all(pos <= self.minimap[2:])
        )

    def _move_intent(self, frame: int, pos: np.ndarray, selected: int | None) -> Intent:
        """A click on empty space: where does it lead, relative to the enemies, loot and portals?"""
        cfg, hp = self.cfg, float(self.hp[frame])
        heading = pos - self.ship
        enemies = self._enemies(frame)
        near = [o for o in enemies if np.linalg.norm(o.centre - self.ship) < self._px(cfg.enemy_near)]
        away = all(float(np.dot(heading, o.centre - self.ship)) < 0 for o in enemies)
        portal = self._under(frame, pos, ("portal",), self._px(cfg.loot_reach))
        if hp < cfg.flee_hp and (portal is not None or self._on_minimap(pos) or (enemies and away)):
            return Intent(frame, "FLEE", None, 0.6, f"move away at hp {hp:.2f}")
        box = self._under(frame, pos, ("loot",), self._px(cfg.loot_reach))
        if box is not None:
            return Intent(frame, "LOOT", box.id, 0.6, "move onto loot")
        if near and away:
            return Intent(frame, "CAUTIOUS", None, 0.4, "move away from a close enemy")
        if selected is not None and any(o.id == selected for o in enemies):
            return Intent(frame, "FIGHT", selected, 0.5, "move while an enemy is selected")
        return Intent(frame, "EXPLORE", None, 0.4, "move")

    def _click_intent(self, frame: int, selected: int | None) -> Intent:
        pos = self.mouse[frame]
        hit = self._under(frame, pos, ("enemy", "loot"), self._px(self.cfg.margin))
        if hit is not None and hit.role == "enemy":
            return Intent(frame, "FIGHT", hit.id, 0.8, "clicked an enemy")
        if hit is not None:
            return Intent(frame, "LOOT", hit.id, 0.8, "clicked loot")
        return self._move_intent(frame, pos, selected)

    def _key_intent(self, frame: int, selected: int | None) -> Intent | None:
        name = self.key_names[self.key[frame]] if 0 < self.key[frame] < len(self.key_names) else ""
        enemies = self._enemies(frame)
        if name == "attack" and enemies:
            ids = {o.id for o in enemies}
            if selected not in ids:
                nearest = min(enemies, key=lambda o: np.linalg.norm(o.centre - self.mouse[frame]))
                selected = nearest.id
            return Intent(frame, "FIGHT", selected, 0.8, "attack key")
        if name in ("repair", "boost") and self.hp[frame] < self.cfg.flee_hp and enemies:
            return Intent(frame, "FLEE", None, 0.5, f"{name} at low hp")
        return None

    def intents(self) -> list[Intent]:
        """Every intent the actions show, in frame order."""
        out: list[Intent] = []
        selected: int | None = None
        for frame in range(len(self.click)):
            if self.click[frame]:
                intent = self._click_intent(frame, selected)
                selected = intent.target if intent.mode == "FIGHT" else selected
                out.append(intent)
            if self.key[frame]:
                intent = self._key_intent(frame, selected)
                if intent is not None:
                    out.append(intent)
        return out

    # -------------------------------------------------------------------- timeline

    def _still_valid(self, intent: Intent, frame: int, last_action: int, lost: int) -> bool:
        cfg = self.cfg
        if intent.mode in TARGET_MODES and intent.target is not None:
            return lost <= cfg.lost_s * self.fps
        if intent.mode == "FLEE":
            return self.hp[frame] < cfg.recover_hp
        return frame - last_action <= cfg.hold_s * self.fps

    def timeline(self, intents: list[Intent] | None = None) -> list[dict[str, Any]]:
        """One label row per step frame (frame, mode, target_id, confidence, rationale)."""
        intents = self.intents() if intents is None else intents
        n, ahead = len(self.click), round(self.cfg.lookahead_s * self.fps)
        starts = [max(0, i.frame - ahead) for i in intents]
        rows, k, current, last_action, lost = [], -1, None, 0, 0
        for frame in range(n):
            while k + 1 < len(intents) and starts[k + 1] <= frame:
                k += 1
                current, last_action, lost = intents[k], intents[k].frame, 0
            if current is not None and current.target is not None:
                visible = any(o.id == current.target for o in self.objects[frame])
                lost = 0 if visible else lost + 1
            if (
                current is not None
                and frame > current.frame
                and not self._still_valid(current, frame, last_action, lost)
            ):
                current = None
            if current is None:
                rows.append(
                    dict(frame=frame, mode="EXPLORE", target_id=None, confidence=0.3, rationale="idle")
                )
            else:
                target = current.target if lost == 0 else None
                rows.append(dict(frame=frame, mode=current.mode, target_id=target,
                                 confidence=current.confidence, rationale=current.why))  # fmt: skip
        return rows


# ------------------------------------------------------------------------------------------------ API


def heuristic_labels(
    episode_dir: Path | str, profile: GameProfile | None = None, cfg: LabelerConfig | None = None
) -> list[dict[str, Any]]:
    """The heuristic label rows of one episode (not written)."""
    episode = open_episode(episode_dir)
    profile = profile or load_profile(episode.meta.game)
    return Labeler(episode, profile, cfg).timeline()


def label_episode(
    episode_dir: Path | str, profile: GameProfile | None = None, cfg: LabelerConfig | None = None
) -> Path:
    """Write labels/heuristic.parquet of one episode (replacing an older one); returns its path."""
    rows = heuristic_labels(episode_dir, profile, cfg)
    space = "arena" if "gt_objects" in open_episode(episode_dir).steps().column_names else "track"
    return write_labels(episode_dir, SOURCE, rows, target_ids=space)  # the ids scene_objects used


def compare(rows: list[dict[str, Any]], truth: dict[str, list], modes: list[str]) -> dict[str, Any]:
    """Agreement of heuristic rows with reference labels (a labels table as a dict of columns)."""
    ours = {r["frame"]: r for r in rows}
    pairs = [(m, ours[f]) for f, m in zip(truth["frame"], truth["mode"]) if f in ours]
    targets = [
        (t, ours[f]["target_id"])
        for f, t in zip(truth["frame"], truth["target_id"])
        if f in ours and t is not None and ours[f]["target_id"] is not None
    ]
    per_mode = {}
    for mode in modes:
        hits = [r["mode"] == m for m, r in pairs if m == mode]
        per_mode[mode] = {"n": len(hits), "recall": float(np.mean(hits)) if hits else None}
    return {
        "frames": len(pairs),
        "correct": sum(r["mode"] == m for m, r in pairs),
        "truth_counts": dict(Counter(m for m, _ in pairs)),
        "target_pairs": len(targets),
        "target_correct": sum(a == b for a, b in targets),
        "per_mode": per_mode,
    }


def evaluate(
    episode_dirs: list[Path], against: str = "expert", cfg: LabelerConfig | None = None
) -> dict[str, Any]:
    """Mode accuracy of the heuristic labels against `labels/<against>` over episodes, with the majority
    baseline (always answering the most frequent true mode) and target agreement where both name one."""
    totals: Counter = Counter()
    correct = frames = t_pairs = t_correct = 0
    for path in episode_dirs:
        episode = open_episode(path)
        rows = Labeler(episode, load_profile(episode.meta.game), cfg).timeline()
        truth = episode.labels(against).to_pydict()
        result = compare(rows, truth, list(episode.meta.modes))
        totals.update(result["truth_counts"])
        correct += result["correct"]
        frames += result["frames"]
        t_pairs += result["target_pairs"]
        t_correct += result["target_correct"]
    if not frames:
        raise EpisodeError(
            episode_dirs[0] if episode_dirs else Path("."), f"no frames labelled by {against!r}"
        )
    majority, count = totals.most_common(1)[0]
    return {
        "episodes": len(episode_dirs),
        "frames": frames,
        "accuracy": correct / frames,
        "majority_mode": majority,
        "majority_accuracy": count / frames,
        "target_agreement": t_correct / t_pairs if t_pairs else None,
        "target_pairs": t_pairs,
    }
