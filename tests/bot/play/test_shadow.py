"""`pilot shadow` (bot/play/shadow.py, shadow_train.py): its config and one-line errors, then the real
thing under Xvfb: the Arena expert plays a window through X input as the person (tests/support/
arena_person.py), shadow records it, predicts with an untrained tiny bundle, fine-tunes it in the background,
hot-reloads each version and measures agreement; Ctrl+C ends every process it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.play.shadow import ShadowConfig
from bot.play.shadow_train import ROUND_FLAGS, BackgroundTrainer, TrainerSettings, newest_version
from bot.recordings.episode import find_episodes, open_episode
from bot.recordings.episodes import check_episode

from processes import StderrLines

REPO = Path(__file__).resolve().parents[3]


# ------------------------------------------------------------------------------------------------ no display


def test_config_validates_and_names_the_field() -> None:
    for field, value in (("fps", 0), ("window_s", -1), ("chunk_s", 0), ("hit_radius", float("nan"))):
        with pytest.raises(ValueError, match=f"ShadowConfig.{field}"):
            ShadowConfig(policy=Path("p"), **{field: value})
    with pytest.raises(ValueError, match="ShadowConfig.train_steps"):
        ShadowConfig(policy=Path("p"), train_steps=0)
    with pytest.raises(ValueError, match="ShadowConfig.overlay"):
        ShadowConfig(policy=Path("p"), overlay="video.avi")
    with pytest.raises(ValueError, match="--region"):
        ShadowConfig(policy=Path("p"), region="1,2,3")
    cfg = ShadowConfig(policy=Path("p"), out=Path("o"), chunk_s=20, fps=15)
    record = cfg.record_config()  # the recording is `pilot record`'s, cut into chunks
    assert record.split_s == 20 and record.fps == 15 and record.out == Path("o/recordings")


def _pilot(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip


def _error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("pilot shadow: error")]
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return lines[0]


def test_bad_input_is_one_line_and_a_non_zero_exit(tmp_path: Path, tiny_bundle, arena_detector: Path) -> None:
    assert "no such policy bundle" in _error_line(_pilot("shadow", "--policy", str(tmp_path / "nope")))
    naev = tiny_bundle(tmp_path / "naev", game="naev")
    assert "plays 'naev'" in _error_line(_pilot("shadow", "--policy", str(naev), "--game", "arena"))
    arena = tiny_bundle(tmp_path / "arena", detector=arena_detector)
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    line = _error_line(_pilot("shadow", "--policy", str(arena), "--out", str(tmp_path / "o"), env=env))
    assert "cannot open the screen" in line or "window" in line
    assert not find_episodes(tmp_path / "o"), "nothing recorded"


def test_the_trainer_command_starts_from_the_newest_version(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    settings = TrainerSettings("arena", steps=7, tactician_hz=6.0, nice=5, extra="--executor.train.lr 0.003")
    trainer = BackgroundTrainer(settings, tmp_path / "rec", checkpoints, tmp_path / "base", tmp_path / "det")
    assert newest_version(checkpoints) is None
    for name in ("v001", "v002", ".v003.partial"):  # a round still running has no version name yet
        (checkpoints / name).mkdir(parents=True)
    assert newest_version(checkpoints) == checkpoints / "v002"
    cmd = trainer._train_command(newest_version(checkpoints), checkpoints / ".v003.partial")
    assert cmd[:4] == ["train", "policy", "--init", str(checkpoints / "v002")]
    assert cmd[cmd.index("--executor.tactician-hz") + 1] == "6.0" and "--no-copy-detector" in cmd
    assert cmd.count("7") == 3 and cmd[-2:] == ["--executor.train.lr", "0.003"]  # extra flags come last: win
    assert set(ROUND_FLAGS) <= set(cmd)


# ------------------------------------------------------------------------------------------------ display

# 640x360: at 1280x720 (the detector's own size) this 2-core machine dropped 20-50 % of the predictions
SIZE = (640, 360)
RECORD_S = 240.0  # s of play shadowed: 8 windows of 30 s; the first version lands after ~1-2 chunks


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


@pytest.mark.display
@pytest.mark.slow
def test_shadow_learns_from_the_expert_and_ctrl_c_ends_everything(
    xvfb: str, tmp_path: Path, tiny_bundle, arena_detector: Path
) -> None:
    bundle = tiny_bundle(tmp_path / "bundle", detector=arena_detector, seed=1)
    out, labels = tmp_path / "shadow", tmp_path / "labels.jsonl"
    env = {**os.environ, "SDL_AUDIODRIVER": "dummy", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("SDL_VIDEODRIVER", None)
    person_cmd = [sys.executable, "tests/support/arena_person.py", "--seconds", str(RECORD_S + 200)]
    person_cmd += ["--labels", str(labels), "--width", str(SIZE[0]), "--height", str(SIZE[1])]
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    person = subprocess.Popen(person_cmd, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, **pipes)
    shadow = None
    try:
        StderrLines(person).wait_for("arena person ready")
        shadow = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "shadow", "--game", "arena", "--policy", str(bundle),
             "--window", "Orbit Pilot Arena", "--out", str(out), "--labels", str(labels), "--chunk-s", "30",
             "--window-s", "30", "--overlay", str(out / "overlay.mp4"), "--train-steps", "150",
             "--train-args=--strategist.train.lr 3e-3 --tactician.train.lr 3e-3 --executor.train.lr 3e-3"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        log = StderrLines(shadow)
        log.wait_for("pilot shadow: recording")
        started = time.time()
        time.sleep(RECORD_S)
        shadow.send_signal(signal.SIGINT)  # Ctrl+C
        stdout, _ = shadow.communicate(timeout=180)
        stopped = time.time()
        assert shadow.returncode == 0, log.text[-4000:]
    finally:
        for proc in (shadow, person):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
    assert not _processes_mentioning(str(out)), "every process the shadow started has ended"
    _check_recording(out, labels, started, stopped)
    _check_learning(out, json.loads(stdout.splitlines()[-1]))
    import av

    with av.open(str(out / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) > 100


def _check_recording(out: Path, labels: Path, started: float, stopped: float) -> None:
    """`pilot record`'s episodes, ~30 s each; each click in them is one the person sent (none the bot's)."""
    episodes = find_episodes(out / "recordings")
    assert len(episodes) >= RECORD_S // 30
    for path in episodes:
        report = check_episode(path)
        assert report.status == "OK", (path, report.errors, report.warnings)
        assert open_episode(path).meta.source == "human"
    recorded = sum(sum(open_episode(p).steps().column("click").to_pylist()) for p in episodes)
    sent = [json.loads(line) for line in labels.read_text().splitlines()]
    sent = sum(r["click"] for r in sent if started - 1 <= r["t"] <= stopped + 1)
    assert 0 < recorded <= sent + 1


def _check_learning(out: Path, totals: dict) -> None:
    """Versions were trained and loaded, and the last complete window's version agrees with the person
    better than the base bundle on the same frames (the control: what the person did changes from window
    to window, so first-vs-last alone would measure the person); in the first window both are the base."""
    content = json.loads((out / "agreement.json").read_text())
    windows = content["windows"]
    first, last = content["summary"]["first"], content["summary"]["last"]  # last: the last complete one
    print("agreement, first and last window:", json.dumps({"first": first, "last": last}))
    print((out / "agreement.csv").read_text(), json.dumps(content["summary"]["trained"]))
    assert last["window"] == windows[-2]["window"] and not windows[-1]["complete"]
    assert totals["training_rounds"] >= 2 and totals["versions_loaded"] >= 2, totals
    assert first["version"] == "base" and last["version"].startswith("v"), (first, last)
    assert set(content["summary"]["versions"]) >= {"base", "v001"}
    assert (out / "agreement.csv").read_text().count("\n") == len(windows) + 1
    assert first["mode_frames"] > 500 and last["mode_frames"] > 500 and last["clicks"] >= 10
    for name in ("mode_agreement", "click_error_px"):
        assert first[name] == first[f"base_{name}"], "the first window is the base bundle's alone"
    # Asserted: the mode, which learns fast and far (2026-12-05, two runs: lift over the base on the same
    # frames +0.47 in the last window, +0.33..+0.63 in the last four). Measured, not asserted: the click
    # error (pooled over the fine-tuned frames 190 px vs the base's 235 px, but single windows swing both
    # ways) and the target (~12 clicks on an enemy or loot a run): docs/notes/play.md.
    assert last["mode_agreement"] >= last["base_mode_agreement"] + 0.2, last
    trained = content["summary"]["trained"]  # every frame a fine-tuned version predicted
    assert trained["mode_agreement"] >= trained["base_mode_agreement"] + 0.15, trained
    assert trained["clicks"] > 50 and trained["click_error_px"] is not None and trained["target_clicks"] > 0


def test_person_labels_take_the_modes_of_the_label_file_at_each_frames_time(tmp_path: Path) -> None:
    import numpy as np

    from bot.play.agreement import PersonLabels
    from bot.play.shadow_train import person_rows
    from bot.recordings.episode import EpisodeMeta, EpisodeWriter, write_labels

    meta = EpisodeMeta(game="arena", source="human", fps=10, width=32, height=16, keys=["none", "attack"])
    with EpisodeWriter(tmp_path / "ep", meta) as writer:
        for i in range(6):  # t = 0.0 .. 0.5 s
            row = dict(t=i / 10, mouse_x=0.5, mouse_y=0.5, click=False, key=0)
            writer.append(np.zeros((16, 32, 3), np.uint8), row)
    heuristic = [dict(frame=i, mode="EXPLORE", target_id=7 if i > 2 else None, confidence=0.5, rationale="r")
                 for i in range(6)]  # fmt: skip
    write_labels(tmp_path / "ep", "heuristic", heuristic)
    assert person_rows(tmp_path / "ep", None, 0.0) == heuristic  # no label file: the click heuristic's
    labels_file = tmp_path / "labels.jsonl"
    start = 1000.0  # the episode's t = 0 as unix time
    labels_file.write_text('{"t": 1000.15, "mode": "FIGHT"}\n{"t": 1000.35, "mode": "FLEE"}\n')
    labels = PersonLabels(labels_file, ["FIGHT", "LOOT", "FLEE", "EXPLORE", "CAUTIOUS"], tolerance_s=1.0)
    rows = person_rows(tmp_path / "ep", labels, start)
    assert [(r["frame"], r["mode"], r["target_id"]) for r in rows] == [
        (2, "FIGHT", None), (3, "FIGHT", 7), (4, "FLEE", 7), (5, "FLEE", 7)
    ], "frames 0-1 came before the first label: left out; targets stay the clicked ones"  # fmt: skip
