"""The recording loop of `pilot record`: `Recorder` turns frames and input events into episodes, with pause,
split and discard hotkeys; `RecordConfig` is the command's config and `RowBuilder` makes each frame's row.

Row i holds the action taken while frame i was on screen: the events with t_i <= t < t_i+1 (the cursor in
row i is not yet in frame i, as in the expert demos). Why, and the rest of the row contract:
docs/notes/recordings.md, section bot/recordings/record.py.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bot.profile import GameProfile
from bot.recordings.episode import EpisodeMeta, EpisodeWriter
from bot.recordings.input_events import InputEvent, InputSource, format_event, key_name

log = logging.getLogger(__name__)

STEP_COLUMNS = ("held", "keys_down", "buttons_down", "events")
STATUS_EVERY_S = 5.0  # s between progress lines


@dataclass
class RecordConfig:
    """Record human play: the screen through mss, the mouse and keyboard through pynput."""

    game: str = "arena"  # game profile name or YAML path (its keys map to the Action's key index)
    window: str | None = None  # record the window whose title contains this text
    region: str | None = None  # "X,Y,W,H" screen px (used when --window is not given)
    monitor: int | None = None  # mss monitor index (1 = first); default: the profile's window
    fps: float = 30.0  # frames per second
    out: Path = Path("data/recordings")  # episodes go to <out>/<game>/human-<time>-<n>
    seconds: float = 0.0  # stop by itself after this many s (0 = until Ctrl+C / SIGTERM)
    pause_key: str = "f8"  # hotkey: pause / resume (closes the episode; resuming starts a new one)
    split_key: str = "f9"  # hotkey: close this episode and start the next
    discard_key: str = "f10"  # hotkey: delete this episode and start a new one
    perceive: Path | None = None  # detector folder / .onnx: perceive each kept episode after recording
    label: bool = False  # write labels/heuristic.parquet for each kept episode (needs perception)
    crf: int = 20  # H.264 quality (lower = better, larger)
    flush_every: int = 30  # frames between steps.parquet parts (what a kill -9 can lose at most)
    split_s: float = 0.0  # close the episode and start the next every this many s, as --split-key (0 = never)

    def __post_init__(self) -> None:
        if not 0 < self.fps <= 240:
            raise ValueError(f"--fps: expected a number in (0, 240], got {self.fps!r}")
        if self.seconds < 0:
            raise ValueError(f"--seconds: expected >= 0, got {self.seconds!r}")
        if self.region is not None:
            parse_region(self.region)
        if self.monitor is not None and self.monitor < 0:
            raise ValueError(f"--monitor: expected an mss monitor index >= 0, got {self.monitor!r}")
        hotkeys = [self.pause_key, self.split_key, self.discard_key]
        if len(set(hotkeys)) != 3 or not all(hotkeys):
            raise ValueError(
                f"--pause-key/--split-key/--discard-key: expected 3 different keys, got {hotkeys}"
            )
        if not 0 <= self.crf <= 51:
            raise ValueError(f"--crf: expected 0..51, got {self.crf!r}")
        if self.flush_every < 1:
            raise ValueError(f"--flush-every: expected >= 1, got {self.flush_every!r}")
        if not self.split_s >= 0:
            raise ValueError(f"--split-s: expected >= 0 (0 = never), got {self.split_s!r}")

    @property
    def hotkeys(self) -> dict[str, str]:
        """key name -> control ("pause" | "split" | "discard")."""
        return {self.pause_key: "pause", self.split_key: "split", self.discard_key: "discard"}


def parse_region(text: str) -> tuple[int, int, int, int]:
    """ "X,Y,W,H" -> (x, y, w, h) ints with a positive size."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or values[2] <= 0 or values[3] <= 0:
        raise ValueError(f"--region: expected X,Y,W,H integers with W, H > 0, got {text!r}")
    return values  # type: ignore[return-value]


