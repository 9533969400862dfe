r"""Perception speed per stage on this machine, and (with --episodes) its accuracy against ground truth.

Speed, min / median ms per frame (benchmarks/common.py `time_call`): mss capture under Xvfb at 1280x720 and
640x360, the in-process Arena frame, the detector (ONNX Runtime, PyTorch), ByteTrack, the HUD reader, the
state encoder, and one whole live frame. Accuracy (--episodes): detector mAP50 / mAP50-95, tracker id
switches per minute, HUD mean absolute error per bar. `--game naev`: frames, ground truth and the probe's
values from recorded Naev episodes (--episodes). What each row measures: docs/notes/play.md.

    .venv/bin/python -m benchmarks.bench_perception --detector data/detectors/arena
    .venv/bin/python -m benchmarks.bench_perception --detector data/detectors/arena \
        --episodes data/recordings/arena-heldout --json
    .venv/bin/python -m benchmarks.bench_perception --game naev --detector data/naev/detector \
        --episodes data/naev/recordings/heldout
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import add_common_args, report, time_call
from bot.games.processes import PrivateDisplay
from bot.perception.detector import Detector
from bot.perception.hud import HudReader
from bot.perception.state import StateEncoder
from bot.perception.tracker import Tracker
from bot.profile import load_profile


@contextmanager
def x_display() -> Iterator[str | None]:
    """$DISPLAY, or a private 1280x720 Xvfb for the duration (None when neither exists)."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    if shutil.which("Xvfb") is None:
        yield None
        return
    with PrivateDisplay(1280, 720) as display:
        os.environ["DISPLAY"] = display.name
        try:
            yield display.name
        finally:
            os.environ.pop("DISPLAY", None)


def arena_frames(width: int, height: int, count: int, seed: int = 0) -> list[tuple[np.ndarray, dict]]:
    """`count` consecutive (frame, info) of the expert playing the Arena."""
    from arena.env import ArenaConfig, ArenaEnv
    from arena.expert import Expert, ExpertConfig

    env = ArenaEnv(ArenaConfig(width=width, height=height))
    expert = Expert(ExpertConfig(seed=seed, width=width, height=height))
    frame, info = env.reset(seed=seed)
    expert.reset(seed)
    out = []
    for _ in range(count + 60):  # the first 2 s are spent leaving the portal: few objects in view
        frame, _, _, _, info = env.step(expert.act(info)[0])
        out.append((frame, info))
    env.close()
    return out[-count:]


def capture_rows(number: int) -> list[dict[str, Any]]:
    from bot.perception.capture import MssConfig, MssSource

    rows = []
    with x_display() as display:
        if display is None:
            return [{"stage": "capture (mss)", "note": "no X display and no Xvfb"}]
        for w, h in ((1280, 720), (640, 360)):
            with MssSource(MssConfig(region=(0, 0, w, h), fps=1000)) as source:
                rows.append({"stage": "capture (mss)", "size": f"{w}x{h}", **time_call(source.grab, number)})
    return rows


