"""`pilot autolabel`: detector labels for a game without ground truth, from its recorded episodes alone.

Proposals (motion against the background, salient blobs; HUD masked), ByteTrack tracks, appearance clusters
each named once (a names file, or a VLM), template matches of the named sprites, then
`labels/boxes-auto.parquet` in each episode and a YOLO dataset. A rerun resumes: finished stages are kept.
Design: docs/notes/vlm_labeling.md, "vlm_labeling/autolabel/". Examples:

    pilot autolabel --data data/recordings/mygame --game mygame --out data/autolabel/mygame --no-review
    pilot autolabel --data ... --out ... --names names.json          # {"0": "npc_scout", "1": "ignore"}
    pilot autolabel --data ... --out ... --vlm-url http://127.0.0.1:11434/v1 --vlm-model qwen2.5vl:7b
    pilot train detector --data data/autolabel/mygame/dataset/data.yaml --profile mygame --out ...
    python -m training.autolabel --work data/autolabel/mygame --data ... --game mygame   # self-training
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Any

import tyro

from bot.profile import load_profile
from vlm_labeling.autolabel import pipeline, store
from vlm_labeling.autolabel.config import AutolabelConfig

log = logging.getLogger(__name__)


def run(cfg: AutolabelConfig) -> dict[str, Any]:
    """Every stage up to `cfg.stop_after`; returns the run's summary."""
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
    names = pipeline.stage_names(cfg, profile, clusters)
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
