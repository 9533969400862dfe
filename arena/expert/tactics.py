"""The expert's tactics: one function per mode that turns the Scene, the chosen target and a short memory
into a Plan (where the hand should aim, whether to click, which keys to tap)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from arena import spec
from arena.expert.config import ExpertConfig
from arena.expert.decisions import CAUTIOUS, EXPLORE, FIGHT, FLEE, LOOT
from arena.expert.hand import Intent
from arena.expert.view import Obj, Scene, on_object

# HUD areas a movement click stays off: a click on the minimap would fly to that map point instead
_HUD_RECTS = (spec.HUD_HP_BAR, spec.HUD_SHIELD_BAR, spec.HUD_CREDITS, spec.HUD_MINIMAP)


@dataclass
class Memory:
    """What the expert remembers between frames (a person's short-term memory of their own actions)."""

    move_click_t: float = -math.inf  # time of the last movement click
    move_dest: np.ndarray | None = None  # world px the last movement click sent the ship to
    attack_for: int | None = None  # NPC id the attack toggle was last pressed for
    attack_t: float = -math.inf
    waypoint: np.ndarray | None = None  # world px, exploration goal
    waypoint_t: float = -math.inf
    loot_click: dict[int, float] = field(default_factory=dict)  # box id -> time of the last click on it
    home: np.ndarray | None = None  # world px of the portal (the safe zone), remembered once seen
    bosses_seen: dict[int, tuple[float, np.ndarray]] = field(default_factory=dict)  # id -> (time, world px)
    kite_sign: float = 1.0  # which way round a kited boss is circled


@dataclass
class Plan:
    intent: Intent | None
    keys: list[str] = field(default_factory=list)


@dataclass
class Context:
    """Everything a tactic needs: config, randomness, memory and the frame's perception."""

    cfg: ExpertConfig
    rng: np.random.Generator
    mem: Memory
    scene: Scene

    @property
    def view_reach(self) -> float:
        """World px from the ship to a comfortable click point near the edge of the view."""
        return 0.4 * min(self.cfg.width, self.cfg.height) / self.cfg.zoom


def move_intent(
    ctx: Context, tag: str, direction: np.ndarray, reach: float, reclick_s: float = 0.0
) -> Intent:
    """Aim at empty space `reach` world px from the ship along `direction` (world), clicking when the order
    needs renewing: none given lately, a different destination, or the ship has stopped."""
    scene, cfg, mem = ctx.scene, ctx.cfg, ctx.mem
    reach = min(max(reach, 30.0), ctx.view_reach)
    point = free_point(scene.player_screen + _unit(direction) * reach * cfg.zoom, scene, cfg)
    dest = scene.to_world(point)
    stale = scene.time - mem.move_click_t > (reclick_s or cfg.move_reclick_s)
    changed = mem.move_dest is None or float(np.linalg.norm(dest - mem.move_dest)) > max(40.0, 0.5 * reach)
    stopped = float(np.linalg.norm(scene.vel)) < 5.0 and float(np.linalg.norm(dest - scene.pos)) > 20.0
    return Intent(("move", tag), point, radius=14.0, click=stale or changed or stopped)


def free_point(point: np.ndarray, scene: Scene, cfg: ExpertConfig) -> np.ndarray:
    """`point` pulled towards the ship until it is on screen, off the HUD and off every object box."""
    origin = scene.player_screen
    margin = 0.04 * min(cfg.width, cfg.height)
    for frac in np.linspace(1.0, 0.3, 8):
        p = np.clip(origin + (point - origin) * frac, margin, [cfg.width - margin, cfg.height - margin])
        if not _on_hud(p, cfg) and not on_object(p, scene):
            return p
    return np.clip(point, margin, [cfg.width - margin, cfg.height - margin])


def _on_hud(p: np.ndarray, cfg: ExpertConfig, pad: float = 12.0) -> bool:
    for x1, y1, x2, y2 in _HUD_RECTS:
        if (
            x1 * cfg.width - pad <= p[0] <= x2 * cfg.width + pad
            and y1 * cfg.height - pad <= p[1] <= y2 * cfg.height + pad
        ):
            return True
    return False


def _clip_norm(v: np.ndarray, limit: float) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v * (limit / n) if n > limit else v


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-6 else np.array([1.0, 0.0])


def _away(scene: Scene, threats: list[Obj]) -> np.ndarray:
    """World direction away from `threats`, the closer ones weighing more."""
    return sum((_unit(scene.pos - t.world) / max(t.dist, 50.0) for t in threats), np.zeros(2))


def ability_keys(ctx: Context, threatened: bool) -> list[str]:
    """Repair when hurt, boost when running from someone, if the cooldowns show them ready."""
    scene, cfg = ctx.scene, ctx.cfg
    keys = []
    if scene.hp_frac < cfg.repair_hp and scene.cooldowns.get("repair", 0.0) <= 0.0:
        keys.append("repair")
    if threatened and scene.cooldowns.get("boost", 0.0) <= 0.0:
        keys.append("boost")
    return keys


def engage(ctx: Context, target: Obj, avoid: list[Obj]) -> Plan:
    """Select `target`, switch the attack on, keep it in laser range approaching from away from `avoid`."""
    scene, cfg = ctx.scene, ctx.cfg
    # aim a little ahead of a moving target, but never off its box
    lead = target.center + _clip_norm(target.vel * 0.15 * cfg.zoom, 0.5 * target.radius)
    if scene.selected != target.id:
        inner = target.box + np.array([1.0, 1.0, -1.0, -1.0])
        return Plan(Intent(("select", target.id), lead, max(3.0, 0.8 * target.radius), click=True, box=inner))
    keys = ["attack"] if _attack_needed(ctx, target) else []
    if target.dist > 0.8 * cfg.laser_range:
        standoff = target.world - _unit(target.world - scene.pos) * 0.55 * cfg.laser_range
        if avoid:
            standoff = standoff + _unit(_away(scene, avoid)) * 0.3 * cfg.laser_range
        to = standoff - scene.pos
        return Plan(move_intent(ctx, f"approach{target.id}", to, float(np.linalg.norm(to))), keys)
    return Plan(Intent(("hover", target.id), lead, radius=max(6.0, target.radius)), keys)


def _attack_needed(ctx: Context, target: Obj) -> bool:
    scene, mem = ctx.scene, ctx.mem
    if scene.attack_on is not None:  # the HUD shows the toggle
        needed = not scene.attack_on
    elif scene.attacking:
        needed = False
    else:  # no toggle shown: believe our own last press, re-press after a while in range without any attack
        in_range = target.dist <= 0.9 * ctx.cfg.laser_range
        needed = mem.attack_for != target.id or (in_range and scene.time - mem.attack_t > 2.0)
    return needed


def tactic_fight(ctx: Context, target: Obj | None) -> Plan:
    if target is None:
        return tactic_explore(ctx, None)
    plan = engage(ctx, target, avoid=[])
    plan.keys += ability_keys(ctx, threatened=False)
    return plan


def retreat_direction(ctx: Context, threats: list[Obj]) -> np.ndarray:
    """World direction to run: home to the safe zone (NPCs cannot follow), away from threats close by,
    and never into the map's edge, where a chased ship gets cornered."""
    scene, mem = ctx.scene, ctx.mem
    direction = _away(scene, [t for t in threats if t.dist < ctx.cfg.laser_range]) * 150.0
    if mem.home is not None:
        direction = direction + _unit(mem.home - scene.pos)
    return direction + _wall_push(scene.pos, ctx.cfg)


def _wall_push(pos: np.ndarray, cfg: ExpertConfig, band: float = 350.0) -> np.ndarray:
    """A push away from the map's edges, growing from 0 at `band` world px to 2 at the edge."""
    size = np.array([cfg.world_width, cfg.world_height])
    low = np.clip((band - pos) / band, 0.0, 1.0)
    high = np.clip((band - (size - pos)) / band, 0.0, 1.0)
    return 2.0 * (low - high)


def _safe_zone_push(ctx: Context, band: float = 200.0) -> np.ndarray:
    """A push out of (and away from the rim of) the safe zone, where lasers are off: 0 at `band` world px
    outside the rim, 2 on it."""
    scene, mem = ctx.scene, ctx.mem
    if mem.home is None:
        return np.zeros(2)
    gap = float(np.linalg.norm(scene.pos - mem.home)) - ctx.cfg.safe_zone_radius
    return 2.0 * float(np.clip((band - gap) / band, 0.0, 1.0)) * _unit(scene.pos - mem.home)


def _danger_dist(t: Obj, cfg: ExpertConfig) -> float:
    """How close a threat may come: a boss to `boss_keep_dist`, a raider to 0.9 of our laser range (its own
    lasers are shorter, so backing off there keeps ours on it while it struggles to reach us)."""
    return cfg.boss_keep_dist if t.cls == "npc_boss" else 0.9 * cfg.laser_range


def tactic_cautious(ctx: Context, target: Obj | None) -> Plan:
    """Keep out of reach of bosses and raider packs (backing off towards the safe zone while the lasers keep
    firing), pick off weak targets, and wait for the shield when there is nothing safe to shoot."""
    scene, cfg = ctx.scene, ctx.cfg
    if target is not None and target.cls == "npc_boss":
        plan = kite(ctx, target)
        plan.keys += ability_keys(ctx, threatened=False)
        return plan
    threats = scene.bosses + [o for o in scene.aggressors if o.cls == "npc_raider"]
    keys = ability_keys(ctx, threatened=False)
    close = [t for t in threats if t.dist < _danger_dist(t, cfg)]
    fighting = target is not None and (target.aggro or scene.shield_frac > 0.3)
    if fighting and scene.selected != target.id:
        plan = engage(ctx, target, avoid=threats)
    elif close:
        plan = Plan(move_intent(ctx, "back_off", retreat_direction(ctx, close), ctx.view_reach))
        if fighting and _attack_needed(ctx, target):
            plan.keys.append("attack")
    elif fighting:
        plan = engage(ctx, target, avoid=threats)
    elif threats and scene.shield_frac > 0.3:
        plan = evade(ctx, threats)
    else:  # shield down and nothing safe to shoot: hold still, watch the threat, let the shield refill
        watch = threats[0].center if threats else scene.player_screen + np.array([80.0, 0.0]) * cfg.zoom
        plan = Plan(Intent(("watch",), free_point(watch, scene, cfg), radius=20.0))
    plan.keys += keys
    return plan


def kite(ctx: Context, boss: Obj) -> Plan:
    """Fight a boss from beyond its laser range: select it, shoot, and circle away as fast as it closes in.

    The boss is slower than the ship and its lasers are shorter, so holding `kite_dist` (between the two
    ranges) lets the ship hit without being hit; the radial part of the flight matches the boss's closing
    speed plus a correction towards `kite_dist`, the rest goes round, so the fight stays in one region.
    """
    scene, cfg, mem = ctx.scene, ctx.cfg, ctx.mem
    if scene.selected != boss.id and not boss.ghost:
        return engage(ctx, boss, avoid=[])
    keys = ["attack"] if boss.dist <= cfg.laser_range and _attack_needed(ctx, boss) else []
    away = _unit(scene.pos - boss.world)
    if not boss.aggro and boss.dist > 0.97 * cfg.laser_range:  # not fighting yet: close in to kite distance
        return Plan(move_intent(ctx, "kite_in", -away, boss.dist - cfg.kite_dist + 20.0), keys)
    closing = float(np.dot(boss.vel, away))
    c = float(np.clip((closing + 1.5 * (cfg.kite_dist - boss.dist)) / cfg.ship_speed, -1.0, 1.0))
    wall = _wall_push(scene.pos, cfg)
    tangent = np.array([-away[1], away[0]]) * mem.kite_sign
    if float(np.dot(tangent, wall)) < -0.3:  # circling into the map's edge: turn the other way round
        mem.kite_sign, tangent = -mem.kite_sign, -tangent
    direction = away * c + tangent * math.sqrt(1.0 - c * c) + wall + _safe_zone_push(ctx)
    return Plan(move_intent(ctx, "kite", direction, 0.6 * ctx.view_reach, reclick_s=0.5), keys)


def evade(ctx: Context, threats: list[Obj]) -> Plan:
    """Nothing safe to do here: leave for a waypoint whose route avoids threats (and bosses seen lately)."""
    scene, mem = ctx.scene, ctx.mem
    heading_in = mem.waypoint is not None and any(
        _segment_dist(t.world, scene.pos, mem.waypoint) < ctx.cfg.boss_keep_dist for t in threats
    )
    if mem.waypoint is None or heading_in or _waypoint_done(scene, mem, ctx.cfg):
        mem.waypoint, mem.waypoint_t = (
            pick_waypoint(scene.pos, ctx.cfg, ctx.rng, _dangers(mem, scene)),
            scene.time,
        )
    direction = _unit(mem.waypoint - scene.pos) + 150.0 * _away(scene, threats)
    return Plan(move_intent(ctx, "evade", direction, ctx.view_reach))


def _dangers(mem: Memory, scene: Scene) -> list[np.ndarray]:
    """World positions of the bosses seen in the last 90 s: they wander near where they were seen."""
    return [pos for t, pos in mem.bosses_seen.values() if scene.time - t < 90.0]


def _segment_dist(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Distance from point p to the segment a-b."""
    ab = b - a
    s = float(np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-9), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + s * ab)))


def tactic_flee(ctx: Context, target: Obj | None) -> Plan:
    """Head for the safe zone (the portal, seen or remembered), veering away from aggressors; rest there."""
    scene, cfg, mem = ctx.scene, ctx.cfg, ctx.mem
    home = target.world if target is not None else mem.home
    far = home is not None and float(np.linalg.norm(home - scene.pos)) > 2 * ctx.view_reach
    keys = ability_keys(ctx, threatened=bool(scene.aggressors) or far)
    if home is not None and scene.in_safe_zone and float(np.linalg.norm(home - scene.pos)) < 150.0:
        rest = free_point(scene.player_screen + np.array([60.0, 40.0]) * cfg.zoom, scene, cfg)
        return Plan(Intent(("rest",), rest, radius=20.0), keys)
    reach = ctx.view_reach if home is None else float(np.linalg.norm(home - scene.pos))
    return Plan(move_intent(ctx, "flee", retreat_direction(ctx, scene.aggressors), reach), keys)


def tactic_loot(ctx: Context, target: Obj | None) -> Plan:
    """Click each box (the ship flies over it and collects it); click again if the ship did not go."""
    scene, mem = ctx.scene, ctx.mem
    if target is None:
        return tactic_explore(ctx, None)
    since = scene.time - mem.loot_click.get(target.id, -math.inf)
    click = since > ctx.cfg.move_reclick_s * 1.5 or (since > 0.5 and float(np.linalg.norm(scene.vel)) < 5.0)
    plan = Plan(Intent(("loot", target.id), target.center, radius=max(3.0, 0.7 * target.radius), click=click))
    plan.keys += ability_keys(ctx, threatened=False)
    return plan


def tactic_explore(ctx: Context, target: Obj | None) -> Plan:
    """Fly to far waypoints inside the world (position from the minimap), a new one when reached or stale."""
    scene, cfg, mem = ctx.scene, ctx.cfg, ctx.mem
    if mem.waypoint is None or _waypoint_done(scene, mem, cfg):
        mem.waypoint, mem.waypoint_t = (
            pick_waypoint(scene.pos, cfg, ctx.rng, _dangers(mem, scene)),
            scene.time,
        )
    to_wp = mem.waypoint - scene.pos
    return Plan(move_intent(ctx, "explore", to_wp, float(np.linalg.norm(to_wp))), ability_keys(ctx, False))


def _waypoint_done(scene: Scene, mem: Memory, cfg: ExpertConfig) -> bool:
    reached = float(np.linalg.norm(mem.waypoint - scene.pos)) < cfg.waypoint_reached
    return reached or scene.time - mem.waypoint_t > 40.0


def pick_waypoint(
    pos: np.ndarray, cfg: ExpertConfig, rng: np.random.Generator, avoid: list[np.ndarray] = ()
) -> np.ndarray:
    """A random point inside the world, away from its edges, preferably far from `pos` along a route that
    passes no point of `avoid` closely."""
    size = np.array([cfg.world_width, cfg.world_height])
    margin = 0.1 * size

    def score(p: np.ndarray) -> float:  # long legs cover the map; a route past a boss costs a detour
        blocked = any(_segment_dist(a, pos, p) < 2 * cfg.boss_keep_dist for a in avoid)
        return float(np.linalg.norm(p - pos)) - 5000.0 * blocked

    return max((margin + rng.random(2) * (size - 2 * margin) for _ in range(6)), key=score)


TACTICS: dict[str, Callable[[Context, Obj | None], Plan]] = {
    FIGHT: tactic_fight,
    LOOT: tactic_loot,
    FLEE: tactic_flee,
    EXPLORE: tactic_explore,
    CAUTIOUS: tactic_cautious,
}
