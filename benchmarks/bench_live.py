"""The live loop's per-stage latency (p50 / p95) and decision rates, in-process and through the real screen.

    in-process   ArenaSource -> Perception -> PolicyRunner, lock-step (bot/play/evaluate.py: `pilot eval`)
    screen       `pilot arena` in a window on a private Xvfb -> `pilot run` (mss capture, pynput input)
    --game naev  `pilot run --game naev --launch`: the real Naev on a private Xvfb, same cores; also the
                 cores Naev and the bot used and the frame rate the bot got

Strategist and Tactician columns are per call, the others per frame; what the rows tell:
docs/notes/play.md. The screen row needs Xvfb and xdotool (scripts/bootstrap.sh --dev installs them).

    .venv/bin/python benchmarks/bench_live.py --policy data/pretrained/arena --seconds 30
    .venv/bin/python benchmarks/bench_live.py --policy data/pretrained/arena --no-screen --json
    .venv/bin/python benchmarks/bench_live.py --game naev --policy data/pretrained/naev --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import add_common_args, apply_threads, report
from bot.play.latency import STAGES  # the live loop's stages, in its order

REPO = Path(__file__).resolve().parents[1]
FRAME_BUDGET_MS = 1000.0 / 30.0
COLUMNS = ("loop", *(f"{s}_p50" for s in STAGES), "total_p95", "fps", "note")


def in_process(policy: Path, seconds: float, threads: int) -> tuple[dict[str, Any], dict[str, float]]:
    """One bot episode of `pilot eval` (no baselines): per-stage p50/p95 per frame and calls per second."""
    from bot.play.evaluate import EvalConfig, run

    cfg = EvalConfig(policy=policy, episodes=1, seconds=seconds, baselines=False, threads=threads)
    result, _ = run(cfg)
    return result["latency_ms"], result["decisions_per_s"]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def through_screen(policy: Path, seconds: float, threads: int) -> dict[str, Any] | str:
    """`pilot run` on a private Xvfb against `pilot arena`; its --summary JSON, or why it could not run."""
    if shutil.which("Xvfb") is None or shutil.which("xdotool") is None:
        return "needs Xvfb and xdotool"
    display = f":{next(n for n in range(150, 250) if not Path(f'/tmp/.X11-unix/X{n}').exists())}"
    env = {**os.environ, "DISPLAY": display, "SDL_AUDIODRIVER": "dummy", "OMP_NUM_THREADS": str(threads or 1)}
    env.pop("SDL_VIDEODRIVER", None)
    with tempfile.TemporaryDirectory() as tmp:
        summary, score = Path(tmp) / "summary.json", Path(tmp) / "score.json"
        xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1280x720x24", "-nolisten", "tcp"])
        game = bot = None
        try:
            time.sleep(1.0)
            pilot = [sys.executable, "-m", "bot.cli"]
            game_cmd = [*pilot, "arena", "--seconds", str(seconds + 60), "--score-out", str(score)]
            game = subprocess.Popen(game_cmd, cwd=REPO, env=env, stderr=subprocess.DEVNULL)
            time.sleep(5.0)  # the window maps; `pilot run` also waits for it by title
            run_cmd = [*pilot, "run", "--game", "arena", "--policy", str(policy), "--start-now"]
            run_cmd += [
                "--max-seconds",
                str(seconds),
                "--summary",
                str(summary),
                "--threads",
                str(threads or 1),
            ]
            bot = subprocess.run(
                run_cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=seconds + 300
            )
            if bot.returncode != 0 or not summary.exists():
                return f"pilot run failed ({bot.returncode}): {bot.stderr.strip().splitlines()[-1:]}"
            return json.loads(summary.read_text())
        finally:
            for proc in (game, xvfb):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=30)


def launched(game: str, policy: Path, seconds: float, threads: int) -> dict[str, Any] | str:
    """`pilot run --game G --launch` (the adapter starts the game on a private Xvfb); its --summary JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "summary.json"
        run_cmd = [
            sys.executable,
            "-m",
            "bot.cli",
            "run",
            "--game",
            game,
            "--policy",
            str(policy),
            "--launch",
        ]
        run_cmd += ["--start-now", "--max-seconds", str(seconds), "--summary", str(summary)]
        run_cmd += ["--threads", str(threads or 1)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads or 1)}
        bot = subprocess.run(
            run_cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=seconds + 300
        )
        if bot.returncode != 0 or not summary.exists():
            return f"pilot run failed ({bot.returncode}): {bot.stderr.strip().splitlines()[-1:]}"
        return json.loads(summary.read_text())


def main_launched(args: argparse.Namespace) -> None:
    """The live loop beside a game the project starts (Naev): one row, and the cores each side used."""
    result = launched(args.game, args.policy, args.seconds, args.threads)
    if isinstance(result, str):
        report(
            "Live loop latency, ms", [{"loop": f"screen ({args.game})", "note": result}], COLUMNS, args.json
        )
        return
    fps = result["frames"] / max(args.seconds, 1e-9)
    rows = [row(f"screen ({args.game} running)", result["latency_ms"], fps, "pilot run --launch")]
    extra = {"policy": str(args.policy), f"{args.game} cores": result.get("game_cpu_cores")}
    extra |= {"bot cores": result.get("bot_cpu_cores"), "frames": result["frames"]}
    extra["total p50 / 33.3 ms frame budget"] = round(
        result["latency_ms"]["total"]["p50"] / FRAME_BUDGET_MS, 2
    )
    report("Live loop latency, ms", rows, COLUMNS, args.json, **extra)


def row(loop: str, latency: dict[str, dict[str, float]], fps: float | None, note: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"loop": loop, "note": note, "fps": None if fps is None else round(fps, 1)}
    for stage in STAGES:
        if stage in latency:  # the 1 Hz / 10 Hz models: per call (both loops), not per frame
            out[f"{stage}_p50"] = round(latency[stage].get("call_p50", latency[stage]["p50"]), 2)
    out["total_p95"] = round(latency["total"]["p95"], 2) if "total" in latency else None
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, default=REPO / "data/pretrained/arena")
    parser.add_argument("--seconds", type=float, default=30.0, help="game seconds per loop measured")
    parser.add_argument("--no-screen", action="store_true", help="skip the Xvfb + mss + pynput row")
    parser.add_argument("--game", default="arena", help="arena, or a game the adapter starts (naev)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    load = apply_threads(args)
    if args.game != "arena":
        main_launched(args)
        return
    latency, rates = in_process(args.policy, args.seconds, args.threads)
    rows = [row("in-process (lock-step)", latency, None, "pilot eval's loop")]
    extra: dict[str, Any] = {"policy": str(args.policy), "load average at start": round(load, 2)}
    extra |= {f"decisions/s {name}": round(rate, 2) for name, rate in rates.items()}
    extra["in-process total p50 / 33.3 ms frame budget"] = round(latency["total"]["p50"] / FRAME_BUDGET_MS, 2)
    if not args.no_screen:
        screen = through_screen(args.policy, args.seconds, args.threads)
        if isinstance(screen, str):
            rows.append({"loop": "screen (Xvfb, mss, pynput)", "note": screen})
        else:
            fps = screen["frames"] / max(args.seconds, 1e-9)
            rows.append(row("screen (Xvfb, mss, pynput)", screen["latency_ms"], fps, "pilot run's loop"))
            ratio = screen["latency_ms"]["total"]["p50"] / latency["total"]["p50"]
            extra["screen / in-process total p50"] = round(ratio, 2)
    report("Live loop latency, ms", rows, COLUMNS, args.json, **extra)


if __name__ == "__main__":
    main()
