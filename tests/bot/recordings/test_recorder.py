"""The recording loop (bot/recordings/recorder.py): event -> row alignment, hotkeys that split, discard and
pause without being recorded, and the config's checks. Frames and events come from fakes on one clock."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bot.profile import load_profile
from bot.recordings.episode import find_episodes, open_episode
from bot.recordings.input_events import EventBuffer, InputEvent, parse_event
from bot.recordings.recorder import RecordConfig, Recorder, parse_region

FPS = 30
REGION = (100, 50, 320, 180)  # left, top, width, height: events are screen px, rows region fractions


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSource:
    """Frames on a perfect 1/FPS grid; each read moves the shared clock to the frame's time."""

    def __init__(self, clock: FakeClock, frames: int) -> None:
        self.clock, self.frames, self.index = clock, frames, 0
        self.start = clock.now

    def read(self) -> SimpleNamespace | None:
        if self.index >= self.frames:
            return None
        t = self.index / FPS
        self.clock.now = self.start + t
        image = np.full((REGION[3], REGION[2], 3), self.index % 256, np.uint8)
        frame = SimpleNamespace(image=image, t=t, index=self.index, dropped=0)
        self.index += 1
        return frame


class ScriptedInput:
    """Events at given times (s after the first frame), delivered through the real EventBuffer."""

    def __init__(self, clock: FakeClock, script: list[InputEvent]) -> None:
        self.clock, self.buffer = clock, EventBuffer()
        for event in script:
            event.t += clock.now
            self.buffer.push(event)
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def position(self) -> tuple[int, int]:
        return (REGION[0] + 160, REGION[1] + 90)

    def drain(self, until: float) -> list[InputEvent]:
        return self.buffer.drain(until)


def record_script(
    tmp_path: Path, script: list[InputEvent], frames: int = 30, game: str = "arena", **cfg
) -> Recorder:
    clock = FakeClock()
    config = RecordConfig(out=tmp_path, fps=FPS, flush_every=10, **cfg)
    inputs = ScriptedInput(clock, script)
    recorder = Recorder(config, load_profile(game), FakeSource(clock, frames), inputs, REGION, clock=clock)
    recorder.run(lambda: False)
    assert inputs.started and inputs.stopped
    return recorder


def click(t: float, x: int, y: int) -> list[InputEvent]:
    return [InputEvent(t, "down", x, y, button="left"), InputEvent(t + 0.001, "up", x, y, button="left")]


def tap(t: float, key: str) -> list[InputEvent]:
    return [InputEvent(t, "press", key=key), InputEvent(t + 0.01, "release", key=key)]


def steps_of(path: str | Path) -> list[dict]:
    return open_episode(path).steps().to_pylist()


def test_events_land_in_the_row_of_their_frame_interval(tmp_path: Path) -> None:
    # frame i is grabbed at i/30 s; an event at 0.05 s lies in [1/30, 2/30): row 1
    script = [InputEvent(0.02, "move", 180, 140)] + click(0.05, 260, 95) + tap(0.12, "space")
    script += [InputEvent(0.2, "press", key="1"), InputEvent(0.25, "press", key="1")]  # auto-repeat
    script += [InputEvent(0.30, "release", key="1")] + click(0.40, 10, 10)  # outside the region
    script += click(0.50, 120, 60) + click(0.51, 140, 70)  # two clicks in one interval
    recorder = record_script(tmp_path, script)
    [report] = recorder.reports
    assert report.kept and report.frames == 30 and report.dropped_frames == 0
    rows = steps_of(report.path)
    assert [r["frame"] for r in rows] == list(range(30))
    assert rows[0]["t"] == 0.0 and rows[29]["t"] == pytest.approx(29 / FPS)
    assert rows[0]["events"] == ["0.0200 move 80 90"]  # region px, episode seconds
    assert rows[0]["mouse_x"] == pytest.approx(0.25) and rows[0]["mouse_y"] == pytest.approx(
        0.5
    )  # at its end
    assert rows[1]["click"] and rows[1]["mouse_x"] == pytest.approx(160 / 320)
    assert rows[1]["mouse_y"] == pytest.approx(45 / 180)
    assert [parse_event(e)["kind"] for e in rows[1]["events"]] == ["down", "up"]
    attack, repair = (load_profile("arena").key_index(k) for k in ("attack", "repair"))
    assert rows[3]["key"] == attack and rows[3]["keys_down"] == []  # pressed and released in the interval
    assert [r["key"] for r in rows].count(repair) == 1  # the auto-repeated press is not a second tap
    assert rows[7]["keys_down"] == ["1"]
    assert not rows[12]["click"] and rows[12]["events"][0].endswith("down left -90 -40")
    assert rows[15]["click"] and rows[16]["click"]  # the second click waits for the next row
    assert rows[16]["mouse_x"] == pytest.approx(40 / 320) and rows[16]["mouse_y"] == pytest.approx(20 / 180)
    assert sum(r["click"] for r in rows) == 3
    meta = open_episode(report.path).meta
    assert (
        meta.source == "human"
        and meta.region == list(REGION)
        and meta.keys == ["none", "attack", "repair", "boost"]
    )
    assert meta.extra["dropped_frames"] == 0 and meta.extra["key_bindings"]["attack"] == "space"


