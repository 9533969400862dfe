"""Naev as a game the commands can drive: one demonstration episode recorded, one scored episode played.

`pilot demos --game naev` and `pilot eval --game naev` call these in worker processes (each worker runs its
own Naev on its own private Xvfb), the same way they call the Arena's.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bot.games.bundle_player import BundlePlayer
from bot.games.naev.episode import EXPERT_FIELDS, STEP_FIELDS, EpisodeResult, run_episode
from bot.games.naev.overlay import NaevScenario
from bot.games.naev.pilot import NaevPilot, NaevPilotConfig, RandomPilot
from bot.games.naev.probe import ProbeError
from bot.games.naev.session import NaevConfig, NaevSession
from bot.games.player import Player
from bot.games.processes import ProcessError
from bot.profile import load_profile
from bot.recordings.episode import EpisodeMeta, EpisodeWriter

log = logging.getLogger(__name__)

PILOTS = ("scripted", "random")
SETTLE_S = 1.0  # s after reaching space before an episode starts (the first spawns approach)


def make_player(kind: str, seed: int, size: tuple[int, int] = (1280, 720)) -> Player:
    """ "scripted", "random", or the path of a policy bundle (it plays from the screen alone)."""
    if kind == "scripted":
        return NaevPilot(NaevPilotConfig(seed=seed))
    if kind == "random":
        return RandomPilot(seed=seed)
    if Path(kind).is_dir():
        return BundlePlayer(Path(kind), "naev", size)
    raise ValueError(f"pilot: expected one of {PILOTS} or a policy bundle folder, got {kind!r}")


def _session(seed: int, width: int, height: int, headless: bool, work: Path | None) -> NaevSession:
    return NaevSession(
        NaevScenario(seed=seed), NaevConfig(width=width, height=height, headless=headless, work=work)
    )


def _backend() -> Any:
    from bot.control.backend import PynputBackend

    return PynputBackend()


def launch(seed: int = 0, width: int = 1280, height: int = 720, headless: bool = True) -> NaevSession:
    """Naev in its scenario, for a player that sees only the screen (`pilot run --launch`): a context manager
    whose `region` is where the game is drawn; the probe keeps writing, nobody reads it."""
    return _session(seed, width, height, headless, None)


def play(
    seed: int, seconds: float, pilot: str = "scripted", width: int = 1280, height: int = 720,
    headless: bool = True, out: Path | None = None, work: Path | None = None,
    stop_when: Callable[[EpisodeResult], bool] | None = None, label_with: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Start Naev, play one episode with `pilot`, stop Naev; write the episode to `out` when given, and with
    `label_with` ("scripted": DAgger) what that pilot would have done on every frame.

    Returns the episode's score summary. Ctrl+C or an error removes a half-written `out` (a rerun plays it
    again) and always stops Naev and its display."""
    import time

    profile = load_profile("naev")
    with _session(seed, width, height, headless, work) as session:
        backend = _backend()
        time.sleep(SETTLE_S)
        writer = _writer(out, profile, session, seed, pilot, label_with) if out is not None else None
        labeller = make_player(label_with, seed) if label_with else None
        try:
            result = run_episode(
                session, make_player(pilot, seed), profile, seconds, backend, writer, stop_when, labeller
            )
        except (ProcessError, ProbeError) as exc:
            if writer is None:
                raise
            writer.meta.extra["ended"] = str(exc)  # the game crashed or froze: keep what was recorded
            frames = writer.close().frames
            raise type(exc)(f"{out}: {exc}; the episode is kept up to frame {frames}") from None
        except BaseException:
            if (
                writer is not None
            ):  # Ctrl+C: a shortened demo is not the one asked for; a rerun plays it again
                writer.close()
                shutil.rmtree(out, ignore_errors=True)
            raise
        finally:
            backend.close()
        if writer is not None:
            writer.close()
    return {"seed": seed, "pilot": pilot, **result.to_dict()}


def _writer(
    out: Path, profile: Any, session: NaevSession, seed: int, pilot: str, label_with: str | None = None
) -> EpisodeWriter:
    width, height = session.region[2], session.region[3]
    meta = EpisodeMeta(
        game="naev", source="expert" if pilot == "scripted" else "bot", fps=profile.fps, width=width,
        height=height, keys=profile.key_names, modes=list(profile.modes), classes=profile.class_names,
        region=list(session.region), seed=seed,
        extra={"scenario": asdict(session.scenario), "pilot": pilot, "naev": "0.8.2", "labeller": label_with},
    )  # fmt: skip
    fields = STEP_FIELDS + (EXPERT_FIELDS if label_with else ())
    return EpisodeWriter(out, meta, optional_fields=fields)


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread of the score a minute, kills and deaths over episodes."""
    import numpy as np

    per_min = np.array([r["score_per_min"] for r in results], float)
    return {
        "episodes": len(results),
        "score_per_min_mean": float(per_min.mean()) if len(per_min) else 0.0,
        "score_per_min_std": float(per_min.std()) if len(per_min) else 0.0,
        "kills_per_min": float(np.mean([r["kills"] * 60.0 / r["seconds"] for r in results]))
        if results
        else 0.0,
        "deaths_per_min": float(np.mean([r["deaths"] * 60.0 / r["seconds"] for r in results]))
        if results
        else 0.0,
    }