@dataclass
class InputState:
    """What is held and where the cursor is, kept across rows and episodes (screen px)."""

    cursor: tuple[int, int]
    buttons: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)


class RowBuilder:
    """Turns the events of one frame interval into a steps row (Action contract + raw input)."""

    def __init__(
        self, region: Sequence[int], keys: Sequence[str], state: InputState, hold: Sequence[bool] = ()
    ) -> None:
        """`keys`: the physical key of each Action key index (index 0, "none", is never matched);
        `hold`: which of them are held keys (Action v2 `held`) rather than taps."""
        self.region = tuple(region)  # (left, top, width, height) screen px
        self.key_index = {key_name(name): i for i, name in enumerate(keys) if i > 0}
        self.hold_index = {key_name(name): i for i, (name, h) in enumerate(zip(keys, hold)) if i > 0 and h}
        self.state = state
        self.pressed: set[str] = set()  # keys down at some time in this interval (held for its row)
        self.clicks: deque[tuple[int, int]] = deque()  # screen px, waiting for a row
        self.taps: deque[int] = deque()  # key indices, waiting for a row

    def inside(self, x: int, y: int) -> bool:
        left, top, width, height = self.region
        return left <= x < left + width and top <= y < top + height

    def observe(self, event: InputEvent) -> None:
        """Update the held state and the waiting clicks/taps with one (non-hotkey) event."""
        state = self.state
        if event.kind in ("move", "down", "up", "scroll"):
            state.cursor = (event.x, event.y)
        if event.kind == "down":
            state.buttons.add(event.button)
            if event.button == "left" and self.inside(event.x, event.y):
                self.clicks.append((event.x, event.y))
        elif event.kind == "up":
            state.buttons.discard(event.button)
        elif event.kind == "press":
            new = event.key not in state.keys  # auto-repeat is not a tap
            if new and event.key in self.key_index and event.key not in self.hold_index:
                self.taps.append(self.key_index[event.key])
            state.keys.add(event.key)
            self.pressed.add(event.key)
        elif event.kind == "release":
            state.keys.discard(event.key)

    def fraction(self, x: int, y: int) -> tuple[float, float]:
        left, top, width, height = self.region
        fx = min(max((x - left) / width, 0.0), 1.0)  # as the Arena window reads a pixel position
        fy = min(max((y - top) / height, 0.0), 1.0)
        return fx, fy

    def row(self, events: list[InputEvent], t0: float, t: float) -> dict[str, Any]:
        """The row of a frame interval: `events` in it, `t0` the episode's start, `t` the frame's time."""
        self.pressed = set(self.state.keys)  # held in this interval: down at its start, or pressed in it
        for event in events:
            self.observe(event)
        click = bool(self.clicks)
        x, y = self.clicks.popleft() if click else self.state.cursor
        mouse_x, mouse_y = self.fraction(x, y)
        down, self.pressed = self.state.keys | self.pressed, set()
        return dict(
            t=t - t0,
            mouse_x=mouse_x,
            mouse_y=mouse_y,
            click=click,
            key=self.taps.popleft() if self.taps else 0,
            held=sum(1 << i for key, i in self.hold_index.items() if key in down),
            keys_down=sorted(self.state.keys),
            buttons_down=sorted(self.state.buttons),
            events=[format_event(e, t0, self.region) for e in events],
        )

    def reset_waiting(self) -> None:
        self.clicks.clear()
        self.taps.clear()


class FrameSourceLike(Protocol):
    def read(
        self,
    ) -> Any: ...  # bot.perception.capture.Frame (image, t since the source started, index, dropped)


@dataclass
class EpisodeReport:
    """What one recorded episode ended as."""

    path: str
    frames: int
    seconds: float  # s from the first to the last frame
    achieved_fps: float
    dropped_frames: int
    kept: bool  # False when discarded by the hotkey


