"""`pilot shadow`: while a person plays, record them as `pilot record` does and let a policy bundle predict
every frame without acting (no input is ever sent); a background process fine-tunes a copy of the bundle on
the growing recording and the predictor picks up each new version between frames. Agreement of the bot with
the person (mode, target, click position) is written per window to <out>/agreement.csv and agreement.json.
Ctrl+C / SIGTERM stop everything; the recording is kept. Why it works this way: docs/notes/play.md.

Examples:
    pilot shadow --game arena --policy data/pretrained/arena --out data/shadow/arena
    pilot shadow --game arena --policy P --overlay window --labels modes.jsonl --chunk-s 30 --window-s 10
    pilot shadow --game darkorbit --policy P --region 0,80,1920,1000 --overlay overlay.mp4 --no-train
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tyro

from bot.errors import PilotError
from bot.play.agreement import AgreementLog, FrameRecord, PersonLabels, object_at
from bot.play.shadow_train import BackgroundTrainer, TrainerSettings, newest_version
from bot.recordings.record import install_stop_handlers, record
from bot.recordings.recorder import RecordConfig, WrittenRow, parse_region

if TYPE_CHECKING:  # torch and the detector stack: imported when the command runs
    from bot.play.overlay import Overlay
    from bot.policy.bundle import PolicyBundle
    from bot.policy.runner import PolicyRunner

log = logging.getLogger(__name__)

RELOAD_CHECK_S = 1.0  # s between looks for a newer version
CLICK_ROLES = ("enemy", "loot")  # classes a click acts on: the person's target when clicked
PERSON_COLOUR = (60, 255, 120)  # RGB: the person's cursor, click target and mode on the overlay


@dataclass
class ShadowConfig:
    """Record a person playing while a policy bundle predicts beside them and learns from them."""

    policy: Path  # the policy bundle to shadow with (`pilot train policy --out`)
    game: str = "arena"  # game profile name; must be the bundle's
    out: Path = Path("data/shadow")  # recordings/, checkpoints/, agreement.csv/json, config.json go here
    window: str | None = None  # capture the window whose title contains this (default: the profile's)
    region: str | None = None  # capture this screen region instead: "X,Y,W,H" px
    monitor: int | None = None  # mss monitor index (1 = first); default: the profile's window
    fps: float = 30.0  # frames recorded (and predicted) per second
    seconds: float = 0.0  # stop by itself after this many s (0 = until Ctrl+C / SIGTERM)
    overlay: str = ""  # "window" (beside the game) or FILE.mp4: the bot's and the person's cursor/target/mode
    labels: Path | None = None  # JSON lines {"t": unix s, "mode": M} the person writes as they play
    window_s: float = 10.0  # s of play per agreement window
    hit_radius: float = 40.0  # px: a bot aim this close to the person's click is a hit
    chunk_s: float = 30.0  # s per recorded episode: each finished one is trained on (--split-s of record)
    train: bool = True  # fine-tune in the background (--no-train: predict and measure only)
    train_steps: int = 40  # optimizer steps per model per training round
    train_args: str = ""  # more `pilot train policy` flags per round: --train-args="--executor.train.lr 3e-3"
    nice: int = 10  # niceness added to the training processes
    backlog_s: float = 4.0  # s of frames the predictor may fall behind before it drops the oldest
    warm_s: float = 10.0  # s of recent frames a new version is run over before it takes over
    runtime: str = "auto"  # detector runtime: auto, onnx, torch
    threads: int = 1  # detector threads (0 = the runtime's default)

    def __post_init__(self) -> None:
        for name in ("fps", "window_s", "hit_radius", "chunk_s", "backlog_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"ShadowConfig.{name}: expected a number > 0, got {value!r}")
        for name in ("seconds", "warm_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value >= 0):
                raise ValueError(f"ShadowConfig.{name}: expected a number >= 0, got {value!r}")
        for name, low in (("train_steps", 1), ("nice", 0), ("threads", 0)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < low:
                raise ValueError(
                    f"ShadowConfig.{name}: expected an int >= {low}, got {getattr(self, name)!r}"
                )
        if self.overlay and self.overlay != "window" and not self.overlay.endswith(".mp4"):
            raise ValueError(f"ShadowConfig.overlay: expected 'window' or a FILE.mp4, got {self.overlay!r}")
        if self.region is not None:
            parse_region(self.region)
        if self.labels is not None and not Path(self.labels).parent.is_dir():
            raise ValueError(f"ShadowConfig.labels: expected a file in an existing folder, got {self.labels}")

    def record_config(self) -> RecordConfig:
        """The recording, exactly as `pilot record` makes it, cut into --chunk-s episodes."""
        return RecordConfig(game=self.game, window=self.window, region=self.region, monitor=self.monitor,
                            fps=self.fps, out=self.out / "recordings", seconds=self.seconds,
                            split_s=self.chunk_s)  # fmt: skip


def load_bundle(cfg: ShadowConfig) -> PolicyBundle:
    """The bundle, checked against --game; PilotError with one line otherwise."""
    from bot.policy.bundle import PolicyBundle

    bundle = PolicyBundle.load(cfg.policy)
    if bundle.profile.name != cfg.game:
        raise PilotError(f"--game: the bundle {cfg.policy} plays {bundle.profile.name!r}, got {cfg.game!r}")
    if bundle.detector_path is None:
        raise PilotError(f"--policy: the bundle {cfg.policy} records no detector, it cannot see the game")
    return bundle


class Predictor:
    """A thread that perceives each recorded frame and runs the policy on it, never blocking capture:
    `put()` only queues (the oldest frame is dropped past --backlog-s)."""

    def __init__(self, cfg: ShadowConfig, bundle: PolicyBundle, agreement: AgreementLog) -> None:
        from bot.policy.runner import PolicyRunner

        self.cfg, self.bundle, self.profile, self.agreement = cfg, bundle, bundle.profile, agreement
        self.detector = bundle.detector(cfg.runtime, cfg.threads)
        self.runner: PolicyRunner = PolicyRunner(bundle)
        self.base_runner = self.runner  # the control: the bundle given, stepped on every frame
        self.version, self.checkpoints = "base", cfg.out / "checkpoints"
        self.labels = PersonLabels(cfg.labels, bundle.modes) if cfg.labels else None
        self.targets = {i for i, c in enumerate(self.profile.classes) if c.role in CLICK_ROLES}
        self.queue: deque[WrittenRow] = deque()
        self.cond = threading.Condition()
        self.max_queue = max(1, int(cfg.backlog_s * cfg.fps))
        self.recent: deque[Any] = deque(maxlen=max(1, int(cfg.warm_s * cfg.fps)))
        self.starts: dict[Path, float] = {}  # episode -> its t = 0 as unix time
        self.wall = time.time() - time.monotonic()  # the recorder's clock (monotonic) -> unix time
        self.perception: Any = None
        self.overlay: Overlay | None = None
        self.origin: float | None = None
        self.hand: tuple[tuple[float, float], bool] = ((0.5, 0.5), False)  # the person's, before the frame
        self.frames, self.dropped, self.reloads = 0, 0, 0
        self.next_check, self.stopping, self.error = 0.0, False, None
        self.skipped: set[str] = set()  # versions that failed to load
        self.thread = threading.Thread(target=self._run, name="shadow-predictor", daemon=True)

    def put(self, item: WrittenRow) -> None:
        """Recorder's on_row (the capture thread): queue the frame and return at once."""
        self.starts.setdefault(item.path, self.wall + item.t - float(item.row["t"]))
        with self.cond:
            if len(self.queue) >= self.max_queue:
                self.queue.popleft()
                self.dropped += 1
            self.queue.append(item)
            self.cond.notify()

    def stop(self) -> None:
        """Predict what is still queued, then end the thread and close the overlay."""
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join()

    def _run(self) -> None:
        try:
            while (item := self._next()) is not None:
                self._maybe_reload()
                self._predict(item)
        except Exception as exc:  # noqa: BLE001 - reported by run_shadow; capture goes on meanwhile
            self.error = exc
            log.exception("shadow predictor failed; recording goes on")
        finally:
            if self.overlay is not None:
                self.overlay.close()

    def _next(self) -> WrittenRow | None:
        with self.cond:
            while not self.queue and not self.stopping:
                self.cond.wait(0.5)
            return self.queue.popleft() if self.queue else None

    def _predict(self, item: WrittenRow) -> None:
        h, w = item.image.shape[:2]
        if self.perception is None:
            self._open(item)
        self.origin = item.t if self.origin is None else self.origin
        step = self.perception.step(item.image, self.hand[0], self.hand[1], item.t - self.origin)
        decision = self.runner.act(step)
        base = decision if self.runner is self.base_runner else self.base_runner.act(step)
        self.recent.append(step)
        row = item.row
        self.hand = ((float(row["mouse_x"]), float(row["mouse_y"])), bool(row["click"]))
        click = (row["mouse_x"] * w, row["mouse_y"] * h) if row["click"] else None
        record = FrameRecord(
            t=item.t - self.origin, version=self.version, bot_mode=decision.mode,
            bot_target=int(decision.target_id), bot_mouse=(decision.mouse[0] * w, decision.mouse[1] * h),
            person_mode=self._person_mode(item.t), person_click=click,
            person_target=None if click is None else self._clicked(step, click),
            person_mouse=(row["mouse_x"] * w, row["mouse_y"] * h), base_mode=base.mode,
            base_target=int(base.target_id), base_mouse=(base.mouse[0] * w, base.mouse[1] * h),
        )  # fmt: skip
        self.agreement.add(record)
        self.frames += 1
        if self.overlay is not None:
            self.overlay.put(draw_person(item.image, step, record), step, decision, self._status(record))

    def _open(self, item: WrittenRow) -> None:
        from bot.perception.pipeline import Perception
        from bot.play.overlay import Overlay
        from bot.recordings.episode import EpisodeMeta

        h, w = item.image.shape[:2]
        self.perception = Perception(self.profile, self.detector, (w, h), self.cfg.fps)
        if self.cfg.overlay:
            region = tuple(EpisodeMeta.from_json(item.path / "meta.json").region)
            self.overlay = Overlay(self.cfg.overlay, (w, h), self.cfg.fps, region, self.profile)

    def _person_mode(self, t: float) -> str | None:
        if self.labels is None:
            return None
        self.labels.refresh()
        return self.labels.mode_at(self.wall + t)

    def _clicked(self, step: Any, click: tuple[float, float]) -> int | None:
        tracks = step.tracks
        keep = [i for i, c in enumerate(tracks.cls) if int(c) in self.targets]
        return object_at(click, tracks.xyxy[keep], tracks.id[keep])

    def _status(self, record: FrameRecord) -> str:
        person = f"person {record.person_mode or '-'}"
        if record.person_target is not None:
            person += f" clicked #{record.person_target}"
        return f"SHADOW {self.version} (no input sent) | {person}"

    def _maybe_reload(self) -> None:
        """Between frames: the newest version, run over the last --warm-s of frames, takes over."""
        now = time.monotonic()
        if now < self.next_check:
            return
        self.next_check = now + RELOAD_CHECK_S
        newest = newest_version(self.checkpoints)
        if newest is None or newest.name == self.version or newest.name in self.skipped:
            return
        from bot.policy.bundle import PolicyBundle
        from bot.policy.runner import PolicyRunner

        try:
            runner = PolicyRunner(PolicyBundle.load(newest))
        except PilotError as exc:
            log.warning("shadow: %s not loaded (%s); keeping %s", newest.name, exc, self.version)
            self.skipped.add(newest.name)
            return
        for step in self.recent:
            runner.act(step)
        self.runner, self.version = runner, newest.name
        self.reloads += 1
        log.info("shadow: predicting with %s now (warmed over %d frames)", newest.name, len(self.recent))


