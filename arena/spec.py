"""The Arena's public contract: object classes, modes, keys, the action and the ground-truth `info` layout.

Everything outside `arena/` relies on these names and shapes; change them only together with `SPEC_VERSION`
and `bot/games/arena.yaml`. Coordinates are screen px of the game frame, origin top-left, x right, y down.
The action is what a person does with a mouse and a keyboard during one frame:

    mouse   (2,) float32 in [0, 1]   cursor position as a fraction of the frame width / height
    click   0 | 1                    left button pressed (and released) at the cursor this frame
    key     0 .. len(KEYS)-1         key tapped this frame, index into KEYS (0 = none)

The `info` dict of reset() / step(), the camera and the click rules: docs/notes/arena.md (arena/spec.py).
"""

from __future__ import annotations

SPEC_VERSION = 1

# Detector classes, in the order of their YOLO class index.
CLASSES: tuple[str, ...] = ("player", "npc_scout", "npc_raider", "npc_boss", "bonus_box", "portal")
NPC_CLASSES: tuple[str, ...] = ("npc_scout", "npc_raider", "npc_boss")

# The five play modes of the Strategist, in label-index order.
MODES: tuple[str, ...] = ("FIGHT", "LOOT", "FLEE", "EXPLORE", "CAUTIOUS")

# Keys the policy may press; index 0 is "no key". KEY_BINDINGS maps each to the physical key
# (pygame key name) that the Arena window listens to, DarkOrbit-style: attack toggle, two abilities.
KEYS: tuple[str, ...] = ("none", "attack", "repair", "boost")
KEY_BINDINGS: dict[str, str] = {"attack": "space", "repair": "1", "boost": "2"}

DEFAULT_WIDTH = 1280  # px
DEFAULT_HEIGHT = 720  # px
DEFAULT_FPS = 30  # frames per second of game time

# HUD layout as fractions of the frame (x1, y1, x2, y2), so it scales with the resolution.
# The bars fill from left to right; the game profile (bot/games/arena.yaml) repeats these numbers.
HUD_HP_BAR = (0.015, 0.025, 0.215, 0.045)
HUD_SHIELD_BAR = (0.015, 0.055, 0.215, 0.075)
HUD_CREDITS = (0.015, 0.085, 0.215, 0.125)
HUD_MINIMAP = (0.82, 0.70, 0.985, 0.975)
HUD_PANEL = (0.005, 0.012, 0.225, 0.135)  # dark backing behind the bars and the credits
# (Addition) ability icons at the bottom centre; a dark shade covers the part of the cooldown still left.
HUD_REPAIR_ICON = (0.455, 0.885, 0.495, 0.96)
HUD_BOOST_ICON = (0.505, 0.885, 0.545, 0.96)
