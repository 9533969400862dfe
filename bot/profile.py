"""Game profiles: everything game-specific that perception and control need, read from one YAML per game
(bot/games/arena.yaml, bot/games/darkorbit.yaml, ...): detector classes and their roles (player, enemy,
loot, portal, neutral, ignore) and threats, the keys the policy may press, HUD bars and panels (fractions of
the game region), screen cues, where the game is on the screen, the modes, tracker and detector settings.

`load_profile("arena")` reads a shipped profile by name, `load_profile(path)` any file; every problem raises
ProfileError naming the file and the field. Roles and design: docs/notes/perception.md, section
bot/profile.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from bot.errors import ProfileError

PROFILE_VERSION = 1
GAMES_DIR = Path(__file__).with_name("games")
ROLES: tuple[str, ...] = ("player", "enemy", "loot", "portal", "neutral", "ignore")
OBJECT_ROLES: tuple[str, ...] = ("enemy", "loot", "portal", "neutral")  # roles in the Observation object set
# threat of a class whose profile entry gives none (the per-second summary's threat features)
DEFAULT_THREAT: dict[str, float] = {"enemy": 0.5, "player": 0.0, "loot": 0.0, "portal": 0.0, "neutral": 0.0,
                                    "ignore": 0.0}  # fmt: skip

Rect = tuple[float, float, float, float]


def _check_rect(name: str, rect: Any) -> Rect:
    """A region (x1, y1, x2, y2) in fractions of the game region: 0 <= x1 < x2 <= 1, same for y."""
    ok = isinstance(rect, (list, tuple)) and len(rect) == 4 and all(isinstance(v, (int, float)) for v in rect)
    if ok:
        x1, y1, x2, y2 = (float(v) for v in rect)
        ok = 0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0
    if not ok:
        raise ValueError(f"{name}: expected [x1, y1, x2, y2] fractions with 0 <= x1 < x2 <= 1, got {rect!r}")
    return (x1, y1, x2, y2)


def _check_rgb(name: str, colour: Any) -> tuple[int, int, int]:
    ok = isinstance(colour, (list, tuple)) and len(colour) == 3
    ok = ok and all(isinstance(v, int) and 0 <= v <= 255 for v in colour)
    if not ok:
        raise ValueError(f"{name}: expected an RGB triple of ints 0..255, got {colour!r}")
    return (int(colour[0]), int(colour[1]), int(colour[2]))


def _check_fraction(name: str, value: Any, low: float = 0.0, high: float = 1.0) -> None:
    if not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name}: expected a number in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class ClassSpec:
    """One detector class, in YOLO class-index order."""

    name: str  # class name as the detector (and its dataset) spells it
    role: str  # one of ROLES
    threat: float | None = None  # 0..1, how dangerous one of these is; None = DEFAULT_THREAT of the role

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: expected a non-empty string, got {self.name!r}")
        if self.role not in ROLES:
            raise ValueError(f"role: expected one of {ROLES}, got {self.role!r}")
        if self.threat is not None:
            _check_fraction("threat", self.threat)

    @property
    def danger(self) -> float:
        """The class's threat, or its role's default when the profile gives none."""
        return float(self.threat) if self.threat is not None else DEFAULT_THREAT[self.role]


@dataclass(frozen=True)
class KeySpec:
    """One key the policy may press; the Action's key index points into the profile's key list."""

    name: str  # action name, e.g. "attack"
    key: str | None = None  # physical key (pynput name: "space", "1", "ctrl"); None only for "none"
    hold: bool = False  # held down for as long as the Action says (Action v2 `held`), not tapped

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: expected a non-empty string, got {self.name!r}")
        if not isinstance(self.hold, bool) or (self.hold and self.name == "none"):
            raise ValueError(f"hold: expected true or false (never for 'none'), got {self.hold!r}")
        if self.name != "none" and (not isinstance(self.key, str) or not self.key):
            raise ValueError(f"key: expected the physical key for {self.name!r}, got {self.key!r}")


BAR_DIRECTIONS = ("right", "up")


@dataclass(frozen=True)
class BarSpec:
    """A HUD bar that fills in one colour from left to right (the Arena's hp, shield) or bottom to top (Naev's
    shield, armour, energy)."""

    region: Rect  # (x1, y1, x2, y2) fractions of the game region, the bar's full extent
    colour: tuple[int, int, int]  # RGB of the filled part
    tolerance: float = 60.0  # max RGB distance from `colour` that still counts as filled
    column_fill: float = 0.5  # fraction of a line's pixels (a column, or a row) that must match to be filled
    direction: str = "right"  # "right": fills left to right; "up": bottom to top (bot/perception/hud.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "region", _check_rect("region", self.region))
        object.__setattr__(self, "colour", _check_rgb("colour", self.colour))
        _check_fraction("tolerance", self.tolerance, 1.0, 442.0)
        _check_fraction("column_fill", self.column_fill, 0.01, 1.0)
        if self.direction not in BAR_DIRECTIONS:
            raise ValueError(f"direction: expected one of {list(BAR_DIRECTIONS)}, got {self.direction!r}")


@dataclass(frozen=True)
class MinimapSpec:
    """The minimap: the whole map drawn into one panel, the player a marker of one colour."""

    region: Rect  # (x1, y1, x2, y2) fractions of the game region
    marker: tuple[int, int, int]  # RGB of the player's marker
    tolerance: float = 40.0  # max RGB distance from `marker`

    def __post_init__(self) -> None:
        object.__setattr__(self, "region", _check_rect("region", self.region))
        object.__setattr__(self, "marker", _check_rgb("marker", self.marker))
        _check_fraction("tolerance", self.tolerance, 1.0, 442.0)


@dataclass(frozen=True)
class HudSpec:
    """HUD layout: bars read every frame, the minimap, and other panels (kept free of clicks when live)."""

    bars: dict[str, BarSpec] = field(default_factory=dict)  # name -> bar; "hp" and "shield" are read
    minimap: MinimapSpec | None = None
    panels: dict[str, Rect] = field(default_factory=dict)  # name -> (x1, y1, x2, y2) fractions

    def __post_init__(self) -> None:
        for name, rect in self.panels.items():
            self.panels[name] = _check_rect(f"panels.{name}", rect)


@dataclass(frozen=True)
class WindowSpec:
    """Where the game is on the screen. `title` wins over `region`; neither means the whole monitor."""

    title: str | None = None  # substring of the game window's title
    region: tuple[int, int, int, int] | None = None  # (left, top, width, height) screen px
    monitor: int = 1  # mss monitor index (1 = first monitor) when neither title nor region is given
    size: tuple[int, int] = (1280, 720)  # (width, height) px the game is usually played at

    def __post_init__(self) -> None:
        if self.region is not None:
            ok = isinstance(self.region, (list, tuple)) and len(self.region) == 4
            ok = ok and all(isinstance(v, int) for v in self.region) and self.region[2] > 0 < self.region[3]
            if not ok:
                raise ValueError(f"region: expected [left, top, width, height] ints, got {self.region!r}")
            object.__setattr__(self, "region", tuple(self.region))
        if not isinstance(self.monitor, int) or self.monitor < 0:
            raise ValueError(f"monitor: expected an mss monitor index >= 0, got {self.monitor!r}")
        ok = isinstance(self.size, (list, tuple)) and len(self.size) == 2
        if not ok or not all(isinstance(v, int) and v > 0 for v in self.size):
            raise ValueError(f"size: expected [width, height] positive ints, got {self.size!r}")
        object.__setattr__(self, "size", tuple(self.size))


@dataclass(frozen=True)
class TrackerSpec:
    """ByteTrack settings (ultralytics' names); durations in seconds so they mean the same at any fps."""

    track_high_thresh: float = 0.5  # detections at least this confident are matched first
    track_low_thresh: float = 0.1  # detections between low and high are used in the second association
    new_track_thresh: float = 0.6  # an unmatched detection at least this confident starts a track
    match_thresh: float = 0.95  # cost limit of the first association (cost = 1 - IoU x conf)
    fuse_score: bool = True  # fuse detection confidence into the matching cost
    track_buffer_s: float = 1.0  # s a lost track is kept for re-identification
    keep_lost_s: float = 0.3  # s a lost track stays in the Observation (at its predicted box, visible=0)

    def __post_init__(self) -> None:
        for name in ("track_high_thresh", "track_low_thresh", "new_track_thresh", "match_thresh"):
            _check_fraction(name, getattr(self, name))
        if self.track_low_thresh > self.track_high_thresh:
            raise ValueError(
                f"track_low_thresh: expected <= track_high_thresh ({self.track_high_thresh}), "
                f"got {self.track_low_thresh}"
            )
        _check_fraction("track_buffer_s", self.track_buffer_s, 0.0, 60.0)
        _check_fraction("keep_lost_s", self.keep_lost_s, 0.0, self.track_buffer_s)


@dataclass(frozen=True)
class DetectorSpec:
    """Detector defaults for this game; a trained detector's config.json records what it was trained with."""

    imgsz: int = 320  # px, long side of the detector input (training and inference use the same)
    conf: float = 0.1  # minimum confidence kept after NMS (ByteTrack uses the low ones too)
    iou: float = 0.6  # NMS IoU threshold
    max_det: int = 100  # detections kept per frame
    mask_hud: bool = True  # blank the HUD panels before detection (training and inference alike)

    def __post_init__(self) -> None:
        if not isinstance(self.imgsz, int) or self.imgsz < 64 or self.imgsz % 32:
            raise ValueError(f"imgsz: expected a multiple of 32, >= 64, got {self.imgsz!r}")
        _check_fraction("conf", self.conf)
        _check_fraction("iou", self.iou)
        if not isinstance(self.max_det, int) or self.max_det < 1:
            raise ValueError(f"max_det: expected an int >= 1, got {self.max_det!r}")


@dataclass(frozen=True)
class PlayerSpec:
    """How to find the player's ship when the detector does not see it."""

    anchor: tuple[float, float] = (0.5, 0.5)  # fractions; the camera keeps the ship here (0.5, 0.5: centred)

    def __post_init__(self) -> None:
        ok = isinstance(self.anchor, (list, tuple)) and len(self.anchor) == 2
        if not ok or not all(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in self.anchor):
            raise ValueError(f"anchor: expected [x, y] fractions, got {self.anchor!r}")
        object.__setattr__(self, "anchor", (float(self.anchor[0]), float(self.anchor[1])))


@dataclass(frozen=True)
class CueSpec:
    """What the game draws around an enemy that its box does not tell (read by bot/perception/cues.py).

    The name under an enemy turns `aggressive` while it attacks the player (else `neutral`); a ring around the
    player's selected enemy is `selected`, or `attacking` while the player fires at it. Sizes are fractions of
    the frame height (text and ring padding scale with the game's zoom, not with the enemy's size).
    """

    aggressive: tuple[int, int, int]  # RGB of an attacking enemy's name
    neutral: tuple[int, int, int]  # RGB of a peaceful enemy's name
    selected: tuple[int, int, int]  # RGB of the selection ring
    attacking: tuple[int, int, int]  # RGB of the ring while the player attacks
    name_band: float = 0.024  # height of the name band just under the box, fraction of the frame height
    name_reach: float = 0.5  # the band reaches this many box widths beyond each side of the box
    ring_scale: float = 1.3  # ring radius = ring_scale x box half-size + ring_pad x frame height
    ring_pad: float = 0.0056
    tolerance: float = 80.0  # max RGB distance from a cue colour (video compression blurs thin lines)

    def __post_init__(self) -> None:
        for name in ("aggressive", "neutral", "selected", "attacking"):
            object.__setattr__(self, name, _check_rgb(name, getattr(self, name)))
        _check_fraction("name_band", self.name_band, 0.0, 0.2)
        _check_fraction("name_reach", self.name_reach, 0.0, 3.0)
        _check_fraction("ring_scale", self.ring_scale, 0.5, 3.0)
        _check_fraction("ring_pad", self.ring_pad, 0.0, 0.1)
        _check_fraction("tolerance", self.tolerance, 1.0, 442.0)


@dataclass(frozen=True)
class GameProfile:
    """One game's profile. Build it with `load_profile`; `path` is where it was read from."""

    name: str  # game name, also `meta.game` of its episodes
    classes: tuple[ClassSpec, ...]  # detector classes in class-index order
    keys: tuple[KeySpec, ...]  # index 0 is "none"
    modes: tuple[str, ...] = ("FIGHT", "LOOT", "FLEE", "EXPLORE", "CAUTIOUS")
    fps: float = 30.0  # frames per second recorded and captured
    window: WindowSpec = field(default_factory=WindowSpec)
    hud: HudSpec = field(default_factory=HudSpec)
    tracker: TrackerSpec = field(default_factory=TrackerSpec)
    detector: DetectorSpec = field(default_factory=DetectorSpec)
    player: PlayerSpec = field(default_factory=PlayerSpec)
    cues: CueSpec | None = None  # enemy cues (aggressive name, selection ring); None = the game has none
    # the game's score: points per counted event (e.g. {kill: 100, damage: 1, death: -200}); empty = the game
    # keeps its own score (the Arena's credits)
    score: dict[str, float] = field(default_factory=dict)
    # False: the game is played without the mouse buttons, so no decision clicks (Naev: a click on the
    # targeted ship hails it, and the dialog pauses the game)
    clicks: bool = True
    version: int = PROFILE_VERSION  # profile file format version
    path: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: expected a non-empty string, got {self.name!r}")
        if self.version != PROFILE_VERSION:
            raise ValueError(
                f"version: this build reads profile version {PROFILE_VERSION}, got {self.version!r}"
            )
        if not self.classes:
            raise ValueError("classes: expected at least one class, got none")
        bad = {
            k: v for k, v in dict(self.score).items() if not isinstance(v, int | float) or isinstance(v, bool)
        }
        if bad or not isinstance(self.score, dict):
            raise ValueError(f"score: expected {{event: points}} with numbers, got {self.score!r}")
        if not isinstance(self.clicks, bool):
            raise ValueError(f"clicks: expected true or false, got {self.clicks!r}")
        _check_unique("classes", [c.name for c in self.classes])
        if not self.keys or self.keys[0].name != "none":
            raise ValueError(f"keys: expected a list starting with 'none', got {[k.name for k in self.keys]}")
        _check_unique("keys", [k.name for k in self.keys])
        if not self.modes or not all(isinstance(m, str) and m for m in self.modes):
            raise ValueError(f"modes: expected a list of mode names, got {self.modes!r}")
        _check_unique("modes", list(self.modes))
        if not isinstance(self.fps, (int, float)) or not 1 <= self.fps <= 240:
            raise ValueError(f"fps: expected a number in [1, 240], got {self.fps!r}")

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def key_names(self) -> list[str]:
        return [k.name for k in self.keys]

    def points(self, **counts: float) -> float:
        """The score of event counts by the profile's weights (events without a weight count 0)."""
        return score_points(self.score, **counts)

    def held_keys(self, held: int) -> frozenset[str]:
        """The physical keys of an Action v2 `held` bitmask (bit k = keys[k])."""
        return frozenset(k.key for i, k in enumerate(self.keys) if held >> i & 1 and k.key)

    def held_mask(self, physical: frozenset[str] | set[str]) -> int:
        """The `held` bitmask of a set of physical keys (the inverse of held_keys)."""
        return sum(1 << i for i, k in enumerate(self.keys) if k.key in physical)

    def role_of(self, cls: int) -> str:
        """Role of detector class index `cls`."""
        return self.classes[cls].role

    def class_ids(self, *roles: str) -> list[int]:
        """Indices of the classes whose role is one of `roles`."""
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            raise ValueError(f"roles: expected names from {ROLES}, got {unknown}")
        return [i for i, c in enumerate(self.classes) if c.role in roles]

    @property
    def class_threats(self) -> tuple[float, ...]:
        """Threat (0..1) of each class in class-index order (ClassSpec.danger)."""
        return tuple(c.danger for c in self.classes)

    def key_index(self, name: str) -> int:
        try:
            return self.key_names.index(name)
        except ValueError:
            raise ValueError(f"key: expected one of {self.key_names}, got {name!r}") from None


def _check_unique(name: str, values: list[str]) -> None:
    seen = {v for v in values if values.count(v) > 1}
    if seen:
        raise ValueError(f"{name}: names must be unique, duplicated: {sorted(seen)}")


# ------------------------------------------------------------------------------------------------ loading


def _build(cls: type, data: Any, where: str) -> Any:
    """`cls(**data)`, with unknown or missing fields and bad values reported as `where.field: ...`."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls) if f.name != "path"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
    try:
        return cls(**data)
    except TypeError as exc:  # a required field is missing
        raise ValueError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from None


def _build_hud(data: Any) -> HudSpec:
    if not isinstance(data, dict):
        raise ValueError(f"hud: expected a mapping, got {type(data).__name__}")
    data = dict(data)
    bars = data.get("bars") or {}
    if not isinstance(bars, dict):
        raise ValueError(f"hud.bars: expected a mapping name -> bar, got {type(bars).__name__}")
    data["bars"] = {name: _build(BarSpec, bar, f"hud.bars.{name}") for name, bar in bars.items()}
    if data.get("minimap") is not None:
        data["minimap"] = _build(MinimapSpec, data["minimap"], "hud.minimap")
    data["panels"] = dict(data.get("panels") or {})
    return _build(HudSpec, data, "hud")


def score_points(weights: dict[str, float], **counts: float) -> float:
    """Points of event counts (kill=3, ...) by `weights` ({event: points}); unweighted events count 0."""
    return float(sum(weights.get(name, 0.0) * value for name, value in counts.items()))


def profile_from_dict(data: Any, path: Path | None = None) -> GameProfile:
    """Build and validate a GameProfile from parsed YAML; raises ValueError naming the field."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a mapping at the top level, got {type(data).__name__}")
    data = dict(data)
    classes = data.get("classes")
    if not isinstance(classes, list):
        raise ValueError(f"classes: expected a list of {{name, role}}, got {type(classes).__name__}")
    data["classes"] = tuple(_build(ClassSpec, c, f"classes[{i}]") for i, c in enumerate(classes))
    keys = data.get("keys")
    if not isinstance(keys, list):
        raise ValueError(f"keys: expected a list of {{name, key}}, got {type(keys).__name__}")
    data["keys"] = tuple(_build(KeySpec, k, f"keys[{i}]") for i, k in enumerate(keys))
    if "modes" in data:
        data["modes"] = tuple(data["modes"] or ())
    for name, cls in (("window", WindowSpec), ("tracker", TrackerSpec), ("detector", DetectorSpec)):
        if name in data:
            data[name] = _build(cls, data[name], name)
    if "player" in data:
        data["player"] = _build(PlayerSpec, data["player"], "player")
    if "hud" in data:
        data["hud"] = _build_hud(data["hud"])
    if data.get("cues") is not None:
        data["cues"] = _build(CueSpec, data["cues"], "cues")
    profile = _build(GameProfile, data, "profile")
    object.__setattr__(profile, "path", path)
    return profile


def profile_path(name_or_path: str | Path) -> Path:
    """A shipped profile's file by game name ("arena"), or the given path to a YAML file."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        return Path(text)
    return GAMES_DIR / f"{text}.yaml"


def load_profile(name_or_path: str | Path) -> GameProfile:
    """Read and validate a game profile; every problem is a ProfileError naming the file and the field."""
    path = profile_path(name_or_path)
    if not path.is_file():
        shipped = sorted(p.stem for p in GAMES_DIR.glob("*.yaml"))
        raise ProfileError(path, f"no such profile (shipped profiles: {shipped})")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(path, f"unreadable YAML ({exc})") from None
    try:
        return profile_from_dict(data, path)
    except ValueError as exc:
        message = str(exc).removeprefix("profile.")
        raise ProfileError(path, message) from None
