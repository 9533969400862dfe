"""Recording human play (bot/recordings/record.py): event -> row alignment, hotkeys, crash safety, and the
real thing
under Xvfb (the Arena window driven by xdotool, recorded by `pilot record`, perceived, trained on)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bot.profile import load_profile
from bot.recordings.episode import find_episodes, open_episode
from bot.recordings.episodes import check_episode
from bot.recordings.record import (
    EventBuffer,
    InputEvent,
    RecordConfig,
    Recorder,
    format_event,
    key_name,
    parse_event,
    parse_region,
)

from processes import StderrLines

REPO = Path(__file__).resolve().parents[3]
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


def record_script(tmp_path: Path, script: list[InputEvent], frames: int = 30, **cfg) -> Recorder:
    clock = FakeClock()
    config = RecordConfig(out=tmp_path, fps=FPS, flush_every=10, **cfg)
    inputs = ScriptedInput(clock, script)
    recorder = Recorder(config, load_profile("arena"), FakeSource(clock, frames), inputs, REGION, clock=clock)
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


def test_event_text_round_trip_and_key_names() -> None:
    event = InputEvent(12.5, "scroll", 130, 70, dx=0, dy=-1)
    assert parse_event(format_event(event, 10.0, REGION)) == {
        "t": 2.5, "kind": "scroll", "dx": 0, "dy": -1, "x": 30, "y": 20,
    }  # fmt: skip
    assert key_name(SimpleNamespace(name="ctrl_l")) == "ctrl" and key_name(SimpleNamespace(name="f9")) == "f9"
    assert key_name(SimpleNamespace(name=None, char="B")) == "b"
    assert key_name(SimpleNamespace(name=None, char=None, vk=65027)) == "vk65027"


def test_event_buffer_sorts_and_keeps_later_events() -> None:
    buffer = EventBuffer()
    for t in (3.0, 1.0, 2.0):
        buffer.push(InputEvent(t, "move"))
    assert [e.t for e in buffer.drain(2.5)] == [1.0, 2.0]
    assert [e.t for e in buffer.drain(10.0)] == [3.0]


def test_config_validates() -> None:
    assert parse_region("0,10,640,360") == (0, 10, 640, 360)
    with pytest.raises(ValueError, match="--region"):
        RecordConfig(region="0,0,640")
    with pytest.raises(ValueError, match="--fps"):
        RecordConfig(fps=0)
    with pytest.raises(ValueError, match="3 different keys"):
        RecordConfig(pause_key="f9")


# ------------------------------------------------------------------------------------------------ X display


def _start_recorder(out: Path, *args: str) -> tuple[subprocess.Popen, StderrLines]:
    cmd = [sys.executable, "-m", "bot.cli", "record", "--game", "arena", "--out", str(out), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr = StderrLines(proc)
    stderr.wait_for("pilot record: recording")
    return proc, stderr


@pytest.mark.display
@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_stopped_or_killed_recording_leaves_a_readable_episode(xvfb: str, tmp_path: Path, how: str) -> None:
    proc, stderr = _start_recorder(tmp_path, "--region", "0,0,320,180", "--flush-every", "15")
    try:
        time.sleep(2.5)
        proc.send_signal(signal.SIGINT if how == "sigint" else signal.SIGKILL)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    [path] = find_episodes(tmp_path)
    episode = open_episode(path)
    result = check_episode(path)
    assert not result.errors, result.errors
    if how == "sigint":
        assert rc == 0, stderr.text
        assert episode.meta.complete and not result.warnings
        assert episode.num_frames >= 30 and episode.meta.extra["dropped_frames"] >= 0
    else:
        assert rc == -signal.SIGKILL
        assert episode.recovered and any("RECOVERED" in w for w in result.warnings)
        assert episode.num_frames >= 15  # parts every 0.5 s, video fragments every 1 s: ~1-2 s lost of 2.5
        assert [i for i, _ in episode.frames()] == list(range(episode.num_frames))


def _xdotool(*args: str) -> None:
    subprocess.run(["xdotool", *args], check=True, timeout=10)


@pytest.mark.display
@pytest.mark.slow
def test_recording_the_arena_window_end_to_end(xvfb: str, tmp_path: Path, arena_detector: Path) -> None:
    """A person (xdotool) plays the Arena window while `pilot record` records it; the episode holds what
    was sent, checks OK, is perceived (oracle-free: the trained detector) and trains the Executor a step."""
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed")
    env = {**os.environ, "SDL_AUDIODRIVER": "dummy"}
    env.pop("SDL_VIDEODRIVER", None)
    arena = subprocess.Popen(
        [sys.executable, "-m", "arena.window", "--seconds", "60", "--event-log", str(tmp_path / "a.jsonl")],
        cwd=REPO, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        StderrLines(arena).wait_for("arena window ready")
        out = tmp_path / "rec"
        recorder, stderr = _start_recorder(
            out, "--window", "Orbit Pilot Arena", "--perceive", str(arena_detector), "--label"
        )
        sent = _play(out)
        recorder.send_signal(signal.SIGINT)
        stdout, _ = recorder.communicate(timeout=300)  # then it perceives and labels the episode
        assert recorder.returncode == 0, stderr.text
    finally:
        for proc in (arena, locals().get("recorder")):
            if proc is not None and proc.poll() is None:
                proc.kill()
    [path] = find_episodes(out)
    _check_recorded_input(path, sent)
    report = check_episode(path)
    assert report.status == "OK", report.errors + report.warnings
    assert json.loads(stdout.splitlines()[0])["frames"] == open_episode(path).num_frames
    _train_one_step(path, tmp_path)


def _play(out: Path) -> list[tuple[str, tuple]]:
    """Moves, clicks and keys as a person would make them; returns what was sent, in order."""
    sent: list[tuple[str, tuple]] = []
    time.sleep(0.5)
    for x, y in ((700, 300), (400, 500), (1000, 200)):
        _xdotool("mousemove", str(x), str(y))
        sent.append(("move", (x, y)))
        time.sleep(0.3)
        _xdotool("click", "1")
        sent.append(("click", (x, y)))
        time.sleep(0.3)
    for key, name in (("space", "space"), ("1", "1"), ("2", "2")):
        _xdotool("key", key)
        sent.append(("key", (name,)))
        time.sleep(0.3)
    time.sleep(0.5)
    return sent


def _check_recorded_input(path: Path, sent: list[tuple[str, tuple]]) -> None:
    episode = open_episode(path)
    rows = episode.steps().to_pylist()
    events = [parse_event(e) | {"frame": r["frame"]} for r in rows for e in r["events"]]
    got: list[tuple[str, tuple]] = []
    for e in events:
        if e["kind"] == "move" and (not got or got[-1] != ("move", (e["x"], e["y"]))):
            got.append(("move", (e["x"], e["y"])))
        elif e["kind"] == "down" and e["button"] == "left":
            got.append(("click", (e["x"], e["y"])))
        elif e["kind"] == "press":
            got.append(("key", (e["key"],)))
    assert [kind for kind, _ in got] == [kind for kind, _ in sent]  # the right events, in the order sent
    for (kind, want), (_, have) in zip(sent, got):
        if kind == "key":
            assert have == want
        else:
            assert abs(have[0] - want[0]) <= 2 and abs(have[1] - want[1]) <= 2  # the window is at 0,0
    times = [e["t"] for e in events]
    assert times == sorted(times)  # one clock, in order
    for e in events:  # each event sits in the row of the frame interval it happened in
        assert rows[e["frame"]]["t"] <= e["t"] + 1e-3
        if e["frame"] + 1 < len(rows):
            assert e["t"] < rows[e["frame"] + 1]["t"] + 1e-3
    profile = load_profile("arena")
    clicks = [r for r in rows if r["click"]]
    assert [(round(r["mouse_x"] * 1280), round(r["mouse_y"] * 720)) for r in clicks] == [
        want for kind, want in sent if kind == "click"
    ]
    keys = [profile.key_names[r["key"]] for r in rows if r["key"]]
    assert keys == ["attack", "repair", "boost"]


def _train_one_step(path: Path, tmp_path: Path) -> None:
    """`--perceive` and `--label` made the episode trainable: one Executor step on it."""
    from training.entry import executor_main

    episode = open_episode(path)
    assert (path / "perception" / "obs.npz").exists()
    assert episode.labels("heuristic").num_rows == episode.num_frames
    assert set(episode.labels("heuristic").column("mode").to_pylist()) <= set(episode.meta.modes)
    rc = executor_main(
        [
            "--data.data", str(path.parent), "--data.labels", "heuristic", "--data.val-fraction", "0",
            "--train.out-dir", str(tmp_path / "executor"), "--train.max-steps", "1", "--chunk", "32",
            "--train.batch-size", "2", "--train.no-tensorboard",
        ]
    )  # fmt: skip
    assert rc == 0
    assert any((tmp_path / "executor").rglob("*.safetensors"))
