"""How the Arena's NPCs act each frame: aggro and leash, chase and orbit the player, wander near home, shoot,
heal out of combat, and never enter the safe zone. NpcBehaviour is the part of World that steps one NPC."""

from __future__ import annotations

import math

import numpy as np

from arena.rules import NPC_ACCEL, NPC_REGEN, NPC_REGEN_DELAY, PLAYER, WANDER_RADIUS, WorldConfig
from arena.state import Npc, Player, Portal, countdown, distance, steer


class NpcBehaviour:
    """World's NPC rules (World inherits them). They read and change the World's player, portal, rng and
    NPCs, and call its in_safe_zone, _add_shot and _damage_player."""

    player: Player
    portal: Portal
    config: WorldConfig
    rng: np.random.Generator
    dt: float

    def _update_npc(self, npc: Npc) -> None:
        p, st, dt = self.player, npc.stats, self.dt
        d = distance(npc.x, npc.y, p.x, p.y)
        reachable = not self.in_safe_zone(p.x, p.y)
        if npc.aggro and (not reachable or d > st.leash):
            npc.aggro = False
        elif not npc.aggro and reachable and st.aggro_radius > 0.0 and d <= st.aggro_radius:
            npc.aggro = True
        want_x, want_y = self._npc_fight_velocity(npc, d) if npc.aggro else self._npc_wander_velocity(npc)
        npc.vx, npc.vy = steer(npc.vx, npc.vy, want_x, want_y, NPC_ACCEL * st.speed * dt)
        npc.x, npc.y = self._keep_out(npc.x + npc.vx * dt, npc.y + npc.vy * dt, st.radius)
        if npc.aggro:
            npc.heading = math.atan2(p.y - npc.y, p.x - npc.x)
        elif math.hypot(npc.vx, npc.vy) > 5.0:
            npc.heading = math.atan2(npc.vy, npc.vx)
        npc.fire_cd = countdown(npc.fire_cd, dt)
        npc.since_damage += dt
        if (
            npc.aggro
            and reachable
            and npc.fire_cd <= 0.0
            and distance(npc.x, npc.y, p.x, p.y) <= st.laser_range
        ):
            npc.fire_cd = st.fire_interval
            self._add_shot(npc.x, npc.y, p.x, p.y, False, PLAYER.radius)
            self._damage_player(st.damage)
        if not npc.aggro and npc.since_damage > NPC_REGEN_DELAY:
            npc.hp = min(st.hp, npc.hp + NPC_REGEN * st.hp * dt)

    def _npc_fight_velocity(self, npc: Npc, d: float) -> tuple[float, float]:
        """Close in to keep_distance, back off when too close, circle the player in between."""
        p, st = self.player, npc.stats
        if d < 1e-6:
            return 0.0, 0.0
        ux, uy = (p.x - npc.x) / d, (p.y - npc.y) / d
        if d > st.keep_distance + 40.0:
            return ux * st.speed, uy * st.speed
        if d < st.keep_distance - 40.0:
            return -ux * st.speed * 0.6, -uy * st.speed * 0.6
        return -uy * npc.orbit * st.speed * 0.5, ux * npc.orbit * st.speed * 0.5

    def _npc_wander_velocity(self, npc: Npc) -> tuple[float, float]:
        """Idle: drift at half speed between random points near home, pausing in between."""
        if npc.pause > 0.0:
            npc.pause = countdown(npc.pause, self.dt)
            return 0.0, 0.0
        if npc.wander is None:
            hx, hy = npc.home
            wx = hx + float(self.rng.uniform(-WANDER_RADIUS, WANDER_RADIUS))
            wy = hy + float(self.rng.uniform(-WANDER_RADIUS, WANDER_RADIUS))
            npc.wander = self._keep_out(wx, wy, npc.stats.radius + 20.0)
        dx, dy = npc.wander[0] - npc.x, npc.wander[1] - npc.y
        d = math.hypot(dx, dy)
        if d < 10.0:
            npc.wander, npc.pause = None, float(self.rng.uniform(0.5, 3.0))
            return 0.0, 0.0
        speed = 0.45 * npc.stats.speed
        return dx / d * speed, dy / d * speed

    def _keep_out(self, x: float, y: float, radius: float) -> tuple[float, float]:
        """Clamp to the map and push out of the safe zone: NPCs never enter it."""
        cfg, portal = self.config, self.portal
        x = min(max(x, radius), cfg.world_width - radius)
        y = min(max(y, radius), cfg.world_height - radius)
        dx, dy = x - portal.x, y - portal.y
        d = math.hypot(dx, dy)
        limit = portal.safe_radius + radius
        if d < limit:
            if d < 1e-6:
                dx, dy, d = 1.0, 0.0, 1.0
            x, y = portal.x + dx / d * limit, portal.y + dy / d * limit
        return x, y
