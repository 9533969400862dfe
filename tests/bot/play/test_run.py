"""`pilot run` (bot/play/run.py, live.py, latency.py): its config and latency bookkeeping, then end to end on
a real screen: the
Arena
in a window under Xvfb (`pilot arena`, a subprocess logging every input event it receives), the bot in another
subprocess capturing it with mss and playing it through pynput.

The end-to-end tests use a bundle of tiny random models with the trained Arena detector (`tiny_bundle`,
`arena_detector`): they prove the plumbing (input arrives, inside the window, stops on the kill hotkey, starts
paused, ends on SIGTERM or when the window goes), not the play; the shipped policy (`arena_policy`) must also
act in the game (select an NPC, attack, pick up a box).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bot.play.latency import STAGES, Latency
from bot.play.live import LiveRun
from bot.play.overlay import place_beside
from bot.play.run import RunConfig, main, parse_region

from processes import StderrLines

REPO = Path(__file__).resolve().parents[3]
BOT_KEYS = {"space", "1", "2"}  # the Arena profile's physical keys
BOT_EVENTS = {"mousedown", "mouseup", "keydown", "keyup"}


# ------------------------------------------------------------------------------------------------ no display


def test_config_validates() -> None:
    with pytest.raises(ValueError, match="--fps"):
        RunConfig(policy=Path("p"), fps=0)
    with pytest.raises(ValueError, match="--overlay"):
        RunConfig(policy=Path("p"), overlay="video.avi")
    with pytest.raises(ValueError, match="--region"):
        RunConfig(policy=Path("p"), region="1,2,3")
    with pytest.raises(ValueError, match="hotkeys"):
        RunConfig(policy=Path("p"), start_key="f12")
    assert parse_region("10,20,640,360") == (10, 20, 640, 360)
    with pytest.raises(ValueError, match="positive"):
        parse_region("0,0,0,10")


def test_latency_percentiles_per_status_period_and_for_the_run() -> None:
    latency = Latency()
    for ms in range(1, 101):
        latency.add("detect", float(ms))
    line = latency.status()
    assert line.startswith("detect 50.5/95.0")
    assert latency.status() == "", "the status period restarts"
    summary = latency.summary()
    assert set(summary) == {"detect"} and summary["detect"]["p95"] == pytest.approx(95.05)
    assert "input" in STAGES and "total" in STAGES


def test_help_and_a_missing_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "--dry-run" in capsys.readouterr().out
    from bot.errors import PilotError

    with pytest.raises(PilotError, match="no such policy bundle"):
        main(["--policy", str(tmp_path / "nope"), "--dry-run"])


def test_the_overlay_window_goes_beside_the_game_never_over_it() -> None:
    screen = (1280, 720)
    assert place_beside((200, 100, 640, 360), (640, 360), screen, 0.5) == ((840, 100), (320, 180))
    (x, y), (w, h) = place_beside((0, 0, 960, 540), (960, 540), screen, 0.5)
    assert x >= 960 and x + w <= 1280 and y + h <= 720 and w >= 0.15 * 960  # shrunk to fit on the right
    assert place_beside((0, 0, 1280, 720), (1280, 720), screen, 0.5) is None  # full screen: no room
    (x, y), (w, h) = place_beside((400, 300, 480, 270), (480, 270), screen, 0.5)
    assert x + w <= 400 or x >= 880 or y + h <= 300 or y >= 570


def test_frames_that_stop_arriving_end_the_run_with_a_reason() -> None:
    class GoneScreen:
        def read(self):
            raise OSError("XIO: fatal IO error on X server")

    run = LiveRun(RunConfig(policy=Path("p"), dry_run=True))
    assert run._read(GoneScreen()) is None
    assert run.stop_reason.startswith("frames stopped arriving (OSError")


# ------------------------------------------------------------------------------------------------ helpers


@dataclass
class Game:
    proc: subprocess.Popen
    events: Path
    score: Path
    region: tuple[int, int, int, int]  # left, top, width, height

    def _log(self) -> list[dict]:
        return [json.loads(line) for line in self.events.read_text().splitlines() if line.strip()]

    def records(self) -> list[dict]:
        """The input events the window received."""
        return [r for r in self._log() if r["type"] != "game"]

    def game_events(self) -> list[str]:
        """What happened in the game so far (select, attack_on, box, kill:..., hit_player, ...)."""
        return [r["event"] for r in self._log() if r["type"] == "game"]


@contextlib.contextmanager
def arena(tmp_path: Path, region=(200, 100, 640, 360), seconds: float = 120.0) -> Iterator[Game]:
    """`pilot arena` at `region` (a window smaller than the screen, so leaving it is possible)."""
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed")
    left, top, width, height = region
    events, score = tmp_path / "events.jsonl", tmp_path / "score.json"
    cmd = [sys.executable, "-m", "bot.cli", "arena", "--width", str(width), "--height", str(height)]
    cmd += ["--x", str(left), "--y", str(top), "--seconds", str(seconds)]
    cmd += ["--event-log", str(events), "--score-out", str(score)]
    env = {**os.environ, "SDL_AUDIODRIVER": "dummy"}
    env.pop("SDL_VIDEODRIVER", None)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        StderrLines(proc).wait_for("arena window ready")
        yield Game(proc, events, score, region)
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)


def start_bot(tmp_path: Path, bundle: Path, *args: str) -> tuple[subprocess.Popen, Path, Path]:
    summary, log = tmp_path / "summary.json", tmp_path / "run.log"
    cmd = [sys.executable, "-m", "bot.cli", "run", "--game", "arena", "--policy", str(bundle)]
    cmd += ["--summary", str(summary), "--threads", "1", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDL_AUDIODRIVER": "dummy"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc, summary, log


def wait_until(condition, what: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what} never happened; pilot run said:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def bot_inputs(game: Game) -> list[dict]:
    """Clicks and the bot's key events in the game's log."""
    return [r for r in game.records() if r["type"] in BOT_EVENTS and r.get("key", "space") in BOT_KEYS]


class PointerWatch:
    """Every pointer position on the whole screen while it runs (pynput Listener, XRecord)."""

    def __init__(self) -> None:
        from pynput import mouse

        self.positions: list[tuple[int, int]] = []
        self.listener = mouse.Listener(on_move=lambda x, y, *_: self.positions.append((x, y)))

    def __enter__(self) -> PointerWatch:
        self.listener.start()
        self.listener.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        from bot.control.hotkeys import stop_listener

        stop_listener(self.listener)


@pytest.fixture
def bundle(tmp_path: Path, tiny_bundle, arena_detector: Path) -> Path:
    return tiny_bundle(tmp_path / "bundle", detector=arena_detector)


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.display
@pytest.mark.slow
def test_live_run_plays_inside_the_window_and_the_kill_hotkey_stops_it(
    xvfb: str, tmp_path: Path, bundle: Path
) -> None:
    subprocess.run(["xdotool", "mousemove", "520", "280"], check=True, timeout=10)  # inside the game
    with arena(tmp_path) as game, PointerWatch() as pointer:
        bot, summary_path, log = start_bot(tmp_path, bundle, "--start-now", "--max-seconds", "60")
        try:
            wait_until(lambda: len(bot_inputs(game)) >= 6, "clicks or keys reaching the game", bot, log)
            subprocess.run(["xdotool", "key", "F12"], check=True, timeout=10)
            assert bot.wait(timeout=60) == 0, log.read_text()[-3000:]
        finally:
            if bot.poll() is None:
                bot.kill()
        time.sleep(0.5)  # the game keeps running: anything the bot still sent would now be in its log
    summary = json.loads(summary_path.read_text())
    records = game.records()
    kill_t = next(r["t"] for r in records if r["type"] == "keydown" and r["key"] == "f12")
    before = [r for r in records if kill_t - 3.0 <= r["t"] <= kill_t and r.get("key") != "f12"]
    late = [r for r in records if r["t"] > kill_t + 1.0 and r.get("key") != "f12"]  # margin: a loaded CPU
    assert before, "the bot was acting up to the kill"
    assert not late, f"input after the kill: {late[:5]}"
    assert summary["killed"] and "F12" in summary["stop_reason"]

    downs = [r for r in records if r["type"] == "mousedown"]
    keys = [r for r in records if r["type"] == "keydown" and r["key"] in BOT_KEYS]
    assert downs and all(r["button"] == 1 for r in downs)
    assert len(downs) == summary["clicks"] and len(keys) == summary["keys"], "every input sent arrived"
    ups = [r for r in records if r["type"] == "keyup" and r["key"] in BOT_KEYS]
    assert len(ups) == len(keys), "every key pressed was released"

    left, top, width, height = game.region
    assert all(0 <= r["pos"][0] < width and 0 <= r["pos"][1] < height for r in records if "pos" in r)
    xy = np.array(pointer.positions)
    assert len(xy) > 20, "the bot moved the pointer"
    assert (xy[:, 0] >= left).all() and (xy[:, 0] < left + width).all(), "the pointer never left the window"
    assert (xy[:, 1] >= top).all() and (xy[:, 1] < top + height).all()
    assert summary["clamped"] == summary["clamped_targets"] + summary["clamped_events"]
    assert summary["region"] == list(game.region) and summary["frames"] > 0
    assert summary["latency_ms"]["input"]["p50"] > 0


@pytest.mark.display
@pytest.mark.slow
def test_starts_paused_until_the_start_hotkey_and_sigterm_releases_everything(
    xvfb: str, tmp_path: Path, bundle: Path
) -> None:
    from bot.perception.capture import find_window

    subprocess.run(["xdotool", "mousemove", "520", "280"], check=True, timeout=10)
    with arena(tmp_path) as game:
        bot, summary_path, log = start_bot(tmp_path, bundle, "--max-seconds", "60", "--overlay", "window")
        try:
            wait_until(lambda: "fps" in log.read_text(), "a status line", bot, log)
            time.sleep(2.0)
            assert not bot_inputs(game), "no input before the start hotkey"
            overlay = find_window("Orbit Pilot overlay")
            left, top, width, height = game.region
            apart = overlay[0] >= left + width or overlay[0] + overlay[2] <= left
            assert apart or overlay[1] >= top + height or overlay[1] + overlay[3] <= top, "beside the game"
            subprocess.run(["xdotool", "key", "F9"], check=True, timeout=10)
            wait_until(lambda: len(bot_inputs(game)) >= 4, "input after F9", bot, log)
            bot.send_signal(signal.SIGTERM)
            assert bot.wait(timeout=60) == 0, log.read_text()[-3000:]
        finally:
            if bot.poll() is None:
                bot.kill()
        time.sleep(0.3)
    summary = json.loads(summary_path.read_text())
    assert summary["stop_reason"] == "SIGTERM" and not summary["killed"]
    records = game.records()
    for key in BOT_KEYS:
        downs = sum(r["type"] == "keydown" and r["key"] == key for r in records)
        ups = sum(r["type"] == "keyup" and r["key"] == key for r in records)
        assert downs == ups, f"{key}: {downs} presses, {ups} releases"
    assert sum(r["type"] == "mousedown" for r in records) == sum(r["type"] == "mouseup" for r in records)


@pytest.mark.display
@pytest.mark.slow
def test_dry_run_sends_nothing_records_an_overlay_and_ends_when_the_window_goes(
    xvfb: str, tmp_path: Path, bundle: Path
) -> None:
    import av

    video = tmp_path / "overlay.mp4"
    with arena(tmp_path) as game:
        bot, summary_path, log = start_bot(
            tmp_path, bundle, "--dry-run", "--start-now", "--overlay", str(video)
        )
        try:
            wait_until(lambda: log.read_text().count(" fps ") >= 2, "two status lines", bot, log)
            game.proc.terminate()  # the game closes under the bot
            assert bot.wait(timeout=60) == 0, log.read_text()[-3000:]
        finally:
            if bot.poll() is None:
                bot.kill()
    summary = json.loads(summary_path.read_text())
    assert "window is gone" in summary["stop_reason"] and summary["dry_run"]
    assert not bot_inputs(game) and sum(r["type"] == "motion" for r in game.records()) <= 1
    assert summary["moves"] > 0, "the dry run still planned the cursor"
    with av.open(str(video)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 10 and frames <= summary["frames"]


ACTED = {"select", "attack_on", "box"}  # game events only the player's clicks and keys cause


@pytest.mark.display
@pytest.mark.slow
def test_the_shipped_policy_acts_in_the_game_through_the_screen(
    xvfb: str, tmp_path: Path, arena_policy: Path
) -> None:
    # On this world the shipped policy's first select, attack or box comes 7-8 s in here, 11-16 s with both
    # cores busy; a CI run once saw none in a fixed 30 s. So the test waits for the game's own record of an
    # act (up to 150 s), then ends the bot with SIGTERM.
    with arena(tmp_path, region=(0, 0, 1280, 720), seconds=300) as game:
        bot, summary_path, log = start_bot(tmp_path, arena_policy, "--start-now", "--max-seconds", "150")
        try:
            wait_until(lambda: ACTED & set(game.game_events()), "a select, attack or box", bot, log, 200)
            bot.send_signal(signal.SIGTERM)
            assert bot.wait(timeout=60) == 0, log.read_text()[-3000:]
        finally:
            if bot.poll() is None:
                bot.kill()
    summary = json.loads(summary_path.read_text())
    assert summary["clicks"] > 0 and "SIGTERM" in summary["stop_reason"], summary
    score = json.loads(game.score.read_text())
    assert Counter(game.game_events()) == Counter(score["effects"]), "the live log and the score agree"


def test_live_and_eval_aim_the_same_way(tmp_path: Path, tiny_bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    # pilot run once kept an old snap default while pilot eval used bot.policy.runner's: the live bot then
    # aimed worse than the measured one. Both now take the bundle's inference settings unless told otherwise.
    from bot.play.evaluate import BotPlayer, EvalConfig
    from bot.policy.bundle import PolicyBundle

    monkeypatch.setattr(PolicyBundle, "detector", lambda self, runtime="auto", threads=0: None)
    folder = tiny_bundle(tmp_path / "bundle")
    _, _, live, _ = LiveRun(RunConfig(policy=folder, dry_run=True))._load_policy()
    evaluated = BotPlayer(EvalConfig(policy=folder)).runner
    inference = PolicyBundle.load(folder).inference
    assert live.snap == evaluated.snap == inference.snap_boxes
    assert live.period == evaluated.period == 1.0 / inference.tactician_hz
