"""Arena episodes on spawned worker processes: the one pool of `pilot demos`, `pilot eval` and `pilot dagger`.

Each worker is set up once by an initializer (building a player is the expensive part), then plays seeds as
they come. Results come back in seed order. The first episode that fails, or Ctrl+C, ends the run: no
episode starts after that (also none the pool had already handed to a worker), the ones playing finish or
stop on their own Ctrl+C, and a failure raises a PilotError naming its episode.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

from bot.errors import PilotError
from bot.games.processes import die_with_parent
from bot.logs import setup_logging

SPAWN = mp.get_context("spawn")  # no inherited threads or SDL state in the workers
POLL_S = 0.2  # how often `tick` runs while episodes play

T = TypeVar("T")

_STOP: Any = None  # in a worker: the run's stop event, set once the run is ending


class Stopped(Exception):
    """An episode that did not start because the run was ending."""


def _init(stop: Any, init: Callable[..., None], init_args: tuple[Any, ...]) -> None:
    global _STOP
    _STOP = stop
    setup_logging()  # a spawned worker starts with no handlers: its warnings would be lost
    die_with_parent()  # a SIGKILLed `pilot` takes its workers (and so their games) with it
    init(*init_args)


def _play_unless_stopped(play: Callable[[int], T], seed: int) -> T:
    if _STOP.is_set():
        raise Stopped(seed)
    return play(seed)


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
    fresh: bool = False,
) -> list[T]:
    """`play(seed)` for every seed on `workers` spawned processes, each set up by `init(*init_args)`.

    `play` and `init` must be module-level functions (they are pickled by name). `episode(seed)` names the
    episode in the error of a failed one; `on_done(seed)` runs in this process after each finished episode,
    `tick()` every POLL_S seconds while waiting (progress bars); `fresh` plays each seed in a new process
    (a real game's X connections, threads and environment then never outlive its episode)."""
    results: dict[int, T] = {}
    stop = SPAWN.Event()
    size, setup = min(workers, max(1, len(seeds))), (stop, init, init_args)
    per_child = 1 if fresh else None
    with ProcessPoolExecutor(
        size, mp_context=SPAWN, initializer=_init, initargs=setup, max_tasks_per_child=per_child
    ) as pool:
        pending: dict[Future, int] = {pool.submit(_play_unless_stopped, play, seed): seed for seed in seeds}
        try:
            while pending:
                done, _ = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
                for future in done:
                    seed = pending.pop(future)
                    try:
                        results[seed] = future.result()
                    except Exception as exc:
                        raise PilotError(f"{episode(seed)}: episode failed: {exc!r}") from exc
                    if on_done is not None:
                        on_done(seed)
                if tick is not None:
                    tick()
        except BaseException:  # a failure, or Ctrl+C here or in a worker
            stop.set()
            for future in pending:
                future.cancel()
            raise
    return [results[seed] for seed in seeds]
