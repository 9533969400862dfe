"""The Arena: the built-in 2D space game (simulation, renderer, window, gymnasium env) and its scripted
expert. `from arena import ArenaConfig, ArenaEnv`; the contract every other package reads is arena/spec.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arena.env import ArenaConfig, ArenaEnv

__all__ = ["ArenaConfig", "ArenaEnv"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `from arena import spec` (the expert, the game profile) does not pull in gymnasium.
    if name in __all__:
        from arena import env

        return getattr(env, name)
    raise AttributeError(f"module 'arena' has no attribute {name!r}")
