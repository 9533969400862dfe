"""The Arena's scripted expert pilot, the demonstrator every model is first trained on: `Expert.act(info)`.

    info ─view─▶ Scene ─decisions─▶ mode, target ─tactics─▶ Plan (Intent + keys) ─hand─▶ mouse, click, key

config: ExpertConfig; view: what it sees; decisions: mode and target with hysteresis; tactics: one plan per
mode; hand: cursor and keyboard timing; pilot: Expert, the frame loop; labeller: StateLabeller, the plan's
answer on states another player steers (DAgger labels). Design notes: docs/notes/arena.md.
"""

from __future__ import annotations

from arena.expert.config import ExpertConfig
from arena.expert.decisions import CAUTIOUS, EXPLORE, FIGHT, FLEE, LOOT, ModeSelector, TargetSelector
from arena.expert.hand import Cursor, Intent, Keyboard
from arena.expert.pilot import GHOST_S, Expert
from arena.expert.tactics import TACTICS, Context, Memory, Plan
from arena.expert.view import HIDDEN_FRACTION, Obj, Scene, Tracker, perceive

__all__ = [
    "CAUTIOUS",
    "EXPLORE",
    "FIGHT",
    "FLEE",
    "GHOST_S",
    "HIDDEN_FRACTION",
    "LOOT",
    "TACTICS",
    "Context",
    "Cursor",
    "Expert",
    "ExpertConfig",
    "Intent",
    "Keyboard",
    "Memory",
    "ModeSelector",
    "Obj",
    "Plan",
    "Scene",
    "TargetSelector",
    "Tracker",
    "perceive",
]
