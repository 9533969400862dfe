r"""`pilot autolabel` scored against the Arena's ground truth on episodes nothing was tuned on (issue 19).

The whole chain as a user runs it, a scripted person naming clusters and answering the audit: demos (fresh
seeds), `pilot autolabel` (a subprocess: benchmarks may not import vlm_labeling), training/autolabel.py.
Reports per-class precision / recall at IoU 0.5 of the labels (round 0 and final), the test mAP50 of a
detector trained on the auto labels over one trained on the ground truth of the same frames, and the
human decisions. Ground truth is used only for scoring.

    .venv/bin/python -m benchmarks.bench_autolabel --work /tmp/autolabel-bench          # ~30 min on 2 CPUs
    .venv/bin/python -m benchmarks.bench_autolabel --work data/autolabel-bench --episodes 8 --seconds 60 \
        --width 1280 --height 720 --zoom 1 --epochs 30 --rounds 3 --json                 # full scale
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import add_common_args, apply_threads, report
from bot.profile import load_profile
from bot.recordings.episode import find_episodes, open_episode
from training.autolabel import SelfTrainConfig, SelfTrainError, export_dataset
from training.autolabel import run as selftrain
from training.autolabel_score import gt_boxes, score_boxes, scripted_audit, scripted_names


def demos(out: Path, args: argparse.Namespace, episodes: int, seconds: float, seed: int) -> Path:
    from bot.play.demos import DemosConfig, run

    run(
        DemosConfig(
            out=out,
            episodes=episodes,
            seconds=seconds,
            seed=seed,
            width=args.width,
            height=args.height,
            zoom=args.zoom,
            workers=1,
        )
    )
    return out


def autolabel(data: Path, work: Path, args: argparse.Namespace, *more: str) -> int:
    cmd = [
        sys.executable,
        "-m",
        "bot.cli",
        "autolabel",
        "--data",
        str(data),
        "--game",
        args.game,
        "--out",
        str(work),
        "--no-review",
        "--every",
        str(args.every),
        "--imgsz",
        str(args.imgsz),
        *more,
    ]
    return subprocess.run(cmd, check=False).returncode


def name_clusters(data: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Cluster, let the scripted person name every cluster, label; returns the naming figures."""
    if autolabel(data, work, args, "--stop-after", "clusters"):
        raise SystemExit("pilot autolabel failed to cluster")
    start = time.perf_counter()
    names = scripted_names(work, data, load_profile(args.game))
    seconds = time.perf_counter() - start
    (work.parent / "names.json").write_text(json.dumps(names))
    if autolabel(data, work, args, "--names", str(work.parent / "names.json")):
        raise SystemExit("pilot autolabel failed to label")
    return {"clusters": len(names), "named": sum(v != "ignore" for v in names.values()), "script_s": seconds}


