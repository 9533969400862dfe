"""ExpertConfig: everything that shapes the expert's play (game view, human timing, decision thresholds),
validated on construction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arena import spec
from validation import check_float, check_int, fail


@dataclass
class ExpertConfig:
    """Everything that shapes the expert's play. `skill` scales the human-timing fields below it.

    With f = 1.5 - skill (1.5 at skill 0, 0.5 at skill 1): reaction delays, tap gaps and aim jitter are
    multiplied by f, the cursor's speed is divided by f, and target choice gets noisier as skill falls.
    """

    seed: int = 0  # RNG seed used when reset() is given none
    skill: float = 0.8  # 0..1, overall competence (see the class docstring)
    width: int = spec.DEFAULT_WIDTH  # px, width of the game frame the mouse fraction refers to
    height: int = spec.DEFAULT_HEIGHT  # px
    zoom: float = 1.0  # screen px per world px, the game's view (0.5 shows 1280x720 world px in 640x360)
    world_width: float = 4000.0  # world px, size of the map the minimap shows
    world_height: float = 4000.0  # world px
    laser_range: float = 450.0  # world px, how far from the ship a selected NPC can be shot (game rules)
    safe_zone_radius: float = 350.0  # world px around the portal (drawn on screen): no fighting inside
    # --- human timing and noise (values for skill 0.5) ---
    reaction_delay_s: float = 0.25  # s, median delay before acting on a new intention
    cursor_speed_bits_s: float = 8.0  # Fitts' throughput, bits/s: movement time = 0.06 s + log2(1+D/W)/speed
    jitter_px: float = 3.0  # px, std of the aim error of each cursor movement
    curve_frac: float = 0.06  # std of a path's sideways bulge, as a fraction of its length
    click_gap_s: float = 0.2  # s, minimum time between two clicks
    key_gap_s: float = 0.25  # s, minimum time between two key taps
    # --- decisions ---
    mode_dwell_s: float = 1.5  # s, minimum time in a mode before another is chosen (entering FLEE preempts)
    flee_dwell_s: float = 3.0  # s, minimum time in FLEE once entered
    target_dwell_s: float = 1.0  # s, minimum time on a target before switching to a better one
    target_margin: float = 0.3  # cost units a new target must be better by to take over
    flee_hp: float = 0.3  # hp fraction below which the expert flees (with no aggressive raider on screen)
    flee_hp_per_raider: float = 0.1  # each aggressive raider on screen raises flee_hp by this much
    recover_hp: float = 0.9  # hp fraction above which a flight for low hp ends (the safe zone heals fast)
    cautious_hp: float = 0.7  # hp fraction below which several aggressive raiders make it cautious
    cautious_raiders: int = 2  # aggressive raiders on screen that call for caution
    flee_boss_aggro: bool = True  # a boss attacking the player triggers FLEE (unless the expert is kiting it)
    # objects mostly under the HUD panels are out of view; False = the pre-2026-11-23 expert, which reacted
    # to them (e.g. a boss under the minimap kept it CAUTIOUS while nothing on screen showed one)
    hud_hides: bool = True
    kite_boss_skill: float = 0.6  # skill at or above which the expert takes bosses on, by kiting them
    boss_flee_hp: float = 0.5  # hp fraction below which a fight with a boss is broken off
    kite_dist: float = 415.0  # world px held from a kited boss: beyond its laser range, within ours
    ship_speed: float = 250.0  # world px/s, the ship's cruising speed (as a player learns it)
    repair_hp: float = 0.6  # hp fraction below which the repair ability is used when ready
    loot_bias: float = 1.5  # a box is preferred to an NPC when closer than loot_bias * the NPC's distance
    boss_keep_dist: float = 480.0  # world px, CAUTIOUS keeps at least this far from a boss
    move_reclick_s: float = 1.2  # s, a movement order is renewed this often while still needed
    waypoint_reached: float = 200.0  # world px, an exploration waypoint counts as reached this close

    def __post_init__(self) -> None:
        check_float(self, "skill", 0.0, 1.0)
        check_float(self, "kite_boss_skill", 0.0, 2.0)  # > 1 = never kite
        for name in ("width", "height"):
            check_int(self, name, 32, 16384)
        for name in _POSITIVE:
            check_float(self, name, 0.0, low_open=True)
        for name in _NON_NEGATIVE:
            check_float(self, name, 0.0)
        for name in _FRACTIONS:
            check_float(self, name, 0.0, 1.0)
        if not self.recover_hp > self.flee_hp:
            raise fail(self, "recover_hp", f"> flee_hp ({self.flee_hp})", self.recover_hp)
        check_int(self, "cautious_raiders", 1)

    @classmethod
    def matching(cls, view: Any, **overrides: Any) -> ExpertConfig:
        """A config for the game whose config is `view` (e.g. an ArenaConfig): copies its frame size, zoom
        and map size, the things a player sees on the screen and the minimap."""
        names = ("width", "height", "zoom", "world_width", "world_height", "safe_zone_radius")
        shared = {name: getattr(view, name) for name in names if hasattr(view, name)}
        return cls(**{**shared, **overrides})

    @property
    def clumsiness(self) -> float:
        """f = 1.5 - skill: the factor on delays and noise (1.0 at skill 0.5)."""
        return 1.5 - self.skill


# ExpertConfig fields by the range they must lie in
_POSITIVE = (
    "zoom", "world_width", "world_height", "laser_range", "safe_zone_radius", "reaction_delay_s",
    "cursor_speed_bits_s", "click_gap_s", "key_gap_s", "move_reclick_s", "waypoint_reached", "boss_keep_dist",
    "loot_bias", "kite_dist", "ship_speed",
)  # fmt: skip
_NON_NEGATIVE = ("jitter_px", "curve_frac", "mode_dwell_s", "flee_dwell_s", "target_dwell_s", "target_margin")
_FRACTIONS = ("flee_hp", "flee_hp_per_raider", "recover_hp", "cautious_hp", "repair_hp", "boss_flee_hp")
