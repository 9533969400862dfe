"""Naev on this machine: its frame rate under Xvfb (software OpenGL), mss capture time, Naev's CPU share, and
how well the probe lines up with the captured frames (ms and px).

For each size, Naev runs the standard scenario for `--seconds` while we capture at 30 fps: fps = game updates
counted by the probe per second; capture = mss grab time; align_ms = age of the probe line matched to a frame;
align_px = distance between a pilot's probe position and where its sprite really is in the frame (template
match). Baselines from the same run: 1280x720 for the frame rate, a grab of an empty Xvfb of the same size for
capture.

    .venv/bin/python -m benchmarks.bench_naev [--seconds 20] [--json]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from benchmarks.common import add_common_args, percentiles_ms, report
from bot.games.processes import cpu_seconds

SIZES = ((1280, 720), (640, 360))


def _empty_capture_ms(width: int, height: int, number: int) -> float:
    import mss

    from bot.games.processes import PrivateDisplay

    with PrivateDisplay(width, height) as display, mss.MSS(display=display.name) as screen:
        region = {"left": 0, "top": 0, "width": width, "height": height}
        times = []
        for _ in range(number):
            start = time.perf_counter()
            screen.grab(region)
            times.append(time.perf_counter() - start)
    return percentiles_ms(times)["p50_ms"]


def _alignment_px(image: np.ndarray, frame: Any, size: tuple[int, int]) -> list[float]:
    from bot.games.naev.overlay import NAEV_DATA
    from bot.games.naev.probe import screen_centre
    from bot.games.naev.sprites import load_sprite, match_offset

    out = []
    for p in frame.pilots:
        cx, cy = screen_centre(frame, p, size)
        dx, dy, score = match_offset(image, load_sprite(NAEV_DATA, p["ship"]), p["dir"], cx, cy)
        if score == score and score > 0.8:  # on screen and not under the GUI
            out.append(float(np.hypot(dx, dy)))
    return out


def measure(width: int, height: int, seconds: float) -> dict[str, Any]:
    import mss

    from bot.games.naev.overlay import NaevScenario
    from bot.games.naev.session import NaevConfig, NaevSession

    with NaevSession(NaevScenario(seed=1), NaevConfig(width=width, height=height)) as naev:
        region = {"left": 0, "top": 0, "width": width, "height": height}
        first, cpu0, t0 = naev.probe.latest(), cpu_seconds(naev.proc.pid), time.monotonic()
        grabs, ages, pixels = [], [], []
        with mss.MSS() as screen:
            while time.monotonic() - t0 < seconds:
                start = time.perf_counter()
                shot = screen.grab(region)
                grabbed = time.monotonic()
                grabs.append(time.perf_counter() - start)
                naev.probe.poll()
                frame = naev.probe.latest()
                ages.append((grabbed - naev.probe.offset) * 1000.0 - frame.t_ms)
                if len(grabs) % 15 == 0:
                    pixels += _alignment_px(np.asarray(shot)[..., 2::-1], frame, (width, height))
                time.sleep(max(0.0, 1 / 30 - (time.monotonic() - grabbed)))
        last, cpu1, t1 = naev.probe.latest(), cpu_seconds(naev.proc.pid), time.monotonic()
    return {
        "size": f"{width}x{height}",
        "naev_fps": (last.frames - first.frames) / ((last.t_ms - first.t_ms) / 1000.0),
        "naev_cpu": (cpu1 - cpu0) / (t1 - t0),  # cores Naev kept busy
        "capture_p50_ms": percentiles_ms(grabs)["p50_ms"],
        "empty_capture_p50_ms": _empty_capture_ms(width, height, 60),
        "align_ms_p50": float(np.percentile(ages, 50)),
        "align_ms_p95": float(np.percentile(ages, 95)),
        "align_px_p50": float(np.median(pixels)) if pixels else float("nan"),
        "align_px_p95": float(np.percentile(pixels, 95)) if pixels else float("nan"),
        "ships_matched": len(pixels),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of play measured per size")
    add_common_args(parser)
    args = parser.parse_args(argv)
    rows = [measure(w, h, args.seconds) for w, h in SIZES]
    for row in rows:
        row["fps_vs_1280"] = row["naev_fps"] / rows[0]["naev_fps"]
        row["capture_vs_empty"] = row["capture_p50_ms"] / row["empty_capture_p50_ms"]
    columns = ["size", "naev_fps", "fps_vs_1280", "naev_cpu", "capture_p50_ms", "capture_vs_empty"]
    columns += ["align_ms_p50", "align_ms_p95", "align_px_p50", "align_px_p95", "ships_matched"]
    report("Naev under Xvfb: frame rate, capture, probe alignment", rows, columns, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
