"""The labels `pilot autolabel` writes: `labels/boxes-auto.parquet` in each episode, and a YOLO dataset
that `pilot train detector --data WORK/dataset/data.yaml --profile G` trains on.

    boxes-auto.parquet   frame, cls (profile class name), x1, y1, x2, y2 (frame px), conf
    WORK/dataset/        data.yaml, images/{train,val}/<episode>_<frame>.png, labels/{train,val}/....txt

Dataset images are `resize_for` at the detector's input shape (what the Detector does live) and are not
blanked: a dataset given as YAML is trained without a HUD mask (training/detector.py), so the detector
learns the HUD as background. Train and validation are split by whole episodes.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bot.perception.detector import input_shape, resize_for
from bot.recordings.episode import Episode
from vlm_labeling.autolabel.proposals import box_iou

log = logging.getLogger(__name__)

SOURCE = "boxes-auto"
# The same schema as training/autolabel.py writes (layering keeps the two apart; a test holds them equal).
BOXES_SCHEMA = pa.schema(
    [
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("cls", pa.string(), nullable=False),  # a class name of the game profile
        pa.field("x1", pa.float32(), nullable=False),  # frame px
        pa.field("y1", pa.float32(), nullable=False),
        pa.field("x2", pa.float32(), nullable=False),
        pa.field("y2", pa.float32(), nullable=False),
        pa.field("conf", pa.float32(), nullable=False),  # 0..1: 1 = a named cluster's tracked box
    ]
)
MIN_BOX = 2.0  # px at the detector's input; smaller boxes are not labels (as training/detector.py)


def dedup(rows: list[dict[str, Any]], max_iou: float = 0.6) -> list[dict[str, Any]]:
    """Per frame, boxes overlapping a more confident kept box by more than `max_iou` are dropped."""
    by_frame: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_frame[row["frame"]].append(row)
    out = []
    for frame in sorted(by_frame):
        kept: list[dict[str, Any]] = []
        for row in sorted(by_frame[frame], key=lambda r: -r["conf"]):
            box = np.array([[row["x1"], row["y1"], row["x2"], row["y2"]]], np.float32)
            others = np.array([[k["x1"], k["y1"], k["x2"], k["y2"]] for k in kept], np.float32).reshape(-1, 4)
            if not len(others) or box_iou(box, others).max() <= max_iou:
                kept.append(row)
        out += kept
    return out


def write_boxes(episode_dir: Path, rows: list[dict[str, Any]], info: dict[str, str]) -> Path:
    """Write (replace) <episode>/labels/boxes-auto.parquet atomically; `info` goes into its metadata."""
    path = Path(episode_dir) / "labels" / f"{SOURCE}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: (r["frame"], r["cls"])), schema=BOXES_SCHEMA)
    table = table.replace_schema_metadata({"kind": "boxes", **info})
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def read_boxes(episode_dir: Path) -> pa.Table:
    return pq.read_table(Path(episode_dir) / "labels" / f"{SOURCE}.parquet")


def split(names: list[str], val_fraction: float) -> dict[str, str]:
    """episode id -> "train" | "val": the last ceil(n * val_fraction) episodes validate (at least one
    trains); a single episode is split by time instead (see `frame_split`)."""
    n_val = min(len(names) - 1, max(1, math.ceil(len(names) * val_fraction))) if len(names) > 1 else 0
    return {name: ("val" if i >= len(names) - n_val else "train") for i, name in enumerate(sorted(names))}


def frame_split(index: int, frames: int, val_fraction: float, episode_split: str, single: bool) -> str:
    """The split of one frame: its episode's, or for a lone episode its last `val_fraction` is validation."""
    if not single:
        return episode_split
    return "val" if index >= frames * (1.0 - val_fraction) else "train"


def export_dataset(
    out: Path,
    episodes: dict[str, Episode],
    boxes: dict[str, list[dict[str, Any]]],
    classes: list[str],
    imgsz: int,
    every: int,
    val_fraction: float,
) -> dict[str, Any]:
    """Write the YOLO dataset (rebuilt whole: it is derived data); returns its stats."""
    from tqdm import tqdm

    if out.exists():
        shutil.rmtree(out)
    splits = split(list(episodes), val_fraction)
    counts = {"train": 0, "val": 0, "boxes": 0}
    for name, episode in tqdm(sorted(episodes.items()), desc="dataset", unit="episode", leave=False):
        by_frame: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in boxes.get(name, []):
            by_frame[row["frame"]].append(row)
        for index, frame in episode.frames(every=every):
            part = frame_split(index, episode.num_frames, val_fraction, splits[name], len(episodes) == 1)
            counts["boxes"] += _write_image(
                out, part, f"{_stem(name)}_{index:06d}", frame, by_frame[index], classes, imgsz
            )
            counts[part] += 1
    names = "\n".join(f"  {i}: {c}" for i, c in enumerate(classes))
    (out / "data.yaml").write_text(
        f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n"
    )
    log.info(
        "dataset %s: %d train / %d val images, %d boxes", out, counts["train"], counts["val"], counts["boxes"]
    )
    return counts


def _write_image(
    out: Path,
    part: str,
    stem: str,
    frame: np.ndarray,
    rows: list[dict[str, Any]],
    classes: list[str],
    imgsz: int,
) -> int:
    h, w = frame.shape[:2]
    shape = input_shape(imgsz, w, h)
    scale = min(shape[0] / h, shape[1] / w)
    (out / "images" / part).mkdir(parents=True, exist_ok=True)
    (out / "labels" / part).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / "images" / part / f"{stem}.png"), resize_for(frame, shape)[:, :, ::-1])
    lines = []
    for r in rows:
        x1, y1, x2, y2 = max(r["x1"], 0.0), max(r["y1"], 0.0), min(r["x2"], w), min(r["y2"], h)
        if min(x2 - x1, y2 - y1) * scale < MIN_BOX:
            continue
        cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
        lines.append(f"{classes.index(r['cls'])} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
    (out / "labels" / part / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    return len(lines)


def _stem(name: str) -> str:
    return name.replace("/", "__")
