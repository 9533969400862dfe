"""The expert's decisions: which mode a Scene calls for and which target to act on, each held with
hysteresis (minimum dwell times, a margin to switch targets) so choices do not flicker."""

from __future__ import annotations

import logging
import math

import numpy as np

from arena import spec
from arena.expert.config import ExpertConfig
from arena.expert.view import Obj, Scene

log = logging.getLogger(__name__)

FIGHT, LOOT, FLEE, EXPLORE, CAUTIOUS = spec.MODES


def desired_mode(scene: Scene, low_hp_latched: bool, cfg: ExpertConfig) -> str:
    """The mode this frame calls for, before the minimum-dwell hysteresis of ModeSelector."""
    hunting = [b for b in scene.bosses if b.aggro and not kiting(scene, cfg, b)]
    if low_hp_latched or (cfg.flee_boss_aggro and hunting):
        return FLEE
    raiders = [o for o in scene.aggressors if o.cls == "npc_raider"]
    if scene.bosses or (len(raiders) >= cfg.cautious_raiders and scene.hp_frac < cfg.cautious_hp):
        return CAUTIOUS
    if scene.aggressors:
        return FIGHT
    box = min(scene.boxes, key=lambda o: o.dist, default=None)
    npc = min(scene.npcs, key=lambda o: o.dist, default=None)
    if box is not None and (npc is None or box.dist < cfg.loot_bias * npc.dist):
        return LOOT
    return FIGHT if npc is not None else EXPLORE


class ModeSelector:
    """Mode with hysteresis: a low-hp flight lasts until hp recovers; every mode is kept a minimum time."""

    def __init__(self, cfg: ExpertConfig):
        self.cfg = cfg
        self.mode = EXPLORE
        self.since = -math.inf  # the first frame picks its mode freely
        self.low_hp = False

    def update(self, scene: Scene) -> str:
        cfg = self.cfg
        raiders = sum(o.cls == "npc_raider" for o in scene.aggressors)
        # the more raiders shoot at us the earlier we must leave: fleeing takes seconds under their fire
        flee_at = min(cfg.flee_hp + cfg.flee_hp_per_raider * raiders, 0.5 * (cfg.flee_hp + cfg.recover_hp))
        if any(b.aggro for b in scene.bosses):
            flee_at = max(flee_at, cfg.boss_flee_hp)
        if scene.hp_frac < flee_at:
            self.low_hp = True
        elif scene.hp_frac >= cfg.recover_hp:
            self.low_hp = False
        want = desired_mode(scene, self.low_hp, cfg)
        dwell = cfg.flee_dwell_s if self.mode == FLEE else cfg.mode_dwell_s
        if want != self.mode and (want == FLEE or scene.time - self.since >= dwell):
            log.debug("t=%.2f mode %s -> %s (hp %.2f)", scene.time, self.mode, want, scene.hp_frac)
            self.mode, self.since = want, scene.time
        return self.mode


_NPC_COST = {"npc_scout": 0.0, "npc_raider": 0.25, "npc_boss": 3.0}  # raiders last longer, bosses need kiting


def target_costs(mode: str, scene: Scene, cfg: ExpertConfig) -> dict[int, float]:
    """Cost of each candidate target for `mode` (lower is better): distance in laser ranges, plus
    preferences (wounded, attacking us, already selected, easy kind); no candidates -> {}."""
    reach = cfg.laser_range
    if mode == FIGHT:
        return {o.id: o.dist / reach + _fight_cost(o, scene) for o in scene.npcs}
    if mode == CAUTIOUS:
        weak = [o for o in scene.npcs if o.cls != "npc_boss" and _clear_of_bosses(o, scene, cfg)]
        costs = {o.id: o.dist / reach + 0.8 * o.hp_frac - 0.5 * o.aggro + 2 * _NPC_COST[o.cls] for o in weak}
        bosses = [b for b in scene.bosses if may_kite(scene, cfg, b)]
        return costs | {b.id: b.dist / reach + 0.8 * b.hp_frac - 1.0 for b in bosses}
    if mode == LOOT:  # a box next to an NPC that is after us costs a fight on the way
        return {b.id: b.dist / reach + sum(_near(n, b, reach) for n in scene.aggressors) for b in scene.boxes}
    if mode == FLEE:
        return {p.id: p.dist / reach for p in scene.portals}
    return {}


def _fight_cost(o: Obj, scene: Scene) -> float:
    return 0.8 * o.hp_frac - 1.0 * o.aggro - 0.3 * (o.id == scene.selected) + _NPC_COST[o.cls]


def may_kite(scene: Scene, cfg: ExpertConfig, boss: Obj) -> bool:
    """Take on (or keep fighting) this boss: skilled enough, alone with it, and healthy enough."""
    alone = len(scene.bosses) == 1 and not any(o.aggro for o in scene.npcs if o.cls != "npc_boss")
    if cfg.skill < cfg.kite_boss_skill or not alone:
        return False
    if scene.selected == boss.id:
        return scene.hp_frac >= cfg.boss_flee_hp
    return scene.hp_frac >= 0.9 and scene.shield_frac >= 0.9


def kiting(scene: Scene, cfg: ExpertConfig, boss: Obj) -> bool:
    """This boss is the expert's selected target and the fight may go on."""
    return scene.selected == boss.id and may_kite(scene, cfg, boss)


def _near(a: Obj, b: Obj, dist: float) -> bool:
    return float(np.linalg.norm(a.world - b.world)) < dist


def _clear_of_bosses(o: Obj, scene: Scene, cfg: ExpertConfig) -> bool:
    return not any(_near(o, b, cfg.boss_keep_dist) for b in scene.bosses)


class TargetSelector:
    """Keeps a target while it stays visible, for a minimum time, unless another is clearly better."""

    def __init__(self, cfg: ExpertConfig, rng: np.random.Generator):
        self.cfg, self.rng = cfg, rng
        self.target: int | None = None
        self.since = 0.0
        self.bias: dict[int, float] = {}  # per-object preference noise, drawn once so choices do not flicker

    def update(self, mode: str, scene: Scene) -> Obj | None:
        costs = target_costs(mode, scene, self.cfg)
        for obj_id in costs:
            if obj_id not in self.bias:
                self.bias[obj_id] = float(self.rng.normal(0.0, 0.4 * (1.0 - self.cfg.skill) + 0.05))
            costs[obj_id] += self.bias[obj_id]
        if not costs:
            self.target = None
            return None
        best = min(costs, key=costs.__getitem__)
        current = self.target if self.target in costs else None
        keep = current is not None and (
            scene.time - self.since < self.cfg.target_dwell_s
            or costs[best] > costs[current] - self.cfg.target_margin
        )
        if not keep:
            self.target, self.since = best, scene.time
        return scene.find(self.target)
