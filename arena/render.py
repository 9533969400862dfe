"""Draws Arena frames from a World with pygame-ce software rendering (no display needed).

    Renderer(config)        builds every sprite once: ships at SPRITE_ANGLES headings, boxes, portal,
                            safe zone, explosion frames, star layers, HUD panels
    Renderer.draw(world)    paints the frame onto `Renderer.surface` (a pygame.Surface) and returns it
    Renderer.render(world)  the same frame as an RGB uint8 array (H, W, 3), C-contiguous

Frames are bit-identical for the same world state: nothing here draws random numbers or reads a clock. Draw
order and what the minimap shows: docs/notes/arena.md (arena/render.py).
"""

from __future__ import annotations

import math
import os

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # noqa: E402

from arena.rules import BOX_RADIUS, NPC_STATS, PLAYER, PORTAL_RADIUS, SHOT_SECONDS, WorldConfig  # noqa: E402
from arena.spec import (  # noqa: E402
    HUD_BOOST_ICON,
    HUD_CREDITS,
    HUD_HP_BAR,
    HUD_PANEL,
    HUD_REPAIR_ICON,
    HUD_SHIELD_BAR,
    KEY_BINDINGS,
)
from arena.state import Blast, Npc  # noqa: E402
from arena.world import World  # noqa: E402

try:  # one C call turns the BGRX surface into RGB (0.1 ms at 1280x720, vs 1.9 ms for image.tobytes)
    import cv2
except ImportError:  # pragma: no cover - opencv is a project dependency; tobytes is the slow fallback
    cv2 = None

SPRITE_ANGLES = 64  # pre-rendered headings per ship
EXPLOSION_FRAMES = 10
SPACE = (6, 8, 18)
PLAYER_COLOR = (70, 170, 255)
NPC_COLORS = {"npc_scout": (180, 225, 70), "npc_raider": (235, 70, 55), "npc_boss": (170, 80, 230)}
NPC_NAMES = {"npc_scout": "-=[ Scout ]=-", "npc_raider": "-=[ Raider ]=-", "npc_boss": "-=[ Boss ]=-"}
BOX_COLOR = (240, 195, 40)
PORTAL_COLOR = (90, 210, 255)
SAFE_COLOR = (60, 220, 140)
PLAYER_LASER = (120, 255, 255)
NPC_LASER = (255, 80, 60)
HP_FILL, SHIELD_FILL, BAR_BACK, BAR_EDGE = (60, 220, 90), (70, 150, 255), (28, 32, 44), (190, 195, 210)
CREDITS_COLOR = (255, 220, 90)
STAR_LAYERS = (
    (0.15, 1, 90, 0.00012),
    (0.35, 1, 160, 0.00007),
    (0.65, 2, 230, 0.00003),
)  # parallax, px, grey, /px^2


# -------------------------------------------------------------------------------------------- shapes

# Ship outlines in units of the ship's radius, nose along +x.
SHAPES: dict[str, list[tuple[float, float]]] = {
    "player": [(1.0, 0.0), (-0.55, 0.8), (-0.3, 0.3), (-0.75, 0.0), (-0.3, -0.3), (-0.55, -0.8)],
    "npc_scout": [(1.0, 0.0), (-0.8, 0.55), (-0.45, 0.0), (-0.8, -0.55)],
    "npc_raider": [
        (math.cos(a) * r, math.sin(a) * r)
        for i in range(10)
        for a, r in [(i * math.pi / 5, 1.0 if i % 2 == 0 else 0.45)]
    ],
    "npc_boss": [(math.cos(i * math.pi / 3) * 0.95, math.sin(i * math.pi / 3) * 0.95) for i in range(6)],
}


