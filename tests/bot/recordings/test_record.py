"""`pilot record` (bot/recordings/record.py) under Xvfb: a stopped or killed recording leaves a readable
episode; and the real thing end to end (the Arena window driven by xdotool, recorded, perceived, trained
on)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.profile import load_profile
from bot.recordings.episode import find_episodes, open_episode
from bot.recordings.episodes import check_episode
from bot.recordings.input_events import parse_event

from processes import StderrLines

REPO = Path(__file__).resolve().parents[3]


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
