"""World: the Arena's simulation, a DarkOrbit-like 2D space world stepped at a fixed dt, with no pygame and
no clock.

    World.reset(seed)    the player at the portal, NPCs and bonus boxes spread over the map
    World.step(action)   one frame: input -> abilities -> movement -> player laser -> kills -> NPC AI
                         -> pickups -> player death -> regeneration -> respawns; returns the credits gained
                         (negative after a death) and leaves the step's events in World.events
    World.info()         the ground-truth `info` dict documented in arena/spec.py

Same seed and same actions give the same world frame for frame. Notes: docs/notes/arena.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from arena.npcs import NpcBehaviour
from arena.rules import (
    BOX_RADIUS,
    EXPLOSION_SECONDS,
    HIT_SECONDS,
    NPC_STATS,
    PLAYER,
    PORTAL_RADIUS,
    SELECTION_DROP,
    SHOT_SECONDS,
    SPAWN_MARGIN,
    WorldConfig,
)
from arena.spec import HUD_MINIMAP, KEYS
from arena.state import Action, Blast, Box, Npc, Player, Portal, Score, Shot, countdown, distance, steer


class World(NpcBehaviour):
    """The whole game state and its rules; see the module docstring for the order of one step."""

    def __init__(self, config: WorldConfig | None = None, seed: int | None = 0) -> None:
        self.config = config or WorldConfig()
        self.dt = 1.0 / self.config.fps
        self.reset(seed)

    # ------------------------------------------------------------------------------- reset / spawning

    def reset(self, seed: int | np.random.Generator | None = None) -> None:
        """Start a new episode; an int (or a Generator) makes it reproducible, None draws fresh entropy."""
        cfg = self.config
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.frame = 0
        self.score = Score()
        self.events: list[str] = []
        self.cursor = (cfg.width / 2.0, cfg.height / 2.0)
        self.shots: list[Shot] = []
        self.blasts: list[Blast] = []
        self._next_id = 0
        self.portal = Portal(
            self._new_id(), cfg.world_width / 2.0, cfg.world_height / 2.0, cfg.safe_zone_radius
        )
        self.player = Player(self._new_id(), self.portal.x, self.portal.y, PLAYER.hp, PLAYER.shield)
        self.npcs: list[Npc] = []
        self.boxes: list[Box] = []
        self._respawns: list[list[Any]] = []  # [seconds left, npc cls]
        for cls, count in cfg.npc_counts.items():
            for _ in range(count):
                self.spawn_npc(cls)
        for _ in range(cfg.n_boxes):
            self.spawn_box()

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def spawn_npc(self, cls: str, x: float | None = None, y: float | None = None) -> Npc:
        """Add an NPC of kind `cls` at (x, y), or at a random free spot out of the player's sight."""
        if cls not in NPC_STATS:
            raise ValueError(f"spawn_npc.cls: expected one of {tuple(NPC_STATS)}, got {cls!r}")
        if x is None or y is None:
            x, y = self._spawn_point()
        stats = NPC_STATS[cls]
        orbit = 1.0 if self.rng.random() < 0.5 else -1.0
        npc = Npc(self._new_id(), stats, float(x), float(y), stats.hp, (float(x), float(y)), orbit)
        self.npcs.append(npc)
        return npc

    def spawn_box(self, x: float | None = None, y: float | None = None) -> Box:
        """Add a bonus box at (x, y), or at a random free spot out of the player's sight."""
        if x is None or y is None:
            x, y = self._spawn_point()
        box = Box(self._new_id(), float(x), float(y))
        self.boxes.append(box)
        return box

    def _spawn_point(self) -> tuple[float, float]:
        """A random point away from the map edge and the safe zone, preferably out of the player's view."""
        cfg, p = self.config, self.player
        min_player = math.hypot(cfg.width, cfg.height) / (2.0 * cfg.zoom) + 150.0
        min_portal = self.portal.safe_radius + SPAWN_MARGIN
        x = y = 0.0
        for attempt in range(200):
            x = float(self.rng.uniform(100.0, cfg.world_width - 100.0))
            y = float(self.rng.uniform(100.0, cfg.world_height - 100.0))
            if distance(x, y, self.portal.x, self.portal.y) < min_portal:
                continue
            # Late attempts accept points in view: a tiny map may have no spot out of sight.
            if attempt > 150 or distance(x, y, p.x, p.y) >= min_player:
                break
        return x, y

    # --------------------------------------------------------------------------------------- geometry

    @property
    def time(self) -> float:
        """Seconds of game time since reset."""
        return self.frame * self.dt

    def camera_origin(self) -> tuple[float, float]:
        """World point at the frame's top-left corner: the camera keeps the player at the frame centre."""
        cfg = self.config
        return self.player.x - cfg.width / (2.0 * cfg.zoom), self.player.y - cfg.height / (2.0 * cfg.zoom)

    def world_to_screen(self, x: float, y: float) -> tuple[float, float]:
        cx, cy = self.camera_origin()
        return (x - cx) * self.config.zoom, (y - cy) * self.config.zoom

    def screen_to_world(self, sx: float, sy: float) -> tuple[float, float]:
        cx, cy = self.camera_origin()
        return cx + sx / self.config.zoom, cy + sy / self.config.zoom

    def minimap_rect(self) -> tuple[float, float, float, float]:
        """spec.HUD_MINIMAP in screen px; the whole map is stretched over it, axis by axis."""
        cfg = self.config
        x1, y1, x2, y2 = HUD_MINIMAP
        return x1 * cfg.width, y1 * cfg.height, x2 * cfg.width, y2 * cfg.height

    def world_to_minimap(self, x: float, y: float) -> tuple[float, float]:
        x1, y1, x2, y2 = self.minimap_rect()
        return x1 + x / self.config.world_width * (x2 - x1), y1 + y / self.config.world_height * (y2 - y1)

    def minimap_to_world(self, sx: float, sy: float) -> tuple[float, float]:
        x1, y1, x2, y2 = self.minimap_rect()
        return (sx - x1) / (x2 - x1) * self.config.world_width, (sy - y1) / (
            y2 - y1
        ) * self.config.world_height

    def screen_box(self, x: float, y: float, radius: float, clip: bool = True) -> list[float] | None:
        """Screen box [x1, y1, x2, y2] of the square of half-side `radius` (world px) at (x, y), or None."""
        sx, sy = self.world_to_screen(x, y)
        r = radius * self.config.zoom
        x1, y1, x2, y2 = sx - r, sy - r, sx + r, sy + r
        w, h = self.config.width, self.config.height
        if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
            return None
        if clip:
            x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h))
        return [x1, y1, x2, y2]

    def in_safe_zone(self, x: float, y: float) -> bool:
        return distance(x, y, self.portal.x, self.portal.y) <= self.portal.safe_radius

    def npc_by_id(self, npc_id: int | None) -> Npc | None:
        for npc in self.npcs:
            if npc.id == npc_id:
                return npc
        return None

    # ------------------------------------------------------------------------------------------- step

    def step(self, action: Action | Mapping[str, Any]) -> int:
        """Advance one frame; returns the credits gained (negative when a death cost more than was earned).

        The step's events (spec.py) are left in `self.events`.
        """
        self.events = []
        credits_before = self.score.credits
        self._apply_input(Action.from_gym(action))
        self._tick_abilities()
        self._move_player()
        self._fire_player()
        self._resolve_npc_deaths()
        for npc in self.npcs:
            self._update_npc(npc)
        self._collect_boxes()
        self._resolve_player_death()
        self._regenerate()
        self._respawn_npcs()
        self._age_effects()
        self.frame += 1
        return self.score.credits - credits_before

    # ------------------------------------------------------------------------------------------ input

    def _apply_input(self, action: Action) -> None:
        cfg = self.config
        mx = min(max(action.mouse[0], 0.0), 1.0)
        my = min(max(action.mouse[1], 0.0), 1.0)
        self.cursor = (mx * cfg.width, my * cfg.height)
        if action.click:
            self._click(*self.cursor)
        if action.key:
            self._press(KEYS[action.key])

    def _click(self, sx: float, sy: float) -> None:
        """DarkOrbit clicks: on the minimap = fly there; on an NPC = select it; elsewhere = fly there."""
        p, cfg = self.player, self.config
        x1, y1, x2, y2 = self.minimap_rect()
        if x1 <= sx <= x2 and y1 <= sy <= y2:
            wx, wy = self.minimap_to_world(sx, sy)
        else:
            npc = self._npc_at(sx, sy)
            if npc is not None:
                if npc.id != p.selected:
                    p.selected, p.attack_on = npc.id, False
                    self.events.append("select")
                return
            wx, wy = self.screen_to_world(sx, sy)
        r = PLAYER.radius
        p.dest = (min(max(wx, r), cfg.world_width - r), min(max(wy, r), cfg.world_height - r))

    def _npc_at(self, sx: float, sy: float) -> Npc | None:
        """The NPC whose on-screen box holds the point; the nearest centre wins where boxes overlap."""
        best, best_d = None, math.inf
        for npc in self.npcs:
            box = self.screen_box(npc.x, npc.y, npc.stats.radius, clip=False)
            if box is None or not (box[0] <= sx <= box[2] and box[1] <= sy <= box[3]):
                continue
            d = math.hypot((box[0] + box[2]) / 2 - sx, (box[1] + box[3]) / 2 - sy)
            if d < best_d:
                best, best_d = npc, d
        return best

    def _press(self, key: str) -> None:
        p = self.player
        if key == "attack" and p.selected is not None:
            p.attack_on = not p.attack_on
            self.events.append("attack_on" if p.attack_on else "attack_off")
        elif key == "repair" and p.repair_cd <= 0.0:
            p.repair_left, p.repair_cd = PLAYER.repair_seconds, PLAYER.repair_cooldown
            self.events.append("repair")
        elif key == "boost" and p.boost_cd <= 0.0:
            p.boost_left, p.boost_cd = PLAYER.boost_seconds, PLAYER.boost_cooldown
            self.events.append("boost")

    # ----------------------------------------------------------------------------------------- player

    def _tick_abilities(self) -> None:
        p, dt = self.player, self.dt
        if p.repair_left > 0.0:
            p.hp = min(PLAYER.hp, p.hp + PLAYER.repair_rate * min(dt, p.repair_left))
        p.repair_left = countdown(p.repair_left, dt)
        p.boost_left = countdown(p.boost_left, dt)
        p.repair_cd = countdown(p.repair_cd, dt)
        p.boost_cd = countdown(p.boost_cd, dt)
        p.fire_cd = countdown(p.fire_cd, dt)
        p.since_damage += dt

    def _move_player(self) -> None:
        """Arrive at `dest`: full speed, then brake at `accel` so that it stops on the point."""
        p, dt, cfg = self.player, self.dt, self.config
        want_x = want_y = 0.0
        if p.dest is not None:
            dx, dy = p.dest[0] - p.x, p.dest[1] - p.y
            d = math.hypot(dx, dy)
            top = PLAYER.speed * (PLAYER.boost_factor if p.boost_left > 0.0 else 1.0)
            if d < 1.0 and math.hypot(p.vx, p.vy) < PLAYER.accel * dt:
                p.x, p.y, p.vx, p.vy, p.dest = p.dest[0], p.dest[1], 0.0, 0.0, None
                return
            if d > 0.0:
                speed = min(top, math.sqrt(2.0 * PLAYER.accel * d), d / dt)
                want_x, want_y = dx / d * speed, dy / d * speed
        p.vx, p.vy = steer(p.vx, p.vy, want_x, want_y, PLAYER.accel * dt)
        r = PLAYER.radius
        p.x = min(max(p.x + p.vx * dt, r), cfg.world_width - r)
        p.y = min(max(p.y + p.vy * dt, r), cfg.world_height - r)
        if math.hypot(p.vx, p.vy) > 5.0:
            p.heading = math.atan2(p.vy, p.vx)

    def _fire_player(self) -> None:
        p = self.player
        target = self.npc_by_id(p.selected)
        if p.selected is not None and (
            target is None or distance(p.x, p.y, target.x, target.y) > SELECTION_DROP
        ):
            p.selected, p.attack_on, target = None, False, None
        in_range = target is not None and distance(p.x, p.y, target.x, target.y) <= PLAYER.laser_range
        p.attacking = p.attack_on and in_range and not self.in_safe_zone(p.x, p.y)
        if not p.attacking or target is None:
            return
        p.heading = math.atan2(target.y - p.y, target.x - p.x)
        if p.fire_cd > 0.0:
            return
        p.fire_cd = PLAYER.fire_interval
        target.hp -= PLAYER.laser_damage
        target.since_damage = 0.0
        target.aggro = True  # even a passive scout fights back once hit
        self._add_shot(p.x, p.y, target.x, target.y, True, target.stats.radius)
        self.events.append("hit_npc")

    def _add_shot(self, x1: float, y1: float, x2: float, y2: float, by_player: bool, size: float) -> None:
        self.shots.append(Shot(x1, y1, x2, y2, by_player))
        seed = self.frame * 7919 + len(self.blasts) * 31
        self.blasts.append(Blast("hit_npc" if by_player else "hit_player", x2, y2, size, seed, HIT_SECONDS))

    def _damage_player(self, amount: float) -> None:
        p = self.player
        absorbed = min(p.shield, amount)
        p.shield -= absorbed
        p.hp -= amount - absorbed
        p.since_damage = 0.0
        self.events.append("hit_player")

    # ------------------------------------------------------------------------------------ bookkeeping

    def _collect_boxes(self) -> None:
        p = self.player
        for i, box in enumerate(self.boxes):
            if distance(p.x, p.y, box.x, box.y) <= PLAYER.pickup_radius:
                self.score.credits += box.credits
                self.score.boxes += 1
                self.events.append("box")
                x, y = self._spawn_point()
                self.boxes[i] = Box(self._new_id(), x, y)

    def _resolve_npc_deaths(self) -> None:
        p = self.player
        for npc in [n for n in self.npcs if n.hp <= 0.0]:
            self.npcs.remove(npc)
            self.score.credits += npc.stats.credits
            self.score.kills[npc.cls] += 1
            self.events.append(f"kill:{npc.cls}")
            self.blasts.append(Blast("explosion", npc.x, npc.y, npc.stats.radius, npc.id, EXPLOSION_SECONDS))
            self._respawns.append([npc.stats.respawn_s, npc.cls])
            if p.selected == npc.id:
                p.selected, p.attack_on, p.attacking = None, False, False

    def _resolve_player_death(self) -> None:
        """Death: explode, lose a share of the credits, come back at the portal with full hp and shield."""
        p = self.player
        if p.hp > 0.0:
            return
        self.blasts.append(Blast("explosion", p.x, p.y, PLAYER.radius, p.id + self.frame, EXPLOSION_SECONDS))
        self.score.credits -= int(self.score.credits * PLAYER.death_penalty)
        self.score.deaths += 1
        self.events.append("death")
        p.x, p.y, p.vx, p.vy, p.dest = self.portal.x, self.portal.y, 0.0, 0.0, None
        p.hp, p.shield, p.heading = PLAYER.hp, PLAYER.shield, -math.pi / 2
        p.selected, p.attack_on, p.attacking = None, False, False
        p.repair_left = p.boost_left = 0.0
        for npc in self.npcs:
            npc.aggro = False

    def _regenerate(self) -> None:
        p, dt = self.player, self.dt
        if self.in_safe_zone(p.x, p.y):
            p.hp = min(PLAYER.hp, p.hp + PLAYER.safe_hp_regen * dt)
            p.shield = min(PLAYER.shield, p.shield + PLAYER.safe_shield_regen * dt)
            return
        if p.since_damage >= PLAYER.shield_delay:
            p.shield = min(PLAYER.shield, p.shield + PLAYER.shield_regen * dt)
        if p.since_damage >= PLAYER.hp_regen_delay:
            p.hp = min(PLAYER.hp, p.hp + PLAYER.hp_regen * dt)

    def _respawn_npcs(self) -> None:
        due = []
        for entry in self._respawns:
            entry[0] = countdown(entry[0], self.dt)
            if entry[0] == 0.0:
                due.append(entry)
        for entry in due:
            self._respawns.remove(entry)
            self.spawn_npc(entry[1])

    def _age_effects(self) -> None:
        dt = self.dt
        for shot in self.shots:
            shot.age += dt
        for blast in self.blasts:
            blast.age += dt
        self.shots = [s for s in self.shots if s.age < SHOT_SECONDS]
        self.blasts = [b for b in self.blasts if b.age < b.lifetime]

    # ------------------------------------------------------------------------------------------- info

    def info(self) -> dict[str, Any]:
        """The ground truth of spec.py for the current state (plain Python types, JSON-serialisable)."""
        p = self.player
        return {
            "frame": self.frame,
            "time": self.time,
            "cursor": [float(self.cursor[0]), float(self.cursor[1])],
            "objects": self.visible_objects(),
            "player": self._player_info(),
            "score": self.score.as_dict(),
            "events": list(self.events),
            "hud": {
                "hp_frac": p.hp / PLAYER.hp,
                "shield_frac": p.shield / PLAYER.shield,
                "credits": self.score.credits,
            },
        }

    def visible_objects(self) -> list[dict[str, Any]]:
        """One dict per object whose box intersects the frame: the player, the portal, boxes, then NPCs."""
        p = self.player
        out = [self._object(p.id, "player", p.x, p.y, PLAYER.radius, p.hp, PLAYER.hp, False, False)]
        portal = self.portal
        out.append(
            self._object(portal.id, "portal", portal.x, portal.y, PORTAL_RADIUS, 0.0, 0.0, False, False)
        )
        for box in self.boxes:
            out.append(self._object(box.id, "bonus_box", box.x, box.y, BOX_RADIUS, 0.0, 0.0, False, False))
        for npc in self.npcs:
            st = npc.stats
            selected = npc.id == p.selected
            out.append(
                self._object(npc.id, st.cls, npc.x, npc.y, st.radius, npc.hp, st.hp, npc.aggro, selected)
            )
        return [o for o in out if o is not None]

    def _object(
        self,
        obj_id: int,
        cls: str,
        x: float,
        y: float,
        radius: float,
        hp: float,
        hp_max: float,
        aggro: bool,
        selected: bool,
    ) -> dict[str, Any] | None:
        box = self.screen_box(x, y, radius)
        if box is None:
            return None
        return {
            "id": obj_id,
            "cls": cls,
            "box": box,
            "hp": float(hp),
            "hp_max": float(hp_max),
            "aggro": aggro,
            "selected": selected,
        }

    def _player_info(self) -> dict[str, Any]:
        p = self.player
        return {
            "hp": float(p.hp),
            "hp_max": PLAYER.hp,
            "shield": float(p.shield),
            "shield_max": PLAYER.shield,
            "pos": [float(p.x), float(p.y)],
            "vel": [float(p.vx), float(p.vy)],
            "selected": p.selected,
            "attacking": p.attacking,
            "attack_on": p.attack_on,
            "cooldowns": {"repair": p.repair_cd, "boost": p.boost_cd},
            "active": {"repair": p.repair_left, "boost": p.boost_left},
            "in_safe_zone": self.in_safe_zone(p.x, p.y),
        }
