"""The state encoder: tracks + HUD + cursor/player state -> the versioned Observation; a per-second summary.

    Tracks (bot/perception/tracker.py) ─┐
    HudReading (bot/perception/hud.py) ─┼─ StateEncoder.encode ──▶ Observation ──▶ Tactician / Executor
    (every frame)
    cursor, click, t ────────┘                                │
                                                 Summarizer ──▶ one summary vector per second ──▶ Strategist

The same encoder runs on recorded episodes (bot/recordings/perceive.py, with the detector's real errors)
and live, so
a model trained from recordings sees exactly the features it sees live. Every feature is normalised by the
frame (positions and sizes by its width / height, distances by its diagonal, velocities in frame widths /
heights per second), so the numbers mean the same at any capture resolution. Time-based features use the
frames' timestamps, not a frame count, so a 30 fps recording and a 20 Hz live loop agree.

OBS_SPEC "orbit-obs" version 3: N_MAX = 32 object slots, F_OBJ = 23, F_GLOB = 26, F_SUM = 54 (version 2
lacked the screen cues of bot/perception/cues.py: objects 20..22, globals 24..25, summary 42..53; version 1
also lacked
summary 24..41).

Objects (`Observation.objects`, (N_MAX, F_OBJ) float32) are the tracks whose class role is enemy, loot,
portal or neutral (never the player; "ignore" classes never reach the tracker). They are sorted by distance
to the player, ties by track id, and the N_MAX nearest are kept; `mask` marks real rows, padding rows are
zeros with track_id 0 and cls -1. Objects are identified by `track_id` (persistent across frames), never by
their slot, whose order changes every frame (original-system.md 1.6).

    index  name          meaning
    0      x             box centre x / W
    1      y             box centre y / H
    2      w             box width / W
    3      h             box height / H
    4      dx_player     (x - player x) / W
    5      dy_player     (y - player y) / H
    6      dist_player   distance to the player in px / frame diagonal
    7      dx_cursor     (x - cursor x) / W
    8      dy_cursor     (y - cursor y) / H
    9      under_cursor  1 if the cursor is inside the box
    10     vx            centre velocity, frame widths per second
    11     vy            centre velocity, frame heights per second
    12     conf          detector confidence of the last matched detection
    13     visible       1 if matched in this frame, 0 if lost (box predicted by the Kalman filter)
    14     lost          seconds since last matched, / 1 s, clipped to [0, 1]
    15     age           seconds since the track started, / 10 s, clipped to [0, 1]
    16     is_enemy      role one-hot
    17     is_loot
    18     is_portal
    19     is_neutral
    -- version 3: what the game draws around an enemy (bot/perception/cues.py; 0 for other roles or without
    cues) --
    20     cue_aggressive  share of its name's pixels in the "attacking the player" colour
    21     cue_selected    share of selection-ring samples in the "selected" colour
    22     cue_attacking   share of selection-ring samples in the "player attacks it" colour

Global features (`Observation.glob`, (F_GLOB,) float32):

    index  name               meaning
    0      hp                 hp bar fill 0..1
    1      shield             shield bar fill 0..1
    2      hp_rate            hp change per second over the last RATE_WINDOW_S, clipped to [-1, 1]
    3      shield_rate        shield change per second, same
    4      player_x           player box centre x / W (the profile's anchor when not detected)
    5      player_y           player box centre y / H
    6      player_visible     1 if the player's ship was detected (tracked) in this frame
    7      player_vx          player velocity on screen, frame widths per second
    8      player_vy          frame heights per second
    9      cursor_x           cursor x as a fraction of the game region (the Action's mouse x)
    10     cursor_y           cursor y fraction
    11     click              1 if the last action clicked
    12     map_x              player position on the minimap, 0..1 (0.5 when unknown)
    13     map_y
    14     map_valid          1 if the minimap marker was found
    15     n_enemy            enemies in view / 10, clipped to 1
    16     n_loot             loot in view / 10, clipped
    17     n_portal           portals in view / 10, clipped
    18     near_enemy         distance to the nearest enemy / diagonal (1 when none)
    19     near_loot          distance to the nearest loot / diagonal (1 when none)
    20     near_portal        distance to the nearest portal / diagonal (1 when none)
    21     n_enemy_close      enemies within CLOSE_DIST of the player / 5, clipped
    22     truncated          1 if more objects were tracked than N_MAX slots
    23     dt                 seconds since the previous observation, clipped to [0, 1] (0 on the first)
    24     attack_on          max cue_attacking over the objects: the player's attack is on (space toggles it)
    25     target_marked      max of cue_selected and cue_attacking over the objects: a target is selected

Per-second summary (`Summarizer`, (F_SUM,) float32, one row per whole second of the observations' time):

    index  name               meaning over the observations of that second
    0      hp_mean            mean hp
    1      hp_min             min hp
    2      hp_last            hp of the last observation
    3      shield_mean
    4      shield_last
    5      hp_delta           hp last - hp first
    6      shield_delta       shield last - shield first
    7      n_enemy_mean       mean of glob n_enemy
    8      n_enemy_max        max of glob n_enemy
    9      n_loot_mean
    10     n_portal_mean
    11     near_enemy_min     min of glob near_enemy
    12     near_loot_min
    13     near_portal_min
    14     close_mean         mean of glob n_enemy_close
    15     map_x_last         last valid minimap x (0.5 if none)
    16     map_y_last
    17     map_speed          minimap distance travelled / second * 10, clipped to 1
    18     cursor_travel      cursor path length (region fractions) / second / 5, clipped to 1
    19     clicks             clicks / second / 10, clipped to 1
    20     enemy_frames       fraction of observations with an enemy in view
    21     loot_frames        fraction of observations with loot in view
    22     player_frames      fraction of observations with the player detected
    23     new_tracks         object track ids first seen this second / 10, clipped to 1
    -- version 2: what drives a mode change (threat of what is in view, being hit), game-agnostic --
    24     threat_max         max over the second of the highest class threat in view (profile `threat`, 0..1)
    25     threat_sum_mean    mean of the summed threat of the objects in view / 3, clipped to 1
    26     threat_close_mean  mean of the summed threat of the objects within CLOSE_DIST / 3, clipped
    27     threat_last        summed threat in view at the last observation / 3, clipped
    28     top_frames         fraction of observations with an object of the most threatening class in view
    29     top_last           1 if the last observation has one
    30     top_near_min       min distance to one / diagonal (1 when none)
    31     strong_mean        mean count of objects with threat >= STRONG_THREAT in view / 5, clipped
    32     strong_last        that count at the last observation / 5, clipped
    33     strong_close_last  those within CLOSE_DIST at the last observation / 5, clipped
    34     hp_hit_frames      fraction of observations with hp_rate < 0 (being hit)
    35     shield_hit_frames  fraction of observations with shield_rate < 0
    36     hp_rate_min        min glob hp_rate (per s, -1..1)
    37     shield_rate_min    min glob shield_rate
    38     hp_rate_last       glob hp_rate at the last observation
    39     close_max          max of glob n_enemy_close
    40     close_last         glob n_enemy_close at the last observation
    41     n_enemy_last       glob n_enemy at the last observation
    -- version 3: who attacks the player, and the player's own attack (bot/perception/cues.py) --
    42     aggro_mean         mean count of objects with cue_aggressive >= CUE_ON / 5, clipped
    43     aggro_last         that count at the last observation / 5, clipped
    44     aggro_threat_max   max over the second of the highest class threat among those objects
    45     aggro_threat_last  that at the last observation
    46     attack_frames      fraction of observations with attack_on >= CUE_ON
    47     marked_last        1 if target_marked >= CUE_ON at the last observation
    48     top_aggro_last     1 if an object of the most threatening class is aggressive at the last one
    49     top_marked_last    1 if one is the marked target (selected or attacked) at the last observation
    50     hunted_last        1 if an aggressive one is not the marked target at the last observation (what
                          sends an expert running: a boss that attacks while the player is not fighting it)
    51     hunted_frames      fraction of observations where that holds
    52     near_enemy_last    glob near_enemy at the last observation (what decides loot-or-fight now)
    53     near_loot_last     glob near_loot at the last observation

Threat comes from the profile (`GameProfile.class_threats`, one number per class, by role when the profile
gives none); "the most threatening class" is every class whose threat equals the profile's highest (> 0).
A Summarizer built without threats (tests, tools) gives every enemy object DEFAULT_THREAT["enemy"].
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from bot.errors import PerceptionError
from bot.perception.hud import HudReading
from bot.perception.tracker import Tracks
from bot.profile import DEFAULT_THREAT, OBJECT_ROLES, GameProfile

OBJ_FEATURES: tuple[str, ...] = (
    "x", "y", "w", "h", "dx_player", "dy_player", "dist_player", "dx_cursor", "dy_cursor", "under_cursor",
    "vx", "vy", "conf", "visible", "lost", "age", "is_enemy", "is_loot", "is_portal", "is_neutral",
    "cue_aggressive", "cue_selected", "cue_attacking",
)  # fmt: skip
GLOB_FEATURES: tuple[str, ...] = (
    "hp", "shield", "hp_rate", "shield_rate", "player_x", "player_y", "player_visible", "player_vx",
    "player_vy", "cursor_x", "cursor_y", "click", "map_x", "map_y", "map_valid", "n_enemy", "n_loot",
    "n_portal", "near_enemy", "near_loot", "near_portal", "n_enemy_close", "truncated", "dt", "attack_on",
    "target_marked",
)  # fmt: skip
SUMMARY_FEATURES: tuple[str, ...] = (
    "hp_mean", "hp_min", "hp_last", "shield_mean", "shield_last", "hp_delta", "shield_delta",
    "n_enemy_mean", "n_enemy_max", "n_loot_mean", "n_portal_mean", "near_enemy_min", "near_loot_min",
    "near_portal_min", "close_mean", "map_x_last", "map_y_last", "map_speed", "cursor_travel", "clicks",
    "enemy_frames", "loot_frames", "player_frames", "new_tracks", "threat_max", "threat_sum_mean",
    "threat_close_mean", "threat_last", "top_frames", "top_last", "top_near_min", "strong_mean",
    "strong_last", "strong_close_last", "hp_hit_frames", "shield_hit_frames", "hp_rate_min",
    "shield_rate_min", "hp_rate_last", "close_max", "close_last", "n_enemy_last", "aggro_mean", "aggro_last",
    "aggro_threat_max", "aggro_threat_last", "attack_frames", "marked_last", "top_aggro_last",
    "top_marked_last", "hunted_last", "hunted_frames", "near_enemy_last", "near_loot_last",
)  # fmt: skip
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
    """What the policy sees in one frame (layout: the module docstring)."""

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


class Summarizer:
    """One summary vector per whole second of observation time, for the Strategist (layout: module docstring).

    `add(obs)` returns the finished second's vector when `obs` is the first of a new second, else None;
    `flush()` returns the vector of the second in progress. Live and offline use the same code path
    (bot/recordings/perceive.py `Perception` builds it with `class_threat=profile.class_threats`).
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
