"""The Arena's rules: the fixed stats of the player's ship and of each NPC kind, the game's constants, and
WorldConfig, the part a caller chooses (view size, fps, zoom, map size, population)."""

from __future__ import annotations

from dataclasses import dataclass

from arena.spec import DEFAULT_FPS, DEFAULT_HEIGHT, DEFAULT_WIDTH
from validation import check_float, check_int


@dataclass(frozen=True)
class NpcStats:
    """The rules of one NPC kind."""

    cls: str  # one of spec.NPC_CLASSES
    hp: float  # hit points
    speed: float  # px/s at full throttle
    radius: float  # px, half the side of its on-screen box
    damage: float  # hp per laser shot
    fire_interval: float  # s between shots
    laser_range: float  # px
    aggro_radius: float  # px; it attacks a player this close on sight; 0 = passive (fights back when hit)
    leash: float  # px; it gives up the chase beyond this distance
    keep_distance: float  # px it tries to hold from the player while fighting
    credits: int  # reward for the kill
    respawn_s: float  # s until a replacement appears elsewhere on the map


# Tuned so that a raider duel costs a full-health player ~40 % of hp+shield, two raiders at once need the
# repair, and a boss (5x a raider's hp, 100 dps) outlasts a face-to-face fight: kite it (its range is shorter
# than the player's and it is slower) or retreat, repair and come back.
NPC_STATS: dict[str, NpcStats] = {
    "npc_scout": NpcStats("npc_scout", 300, 150, 16, 15, 1.0, 300, 0, 700, 220, 100, 8),
    "npc_raider": NpcStats("npc_raider", 1000, 200, 24, 45, 0.75, 350, 350, 850, 240, 400, 12),
    "npc_boss": NpcStats("npc_boss", 3000, 120, 48, 100, 1.0, 400, 300, 800, 260, 2500, 45),
}


@dataclass(frozen=True)
class PlayerStats:
    """The rules of the player's ship."""

    hp: float = 1000.0  # hit points
    shield: float = 600.0  # shield points, absorbed before hp
    speed: float = 250.0  # px/s
    accel: float = 900.0  # px/s^2, also the braking rate when arriving
    radius: float = 26.0  # px, half the side of its box
    laser_damage: float = 50.0  # hp per shot
    fire_interval: float = 0.5  # s between shots
    laser_range: float = 450.0  # px between centres
    shield_delay: float = 3.0  # s without damage before the shield regenerates
    shield_regen: float = 60.0  # shield/s
    hp_regen_delay: float = 5.0  # s without damage before hp slowly regenerates
    hp_regen: float = 5.0  # hp/s
    safe_hp_regen: float = 100.0  # hp/s inside the safe zone
    safe_shield_regen: float = 200.0  # shield/s inside the safe zone
    repair_rate: float = 100.0  # hp/s while the repair runs
    repair_seconds: float = 5.0  # s
    repair_cooldown: float = 20.0  # s from activation until it is ready again
    boost_factor: float = 1.8  # speed multiplier while boosting
    boost_seconds: float = 3.0  # s
    boost_cooldown: float = 15.0  # s from activation
    death_penalty: float = 0.10  # fraction of the credits lost on death
    pickup_radius: float = 40.0  # px between centres that collects a box


PLAYER = PlayerStats()
BOX_RADIUS = 12.0  # px
BOX_CREDITS = 60  # credits per bonus box
PORTAL_RADIUS = 64.0  # px, half the side of the portal's box (the safe zone is larger, see WorldConfig)
NPC_REGEN_DELAY = 8.0  # s out of combat before an NPC heals
NPC_REGEN = 0.02  # fraction of hp_max per s
NPC_ACCEL = 2.5  # NPC acceleration in units of its speed per second
WANDER_RADIUS = 350.0  # px around its spawn point that an idle NPC roams
SPAWN_MARGIN = 250.0  # px between the safe zone's edge and anything spawned
SELECTION_DROP = 2000.0  # px; a selection farther away than this is dropped

SHOT_SECONDS = 0.15  # lifetime of a laser bolt's drawing
HIT_SECONDS = 0.2  # lifetime of a hit flash
EXPLOSION_SECONDS = 0.8  # lifetime of an explosion


@dataclass
class WorldConfig:
    """What the simulation needs to know: the view (for clicks and visibility), time step, map, population."""

    width: int = DEFAULT_WIDTH  # px, frame width
    height: int = DEFAULT_HEIGHT  # px, frame height
    fps: int = DEFAULT_FPS  # steps per second of game time (dt = 1 / fps)
    zoom: float = 1.0  # screen px per world px; spec.py assumes 1 (0.5 at 640x360 shows the 1280x720 view)
    world_width: float = 4000.0  # world px
    world_height: float = 4000.0  # world px
    safe_zone_radius: float = 350.0  # world px around the portal (map centre)
    n_scouts: int = 16  # npc_scout alive at once (dead ones respawn)
    n_raiders: int = 10  # npc_raider alive at once
    n_bosses: int = 2  # npc_boss alive at once
    n_boxes: int = 20  # bonus boxes on the map at once

    def __post_init__(self) -> None:
        self._validate_world()

    def _validate_world(self) -> None:
        for key in ("width", "height"):
            check_int(self, key, 64, 8192)
        check_int(self, "fps", 1, 240)
        check_float(self, "zoom", 0.1, 8.0)
        for key in ("world_width", "world_height"):
            check_float(self, key, 1000.0, 100000.0)  # world px
        check_float(self, "safe_zone_radius", 100.0, min(self.world_width, self.world_height) / 4.0)
        for key in ("n_scouts", "n_raiders", "n_bosses", "n_boxes"):
            check_int(self, key, 0, 500)

    @property
    def npc_counts(self) -> dict[str, int]:
        return {"npc_scout": self.n_scouts, "npc_raider": self.n_raiders, "npc_boss": self.n_bosses}
