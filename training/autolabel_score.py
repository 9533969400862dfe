"""Scoring `pilot autolabel` against the Arena's ground truth (never used to make labels), and the scripted
person that stands in for a reviewer in tests and benchmarks.

    labels/boxes-auto.parquet vs gt_objects ──match per class at IoU >= 0.5──▶ precision, recall per class
    clusters.json members vs gt_objects ──majority class per cluster──▶ names a careful person would give
    detections vs gt_objects ──▶ the audit answers a careful person would give

Ground truth counts as in training/detector.py: objects mostly under the HUD panels, or smaller than
`min_box` px, are not expected.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from bot.profile import GameProfile
from bot.recordings.episode import open_episode
from training.detector import _box_iou, hidden_px, in_view

IOU = 0.5


def gt_boxes(
    episode_dir: Path, profile: GameProfile, min_box: float = 2.0
) -> dict[int, list[tuple[str, np.ndarray]]]:
    """frame -> [(cls, xyxy)] of the ground-truth objects in view."""
    episode = open_episode(episode_dir)
    objects = episode.steps().column("gt_objects").to_pylist()
    hidden = hidden_px(list(profile.hud.panels.values()), episode.meta.width, episode.meta.height)
    out: dict[int, list[tuple[str, np.ndarray]]] = {}
    for frame, objs in enumerate(objects):
        out[frame] = [
            (o["cls"], np.array([o["x1"], o["y1"], o["x2"], o["y2"]], np.float32))
            for o in objs or ()
            if in_view(o, min_box, hidden)
        ]
    return out


def _match(
    gt: list[tuple[str, np.ndarray]], pred: list[tuple[str, np.ndarray]]
) -> tuple[list[bool], list[bool]]:
    """(each gt matched?, each prediction matched?): greedy on IoU, same class, IoU >= 0.5, one to one."""
    gt_hit, pred_hit = [False] * len(gt), [False] * len(pred)
    if not gt or not pred:
        return gt_hit, pred_hit
    iou = _box_iou(np.stack([b for _, b in gt]), np.stack([b for _, b in pred]))
    same = np.array([[g == p for p, _ in pred] for g, _ in gt])
    iou = np.where(same, iou, 0.0)
    for flat in np.argsort(-iou, axis=None):
        g, p = divmod(int(flat), len(pred))
        if iou[g, p] < IOU:
            break
        if not gt_hit[g] and not pred_hit[p]:
            gt_hit[g] = pred_hit[p] = True
    return gt_hit, pred_hit


def score_boxes(
    episode_dirs: Iterable[Path], profile: GameProfile, source: str = "boxes-auto", frames: str = "labelled"
) -> dict[str, Any]:
    """Per-class precision and recall at IoU 0.5 of labels/<source>.parquet against gt_objects.

    frames: "labelled" scores the frames the labels file has any row for, or that are multiples of its
    `every` stride; "all" scores every frame (labels missing on a frame count as misses).
    """
    tp, fp, fn = Counter(), Counter(), Counter()
    scored = 0
    for path in episode_dirs:
        table = pq.read_table(Path(path) / "labels" / f"{source}.parquet").to_pylist()
        preds: dict[int, list] = defaultdict(list)
        for r in table:
            preds[r["frame"]].append((r["cls"], np.array([r["x1"], r["y1"], r["x2"], r["y2"]], np.float32)))
        truth = gt_boxes(Path(path), profile)
        for frame, gt in truth.items():
            if frames == "labelled" and frame not in preds:
                continue
            scored += 1
            gt_hit, pred_hit = _match(gt, preds.get(frame, []))
            for (cls, _), hit in zip(gt, gt_hit):
                tp[cls] += hit
                fn[cls] += not hit
            for (cls, _), hit in zip(preds.get(frame, []), pred_hit):
                fp[cls] += not hit
    rows = {}
    for cls in sorted(set(tp) | set(fp) | set(fn)):
        rows[cls] = {
            "tp": tp[cls],
            "fp": fp[cls],
            "fn": fn[cls],
            "precision": tp[cls] / max(tp[cls] + fp[cls], 1),
            "recall": tp[cls] / max(tp[cls] + fn[cls], 1),
        }
    total_tp, total_fp, total_fn = sum(tp.values()), sum(fp.values()), sum(fn.values())
    return {
        "frames": scored,
        "per_class": rows,
        "precision": total_tp / max(total_tp + total_fp, 1),
        "recall": total_tp / max(total_tp + total_fn, 1),
    }


def scripted_names(
    work: Path, episode_root: Path, profile: GameProfile, purity: float = 0.5
) -> dict[str, str]:
    """The names a careful person would give each cluster of WORK/clusters.json: the class most of its members
    match (IoU >= 0.5) when at least `purity` of them do, else "ignore"."""
    clusters = json.loads((work / "clusters.json").read_text())
    truth_cache: dict[str, dict] = {}
    names = {}
    for cluster in clusters:
        votes: Counter[str] = Counter()
        for m in cluster["members"]:
            truth = truth_cache.setdefault(m["episode"], gt_boxes(episode_root / m["episode"], profile))
            box = np.array([[m["x1"], m["y1"], m["x2"], m["y2"]]], np.float32)
            gt = truth.get(m["frame"], [])
            best = "ignore"
            if gt:
                iou = _box_iou(box, np.stack([b for _, b in gt]))[0]
                if iou.max() >= IOU:
                    best = gt[int(iou.argmax())][0]
            votes[best] += 1
        cls, count = votes.most_common(1)[0]
        names[str(cluster["id"])] = cls if count >= purity * cluster["size"] else "ignore"
    return names


def scripted_audit(items: list[dict], episode_root: Path, profile: GameProfile) -> dict[str, bool]:
    """The answers a careful person would give the audit items of training/autolabel.py: true when the box
    matches a ground-truth object of its class at IoU >= 0.5."""
    truth_cache: dict[str, dict] = {}
    answers = {}
    for item in items:
        truth = truth_cache.setdefault(item["episode"], gt_boxes(episode_root / item["episode"], profile))
        box = (item["cls"], np.array([item["x1"], item["y1"], item["x2"], item["y2"]], np.float32))
        _, hit = _match(truth.get(item["frame"], []), [box])
        answers[item["item"]] = bool(hit[0])
    return answers
