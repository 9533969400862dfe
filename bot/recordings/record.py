"""`pilot record`: record a person playing (screen + mouse + keyboard) into episodes of the shared format;
frame i and the input events of [t_i, t_i+1) make row i (bot/recordings/recorder.py). Hotkeys pause, split
or discard the episode; Ctrl+C / SIGTERM stop cleanly; a crash or kill -9 loses at most the last ~second.

Examples:
    pilot record --game arena                                  # the window titled as in bot/games/arena.yaml
    pilot record --game arena --window "Orbit Pilot Arena" --fps 30 --out data/recordings
    pilot record --game darkorbit --region 0,80,1920,1000 --perceive data/detectors/darkorbit --label
    pilot record --game arena --monitor 1 --seconds 30         # stop by itself after 30 s
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tyro

from bot.errors import PilotError
from bot.profile import GameProfile, load_profile
from bot.recordings.input_events import PynputInput
from bot.recordings.recorder import EpisodeReport, RecordConfig, Recorder, WrittenRow, parse_region

log = logging.getLogger(__name__)


def open_source(cfg: RecordConfig, profile: GameProfile) -> Any:
    """The mss source for --window / --region / --monitor (default: the profile's window)."""
    from bot.perception.capture import MssConfig, MssSource

    if cfg.window or cfg.region or cfg.monitor is not None:
        region = parse_region(cfg.region) if cfg.region else None
        mss_cfg = MssConfig(title=cfg.window, region=region, monitor=cfg.monitor or 1, fps=cfg.fps)
    else:
        mss_cfg = MssConfig.from_profile(profile, fps=cfg.fps)
    return MssSource(mss_cfg)


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGINT (Ctrl+C) and SIGTERM end the recording at the next frame, cleanly."""

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def post_process(cfg: RecordConfig, profile: GameProfile, paths: list[Path]) -> None:
    """--perceive then --label on each kept episode."""
    if cfg.perceive is not None and paths:
        from bot.perception.pipeline import load_detector
        from bot.recordings.perceive import PerceiveConfig, perceive_episode

        detector = load_detector(cfg.perceive, profile)
        for path in paths:
            meta = perceive_episode(
                path, detector, profile, PerceiveConfig(episodes=path, detector=cfg.perceive)
            )
            log.info("perceived %s (%d frames)", path.name, meta["frames"])
    if cfg.label:
        from bot.recordings.labels import label_episode

        for path in paths:
            log.info("labelled %s -> %s", path.name, label_episode(path, profile))


@dataclass
class RecordingSummary:
    """A whole `pilot record` run."""

    episodes: list[EpisodeReport]
    wall_s: float  # s from the first frame grab to the stop
    cpu_s: float  # process CPU time (all threads: capture, listeners, encoder) over that span
    frames: int  # frames written, all episodes
    dropped_frames: int  # frame slots missed, all episodes


def record(
    cfg: RecordConfig,
    stop: threading.Event | None = None,
    ready: Callable[[], None] | None = None,
    on_row: Callable[[WrittenRow], None] | None = None,
) -> RecordingSummary:
    """Open the screen and the input listeners, record until stopped, then post-process.

    `ready()` is called once the listeners run, just before the first frame is grabbed; `on_row` after each
    row is written (Recorder; `pilot shadow` watches the recording through it)."""
    profile = load_profile(cfg.game)
    stop = stop or threading.Event()
    source = open_source(cfg, profile)
    try:
        inputs = PynputInput()
        m = source.monitor
        region = (m["left"], m["top"], m["width"], m["height"])
        recorder = Recorder(cfg, profile, source, inputs, region, ready=ready, on_row=on_row)
        deadline = time.monotonic() + cfg.seconds if cfg.seconds else None
        cpu0, wall0 = time.process_time(), time.monotonic()
        reports = recorder.run(
            lambda: stop.is_set() or (deadline is not None and time.monotonic() >= deadline)
        )
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        log.info(
            "recording: %.1f s wall, %.1f s CPU (%.0f%% of one core)", wall, cpu, 100 * cpu / max(wall, 1e-9)
        )
    finally:
        source.close()
    post_process(cfg, profile, [Path(r.path) for r in reports if r.kept])
    frames = sum(r.frames for r in reports if r.kept)
    return RecordingSummary(reports, round(wall, 2), round(cpu, 2), frames, recorder.dropped)


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(RecordConfig, args=argv, prog="pilot record", description=__doc__)
    stop = threading.Event()
    install_stop_handlers(stop)
    summary = record(cfg, stop, ready=lambda: print("pilot record: recording", file=sys.stderr, flush=True))
    for report in summary.episodes:
        print(json.dumps(asdict(report)))
    totals = {k: v for k, v in asdict(summary).items() if k != "episodes"}
    print(json.dumps({"kept_episodes": sum(r.kept for r in summary.episodes), **totals}))
    if not any(r.kept for r in summary.episodes):
        raise PilotError("no episode was recorded (stopped before the first frame, or every one discarded)")
    return 0
