"""Arena episodes on spawned worker processes: the one pool of `pilot demos`, `pilot eval` and `pilot dagger`.

Each worker is set up once by an initializer (building a player is the expensive part), then plays seeds as
they come. Results come back in seed order. The first episode that fails ends the run: the episodes not
started yet are cancelled and a PilotError names the failed episode (the ones already running finish first,
as a process cannot be stopped halfway through writing its files).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

from bot.errors import PilotError

SPAWN = mp.get_context("spawn")  # no inherited threads or SDL state in the workers
POLL_S = 0.2  # how often `tick` runs while episodes play

T = TypeVar("T")


def play_seeds(
    seeds: list[int],
    play: Callable[[int], T],
    *,
    workers: int,
    init: Callable[..., None],
    init_args: tuple[Any, ...] = (),
    episode: Callable[[int], str],
    on_done: Callable[[int], None] | None = None,
    tick: Callable[[], None] | None = None,
) -> list[T]:
    """`play(seed)` for every seed on `workers` spawned processes, each set up by `init(*init_args)`.

    `play` and `init` must be module-level functions (they are pickled by name). `episode(seed)` names the
    episode in the error of a failed one; `on_done(seed)` runs in this process after each finished episode,
    `tick()` every POLL_S seconds while waiting (progress bars)."""
    results: dict[int, T] = {}
    with ProcessPoolExecutor(
        min(workers, max(1, len(seeds))), mp_context=SPAWN, initializer=init, initargs=init_args
    ) as pool:
        pending: dict[Future, int] = {pool.submit(play, seed): seed for seed in seeds}
        while pending:
            done, _ = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
            for future in done:
                seed = pending.pop(future)
                try:
                    results[seed] = future.result()
                except Exception as exc:
                    for other in pending:
                        other.cancel()
                    raise PilotError(f"{episode(seed)}: episode failed: {exc!r}") from exc
                if on_done is not None:
                    on_done(seed)
            if tick is not None:
                tick()
    return [results[seed] for seed in seeds]