def self_train(data: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    cfg = SelfTrainConfig(
        work=work,
        data=data,
        game=args.game,
        rounds=args.rounds,
        epochs=args.epochs,
        imgsz=args.imgsz,
        every=args.every,
        threads=args.threads,
    )
    try:
        return selftrain(cfg)
    except SelfTrainError:  # the audit: the scripted person answers once, the run resumes
        items = json.loads((work / "audit" / "items.json").read_text())
        answers = scripted_audit(items, data, load_profile(args.game))
        (work / "audit" / "answers.json").write_text(json.dumps(answers))
        return selftrain(cfg)


def detector_ratio(
    data: Path, test: Path, work: Path, dataset: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """mAP50 on the test episodes: trained on the final auto labels vs the ground truth of the same frames."""
    from bot.perception.detector import Detector, DetectorConfig
    from training.detector import DetectorTrainConfig, evaluate_detector, gt_episodes
    from training.detector import run as train

    profile = load_profile(args.game)
    episodes = {p.relative_to(data).as_posix(): open_episode(p) for p in find_episodes(data)}
    truth = {
        n: [
            {"frame": f, "cls": c, **dict(zip(("x1", "y1", "x2", "y2"), map(float, b)))}
            for f, objs in gt_boxes(data / n, profile).items()
            for c, b in objs
        ]
        for n in episodes
    }
    gt_yaml = export_dataset(
        work / "gt-dataset",
        episodes,
        truth,
        profile.class_names,
        args.imgsz or profile.detector.imgsz,
        args.every,
        0.2,
    )
    heldout = gt_episodes(test, profile)
    result = {}
    for name, yaml in (("auto", dataset), ("gt", gt_yaml)):
        out = work / f"detector-{name}"
        if not (out / "best.pt").exists():
            train(
                DetectorTrainConfig(
                    data=yaml,
                    out=out,
                    profile=args.game,
                    imgsz=args.imgsz,
                    epochs=args.epochs,
                    onnx=False,
                    threads=args.threads,
                )
            )
        detector = Detector(DetectorConfig(out, conf=0.001, max_det=300), profile.class_names)
        result[name] = evaluate_detector(detector, heldout, profile.class_names, every=10)["mAP50"]
    result["ratio"] = result["auto"] / max(result["gt"], 1e-9)
    return result


def human_decisions(work: Path) -> dict[str, Any]:
    lines = [json.loads(x) for x in (work / "decisions.jsonl").read_text().splitlines() if x.strip()]
    human = [d for d in lines if d["human"]]
    return {
        "human_decisions": len(human),
        "by_kind": {k: sum(d["what"] == k for d in human) for k in sorted({d["what"] for d in human})},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--work", type=Path, required=True, help="folder for episodes, work folder, detectors"
    )
    parser.add_argument("--game", default="arena")
    parser.add_argument("--episodes", type=int, default=4, help="episodes to label")
    parser.add_argument(
        "--test-episodes", type=int, default=2, help="held-out episodes the detectors are scored on"
    )
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--zoom", type=float, default=0.5)
    parser.add_argument("--every", type=int, default=6)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    add_common_args(parser)
    args = parser.parse_args(argv)
    load = apply_threads(args)
    data, test, work = args.work / "data", args.work / "test", args.work / "work"
    if not data.exists():
        demos(data, args, args.episodes, args.seconds, seed=5000)
    if not test.exists():
        demos(test, args, args.test_episodes, args.seconds, seed=6000)
    naming = name_clusters(data, work, args)
    profile = load_profile(args.game)
    round0 = score_boxes(find_episodes(data), profile, frames="all")
    rounds = self_train(data, work, args)
    final = score_boxes(find_episodes(data), profile, frames="all")
    ratio = detector_ratio(data, test, args.work, Path(rounds["dataset"]), args)
    rows = [
        {
            "class": c,
            "P round 0": round0["per_class"].get(c, {}).get("precision"),
            "R round 0": round0["per_class"].get(c, {}).get("recall"),
            "P final": v["precision"],
            "R final": v["recall"],
            "objects": v["tp"] + v["fn"],
        }
        for c, v in final["per_class"].items()
    ]
    rows.append(
        {
            "class": "all",
            "P round 0": round0["precision"],
            "R round 0": round0["recall"],
            "P final": final["precision"],
            "R final": final["recall"],
            "objects": None,
        }
    )
    extra = dict(
        mAP50_auto=ratio["auto"],
        mAP50_gt=ratio["gt"],
        detector_ratio=ratio["ratio"],
        naming=naming,
        rounds=rounds["rounds"],
        **human_decisions(work),
        load_avg=load,
    )
    (args.work / "result.json").write_text(
        json.dumps({"rows": rows, **extra}, indent=1)
    )  # ultralytics prints too
    report(
        "autolabel vs ground truth (IoU 0.5)",
        rows,
        ["class", "P round 0", "R round 0", "P final", "R final", "objects"],
        args.json,
        **extra,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
