"""YOLO self-training on `pilot autolabel`'s labels: train, predict every frame, keep the detections that
tracking confirms and whose score passes the audited threshold, write them as the labels, retrain.

    WORK/dataset (round 0) ──train──▶ detector ──every frame──▶ ByteTrack ──tracks >= min_track_s──▶ scored
        ──round 1 only: audit (a person checks audit_size detections once) ──▶ threshold (precision >= target)
        ──score >= threshold──▶ labels/boxes-auto.parquet (round r) + WORK/selftrain/round_r/dataset ──▶ ...

Here and not in vlm_labeling/autolabel because the layers let only training import training.detector. Every
round's outputs stay under WORK/selftrain/round_<r>/, so a rerun resumes at the first unfinished round.

    python -m training.autolabel --work data/autolabel/mygame --data data/recordings/mygame --game mygame
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tyro

from bot.errors import PilotError
from bot.perception.detector import Detector, DetectorConfig, input_shape, resize_for
from bot.perception.tracker import Tracker
from bot.profile import GameProfile, TrackerSpec, load_profile
from bot.recordings.episode import Episode, open_episode
from training.detector import DetectorTrainConfig
from training.detector import run as train_detector
from validation import check_float, check_int

log = logging.getLogger(__name__)

SOURCE = "boxes-auto"
# The schema of vlm_labeling/autolabel/labels.py (the layers keep the two apart; a test holds them equal).
BOXES_SCHEMA = pa.schema(
    [
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("cls", pa.string(), nullable=False),
        pa.field("x1", pa.float32(), nullable=False),
        pa.field("y1", pa.float32(), nullable=False),
        pa.field("x2", pa.float32(), nullable=False),
        pa.field("y2", pa.float32(), nullable=False),
        pa.field("conf", pa.float32(), nullable=False),
    ]
)
MIN_AUDITED = 5  # a threshold is chosen only from at least this many audited detections above it


class SelfTrainError(PilotError):
    """Self-training cannot go on (audit not answered, bad answers file, missing autolabel outputs)."""


@dataclass
class SelfTrainConfig:
    """YOLO self-training rounds on the labels of a `pilot autolabel` work folder."""

    work: Path  # the work folder of `pilot autolabel` (dataset/, clusters.meta.json, decisions.jsonl)
    data: Path  # the folder of episodes `pilot autolabel` labelled (its --data)
    game: str = "arena"  # game profile name or YAML path
    rounds: int = 2  # train-predict-relabel rounds
    epochs: int = 16  # YOLO epochs per round
    batch: int = 16  # images per step
    imgsz: int = 0  # px; 0 = the profile's detector.imgsz
    model: str = "yolo11n.yaml"  # ultralytics model YAML (from scratch, offline)
    every: int = 6  # frame step of the next round's dataset images
    val_fraction: float = 0.2  # share of the episodes validating
    conf: float = 0.05  # detections at least this confident are tracked (ByteTrack's second association)
    # a young detector is unsure: tracks start and continue at lower confidences than live play allows
    track_high: float = 0.3  # detections this confident are matched first
    track_new: float = 0.35  # an unmatched detection this confident starts a track
    min_track_s: float = 0.3  # s a track must be matched in to confirm its detections
    audit_size: int = 20  # detections a person checks once, spread over the scores
    target_precision: float = 0.95  # the threshold keeps the audited detections at least this precise
    answers: Path | None = None  # audit answers {"<item>": true|false}; None = WORK/audit/answers.json
    threads: int = 0  # torch threads (0 = default)
    extra: dict[str, Any] = field(default_factory=dict)  # further ultralytics train() arguments

    def __post_init__(self) -> None:
        self.work, self.data = Path(self.work), Path(self.data)
        for name in ("rounds", "epochs", "batch", "every", "audit_size"):
            check_int(self, name, 1)
        check_int(self, "imgsz", 0)
        for name in ("conf", "track_high", "track_new", "target_precision", "val_fraction"):
            check_float(self, name, 0.0, 1.0, low_open=True)
        check_float(self, "min_track_s", 0.0)


# ------------------------------------------------------------------------------------------------ labels


def write_boxes(episode_dir: Path, rows: list[dict[str, Any]], info: dict[str, str]) -> None:
    path = Path(episode_dir) / "labels" / f"{SOURCE}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: (r["frame"], r["cls"])), schema=BOXES_SCHEMA)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table.replace_schema_metadata({"kind": "boxes", **info}), tmp)
    os.replace(tmp, path)


def export_dataset(
    out: Path,
    episodes: dict[str, Episode],
    boxes: dict[str, list[dict]],
    classes: list[str],
    imgsz: int,
    every: int,
    val_fraction: float,
) -> Path:
    """A YOLO dataset of every `every`-th frame, split by whole episodes (a lone episode: by time)."""
    if out.exists():
        shutil.rmtree(out)
    names = sorted(episodes)
    n_val = min(len(names) - 1, max(1, math.ceil(len(names) * val_fraction))) if len(names) > 1 else 0
    for i, name in enumerate(names):
        episode = episodes[name]
        by_frame: dict[int, list[dict]] = {}
        for r in boxes.get(name, []):
            by_frame.setdefault(r["frame"], []).append(r)
        for index, frame in episode.frames(every=every):
            late = index >= episode.num_frames * (1.0 - val_fraction)
            part = "val" if (i >= len(names) - n_val if len(names) > 1 else late) else "train"
            _write_image(
                out,
                part,
                f"{name.replace('/', '__')}_{index:06d}",
                frame,
                by_frame.get(index, []),
                classes,
                imgsz,
            )
    listing = "\n".join(f"  {i}: {c}" for i, c in enumerate(classes))
    (out / "data.yaml").write_text(
        f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{listing}\n"
    )
    return out / "data.yaml"


def _write_image(
    out: Path, part: str, stem: str, frame: np.ndarray, rows: list[dict], classes: list[str], imgsz: int
) -> None:
    h, w = frame.shape[:2]
    shape = input_shape(imgsz, w, h)
    (out / "images" / part).mkdir(parents=True, exist_ok=True)
    (out / "labels" / part).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / "images" / part / f"{stem}.png"), resize_for(frame, shape)[:, :, ::-1])
    lines = [
        f"{classes.index(r['cls'])} {(r['x1'] + r['x2']) / 2 / w:.6f} {(r['y1'] + r['y2']) / 2 / h:.6f} "
        f"{(r['x2'] - r['x1']) / w:.6f} {(r['y2'] - r['y1']) / h:.6f}"
        for r in rows
    ]
    (out / "labels" / part / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))


# ------------------------------------------------------------------------------------------------ predict


def tracker_spec(cfg: SelfTrainConfig) -> TrackerSpec:
    """ByteTrack for a young detector's boxes: matched on IoU alone (fusing tiny scores into the cost would
    match nothing), started and continued at the configured confidences."""
    return TrackerSpec(
        track_high_thresh=max(cfg.track_high, cfg.conf),
        track_low_thresh=cfg.conf,
        new_track_thresh=cfg.track_new,
        fuse_score=False,
        match_thresh=0.9,
        track_buffer_s=0.5,
        keep_lost_s=0.0,
    )


def confirmed(
    episode: Episode, detector: Detector, profile: GameProfile, spec: TrackerSpec, min_track_s: float
) -> list[dict]:
    """Detections of every frame that belong to a track matched in at least `min_track_s` s; each scored by
    its track's mean confidence and classed by its track's vote."""
    tracker = Tracker(spec, episode.meta.fps, profile.class_ids("ignore"))
    by_track: dict[int, list[dict]] = {}
    for index, frame in episode.frames():
        tracks = tracker.update(detector.detect(frame), index / episode.meta.fps)
        seen = tracks.visible
        for tid, box, conf, cls in zip(
            tracks.id[seen], tracks.xyxy[seen], tracks.conf[seen], tracks.cls[seen]
        ):
            by_track.setdefault(int(tid), []).append(
                {"frame": index, "box": box, "conf": float(conf), "cls": int(cls)}
            )
    need = max(1, round(min_track_s * episode.meta.fps))
    out = []
    for track, mine in by_track.items():
        if len(mine) < need:
            continue
        score = round(float(np.mean([r["conf"] for r in mine])), 4)
        cls = profile.class_names[mine[-1]["cls"]]  # the track's class vote over all its detections
        out += [
            {"frame": r["frame"], "track": track, "cls": cls, **_xyxy(r["box"]), "conf": score} for r in mine
        ]
    return out


def _xyxy(box: np.ndarray) -> dict[str, float]:
    return {k: float(v) for k, v in zip(("x1", "y1", "x2", "y2"), box)}


# ------------------------------------------------------------------------------------------------ audit


def audit_items(rows: dict[str, list[dict]], size: int, seed: int = 0) -> list[dict]:
    """`size` confirmed detections spread evenly over the scores (one per score quantile), for a person."""
    flat = [{"episode": name, **r} for name in sorted(rows) for r in rows[name]]
    if not flat:
        return []
    order = sorted(range(len(flat)), key=lambda i: flat[i]["conf"])
    rng = np.random.default_rng(seed)
    picked = []
    for chunk in np.array_split(np.array(order), min(size, len(order))):
        picked.append(int(rng.choice(chunk)))
    return [
        {
            "item": str(n),
            **{k: flat[i][k] for k in ("episode", "frame", "cls", "x1", "y1", "x2", "y2", "conf")},
        }
        for n, i in enumerate(picked)
    ]


def threshold(items: list[dict], answers: dict[str, bool], target: float) -> float:
    """The lowest score at which the audited detections at or above it are at least `target` precise (with
    at least MIN_AUDITED of them); the best-precision score when none is."""
    scored = sorted(((i["conf"], bool(answers[i["item"]])) for i in items), reverse=True)
    best, best_precision = (scored[0][0] if scored else 1.0), -1.0
    good = 0
    for n, (conf, ok) in enumerate(scored, 1):
        good += ok
        precision = good / n
        if n >= MIN_AUDITED and precision >= target:
            best, best_precision = conf, 1.0 + precision  # any passing score beats every failing one
        elif best_precision < 1.0 and precision > best_precision:
            best, best_precision = conf, precision
    return float(best)


def read_answers(path: Path, items: list[dict]) -> dict[str, bool]:
    """The audit answers {"<item>": true|false}; one line naming the file and the problem otherwise."""
    try:
        answers = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SelfTrainError(
            f"{path}: the audit is not answered yet; answer its {len(items)} detections on the review page "
            f"(`pilot autolabel --out {path.parent.parent} --review-only`), or write "
            '{"<item>": true | false, ...} there yourself, then rerun'
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise SelfTrainError(f"{path}: not readable as JSON ({exc})") from None
    missing = [
        i["item"]
        for i in items
        if not isinstance(answers.get(i["item"]) if isinstance(answers, dict) else None, bool)
    ]
    if missing:
        raise SelfTrainError(f"{path}: items {missing[:10]} have no true/false answer")
    return answers


def write_audit(folder: Path, items: list[dict], episodes: dict[str, Episode]) -> None:
    """items.json, and per item its frame (frame_<n>.png) and a crop with some context and the box drawn
    (item_<n>.png), for the person auditing (`pilot autolabel --review-only` shows them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for item in items:
        frame = episodes[item["episode"]].frame(item["frame"])
        x1, y1, x2, y2 = (int(round(item[k])) for k in ("x1", "y1", "x2", "y2"))
        pad = max(8, (x2 - x1) // 2)
        image = frame[:, :, ::-1].copy()
        cv2.imwrite(str(folder / f"frame_{item['item']}.png"), image)
        cv2.rectangle(image, (x1, y1), (x2, y2), (0, 255, 255), 1)
        h, w = image.shape[:2]
        cut = image[max(0, y1 - pad) : min(h, y2 + pad), max(0, x1 - pad) : min(w, x2 + pad)]
        cv2.imwrite(str(folder / f"item_{item['item']}.png"), cut)
    (folder / "items.json").write_text(json.dumps(items, indent=1))  # last: the images are there when it is


def recorded(work: Path, what: str) -> dict[str, Any]:
    """subject -> the last value recorded for it in WORK/decisions.jsonl (the review page records the audit
    answers it saves, and they must not be counted twice)."""
    path = work / "decisions.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return {d["subject"]: d["value"] for d in map(json.loads, filter(str.strip, lines)) if d["what"] == what}


def redrawn_labels(work: Path) -> dict[str, list[dict]]:
    """Boxes a person redrew on the review page (WORK/audit/redrawn.json), as labels by episode."""
    path = work / "audit" / "redrawn.json"
    if not path.exists():
        return {}
    out: dict[str, list[dict]] = {}
    for box in json.loads(path.read_text()).values():
        row = {k: box[k] for k in ("frame", "cls", "x1", "y1", "x2", "y2")}
        out.setdefault(box["episode"], []).append({**row, "conf": 1.0})
    return out


def record(work: Path, who: str, human: bool, what: str, subject: str, value: Any, **detail: Any) -> None:
    """One line of WORK/decisions.jsonl, as vlm_labeling/autolabel/store.py writes them."""
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "who": who,
        "human": human,
        "what": what,
        "subject": subject,
        "value": value,
        "seconds": None,
        **detail,
    }
    with open(work / "decisions.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def audited_threshold(
    cfg: SelfTrainConfig, rows: dict[str, list[dict]], episodes: dict[str, Episode]
) -> float:
    """The threshold from the audit, asked once (WORK/audit/threshold.json keeps it)."""
    folder = cfg.work / "audit"
    done = folder / "threshold.json"
    if done.exists():
        return float(json.loads(done.read_text())["threshold"])
    items_path = folder / "items.json"
    if items_path.exists():
        items = json.loads(items_path.read_text())
    else:
        items = audit_items(rows, cfg.audit_size)
        write_audit(folder, items, episodes)
    answers_path = cfg.answers or folder / "answers.json"
    answers = read_answers(answers_path, items)
    value = threshold(items, answers, cfg.target_precision)
    seen = recorded(cfg.work, "audit detection")
    for item in items:
        if seen.get(f"audit item {item['item']}") == bool(answers[item["item"]]):
            continue  # the review page recorded this answer as it was given
        record(
            cfg.work,
            f"person (audit file {answers_path})",
            True,
            "audit detection",
            f"audit item {item['item']}",
            bool(answers[item["item"]]),
            conf=item["conf"],
            cls=item["cls"],
        )
    done.write_text(
        json.dumps({"threshold": value, "items": len(items), "target_precision": cfg.target_precision})
    )
    log.info("audit: threshold %.3f from %d answers", value, len(items))
    return value


# ------------------------------------------------------------------------------------------------ rounds


def labelled_episodes(cfg: SelfTrainConfig) -> dict[str, Episode]:
    meta_path = cfg.work / "clusters.meta.json"
    if not (cfg.work / "dataset" / "data.yaml").exists() or not meta_path.exists():
        raise SelfTrainError(
            f"{cfg.work}: no dataset/data.yaml; run `pilot autolabel --out {cfg.work}` first"
        )
    names = json.loads(meta_path.read_text())["episodes"]
    # an id is the episode's path under --data, or its name when --data is the episode itself
    single = (cfg.data / "meta.json").exists()
    return {name: open_episode(cfg.data if single else cfg.data / name) for name in names}


def named_labels(work: Path, episodes: dict[str, Episode]) -> dict[str, list[dict]]:
    """The round-0 labels (named clusters and template matches: decisions, kept in every round), saved under
    WORK/selftrain/round_0/ before round 1 first replaces boxes-auto.parquet."""
    folder = work / "selftrain" / "round_0"
    out = {}
    for name, episode in episodes.items():
        saved = folder / f"{name.replace('/', '__')}.parquet"
        if not saved.exists():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(episode.dir / "labels" / f"{SOURCE}.parquet", saved)
        out[name] = pq.read_table(saved).to_pylist()
    return out


def merge(base: list[dict], found: list[dict], overlap: float = 0.5) -> list[dict]:
    """`base` and the `found` boxes that overlap none of its boxes of that frame by more than `overlap`:
    self-training adds what the named clusters missed and never drops a named box."""
    from training.detector import _box_iou

    by_frame: dict[int, np.ndarray] = {}
    for r in base:
        by_frame.setdefault(r["frame"], []).append([r["x1"], r["y1"], r["x2"], r["y2"]])
    by_frame = {f: np.asarray(v, np.float32) for f, v in by_frame.items()}
    added = []
    for r in found:
        boxes = by_frame.get(r["frame"])
        box = np.array([[r["x1"], r["y1"], r["x2"], r["y2"]]], np.float32)
        if boxes is None or _box_iou(box, boxes).max() <= overlap:
            added.append({k: v for k, v in r.items() if k != "track"})
    return [{k: r[k] for k in ("frame", "cls", "x1", "y1", "x2", "y2", "conf")} for r in base] + added


def run_round(cfg: SelfTrainConfig, profile: GameProfile, episodes: dict[str, Episode], r: int) -> dict:
    folder = cfg.work / "selftrain" / f"round_{r}"
    done = folder / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    data = (
        cfg.work / "dataset" / "data.yaml"
        if r == 1
        else cfg.work / "selftrain" / f"round_{r - 1}" / "dataset" / "data.yaml"
    )
    detector_dir = folder / "detector"
    if not (detector_dir / "best.pt").exists():
        train_detector(
            DetectorTrainConfig(
                data=data,
                out=detector_dir,
                profile=cfg.game,
                model=cfg.model,
                imgsz=cfg.imgsz,
                epochs=cfg.epochs,
                batch=cfg.batch,
                onnx=False,
                threads=cfg.threads,
                extra=dict(cfg.extra),
            )
        )
    detector = Detector(DetectorConfig(detector_dir, conf=cfg.conf, max_det=100), profile.class_names)
    spec = tracker_spec(cfg)
    rows = {name: confirmed(ep, detector, profile, spec, cfg.min_track_s) for name, ep in episodes.items()}
    cut = audited_threshold(cfg, rows, episodes)
    redrawn = redrawn_labels(cfg.work)
    base = {name: named + redrawn.get(name, []) for name, named in named_labels(cfg.work, episodes).items()}
    kept = {name: merge(base[name], [r for r in mine if r["conf"] >= cut]) for name, mine in rows.items()}
    for name, episode in episodes.items():
        write_boxes(
            episode.dir,
            kept[name],
            {"source": "training.autolabel", "round": str(r), "threshold": str(cut)},
        )
    export_dataset(
        folder / "dataset",
        episodes,
        kept,
        profile.class_names,
        cfg.imgsz or profile.detector.imgsz,
        cfg.every,
        cfg.val_fraction,
    )
    summary = {
        "round": r,
        "threshold": cut,
        "labels": sum(len(v) for v in kept.values()),
        "detector": str(detector_dir),
    }
    done.write_text(json.dumps(summary))
    log.info("self-training round %d: %s", r, summary)
    return summary


def run(cfg: SelfTrainConfig) -> dict[str, Any]:
    """Every round not finished yet; returns each round's summary and the last dataset's YAML."""
    profile = load_profile(cfg.game)
    episodes = labelled_episodes(cfg)
    # rounds build on `pilot autolabel`'s labels: new names (a new stamp) start them again; the audit stays
    stamp = json.loads((cfg.work / "dataset" / "autolabel.json").read_text())["settings"]
    marker = cfg.work / "selftrain" / "labels.txt"
    if marker.exists() and marker.read_text() != stamp:
        log.warning("%s: the labels changed since the last rounds; self-training starts again", cfg.work)
        shutil.rmtree(cfg.work / "selftrain")
    (cfg.work / "selftrain").mkdir(parents=True, exist_ok=True)
    marker.write_text(stamp)
    (cfg.work / "selftrain" / "config.json").write_text(json.dumps(asdict(cfg), default=str, indent=1))
    rounds = [run_round(cfg, profile, episodes, r) for r in range(1, cfg.rounds + 1)]
    return {
        "rounds": rounds,
        "dataset": str(cfg.work / "selftrain" / f"round_{cfg.rounds}" / "dataset" / "data.yaml"),
    }


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(SelfTrainConfig, args=argv, prog="python -m training.autolabel", description=__doc__)
    print(json.dumps(run(cfg), indent=2))
    return 0


if __name__ == "__main__":
    import sys

    from bot.logs import setup_logging

    setup_logging()
    try:
        sys.exit(main())
    except PilotError as exc:
        print(f"training.autolabel: error: {exc}", file=sys.stderr)
        sys.exit(1)
