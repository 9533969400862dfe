"""Tests of the playable window (arena/window.py): input queueing, headless runs, a real run under Xvfb."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pygame
import pytest

from arena import spec
from arena.render import HP_FILL
from arena.window import InputQueue, WindowConfig, main, run_window

from processes import StderrLines

REPO = Path(__file__).resolve().parents[2]


def test_input_queue_keeps_every_click_and_key_for_later_frames() -> None:
    q = InputQueue(1280, 720)
    events = [
        pygame.event.Event(pygame.MOUSEMOTION, pos=(100, 50), rel=(0, 0), buttons=(0, 0, 0)),
        pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=(320, 180), button=1),
        pygame.event.Event(pygame.MOUSEBUTTONUP, pos=(320, 180), button=1),
        pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=(640, 360), button=1),
        pygame.event.Event(
            pygame.MOUSEBUTTONDOWN, pos=(10, 10), button=3
        ),  # right button: logged, not a click
        pygame.event.Event(pygame.KEYDOWN, key=pygame.K_SPACE),
        pygame.event.Event(pygame.KEYDOWN, key=pygame.K_2),
        pygame.event.Event(pygame.KEYDOWN, key=pygame.K_q),  # unbound: logged, not an action
    ]
    records = [q.push(e) for e in events]
    assert [r["type"] for r in records] == [
        "motion",
        "mousedown",
        "mouseup",
        "mousedown",
        "mousedown",
        "keydown",
        "keydown",
        "keydown",
    ]
    assert records[1] == {"type": "mousedown", "pos": [320, 180], "button": 1}
    assert records[5] == {"type": "keydown", "key": "space"}
    first, second, third = q.next_action(), q.next_action(), q.next_action()
    assert first.click and first.mouse == (0.25, 0.25) and first.key == spec.KEYS.index("attack")
    assert second.click and second.mouse == (0.5, 0.5) and second.key == spec.KEYS.index("boost")
    assert not third.click and third.key == 0 and third.mouse == (10 / 1280, 10 / 720)


def test_window_config_validates() -> None:
    with pytest.raises(ValueError, match="WindowConfig.seconds"):
        WindowConfig(seconds=-1.0)
    with pytest.raises(ValueError, match="width"):
        WindowConfig(width=3)


def test_main_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "--event-log" in capsys.readouterr().out


def test_headless_run_writes_score(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # explicitly asked for, so the window does not refuse it
    monkeypatch.delenv("DISPLAY", raising=False)
    out = tmp_path / "score.json"
    score = run_window(
        WindowConfig(width=320, height=180, seconds=0.3, score_out=out, event_log=tmp_path / "e.jsonl")
    )
    assert json.loads(out.read_text()) == score and set(score) == {
        "credits",
        "kills",
        "boxes",
        "deaths",
        "effects",
    }


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_the_window_cleanly_with_a_score(sig: int, tmp_path: Path) -> None:
    score_path = tmp_path / "score.json"
    cmd = [
        sys.executable,
        "-m",
        "arena.window",
        "--width",
        "320",
        "--height",
        "180",
        "--score-out",
        str(score_path),
    ]
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    env.pop("DISPLAY", None)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert StderrLines(proc).wait_for("arena window ready") == "arena window ready 320x180"
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert set(json.loads(score_path.read_text())) == {"credits", "kills", "boxes", "deaths", "effects"}


@pytest.mark.display
def test_real_window_under_xvfb_receives_input_and_writes_score(xvfb: str, tmp_path: Path) -> None:
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (scripts/bootstrap.sh --dev installs it)")
    import mss

    log_path, score_path = tmp_path / "events.jsonl", tmp_path / "score.json"
    cmd = [
        sys.executable,
        "-m",
        "arena.window",
        "--seconds",
        "5",
        "--event-log",
        str(log_path),
        "--score-out",
        str(score_path),
    ]
    env = {**os.environ, "SDL_AUDIODRIVER": "dummy"}
    env.pop("SDL_VIDEODRIVER", None)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert StderrLines(proc).wait_for("arena window ready") == "arena window ready 1280x720"
        subprocess.run(["xdotool", "mousemove", "700", "300", "click", "1"], check=True, timeout=10)
        subprocess.run(["xdotool", "key", "space"], check=True, timeout=10)
        with mss.MSS() as screen:
            shot = np.asarray(screen.grab({"left": 0, "top": 0, "width": 1280, "height": 720}))[:, :, 2::-1]
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    x1, y1, x2, y2 = (round(f * n) for f, n in zip(spec.HUD_HP_BAR, (1280, 720, 1280, 720)))
    assert (shot[(y1 + y2) // 2, x1:x2] == HP_FILL).all(axis=1).mean() > 0.9  # the full hp bar is visible
    log_lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    records = [r for r in log_lines if r["type"] != "game"]
    game_events = Counter(r["event"] for r in log_lines if r["type"] == "game")
    downs = [r for r in records if r["type"] == "mousedown"]
    assert downs and downs[0]["pos"] == [700, 300] and downs[0]["button"] == 1
    assert any(r["type"] == "keydown" and r["key"] == "space" for r in records)
    assert all(0 <= r["pos"][0] < 1280 and 0 <= r["pos"][1] < 720 for r in records if "pos" in r)
    score = json.loads(score_path.read_text())
    assert set(score) == {"credits", "kills", "boxes", "deaths", "effects"}
    assert game_events == Counter(score["effects"]), "every game event is logged as it happens"