def draw_person(image: Any, step: Any, record: FrameRecord) -> Any:
    """A copy of `image` with the person's pointer (an x), click (a ring), the object it hit (a box) and mode
    label; Overlay then draws the bot's on top (a + for its aim, a red box for its target, its mode)."""
    import cv2

    out = image.copy()
    if record.person_mouse is not None:
        x, y = (int(round(v)) for v in record.person_mouse)
        cv2.drawMarker(out, (x, y), PERSON_COLOUR, cv2.MARKER_TILTED_CROSS, 14, 2)
    if record.person_click is not None:
        x, y = (int(round(v)) for v in record.person_click)
        cv2.circle(out, (x, y), 9, PERSON_COLOUR, 2, cv2.LINE_AA)
    if record.person_target is not None:
        row = list(step.tracks.id).index(record.person_target)
        x1, y1, x2, y2 = (int(round(v)) for v in step.tracks.xyxy[row])
        cv2.rectangle(out, (x1 - 3, y1 - 3), (x2 + 3, y2 + 3), PERSON_COLOUR, 2)
    text = f"person: {record.person_mode or '-'}"
    cv2.putText(
        out, text, (10, out.shape[0] - 30), cv2.FONT_HERSHEY_SIMPLEX, 0.5, PERSON_COLOUR, 1, cv2.LINE_AA
    )
    return out