def test_hotkeys_split_discard_and_pause_and_are_not_recorded(tmp_path: Path) -> None:
    script = tap(0.10, "space") + tap(0.31, "f9")  # split: episode A = frames 0..9
    script += click(0.40, 200, 100) + tap(0.61, "f10")  # discard: episode B is deleted
    script += tap(0.80, "f8") + click(0.9, 200, 100) + tap(1.01, "f8")  # pause: nothing of 0.8..1.01 kept
    script += tap(1.2, "2")  # in episode C
    recorder = record_script(tmp_path, script, frames=45)
    reports = recorder.reports
    assert [r.kept for r in reports] == [True, False, True, True]
    a, b, c, d = reports
    assert not Path(b.path).exists() and a.frames == 10 and c.frames == 6  # 0.6 .. 0.8 s
    assert d.frames == 14  # resumed at 1.0333 s (the first frame after 1.01 s)
    for report in (a, c, d):
        for row in steps_of(report.path):
            kinds = [parse_event(e) for e in row["events"]]
            assert not any(e.get("key") in ("f8", "f9", "f10") for e in kinds)
            assert not set(row["keys_down"]) & {"f8", "f9", "f10"}
    assert sum(r["key"] for r in steps_of(a.path)) == 1
    assert not any(r["click"] for r in steps_of(c.path))  # the click during the pause is not in any episode
    assert [r["key"] for r in steps_of(d.path)].count(load_profile("arena").key_index("boost")) == 1
    assert len(find_episodes(tmp_path)) == 3


def test_held_keys_of_a_game_flown_with_keys_held_are_recorded_as_held_not_tapped(tmp_path: Path) -> None:
    script = [InputEvent(0.05, "press", key="w"), InputEvent(0.06, "press", key="d")]
    script += [InputEvent(0.101, "press", key="w")]  # auto-repeat while held
    script += [InputEvent(0.2, "release", key="d"), InputEvent(0.26, "press", key="space")]
    script += [InputEvent(0.27, "release", key="space")]
    script += [InputEvent(0.3, "release", key="w")] + tap(0.4, "r")
    record_script(tmp_path, script, frames=15, game="naev")
    steps = steps_of(find_episodes(tmp_path)[0])
    profile = load_profile("naev")
    held = [profile.held_keys(s["held"]) for s in steps]
    assert held[0] == set() and held[2] == {"w", "d"} and held[6] == {"w", "d"}, "d let go during frame 6"
    assert held[7] == held[8] == {"w", "space"}, "space down at 0.26 s, up at 0.27 s: frames 7 and 8"
    assert held[9] == {"w"} and held[10:] == [set()] * 5, "a key let go in a frame still counts in it"
    taps = [(i, s["key"]) for i, s in enumerate(steps) if s["key"]]
    assert taps == [(12, profile.key_names.index("target"))], "held keys are never taps; r is"


def test_config_validates() -> None:
    assert parse_region("0,10,640,360") == (0, 10, 640, 360)
    with pytest.raises(ValueError, match="--region"):
        RecordConfig(region="0,0,640")
    with pytest.raises(ValueError, match="--fps"):
        RecordConfig(fps=0)
    with pytest.raises(ValueError, match="3 different keys"):
        RecordConfig(pause_key="f9")


def test_split_s_cuts_episodes_and_on_row_sees_every_row_as_written(tmp_path: Path) -> None:
    # `pilot shadow` records through these two: --split-s chunks, on_row feeds its predictor
    clock = FakeClock()
    config = RecordConfig(out=tmp_path, fps=FPS, flush_every=10, split_s=0.5)
    seen = []
    source, inputs = FakeSource(clock, 40), ScriptedInput(clock, click(0.6, 200, 100))
    profile = load_profile("arena")
    recorder = Recorder(config, profile, source, inputs, REGION, clock=clock, on_row=seen.append)
    recorder.run(lambda: False)
    reports = recorder.reports
    assert [r.frames for r in reports] == [15, 15, 10] and all(r.kept for r in reports)
    assert [(Path(s.path), s.index) for s in seen] == [
        (Path(r.path), i) for r in reports for i in range(r.frames)
    ]
    for item in seen:  # the row as stored, the frame as encoded, at the frame's time on the recorder's clock
        stored = steps_of(item.path)[item.index]
        assert item.row["click"] == stored["click"] and item.row["t"] == pytest.approx(stored["t"])
        assert item.image[0, 0, 0] == (seen.index(item)) % 256
        assert item.t == pytest.approx(1000.0 + seen.index(item) / FPS)
    assert [s.row["click"] for s in seen].count(True) == 1
    with pytest.raises(ValueError, match="--split-s"):
        RecordConfig(split_s=-1)