def _shade(color: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(max(0, min(255, int(c * f))) for c in color)  # type: ignore[return-value]


def _rotated(
    points: list[tuple[float, float]], angle: float, scale: float, c: float
) -> list[tuple[float, float]]:
    ca, sa = math.cos(angle), math.sin(angle)
    return [(c + (x * ca - y * sa) * scale, c + (x * sa + y * ca) * scale) for x, y in points]


def _ship_sprite(kind: str, radius: float, angle: float) -> pygame.Surface:
    """One ship at one heading on a transparent square of side 2 * radius (its ground-truth box)."""
    size = max(4, int(round(2 * radius)))
    surf = pygame.Surface((size, size), pygame.SRCALPHA)
    c, scale = size / 2.0, size / 2.0 - 1.0
    color = PLAYER_COLOR if kind == "player" else NPC_COLORS[kind]
    hull = _rotated(SHAPES[kind], angle, scale, c)
    pygame.draw.polygon(surf, _shade(color, 0.55), hull)
    pygame.draw.polygon(surf, _shade(color, 1.0), _rotated(SHAPES[kind], angle, scale * 0.8, c))
    pygame.draw.polygon(surf, _shade(color, 1.35), hull, max(1, int(radius / 12)))
    if kind == "npc_boss":
        pygame.draw.circle(surf, (255, 120, 255), (c, c), scale * 0.42)
        pygame.draw.circle(surf, (255, 230, 255), (c, c), scale * 0.2)
        for x, y in _rotated(
            [(0.78 * math.cos(i * 1.047), 0.78 * math.sin(i * 1.047)) for i in range(6)], angle, scale, c
        ):
            pygame.draw.circle(surf, (90, 30, 120), (x, y), scale * 0.1)
    else:
        cockpit = _rotated([(0.25, 0.0)], angle, scale, c)[0]
        pygame.draw.circle(surf, (235, 245, 255), cockpit, max(1.5, scale * 0.16))
    if kind == "player":
        for x, y in _rotated([(-0.62, 0.28), (-0.62, -0.28)], angle, scale, c):
            pygame.draw.circle(surf, (255, 170, 60), (x, y), max(1.0, scale * 0.09))
    return surf


def _box_sprite(radius: float) -> pygame.Surface:
    size = max(4, int(round(2 * radius)))
    surf = pygame.Surface((size, size), pygame.SRCALPHA)
    pygame.draw.rect(surf, BOX_COLOR, (0, 0, size, size), border_radius=max(1, size // 6))
    pygame.draw.rect(surf, _shade(BOX_COLOR, 0.55), (0, 0, size, size), max(1, size // 10), max(1, size // 6))
    pygame.draw.line(surf, (255, 250, 210), (size / 2, 2), (size / 2, size - 3), max(1, size // 8))
    pygame.draw.line(surf, (255, 250, 210), (2, size / 2), (size - 3, size / 2), max(1, size // 8))
    return surf


def _portal_sprite(radius: float) -> pygame.Surface:
    size = max(8, int(round(2 * radius)))
    surf = pygame.Surface((size, size), pygame.SRCALPHA)
    c = size / 2.0
    for i, f in enumerate((1.0, 0.8, 0.6, 0.4)):
        color = _shade(PORTAL_COLOR, 1.0 - 0.15 * i)
        pygame.draw.circle(surf, color, (c, c), c * f - 1, max(1, int(c / 12)))
    pygame.draw.circle(surf, (210, 245, 255), (c, c), c * 0.22)
    for i in range(8):
        a = i * math.pi / 4
        p1 = (c + math.cos(a) * c * 0.45, c + math.sin(a) * c * 0.45)
        p2 = (c + math.cos(a + 0.5) * c * 0.95, c + math.sin(a + 0.5) * c * 0.95)
        pygame.draw.line(surf, PORTAL_COLOR, p1, p2, max(1, int(c / 20)))
    return surf


def _safe_zone_sprite(radius: float) -> pygame.Surface:
    size = max(8, int(round(2 * radius)))
    surf = pygame.Surface((size, size), pygame.SRCALPHA)
    c = size / 2.0
    pygame.draw.circle(surf, (*SAFE_COLOR, 22), (c, c), c)
    pygame.draw.circle(surf, (*SAFE_COLOR, 150), (c, c), c, max(1, int(size / 300)))
    return surf


def _explosion_frames(radius: float) -> list[pygame.Surface]:
    """Expanding, fading fireball: EXPLOSION_FRAMES surfaces of side 5 * radius."""
    size = max(8, int(round(5 * radius)))
    c = size / 2.0
    frames = []
    for i in range(EXPLOSION_FRAMES):
        t = (i + 0.5) / EXPLOSION_FRAMES
        surf = pygame.Surface((size, size), pygame.SRCALPHA)
        alpha = int(255 * (1.0 - t) ** 0.7)
        pygame.draw.circle(surf, (255, 120, 30, alpha), (c, c), c * (0.3 + 0.7 * t))
        pygame.draw.circle(surf, (255, 220, 90, alpha), (c, c), c * (0.2 + 0.45 * t))
        pygame.draw.circle(surf, (255, 255, 230, int(alpha * (1.0 - t))), (c, c), c * 0.25 * (1.0 - t) + 1)
        for k in range(8):
            a = k * math.pi / 4 + 0.3
            r = c * (0.4 + 0.6 * t)
            pygame.draw.circle(
                surf, (255, 180, 60, alpha), (c + math.cos(a) * r, c + math.sin(a) * r), 1 + c * 0.06
            )
        frames.append(surf)
    return frames


def _flash_sprite(radius: float, color: tuple[int, int, int]) -> pygame.Surface:
    size = max(6, int(round(2 * radius)))
    surf = pygame.Surface((size, size), pygame.SRCALPHA)
    c = size / 2.0
    pygame.draw.circle(surf, (*color, 110), (c, c), c)
    pygame.draw.circle(surf, (255, 255, 255, 230), (c, c), c * 0.45)
    return surf


def _star_layer(width: int, height: int, density: float, seed: int) -> np.ndarray:
    """(N, 2) star positions in [0, width) x [0, height); the layer repeats with that period."""
    rng = np.random.default_rng(seed)  # fixed seed: the sky is scenery, not game state
    n = max(8, int(width * height * density))
    return rng.uniform((0.0, 0.0), (width, height), size=(n, 2))


def _rect(frac: tuple[float, float, float, float], width: int, height: int) -> pygame.Rect:
    x1, y1, x2, y2 = (
        round(frac[0] * width),
        round(frac[1] * height),
        round(frac[2] * width),
        round(frac[3] * height),
    )
    return pygame.Rect(x1, y1, max(1, x2 - x1), max(1, y2 - y1))


def _fitted_font(height_px: int) -> pygame.font.Font:
    """pygame's bundled default font at the largest size whose line height fits `height_px`."""
    size = max(6, int(height_px * 1.4))
    font = pygame.font.Font(None, size)
    while size > 6 and font.get_height() > height_px:
        size -= 1
        font = pygame.font.Font(None, size)
    return font


# ------------------------------------------------------------------------------------------ renderer


class Renderer:
    """Pre-rendered sprites plus the per-frame drawing; one instance per frame size."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = cfg = config or WorldConfig()
        pygame.font.init()
        self.width, self.height, self.zoom = cfg.width, cfg.height, cfg.zoom
        self.surface = pygame.Surface((cfg.width, cfg.height))
        self._fast_rgb = cv2 is not None and self.surface.get_masks()[:3] == (0xFF0000, 0xFF00, 0xFF)
        self._build_sprites()
        self._build_hud()
        self._text_cache: dict[tuple[int, str, tuple[int, int, int]], pygame.Surface] = {}

    def _build_sprites(self) -> None:
        z = self.zoom
        self._ships = {
            kind: [
                _ship_sprite(kind, radius * z, 2 * math.pi * i / SPRITE_ANGLES) for i in range(SPRITE_ANGLES)
            ]
            for kind, radius in [("player", PLAYER.radius)] + [(k, s.radius) for k, s in NPC_STATS.items()]
        }
        self._box = _box_sprite(BOX_RADIUS * z)
        self._portal = _portal_sprite(PORTAL_RADIUS * z)
        self._safe_zone = _safe_zone_sprite(self.config.safe_zone_radius * z)
        self._explosions = {
            size: _explosion_frames(size * z)
            for size in {PLAYER.radius, *(s.radius for s in NPC_STATS.values())}
        }
        self._flash = {True: _flash_sprite(8 * z, PLAYER_LASER), False: _flash_sprite(8 * z, NPC_LASER)}
        self._stars = []
        for i, (parallax, px, grey, density) in enumerate(STAR_LAYERS):
            dot = pygame.Surface((px, px))
            dot.fill((grey, grey, min(255, grey + 25)))
            self._stars.append((parallax, dot, _star_layer(self.width, self.height, density, 1000 + i)))
        self._name_font = _fitted_font(max(8, int(13 * z)))

    def _build_hud(self) -> None:
        w, h = self.width, self.height
        self._hp_rect = _rect(HUD_HP_BAR, w, h)
        self._shield_rect = _rect(HUD_SHIELD_BAR, w, h)
        self._credits_rect = _rect(HUD_CREDITS, w, h)
        self._credits_font = _fitted_font(self._credits_rect.height)
        panel = _rect(HUD_PANEL, w, h)
        self._panel = pygame.Surface(panel.size, pygame.SRCALPHA)
        self._panel.fill((0, 0, 0, 150))
        self._panel_pos = panel.topleft
        self._icons = {"repair": _rect(HUD_REPAIR_ICON, w, h), "boost": _rect(HUD_BOOST_ICON, w, h)}
        self._icon_font = _fitted_font(max(6, self._icons["repair"].height // 3))
        self._shade = pygame.Surface(self._icons["repair"].size, pygame.SRCALPHA)
        self._shade.fill((0, 0, 0, 175))
        self._minimap_rect = None  # built on first draw, from the world's own minimap geometry

    # ----------------------------------------------------------------------------------------- public

    def draw(self, world: World) -> pygame.Surface:
        """Paint the world's current state onto `self.surface` and return it."""
        surf = self.surface
        surf.fill(SPACE)
        self._draw_stars(world)
        self._draw_scenery(world)
        self._draw_ships(world)
        self._draw_effects(world)
        self._draw_npc_overlays(world)
        self._draw_hud(world)
        return surf

    def render(self, world: World) -> np.ndarray:
        """The frame as RGB uint8 (H, W, 3), C-contiguous, a new array each call."""
        return self.to_array(self.draw(world))

    def to_array(self, surf: pygame.Surface) -> np.ndarray:
        if self._fast_rgb and surf is self.surface:
            buf = np.frombuffer(surf.get_buffer(), np.uint8).reshape(self.height, surf.get_pitch() // 4, 4)
            out = cv2.cvtColor(buf[:, : self.width], cv2.COLOR_BGRA2RGB)
            del buf  # releases the surface lock taken by get_buffer()
            return out
        raw = pygame.image.tobytes(surf, "RGB")
        return np.frombuffer(raw, np.uint8).reshape(surf.get_height(), surf.get_width(), 3).copy()

    # ----------------------------------------------------------------------------------- world layers

    def _draw_stars(self, world: World) -> None:
        cx, cy = world.camera_origin()
        period = np.array([self.width, self.height], dtype=np.float64)
        for parallax, dot, stars in self._stars:
            shift = np.array([cx, cy]) * parallax * self.zoom
            pos = np.mod(stars - shift, period).astype(np.int32)
            self.surface.fblits([(dot, (int(x), int(y))) for x, y in pos.tolist()])

    def _blit_centered(self, sprite: pygame.Surface, world: World, x: float, y: float) -> None:
        sx, sy = world.world_to_screen(x, y)
        w, h = sprite.get_size()
        left, top = int(math.floor(sx - w / 2.0 + 0.5)), int(math.floor(sy - h / 2.0 + 0.5))
        if left < self.width and top < self.height and left + w > 0 and top + h > 0:
            self.surface.blit(sprite, (left, top))

    def _draw_scenery(self, world: World) -> None:
        cfg, z = world.config, self.zoom
        x0, y0 = world.world_to_screen(0.0, 0.0)
        edge = pygame.Rect(int(x0), int(y0), int(cfg.world_width * z), int(cfg.world_height * z))
        pygame.draw.rect(self.surface, (120, 40, 40), edge, max(1, int(3 * z)))
        portal = world.portal
        self._blit_centered(self._safe_zone, world, portal.x, portal.y)
        self._blit_centered(self._portal, world, portal.x, portal.y)
        for box in world.boxes:
            self._blit_centered(self._box, world, box.x, box.y)

    def _ship(self, kind: str, heading: float) -> pygame.Surface:
        index = int(round(heading / (2 * math.pi) * SPRITE_ANGLES)) % SPRITE_ANGLES
        return self._ships[kind][index]

    def _draw_ships(self, world: World) -> None:
        for npc in world.npcs:
            self._blit_centered(self._ship(npc.cls, npc.heading), world, npc.x, npc.y)
        p = world.player
        self._blit_centered(self._ship("player", p.heading), world, p.x, p.y)

    def _draw_effects(self, world: World) -> None:
        z = self.zoom
        for shot in world.shots:
            head = min(1.0, 0.35 + shot.age / SHOT_SECONDS)
            tail = max(0.0, head - 0.45)
            a = world.world_to_screen(
                shot.x1 + (shot.x2 - shot.x1) * tail, shot.y1 + (shot.y2 - shot.y1) * tail
            )
            b = world.world_to_screen(
                shot.x1 + (shot.x2 - shot.x1) * head, shot.y1 + (shot.y2 - shot.y1) * head
            )
            color = PLAYER_LASER if shot.by_player else NPC_LASER
            pygame.draw.line(self.surface, color, a, b, max(2, int(4 * z)))
            pygame.draw.line(self.surface, (255, 255, 255), a, b, max(1, int(1.5 * z)))
        for blast in world.blasts:
            if blast.kind != "explosion":
                self._draw_hit(world, blast)
            else:
                frames = self._explosions[blast.size]
                index = min(EXPLOSION_FRAMES - 1, int(blast.age / blast.lifetime * EXPLOSION_FRAMES))
                self._blit_centered(frames[index], world, blast.x, blast.y)

    def _draw_hit(self, world: World, blast: Blast) -> None:
        """A flash on the hull plus five sparks whose directions come from the blast's seed."""
        t = blast.age / blast.lifetime
        if t < 0.5:
            self._blit_centered(self._flash[blast.kind == "hit_npc"], world, blast.x, blast.y)
        sx, sy = world.world_to_screen(blast.x, blast.y)
        r0, r1 = (4 + 14 * t) * self.zoom, (10 + 22 * t) * self.zoom
        color = (255, 240, 160) if t < 0.5 else (255, 150, 60)
        for k in range(5):
            a = blast.seed * 2.39996 + k * 2 * math.pi / 5
            ca, sa = math.cos(a), math.sin(a)
            pygame.draw.line(
                self.surface, color, (sx + ca * r0, sy + sa * r0), (sx + ca * r1, sy + sa * r1), 1
            )

    def _draw_npc_overlays(self, world: World) -> None:
        p = world.player
        for npc in world.npcs:
            box = world.screen_box(npc.x, npc.y, npc.stats.radius + 30.0)
            if box is None:
                continue
            self._draw_npc_overlay(world, npc, npc.id == p.selected, p.attack_on)

    def _draw_npc_overlay(self, world: World, npc: Npc, selected: bool, attack_on: bool) -> None:
        """hp bar above, name below (red while it is aggressive), selection ring around."""
        z = self.zoom
        sx, sy = world.world_to_screen(npc.x, npc.y)
        r = npc.stats.radius * z
        bar = pygame.Rect(int(sx - r), int(sy - r - 9 * z), max(2, int(2 * r)), max(2, int(4 * z)))
        pygame.draw.rect(self.surface, (60, 20, 20), bar)
        frac = max(0.0, min(1.0, npc.hp / npc.stats.hp))
        pygame.draw.rect(self.surface, (80, 230, 80), (bar.x, bar.y, int(bar.w * frac), bar.h))
        name = self._text(
            self._name_font, NPC_NAMES[npc.cls], (255, 90, 80) if npc.aggro else (215, 220, 230)
        )
        self.surface.blit(name, (int(sx - name.get_width() / 2), int(sy + r + 3 * z)))
        if selected:
            color = (255, 60, 60) if attack_on else (255, 210, 70)
            pygame.draw.circle(self.surface, color, (sx, sy), r * 1.3 + 4 * z, max(2, int(2 * z)))

    def _text(self, font: pygame.font.Font, text: str, color: tuple[int, int, int]) -> pygame.Surface:
        key = (id(font), text, color)
        surf = self._text_cache.get(key)
        if surf is None:
            if len(self._text_cache) > 512:  # credits change every kill; keep the cache bounded
                self._text_cache.clear()
            surf = self._text_cache[key] = font.render(text, True, color)
        return surf

    # -------------------------------------------------------------------------------------------- HUD

    def _draw_hud(self, world: World) -> None:
        p = world.player
        self.surface.blit(self._panel, self._panel_pos)
        self._draw_bar(self._hp_rect, p.hp / PLAYER.hp, HP_FILL)
        self._draw_bar(self._shield_rect, p.shield / PLAYER.shield, SHIELD_FILL)
        text = self._text(self._credits_font, f"CR {world.score.credits:,}", CREDITS_COLOR)
        rect = self._credits_rect
        self.surface.blit(text, (rect.x, rect.y + (rect.height - text.get_height()) // 2))
        self._draw_ability("repair", p.repair_cd, PLAYER.repair_cooldown, p.repair_left > 0.0)
        self._draw_ability("boost", p.boost_cd, PLAYER.boost_cooldown, p.boost_left > 0.0)
        self._draw_minimap(world)

    def _draw_bar(self, rect: pygame.Rect, frac: float, color: tuple[int, int, int]) -> None:
        """Fill exactly the spec's region, left to right; the frame sits one pixel outside it."""
        frac = max(0.0, min(1.0, frac))
        pygame.draw.rect(self.surface, BAR_BACK, rect)
        filled = int(round(rect.width * frac))
        if filled > 0:
            pygame.draw.rect(self.surface, color, (rect.x, rect.y, filled, rect.height))
        pygame.draw.rect(self.surface, BAR_EDGE, rect.inflate(2, 2), 1)

    def _draw_ability(self, name: str, cooldown: float, full: float, active: bool) -> None:
        """Icon with its key; while cooling down a dark shade covers the remaining fraction, with seconds."""
        rect = self._icons[name]
        surf = self.surface
        pygame.draw.rect(surf, (25, 30, 45), rect)
        c, r = rect.center, rect.width * 0.3
        if name == "repair":
            pygame.draw.rect(surf, (70, 220, 110), (c[0] - r, c[1] - r / 3, 2 * r, 2 * r / 3))
            pygame.draw.rect(surf, (70, 220, 110), (c[0] - r / 3, c[1] - r, 2 * r / 3, 2 * r))
        else:
            for dx in (-r * 0.5, r * 0.3):
                pts = [
                    (c[0] + dx - r * 0.3, c[1] - r),
                    (c[0] + dx + r * 0.5, c[1]),
                    (c[0] + dx - r * 0.3, c[1] + r),
                ]
                pygame.draw.lines(surf, (255, 160, 50), False, pts, max(2, int(rect.width / 12)))
        if cooldown > 0.0:
            cover = int(round(rect.height * min(1.0, cooldown / full)))
            surf.blit(self._shade, (rect.x, rect.bottom - cover), (0, 0, rect.width, cover))
            secs = self._text(self._icon_font, str(int(math.ceil(cooldown))), (255, 255, 255))
            surf.blit(secs, secs.get_rect(center=c))
        key = self._text(self._icon_font, KEY_BINDINGS[name], (220, 220, 230))
        surf.blit(key, (rect.x + 2, rect.y + 1))
        edge = (120, 255, 160) if active else (150, 155, 175)
        pygame.draw.rect(surf, edge, rect, 2 if active else 1)

    def _build_minimap(self, world: World) -> None:
        x1, y1, x2, y2 = world.minimap_rect()
        rect = pygame.Rect(round(x1), round(y1), max(2, round(x2 - x1)), max(2, round(y2 - y1)))
        back = pygame.Surface(rect.size, pygame.SRCALPHA)
        back.fill((10, 20, 40, 190))
        for i in range(1, 4):
            pygame.draw.line(back, (40, 60, 90, 255), (rect.w * i / 4, 0), (rect.w * i / 4, rect.h))
            pygame.draw.line(back, (40, 60, 90, 255), (0, rect.h * i / 4), (rect.w, rect.h * i / 4))
        pygame.draw.rect(back, (150, 170, 200, 255), back.get_rect(), 1)
        px, py = world.world_to_minimap(world.portal.x, world.portal.y)
        zone = world.portal.safe_radius / world.config.world_width * rect.w
        pygame.draw.circle(back, (*SAFE_COLOR, 255), (px - rect.x, py - rect.y), max(2.0, zone), 1)
        pygame.draw.circle(back, (*PORTAL_COLOR, 255), (px - rect.x, py - rect.y), max(2.0, rect.w / 60))
        self._minimap_rect, self._minimap_back = rect, back

    def _draw_minimap(self, world: World) -> None:
        if self._minimap_rect is None:
            self._build_minimap(world)
        rect = self._minimap_rect
        self.surface.blit(self._minimap_back, rect.topleft)
        cx, cy = world.camera_origin()
        ax, ay = world.world_to_minimap(cx, cy)
        bx, by = world.world_to_minimap(cx + self.width / self.zoom, cy + self.height / self.zoom)
        view = pygame.Rect(int(ax), int(ay), max(1, int(bx - ax)), max(1, int(by - ay))).clip(rect)
        if view.width > 0 and view.height > 0:
            pygame.draw.rect(self.surface, (200, 200, 220), view, 1)
        p = world.player
        pygame.draw.circle(
            self.surface, (255, 255, 255), world.world_to_minimap(p.x, p.y), max(2.0, rect.w / 50)
        )