def _trainer(cfg: ShadowConfig, bundle: PolicyBundle, starts: dict[Path, float]) -> BackgroundTrainer:
    hz = bundle.inference.tactician_hz
    settings = TrainerSettings(cfg.game, cfg.train_steps, hz, cfg.nice, cfg.train_args)
    labels = PersonLabels(cfg.labels, bundle.modes) if cfg.labels else None
    assert bundle.detector_path is not None, "load_bundle checks it"
    return BackgroundTrainer(settings, cfg.out / "recordings", cfg.out / "checkpoints", cfg.policy,
                             bundle.detector_path, labels, starts)  # fmt: skip


def run_shadow(cfg: ShadowConfig, stop: threading.Event | None = None) -> dict[str, Any]:
    """Record, predict and fine-tune until stopped; returns the summary (also in agreement.json)."""
    bundle = load_bundle(cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "config.json").write_text(json.dumps(asdict(cfg), default=str, indent=2) + "\n")
    agreement = AgreementLog(cfg.out, cfg.window_s, cfg.hit_radius)
    predictor = Predictor(cfg, bundle, agreement)
    trainer = _trainer(cfg, bundle, predictor.starts) if cfg.train else None
    predictor.thread.start()
    try:
        if trainer is not None:
            trainer.start()
        ready = lambda: print("pilot shadow: recording", file=sys.stderr, flush=True)  # noqa: E731
        recording = record(cfg.record_config(), stop, ready=ready, on_row=predictor.put)
    finally:
        if trainer is not None:
            trainer.stop()
        predictor.stop()
    extra = {
        "recording": {"episodes": [r.path for r in recording.episodes if r.kept], "frames": recording.frames,
                      "dropped_frames": recording.dropped_frames, "wall_s": recording.wall_s},
        "predicted_frames": predictor.frames, "predictor_dropped": predictor.dropped,
        "versions_loaded": predictor.reloads, "final_version": predictor.version,
        "training_rounds": trainer.rounds if trainer else 0,
        "failed_rounds": trainer.failed_rounds if trainer else 0,
    }  # fmt: skip
    content = agreement.write(extra)
    agreement.frames_file()
    if predictor.error is not None:
        raise PilotError(f"the predictor failed: {predictor.error!r} (the recording is kept)")
    return content


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(ShadowConfig, args=argv, prog="pilot shadow", description=__doc__)
    stop = threading.Event()
    install_stop_handlers(stop)
    content = run_shadow(cfg, stop)
    summary = content["summary"]
    for name in ("first", "last"):
        window = summary[name] or {}
        print(json.dumps({name: {k: window.get(k) for k in ("window", "version", "mode_agreement",
              "target_agreement", "click_error_px", "click_hit_rate")}}))  # fmt: skip
    print(json.dumps({k: v for k, v in content.items() if k not in ("windows", "summary")}))
    return 0
