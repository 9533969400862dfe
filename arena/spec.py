"""The Arena's public contract: object classes, modes, keys, the action and the ground-truth `info` layout.

Everything outside `arena/` (the expert, the episode writer, the game profile, perception, tests) relies on
these names and shapes; change them only together with `SPEC_VERSION` and `bot/games/arena.yaml`.

Coordinates: screen pixels of the game frame, origin top-left, x right, y down. World units are pixels at
zoom 1 (the camera does not zoom), so a world position maps to the screen by subtracting the camera origin.
(Addition: ArenaConfig.zoom, default 1, may scale the view, e.g. 640x360 at zoom 0.5 shows the same world
area as 1280x720; then screen = frame centre + (world - player pos) * zoom. Nothing sets it by default.)
The camera keeps the player's ship at the frame centre. A left click on an NPC's box selects it; on the
minimap (HUD_MINIMAP, the whole map stretched over it axis by axis) it flies to that map point; anywhere
else it flies to the clicked world point. Attack toggling needs a selection; selecting another NPC turns
the attack off; nobody fires into or out of the safe zone around the portal, and NPCs never enter it.

The action is what a person does with a mouse and a keyboard during one frame:

    mouse   (2,) float32 in [0, 1]   cursor position as a fraction of the frame width / height
    click   0 | 1                    left button pressed (and released) at the cursor this frame
    key     0 .. len(KEYS)-1         key tapped this frame, index into KEYS (0 = none)

`info` returned by `reset()` / `step()` (all plain Python types, JSON-serialisable):

    frame:   int                      frames since reset
    time:    float                    seconds of game time since reset (frame / fps)
    cursor:  [x, y]                   cursor position in pixels (after this step's action)
    objects: list of dicts, one per object whose box intersects the screen (the player first):
        id:      int                  stable for the object's lifetime, never reused in an episode
        cls:     str                  one of CLASSES
        box:     [x1, y1, x2, y2]     float pixels, clipped to the screen
        hp, hp_max: float             (0, 0 for boxes and portals)
        aggro:   bool                 the NPC is currently attacking / chasing the player
        selected: bool                the player has this NPC selected
    player:  dict
        hp, hp_max, shield, shield_max: float
        pos:     [x, y]               world position (visible on the minimap)
        vel:     [vx, vy]             world px / s
        selected: int | None          id of the selected NPC
        attacking: bool               attack is toggled on (and the target is in range)
        attack_on: bool               (addition) the attack toggle itself, whatever the range
        cooldowns: {"repair": s, "boost": s}   seconds until ready (0 = ready)
        active:  {"repair": s, "boost": s}   (addition) seconds of the running effect left (0 = off)
        in_safe_zone: bool
    score:   dict  credits: int, kills: {npc cls: int}, boxes: int, deaths: int
    events:  list of str this step, e.g. "kill:npc_scout", "box", "death", "hit_player", "hit_npc"
             (additions) "select", "attack_on", "attack_off", "repair", "boost" when an input took effect
    hud:     dict  hp_frac, shield_frac (what the HUD bars show), credits (what the counter shows)
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
