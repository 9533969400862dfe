"""Games: one YAML profile per game (read by bot.profile) and, for games the project drives, an adapter that
starts the game, reaches a scenario, probes its ground truth, plays it scripted and scores it.

Adapters may import perception, recordings, policy (a bundle as a player) and control; play imports them
through `adapter_for(game)`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

ADAPTERS = {"naev": "bot.games.naev.adapter"}  # the Arena runs in-process (bot/play), not through an adapter


def adapter_for(game: str) -> ModuleType:
    """The adapter module of `game`: `play(seed, seconds, pilot=..., out=...)`, `summarise(results)`,
    PILOTS."""
    if game not in ADAPTERS:
        raise ValueError(f"game {game!r}: no adapter (the project drives: {', '.join(sorted(ADAPTERS))})")
    return importlib.import_module(ADAPTERS[game])