@dataclass
class WrittenRow:
    """A frame and its row, just written (Recorder's `on_row`): row `index` of the episode at `path`."""

    path: Path
    index: int
    image: np.ndarray  # RGB uint8 (H, W, 3), as written to the video
    row: dict[str, Any]  # the steps row (RowBuilder.row)
    t: float  # the frame's time on the recorder's clock (s)


class _Open:
    """The episode being written: its writer, clock origin, and the frame waiting for its row."""

    def __init__(self, writer: EpisodeWriter, t0: float, dropped0: int) -> None:
        self.writer, self.t0, self.dropped0 = writer, t0, dropped0
        self.pending: tuple[np.ndarray, float] | None = None  # (image, t) of the frame without a row yet
        self.last_t = t0


class Recorder:
    """The capture loop: frames + events -> episodes; hotkeys pause, split and discard.

    `source.read()` gives frames (t relative to its first read); `inputs` gives events on `clock`, the same
    clock the source paces on (time.monotonic for MssSource), so the two line up.
    """

    def __init__(
        self,
        cfg: RecordConfig,
        profile: GameProfile,
        source: Any,
        inputs: InputSource,
        region: Sequence[int],
        clock: Callable[[], float] = time.monotonic,
        ready: Callable[[], None] | None = None,
        on_row: Callable[[WrittenRow], None] | None = None,
    ) -> None:
        """`on_row` is called in the capture loop after each row is written: it must return at once."""
        self.ready, self.on_row = ready, on_row
        self.cfg, self.profile, self.source, self.inputs, self.clock = cfg, profile, source, inputs, clock
        self.region = tuple(int(v) for v in region)
        self.size = (self.region[2] // 2 * 2, self.region[3] // 2 * 2)  # H.264 needs even sizes
        self.hotkeys = cfg.hotkeys
        self.state = InputState(inputs.position())
        keys = [k.key or "none" for k in profile.keys]
        self.rows = RowBuilder(self.region, keys, self.state, [k.hold for k in profile.keys])
        self.episode: _Open | None = None
        self.paused = False
        self.reports: list[EpisodeReport] = []
        self.batch: list[InputEvent] = []  # events of the pending frame's interval
        self.stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        self.dropped = 0
        self._dropped_reported = 0

    # -------------------------------------------------------------------- episodes

    def _new_episode(self, t: float, dropped: int) -> _Open:
        directory = self.cfg.out / self.profile.name / f"human-{self.stamp}-{len(self.reports):02d}"
        meta = EpisodeMeta(
            game=self.profile.name,
            source="human",
            fps=self.cfg.fps,
            width=self.size[0],
            height=self.size[1],
            keys=self.profile.key_names,
            modes=list(self.profile.modes),
            classes=self.profile.class_names,
            region=list(self.region[:2]) + list(self.size),
            extra={
                "recorder": _jsonable(asdict(self.cfg)),
                "hotkeys": self.hotkeys,
                "key_bindings": {k.name: k.key for k in self.profile.keys if k.key},
            },
        )
        writer = EpisodeWriter(
            directory, meta, optional_fields=STEP_COLUMNS, flush_every=self.cfg.flush_every, crf=self.cfg.crf
        )
        self.rows.reset_waiting()  # clicks made before the episode began are not its actions
        log.info("recording %s", directory)
        return _Open(writer, t, dropped)

    def _write_pending(self, until: float) -> None:
        """Give the pending frame its row (the events gathered for it) and write both."""
        episode = self.episode
        if episode is None or episode.pending is None:
            for event in self.batch:
                self.rows.observe(event)
        else:
            image, t = episode.pending
            row = self.rows.row(self.batch, episode.t0, t)
            episode.writer.append(image, row)
            episode.pending, episode.last_t = None, t
            if self.on_row is not None:
                self.on_row(WrittenRow(episode.writer.dir, episode.writer.num_frames - 1, image, row, t))
        self.batch = []

    def _close_episode(self, discard: bool = False) -> None:
        episode, self.episode = self.episode, None
        if episode is None:
            return
        writer = episode.writer
        frames = writer.num_frames
        seconds = episode.last_t - episode.t0
        fps = (frames - 1) / seconds if frames > 1 and seconds > 0 else 0.0
        dropped = self.dropped - episode.dropped0
        writer.meta.extra.update(dropped_frames=dropped, achieved_fps=round(fps, 2))
        writer.close()
        if discard or frames == 0:
            shutil.rmtree(writer.dir, ignore_errors=True)
            log.info("discarded %s (%d frames)", writer.dir, frames)
        else:
            log.info(
                "closed %s: %d frames, %.1f s, %.1f fps, %d dropped",
                writer.dir,
                frames,
                seconds,
                fps,
                dropped,
            )
        kept = not discard and frames > 0
        report = EpisodeReport(str(writer.dir), frames, round(seconds, 3), round(fps, 2), dropped, kept)
        self.reports.append(report)

    def _control(self, action: str, t: float) -> None:
        t0 = self.episode.t0 if self.episode else t
        log.info("hotkey: %s (%.2f s into the episode)", action, t - t0)
        self._write_pending(t)
        if self.paused:
            self.paused = action != "pause"  # resume: the next frame opens a new episode
            return
        self._close_episode(discard=action == "discard")
        self.paused = action == "pause"

    # -------------------------------------------------------------------- loop

    def _consume(self, events: list[InputEvent], now: float) -> None:
        """Sort this interval's events into the pending row, apply hotkeys in time order."""
        for event in events:
            control = self.hotkeys.get(event.key) if event.kind in ("press", "release") else None
            if control is None:
                self.batch.append(event)
            elif event.kind == "press":
                self._control(control, event.t)
        self._write_pending(now)

    def _take_frame(self, frame: Any, now: float) -> None:
        if self.paused:
            return
        if self.episode is None:
            self.episode = self._new_episode(now, self.dropped)
        self.episode.pending = (frame.image[: self.size[1], : self.size[0]], now)

    def run(self, should_stop: Callable[[], bool]) -> list[EpisodeReport]:
        """Record until `should_stop()` or the source ends; every episode is closed on the way out."""
        self.inputs.start()
        log.info("recording: hotkeys %s", ", ".join(f"{k} = {a}" for k, a in self.hotkeys.items()))
        if self.ready is not None:
            self.ready()
        origin = self.clock()  # MssSource starts its clock on the first read, which follows at once
        next_status = origin + STATUS_EVERY_S
        try:
            while not should_stop():
                frame = self.source.read()
                if frame is None:
                    break
                now = origin + frame.t
                self.dropped = frame.dropped
                self._consume(self.inputs.drain(now), now)
                self._auto_split(now)
                self._take_frame(frame, now)
                if now >= next_status:
                    next_status = now + STATUS_EVERY_S
                    self._status(now - origin)
        finally:
            try:
                self._consume(self.inputs.drain(float("inf")), self.clock())
            finally:
                self.inputs.stop()
                self._close_episode()
        return self.reports

    def _auto_split(self, now: float) -> None:
        """--split-s: close the episode once it is that long; the next frame opens a new one."""
        episode = self.episode
        if self.cfg.split_s and episode is not None and now - episode.t0 >= self.cfg.split_s:
            log.info("split after %.1f s (--split-s)", now - episode.t0)
            self._close_episode()

    def _status(self, elapsed: float) -> None:
        frames = self.episode.writer.num_frames if self.episode else 0
        state = "paused" if self.paused else f"episode frames {frames}"
        log.info("%.0f s: %s, dropped so far %d", elapsed, state, self.dropped)
        if self.dropped > self._dropped_reported:
            log.warning("%d frame slot(s) dropped in the last %.0f s: the loop fell behind (CPU busy?)",
                        self.dropped - self._dropped_reported, STATUS_EVERY_S)  # fmt: skip
            self._dropped_reported = self.dropped


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value
