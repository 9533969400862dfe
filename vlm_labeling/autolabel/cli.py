"""`pilot autolabel`: detector labels for a game without ground truth, from its recorded episodes alone.

Proposals, tracks, appearance clusters each named once (names file, VLM, or a person on the review page
at the printed URL), template matches; out come `labels/boxes-auto.parquet` per episode and a YOLO
dataset. Reruns resume. Design: docs/notes/vlm_labeling.md. Examples:

    pilot autolabel --data data/recordings/mygame --game mygame --out data/autolabel/mygame   # + review
    pilot autolabel --data ... --out ... --no-review --names names.json   # {"0": "npc_scout", "1": "ignore"}
    pilot autolabel --data ... --out ... --vlm-url http://127.0.0.1:11434/v1 --vlm-model qwen2.5vl:7b
    pilot autolabel --out data/autolabel/mygame --review-only   # the page alone (+ the audit)
    pilot train detector --data data/autolabel/mygame/dataset/data.yaml --profile mygame --out ...
    python -m training.autolabel --work data/autolabel/mygame --data ... --game mygame   # self-training
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import tyro

from bot.profile import load_profile
from vlm_labeling.autolabel import pipeline, review, store
from vlm_labeling.autolabel.config import AutolabelConfig
from vlm_labeling.autolabel.errors import AutolabelError

log = logging.getLogger(__name__)


def announce(url: str) -> None:
    print(f"review page: {url}  (keys are on the page; Ctrl+C stops, decisions are kept)", flush=True)


def review_only(cfg: AutolabelConfig) -> dict[str, Any]:
    """Serve the review page of an existing work folder until nothing is left: the unnamed clusters, then
    self-training's audit. The game (and the episodes, for an audit without frames) are the run's own."""
    saved = cfg.out / "config.json"
    if not saved.exists():
        raise AutolabelError(f"{saved}: missing; run `pilot autolabel --data ... --out {cfg.out}` first")
    settings = store.read_json(saved)
    profile = load_profile(settings["game"])
    data = cfg.data or Path(settings["data"])
    state = review.ReviewState(cfg.out, profile.class_names, audit=True, data=data)
    before = state.left()
    left = review.serve(state, cfg.review_port, lambda left: not any(left.values()), announce)
    return {
        "work": str(cfg.out),
        "named": before["clusters"] - left["clusters"],
        "audit_answered": before["audit"] - left["audit"],
        "left": left,
    }


def run(cfg: AutolabelConfig) -> dict[str, Any]:
    """Every stage up to `cfg.stop_after` (or only the review page: --review-only); returns the summary."""
    if cfg.review_only:
        return review_only(cfg)
    profile = load_profile(cfg.game)
    cfg.out.mkdir(parents=True, exist_ok=True)
    store.write_json(cfg.out / "config.json", json.loads(json.dumps(asdict(cfg), default=str)))
    episodes = pipeline.discover(cfg, profile)
    tracks = pipeline.stage_tracks(cfg, profile, episodes)
    crops = pipeline.stage_crops(cfg, episodes, tracks)
    clusters = pipeline.stage_clusters(cfg, tracks, crops)
    summary: dict[str, Any] = {
        "work": str(cfg.out),
        "episodes": len(episodes),
        "episodes_with_motion": len(tracks),
        "tracks": sum(len(set(t.column("track").to_pylist())) for t in tracks.values()),
        "clusters": len(clusters),
    }
    if cfg.stop_after == "clusters":
        return summary
    names = pipeline.stage_names(cfg, profile, clusters, announce)
    summary["named"] = {
        name: sum(1 for v in names.values() if v == name) for name in sorted(set(names.values()))
    }
    summary["labels"] = pipeline.stage_labels(cfg, profile, episodes, clusters, names)
    decisions = store.read_decisions(cfg.out)
    summary["decisions"] = {
        "human": sum(d["human"] for d in decisions),
        "machine": sum(not d["human"] for d in decisions),
        "human_minutes": round(sum(d["seconds"] or 0.0 for d in decisions if d["human"]) / 60.0, 2),
    }
    return summary


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(AutolabelConfig, args=argv, prog="pilot autolabel", description=__doc__)
    summary = run(cfg)
    if cfg.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    import sys

    from bot.logs import setup_logging

    setup_logging()
    sys.exit(main())
