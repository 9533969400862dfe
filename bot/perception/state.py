"""The state encoder: tracks + HUD + cursor -> the versioned Observation (OBS_SPEC), frame by frame; the same
code runs on recorded episodes and live, so a model trained from recordings sees live what it was trained on.

    Tracks (tracker.py) ─┐
    HudReading (hud.py) ─┼─ StateEncoder.encode ──▶ Observation ──▶ Tactician / Executor (every frame)
    cursor, click, t ────┘                              └──▶ Summarizer (summary.py) ──▶ Strategist (1 Hz)

Each feature's meaning is written beside its name below. Why the layout is as it is, and its versions:
docs/notes/perception.md, section bot/perception/state.py.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from bot.errors import PerceptionError
from bot.perception.hud import HudReading
from bot.perception.tracker import Tracks
from bot.profile import OBJECT_ROLES, GameProfile

# Positions and sizes are fractions of the frame's width W / height H, distances of its diagonal, velocities
# frame widths / heights per second, times from the frames' timestamps: the same at any resolution and rate.

# fmt: off
# Objects (Observation.objects, (N_MAX, F_OBJ) float32): the tracks of role enemy, loot, portal or neutral,
# nearest the player first (ties by track id), N_MAX kept; padding rows are zeros. Slots reorder every frame:
# an object is known by its track_id.
OBJ_FEATURES: tuple[str, ...] = (
    "x",                #  0 box centre x / W
    "y",                #  1 box centre y / H
    "w",                #  2 box width / W
    "h",                #  3 box height / H
    "dx_player",        #  4 (x - player x) / W
    "dy_player",        #  5 (y - player y) / H
    "dist_player",      #  6 distance to the player in px / frame diagonal
    "dx_cursor",        #  7 (x - cursor x) / W
    "dy_cursor",        #  8 (y - cursor y) / H
    "under_cursor",     #  9 1 if the cursor is inside the box
    "vx",               # 10 centre velocity, frame widths per second
    "vy",               # 11 centre velocity, frame heights per second
    "conf",             # 12 detector confidence of the last matched detection
    "visible",          # 13 1 if matched in this frame, 0 if lost (box predicted by the Kalman filter)
    "lost",             # 14 seconds since last matched, / 1 s, clipped to [0, 1]
    "age",              # 15 seconds since the track started, / 10 s, clipped to [0, 1]
    "is_enemy",         # 16 role one-hot: enemy
    "is_loot",          # 17 role one-hot: loot
    "is_portal",        # 18 role one-hot: portal
    "is_neutral",       # 19 role one-hot: neutral
    # version 3: what the game draws around an enemy (bot/perception/cues.py; 0 for other roles or
    # without cues)
    "cue_aggressive",   # 20 share of its name's pixels in the "attacking the player" colour
    "cue_selected",     # 21 share of selection-ring samples in the "selected" colour
    "cue_attacking",    # 22 share of selection-ring samples in the "player attacks it" colour
)
# Global features (Observation.glob, (F_GLOB,) float32).
GLOB_FEATURES: tuple[str, ...] = (
    "hp",               #  0 hp bar fill 0..1
    "shield",           #  1 shield bar fill 0..1
    "hp_rate",          #  2 hp change per second over the last RATE_WINDOW_S, clipped to [-1, 1]
    "shield_rate",      #  3 shield change per second, same
    "player_x",         #  4 player box centre x / W (the profile's anchor when not detected)
    "player_y",         #  5 player box centre y / H
    "player_visible",   #  6 1 if the player's ship was detected (tracked) in this frame
    "player_vx",        #  7 player velocity on screen, frame widths per second
    "player_vy",        #  8 frame heights per second
    "cursor_x",         #  9 cursor x as a fraction of the game region (the Action's mouse x)
    "cursor_y",         # 10 cursor y fraction
    "click",            # 11 1 if the last action clicked
    "map_x",            # 12 player position on the minimap, 0..1 (0.5 when unknown)
    "map_y",            # 13 player y on the minimap, same
    "map_valid",        # 14 1 if the minimap marker was found
    "n_enemy",          # 15 enemies in view / 10, clipped to 1
    "n_loot",           # 16 loot in view / 10, clipped
    "n_portal",         # 17 portals in view / 10, clipped
    "near_enemy",       # 18 distance to the nearest enemy / diagonal (1 when none)
    "near_loot",        # 19 distance to the nearest loot / diagonal (1 when none)
    "near_portal",      # 20 distance to the nearest portal / diagonal (1 when none)
    "n_enemy_close",    # 21 enemies within CLOSE_DIST of the player / 5, clipped
    "truncated",        # 22 1 if more objects were tracked than N_MAX slots
    "dt",               # 23 seconds since the previous observation, clipped to [0, 1] (0 on the first)
    "attack_on",        # 24 max cue_attacking over the objects: the player's attack is on (space toggles it)
    "target_marked",    # 25 max of cue_selected and cue_attacking over the objects: a target is selected
)
# Per-second summary (summary.py Summarizer, (F_SUM,) float32), over the observations of one whole second.
# "The most threatening class": every class whose profile threat equals the highest (> 0).
SUMMARY_FEATURES: tuple[str, ...] = (
    "hp_mean",             #  0 mean hp
    "hp_min",              #  1 min hp
    "hp_last",             #  2 hp of the last observation
    "shield_mean",         #  3 mean shield
    "shield_last",         #  4 shield of the last observation
    "hp_delta",            #  5 hp last - hp first
    "shield_delta",        #  6 shield last - shield first
    "n_enemy_mean",        #  7 mean of glob n_enemy
    "n_enemy_max",         #  8 max of glob n_enemy
    "n_loot_mean",         #  9 mean of glob n_loot
    "n_portal_mean",       # 10 mean of glob n_portal
    "near_enemy_min",      # 11 min of glob near_enemy
    "near_loot_min",       # 12 min of glob near_loot
    "near_portal_min",     # 13 min of glob near_portal
    "close_mean",          # 14 mean of glob n_enemy_close
    "map_x_last",          # 15 last valid minimap x (0.5 if none)
    "map_y_last",          # 16 last valid minimap y (0.5 if none)
    "map_speed",           # 17 minimap distance travelled / second * 10, clipped to 1
    "cursor_travel",       # 18 cursor path length (region fractions) / second / 5, clipped to 1
    "clicks",              # 19 clicks / second / 10, clipped to 1
    "enemy_frames",        # 20 fraction of observations with an enemy in view
    "loot_frames",         # 21 fraction of observations with loot in view
    "player_frames",       # 22 fraction of observations with the player detected
    "new_tracks",          # 23 object track ids first seen this second / 10, clipped to 1
    # version 2: what drives a mode change (threat of what is in view, being hit), game-agnostic
    "threat_max",          # 24 max over the second of the highest class threat in view (profile `threat`,
                           #    0..1)
    "threat_sum_mean",     # 25 mean of the summed threat of the objects in view / 3, clipped to 1
    "threat_close_mean",   # 26 mean of the summed threat of the objects within CLOSE_DIST / 3, clipped
    "threat_last",         # 27 summed threat in view at the last observation / 3, clipped
    "top_frames",          # 28 fraction of observations with an object of the most threatening class in view
    "top_last",            # 29 1 if the last observation has one
    "top_near_min",        # 30 min distance to one / diagonal (1 when none)
    "strong_mean",         # 31 mean count of objects with threat >= STRONG_THREAT in view / 5, clipped
    "strong_last",         # 32 that count at the last observation / 5, clipped
    "strong_close_last",   # 33 those within CLOSE_DIST at the last observation / 5, clipped
    "hp_hit_frames",       # 34 fraction of observations with hp_rate < 0 (being hit)
    "shield_hit_frames",   # 35 fraction of observations with shield_rate < 0
    "hp_rate_min",         # 36 min glob hp_rate (per s, -1..1)
    "shield_rate_min",     # 37 min glob shield_rate
    "hp_rate_last",        # 38 glob hp_rate at the last observation
    "close_max",           # 39 max of glob n_enemy_close
    "close_last",          # 40 glob n_enemy_close at the last observation
    "n_enemy_last",        # 41 glob n_enemy at the last observation
    # version 3: who attacks the player, and the player's own attack (bot/perception/cues.py)
    "aggro_mean",          # 42 mean count of objects with cue_aggressive >= CUE_ON / 5, clipped
    "aggro_last",          # 43 that count at the last observation / 5, clipped
    "aggro_threat_max",    # 44 max over the second of the highest class threat among those objects
    "aggro_threat_last",   # 45 that at the last observation
    "attack_frames",       # 46 fraction of observations with attack_on >= CUE_ON
    "marked_last",         # 47 1 if target_marked >= CUE_ON at the last observation
    "top_aggro_last",      # 48 1 if an object of the most threatening class is aggressive at the last one
    "top_marked_last",     # 49 1 if one is the marked target (selected or attacked) at the last observation
    "hunted_last",         # 50 1 if an aggressive one is not the marked target at the last observation (what
                           #    sends an expert running: a boss that attacks while the player is not fighting
                           #    it)
    "hunted_frames",       # 51 fraction of observations where that holds
    "near_enemy_last",     # 52 glob near_enemy at the last observation (what decides loot-or-fight now)
    "near_loot_last",      # 53 glob near_loot at the last observation
)
# fmt: on
N_MAX = 32
RATE_WINDOW_S = 1.0  # s over which hp_rate / shield_rate are measured
CLOSE_DIST = 0.25  # fraction of the frame diagonal that counts as "close" to the player
LOST_SCALE_S = 1.0  # s that maps `lost` to 1
AGE_SCALE_S = 10.0  # s that maps `age` to 1
STRONG_THREAT = 0.5  # class threat from which an object counts as "strong" in the summary
CUE_ON = 0.5  # a screen cue at least this strong counts as present in the summary

CUE_FEATURES = OBJ_FEATURES[20:23]  # bot/perception/cues.py CUE_NAMES, in that order
OBJ = {name: i for i, name in enumerate(OBJ_FEATURES)}
GLOB = {name: i for i, name in enumerate(GLOB_FEATURES)}
SUMMARY = {name: i for i, name in enumerate(SUMMARY_FEATURES)}


@dataclass(frozen=True)
class ObsSpec:
    """Name, version and layout of the Observation; written into every dataset and checkpoint."""

    name: str = "orbit-obs"
    version: int = 3
    n_max: int = N_MAX
    obj_features: tuple[str, ...] = OBJ_FEATURES
    glob_features: tuple[str, ...] = GLOB_FEATURES
    summary_features: tuple[str, ...] = SUMMARY_FEATURES
    object_roles: tuple[str, ...] = OBJECT_ROLES

    @property
    def id(self) -> str:
        return f"{self.name}/{self.version}"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "n_max": self.n_max,
            "obj_features": list(self.obj_features),
            "glob_features": list(self.glob_features),
            "summary_features": list(self.summary_features),
            "object_roles": list(self.object_roles),
        }

    def check(self, found: dict, where: str) -> None:
        """Raise PerceptionError unless `found` (a to_dict() read back from `where`) is this spec."""
        if not isinstance(found, dict) or (found.get("name"), found.get("version")) != (
            self.name,
            self.version,
        ):
            got = f"{found.get('name')}/{found.get('version')}" if isinstance(found, dict) else repr(found)
            raise PerceptionError(
                f"{where}: observation spec {got}, this build uses {self.id}; re-run perception"
            )
        if found != self.to_dict():
            raise PerceptionError(
                f"{where}: observation spec {self.id} with a different layout; re-run perception"
            )


OBS_SPEC = ObsSpec()


@dataclass
class Observation:
    """What the policy sees in one frame (layout: OBJ_FEATURES and GLOB_FEATURES above)."""

    objects: np.ndarray  # (N_MAX, F_OBJ) float32
    mask: np.ndarray  # (N_MAX,) bool, True = a real object
    track_id: np.ndarray  # (N_MAX,) int64, 0 = padding (track ids start at 1)
    cls: np.ndarray  # (N_MAX,) int64 profile class index, -1 = padding
    glob: np.ndarray  # (F_GLOB,) float32
    t: float  # s, the frame's timestamp
    spec: str = OBS_SPEC.id

    def slot_of(self, track_id: int) -> int | None:
        """The slot holding `track_id` in this frame, if it is there."""
        hits = np.flatnonzero(self.mask & (self.track_id == track_id))
        return int(hits[0]) if len(hits) else None


@dataclass
class _History:
    """Recent (t, hp, shield) for the rates."""

    samples: deque = field(default_factory=deque)

    def rate(self, t: float, hp: float, shield: float) -> tuple[float, float]:
        self.samples.append((t, hp, shield))
        while len(self.samples) > 1 and t - self.samples[1][0] >= RATE_WINDOW_S:
            self.samples.popleft()
        t0, hp0, sh0 = self.samples[0]
        if t - t0 <= 0:
            return 0.0, 0.0
        return (hp - hp0) / (t - t0), (shield - sh0) / (t - t0)


def _clip(value: float, low: float = 0.0, high: float = 1.0) -> float:
    return min(high, max(low, value))


class StateEncoder:
    """Turns one frame's tracks, HUD reading and cursor state into an Observation. `reset()` per episode."""

    def __init__(self, profile: GameProfile, frame_size: tuple[int, int], n_max: int = N_MAX) -> None:
        if n_max != OBS_SPEC.n_max:
            raise ValueError(
                f"n_max: the observation spec {OBS_SPEC.id} has {OBS_SPEC.n_max} slots, got {n_max}"
            )
        self.profile = profile
        self.width, self.height = float(frame_size[0]), float(frame_size[1])
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"frame_size: expected positive (width, height), got {frame_size!r}")
        self.diag = math.hypot(self.width, self.height)
        roles = [c.role for c in profile.classes]
        self._role_index = np.array(
            [OBJECT_ROLES.index(r) if r in OBJECT_ROLES else -1 for r in roles], np.int64
        )
        self._is_player = np.array([r == "player" for r in roles], bool)
        self.reset()

    def reset(self) -> None:
        self._history = _History()
        self._last_t: float | None = None

    def encode(
        self,
        tracks: Tracks,
        hud: HudReading,
        cursor: tuple[float, float],
        click: bool,
        t: float,
        cues: np.ndarray | None = None,
    ) -> Observation:
        """`cursor`: (x, y) fractions of the game region; `click`: the last action's click; `t`: seconds;
        `cues`: (len(tracks), 3) from bot/perception/cues.py CueReader.read, None = no cues (zeros)."""
        if cues is None:
            cues = np.zeros((len(tracks), len(CUE_FEATURES)), np.float32)
        elif cues.shape != (len(tracks), len(CUE_FEATURES)):
            raise ValueError(f"cues: expected shape {(len(tracks), len(CUE_FEATURES))}, got {cues.shape}")
        player_xy, player_v, player_seen = self._player(tracks)
        objects, mask, ids, cls, order = self._objects(tracks, player_xy, cursor, cues)
        glob = self._glob(tracks, hud, cursor, click, t, player_xy, player_v, player_seen, order)
        glob[24] = objects[mask, OBJ["cue_attacking"]].max(initial=0.0)
        glob[25] = objects[mask, OBJ["cue_selected"] :].max(initial=0.0)
        return Observation(objects, mask, ids, cls, glob, float(t))

    def _player(self, tracks: Tracks) -> tuple[np.ndarray, np.ndarray, bool]:
        """(centre px, velocity px/s, detected) of the player: the visible player track nearest the anchor."""
        anchor = np.array(self.profile.player.anchor, np.float32) * [self.width, self.height]
        if len(tracks):
            candidates = np.flatnonzero(self._is_player[tracks.cls] & tracks.visible)
            if len(candidates):
                centres = (tracks.xyxy[candidates, :2] + tracks.xyxy[candidates, 2:]) / 2.0
                best = int(np.argmin(np.linalg.norm(centres - anchor, axis=1)))
                return centres[best], tracks.velocity[candidates[best]], True
        return anchor, np.zeros(2, np.float32), False

    def _objects(self, tracks: Tracks, player_xy: np.ndarray, cursor: tuple[float, float], cues: np.ndarray):
        n_max, scale = OBS_SPEC.n_max, np.array([self.width, self.height], np.float32)
        objects = np.zeros((n_max, len(OBJ_FEATURES)), np.float32)
        mask, ids, cls = np.zeros(n_max, bool), np.zeros(n_max, np.int64), np.full(n_max, -1, np.int64)
        keep = np.flatnonzero(self._role_index[tracks.cls] >= 0) if len(tracks) else np.zeros(0, np.int64)
        if not len(keep):
            return objects, mask, ids, cls, (keep, np.zeros(0, np.float32))
        xyxy = tracks.xyxy[keep]
        centre, size = (xyxy[:, :2] + xyxy[:, 2:]) / 2.0, xyxy[:, 2:] - xyxy[:, :2]
        dist = np.linalg.norm(centre - player_xy, axis=1) / self.diag
        order = np.lexsort((tracks.id[keep], dist))  # nearest first, ties by track id: deterministic
        sel = order[:n_max]
        n = len(sel)
        cursor_px = np.asarray(cursor, np.float32) * scale
        rows = keep[sel]
        objects[:n, 0:2] = centre[sel] / scale
        objects[:n, 2:4] = size[sel] / scale
        objects[:n, 4:6] = (centre[sel] - player_xy) / scale
        objects[:n, 6] = dist[sel]
        objects[:n, 7:9] = (centre[sel] - cursor_px) / scale
        objects[:n, 9] = np.all((xyxy[sel, :2] <= cursor_px) & (cursor_px <= xyxy[sel, 2:]), axis=1)
        objects[:n, 10:12] = tracks.velocity[rows] / scale
        objects[:n, 12] = tracks.conf[rows]
        objects[:n, 13] = tracks.visible[rows]
        objects[:n, 14] = np.clip(tracks.lost_s[rows] / LOST_SCALE_S, 0.0, 1.0)
        objects[:n, 15] = np.clip(tracks.age_s[rows] / AGE_SCALE_S, 0.0, 1.0)
        objects[np.arange(n), 16 + self._role_index[tracks.cls[rows]]] = 1.0
        objects[:n, 20:23] = cues[rows]
        mask[:n], ids[:n], cls[:n] = True, tracks.id[rows], tracks.cls[rows]
        return objects, mask, ids, cls, (keep, dist)

    def _glob(self, tracks, hud, cursor, click, t, player_xy, player_v, player_seen, order) -> np.ndarray:
        g = np.zeros(len(GLOB_FEATURES), np.float32)
        hp, shield = hud.bar("hp"), hud.bar("shield")
        hp_rate, shield_rate = self._history.rate(t, hp, shield)
        g[0:4] = hp, shield, _clip(hp_rate, -1, 1), _clip(shield_rate, -1, 1)
        g[4:6] = player_xy[0] / self.width, player_xy[1] / self.height
        g[6] = float(player_seen)
        g[7:9] = player_v[0] / self.width, player_v[1] / self.height
        g[9:12] = _clip(cursor[0]), _clip(cursor[1]), float(bool(click))
        g[12:15] = (*hud.minimap, 1.0) if hud.minimap is not None else (0.5, 0.5, 0.0)
        keep, dist = order
        roles = self._role_index[tracks.cls[keep]] if len(keep) else np.zeros(0, np.int64)
        for i, role in enumerate(("enemy", "loot", "portal")):
            of_role = dist[roles == OBJECT_ROLES.index(role)]
            g[15 + i] = min(len(of_role) / 10.0, 1.0)
            g[18 + i] = min(float(of_role.min()), 1.0) if len(of_role) else 1.0
        enemy_d = dist[roles == OBJECT_ROLES.index("enemy")]
        g[21] = min(int((enemy_d < CLOSE_DIST).sum()) / 5.0, 1.0)
        g[22] = float(len(keep) > OBS_SPEC.n_max)
        g[23] = 0.0 if self._last_t is None else _clip(t - self._last_t)
        self._last_t = t
        return g