def episode_frames(root: Path, count: int) -> list[tuple[np.ndarray, dict]]:
    """`count` consecutive frames from the middle of the first recorded episode under `root`."""
    from bot.recordings.episode import find_episodes, open_episode

    episode = open_episode(find_episodes(root)[0])
    start = max(0, episode.num_frames // 2 - count // 2)
    return [(episode.frame(i), {}) for i in range(start, min(episode.num_frames, start + count))]


def speed_rows(
    detector_dir: Path, number: int, game: str = "arena", episodes: Path | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from bot.perception.capture import ArenaSource

    profile = load_profile(game)
    rows = capture_rows(number)
    if game == "arena":
        source = ArenaSource(seed=0)
        source.read()
        rows.append(
            {"stage": "capture (Arena in-process)", "size": "1280x720", **time_call(source.read, number)}
        )
        frames = arena_frames(1280, 720, 90)
    elif episodes is not None:
        frames = episode_frames(episodes, 90)
    else:
        raise SystemExit(f"--game {game}: give --episodes (recorded {game} episodes supply the frames)")
    frame = frames[-1][0]
    detectors = {}
    for runtime in ("onnx", "torch"):
        det = Detector.load(detector_dir, profile.class_names, runtime=runtime, conf=profile.detector.conf)
        detectors[runtime] = det
        shape = "x".join(map(str, det.shape_for(1280, 720)))
        rows.append(
            {
                "stage": f"detector ({runtime})",
                "size": shape,
                **time_call(lambda d=det: d.detect(frame), number),
            }
        )
    onnx = detectors["onnx"]
    batch = [f for f, _ in frames[:8]]
    per_frame = time_call(lambda: onnx.detect_batch(batch), max(1, number // 4))
    rows.append({"stage": "detector (onnx, batch 8, per frame)", "size": rows[-2]["size"],
                 **{k: v / 8 for k, v in per_frame.items()}})  # fmt: skip
    detections = [onnx.detect(f) for f, _ in frames]
    tracker = Tracker.from_profile(profile)

    def track_all() -> None:
        tracker.reset()
        for i, d in enumerate(detections):
            tracker.update(d, i / 30)

    per_seq = time_call(track_all, 1)
    rows.append({"stage": "tracker (ByteTrack)", "size": f"{np.mean([len(d) for d in detections]):.1f} dets",
                 **{k: v / len(detections) for k, v in per_seq.items()}})  # fmt: skip
    hud = HudReader(profile.hud)
    rows.append({"stage": "HUD reader", "size": "1280x720", **time_call(lambda: hud.read(frame), number)})
    encoder = StateEncoder(profile, (1280, 720))
    tracks, reading = tracker.update(detections[-1], 10.0), hud.read(frame)
    encode = lambda: encoder.encode(tracks, reading, (0.5, 0.5), False, 10.0)  # noqa: E731
    rows.append({"stage": "state encoder", "size": "", **time_call(encode, number)})
    stages = ["detector (onnx)", "tracker (ByteTrack)", "HUD reader", "state encoder"]
    live = [
        r
        for r in rows
        if r["stage"] in stages or (r["stage"] == "capture (mss)" and r.get("size") == "1280x720")
    ]
    total = {k: sum(r[k] for r in live) for k in ("min_ms", "median_ms")}
    rows.append({"stage": "total (mss 1280x720 + onnx + track + hud + encode)", "size": "", **total})
    return rows, {"detector": onnx.id, "imgsz": onnx.imgsz}


# ------------------------------------------------------------------------------------------------ accuracy


def hud_errors(reading: Any, step: dict[str, Any]) -> dict[str, float]:
    """|reading - truth| per bar with a truth in the step: a step column of its name (hp, shield), or for a
    bar named target_<x>, field <x> of the selected ground-truth object (gt hp is in %)."""
    errors = {}
    for name, value in reading.bars.items():
        if step.get(name) is not None:
            errors[name] = abs(value - step[name])
        elif name.startswith("target_"):
            chosen = [o for o in step.get("gt_objects") or () if o.get("selected")]
            field = name.removeprefix("target_")
            if chosen and chosen[0].get(field) is not None:
                errors[name] = abs(value - chosen[0][field] / chosen[0].get(f"{field}_max", 1.0))
    return errors


def accuracy(detector_dir: Path, episodes_root: Path, every: int, game: str = "arena") -> dict[str, Any]:
    from bot.perception.tracker import id_switches
    from bot.recordings.episode import find_episodes, open_episode
    from training.detector import evaluate_detector, hidden_px, in_view

    profile = load_profile(game)
    episodes = find_episodes(episodes_root)
    scored = Detector.load(detector_dir, profile.class_names, conf=0.001, max_det=300)
    result: dict[str, Any] = {"map": evaluate_detector(scored, episodes, profile.class_names, every)}
    detector = Detector.load(detector_dir, profile.class_names, conf=profile.detector.conf)
    hud = HudReader(profile.hud)
    switches = {"switches": 0, "switches_in_view": 0, "matched": 0, "gt": 0}
    hud_err, minutes = [], 0.0
    for path in episodes:
        episode = open_episode(path)
        tracker = Tracker.from_profile(profile, episode.meta.fps)
        steps = episode.steps().select(["t", "gt_objects", "hp", "shield"]).to_pylist()
        bar_truth = [c for c in profile.hud.bars if c in episode.steps().column_names and c not in steps[0]]
        if bar_truth:
            more = episode.steps().select(bar_truth).to_pylist()
            steps = [{**a, **b} for a, b in zip(steps, more)]
        w, h = episode.meta.width, episode.meta.height
        shape = detector.shape_for(w, h)
        min_px = 2.0 / min(shape[0] / h, shape[1] / w)  # objects in view, as training defines them
        hidden = hidden_px(detector.mask, w, h)
        frames = []
        for index, frame in episode.frames():
            step = steps[index]
            objects = [o for o in step["gt_objects"] if in_view(o, min_px, hidden)]
            gt = np.array([[o["x1"], o["y1"], o["x2"], o["y2"]] for o in objects], np.float32).reshape(-1, 4)
            tracks = tracker.update(detector.detect(frame), step["t"])
            frames.append(
                (
                    np.array([o["id"] for o in objects]),
                    gt,
                    tracks.id[tracks.visible],
                    tracks.xyxy[tracks.visible],
                )
            )
            hud_err.append(hud_errors(hud.read(frame), step))
        for key, value in id_switches(frames, (episode.meta.width, episode.meta.height)).items():
            if key in switches:
                switches[key] += value
        minutes += episode.num_frames / episode.meta.fps / 60.0
    bars = sorted({name for errors in hud_err for name in errors})
    result["tracking"] = {
        "minutes": round(minutes, 2),
        "id_switches_per_min": switches["switches"] / minutes,
        "id_switches_in_view_per_min": switches["switches_in_view"] / minutes,
        "recall": switches["matched"] / max(switches["gt"], 1),
    }
    result["hud_mae"] = {name: float(np.mean([e[name] for e in hud_err if name in e])) for name in bars} | {
        "frames": len(hud_err)
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--detector", type=Path, default=Path("data/detectors/arena"), help="detector folder")
    parser.add_argument("--game", default="arena", help="game profile (arena, naev)")
    parser.add_argument(
        "--episodes", type=Path, help="held-out episodes of that game for the accuracy figures"
    )
    parser.add_argument("--every", type=int, default=10, help="frame step for mAP over --episodes")
    parser.add_argument("--number", type=int, default=20, help="calls per timing round")
    add_common_args(parser)
    args = parser.parse_args(argv)
    rows, extra = speed_rows(args.detector, args.number, args.game, args.episodes)
    if args.episodes is not None:
        extra["accuracy"] = accuracy(args.detector, args.episodes, args.every, args.game)
    report("Perception latency per frame", rows, ["stage", "size", "min_ms", "median_ms"], args.json, **extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
