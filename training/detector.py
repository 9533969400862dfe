r"""`pilot train detector` / `train_detector`: a YOLO detector trained without hand labels, fully offline.

    episodes with ground-truth boxes (Arena demos) ──export──▶ YOLO dataset (split by episode)  ─┐
    or a YOLO dataset YAML of your own (e.g. a Roboflow export for DarkOrbit) ───────────────────┤
                                                                                                 ▼
      ultralytics YOLO built from a model YAML (no pretrained download), trained offline ──▶ best.pt
          ──▶ model.onnx ──▶ mAP through bot.perception.detector.Detector ──▶ --out/

Export and split rules: docs/notes/training.md. Examples:
    pilot train detector --data data/recordings/arena --out data/detectors/arena \
        --eval data/recordings/arena-heldout
    pilot train detector --data datasets/darkorbit/data.yaml --profile darkorbit --out data/detectors/do
"""

from __future__ import annotations

import json
import logging
import math
import platform
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tyro

from bot.errors import DetectorError
from bot.perception.detector import (
    CONFIG_NAME,
    ONNX_NAME,
    PT_NAME,
    Detector,
    DetectorConfig,
    input_shape,
    resize_for,
    ultralytics_offline,
)
from bot.profile import GameProfile, load_profile
from bot.recordings.episode import find_episodes, open_episode
from validation import check_float, check_int, fail

log = logging.getLogger(__name__)

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
HIDDEN_FRACTION = 0.5  # an object at least this much under blanked HUD panels is not in view


@dataclass
class DetectorTrainConfig:
    """Train a YOLO detector from Arena episodes (ground-truth boxes) or a YOLO dataset YAML."""

    data: Path  # folder of episodes with gt_objects, or a YOLO dataset .yaml
    out: Path  # output folder: best.pt, model.onnx, config.json, dataset/, train/
    profile: str = "arena"  # game profile name or YAML path (class names and default imgsz)
    model: str = "yolo11n.yaml"  # ultralytics model YAML (built from scratch; never a *.pt name)
    imgsz: int = 0  # px, long side of the detector input; 0 = the profile's detector.imgsz
    epochs: int = 16  # training epochs
    batch: int = 16  # images per step
    optimizer: str = "AdamW"  # ultralytics optimizer name
    lr0: float = 0.003  # initial learning rate (a from-scratch model on few images wants a brisk start)
    warmup_epochs: float = 1.0  # epochs of learning-rate warm-up
    patience: int = 0  # stop after this many epochs without improvement (0 = never)
    every: int = 12  # export every Nth frame of an episode (0.4 s at 30 fps: diverse, not near-duplicates)
    max_frames: int = 0  # cap on exported frames per episode (0 = no cap)
    val_fraction: float = 0.2  # fraction of the episodes held out (whole episodes) for validation
    val_episodes: tuple[str, ...] = ()  # names of the validation episodes (overrides --val-fraction)
    min_box: float = 2.0  # px at the detector's input; smaller ground-truth boxes are not labels
    eval: Path | None = None  # held-out episodes (unseen seeds): final mAP through the deployed Detector
    eval_every: int = 10  # frame step over the --eval episodes
    onnx: bool = True  # export model.onnx (ONNX Runtime is the faster CPU runtime)
    seed: int = 0  # ultralytics training seed
    threads: int = 0  # torch threads (0 = torch's default)
    config_dir: Path | None = (
        None  # YOLO_CONFIG_DIR (default: see bot.perception.detector.ultralytics_offline)
    )
    extra: dict[str, Any] = field(default_factory=dict)  # further ultralytics train() arguments

    def __post_init__(self) -> None:
        for name in ("epochs", "batch", "every", "eval_every"):
            check_int(self, name, 1)
        check_int(self, "imgsz", 0)
        if self.imgsz and (self.imgsz < 64 or self.imgsz % 32):
            raise fail(self, "imgsz", "0 or a multiple of 32 >= 64", self.imgsz)
        check_float(self, "val_fraction", 0.0, 1.0, low_open=True)
        if self.val_fraction == 1.0:  # check_float's upper bound is closed; nothing would be left to train on
            raise fail(self, "val_fraction", "a number in (0, 1)", self.val_fraction)
        if self.model.endswith(".pt"):
            raise fail(self, "model", "a model YAML (training is from scratch, offline)", self.model)
        check_float(self, "min_box", 0.0)
        for name in ("max_frames", "patience"):
            check_int(self, name, 0)


# ------------------------------------------------------------------------------------------------ dataset


def in_view(obj: dict, min_box_px: float, hidden: np.ndarray | None = None) -> bool:
    """Whether a gt_objects entry is something the detector can be asked to find.

    Not in view: boxes narrower or lower than `min_box_px`, and boxes at least HIDDEN_FRACTION covered by the
    `hidden` (K, 4) px rectangles (the blanked HUD panels, which do not overlap each other).
    """
    box = np.array([obj["x1"], obj["y1"], obj["x2"], obj["y2"]], np.float64)
    if box[2] - box[0] < min_box_px or box[3] - box[1] < min_box_px:
        return False
    return hidden is None or not len(hidden) or _covered(box, hidden) < HIDDEN_FRACTION


def gt_labels(
    objects: list[dict], classes: list[str], min_box_px: float, hidden: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(cls (N,), xyxy (N, 4) px) of a frame's gt_objects that are `in_view`."""
    cls, boxes = [], []
    for obj in objects or ():
        if not in_view(obj, min_box_px, hidden):
            continue
        if obj["cls"] not in classes:
            raise DetectorError(
                f"ground-truth class {obj['cls']!r} is not in the profile's classes {classes}"
            )
        cls.append(classes.index(obj["cls"]))
        boxes.append((obj["x1"], obj["y1"], obj["x2"], obj["y2"]))
    return np.asarray(cls, np.int64), np.asarray(boxes, np.float32).reshape(-1, 4)


def _covered(box: np.ndarray, rects: np.ndarray) -> float:
    """Fraction of `box`'s area inside the (K, 4) rectangles."""
    lt, rb = np.maximum(box[:2], rects[:, :2]), np.minimum(box[2:], rects[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1).sum()
    return float(inter / max((box[2] - box[0]) * (box[3] - box[1]), 1e-9))


def hidden_px(mask: Sequence[Sequence[float]], width: int, height: int) -> np.ndarray:
    """(K, 4) px rectangles of mask regions given as frame fractions."""
    return np.asarray(mask, np.float64).reshape(-1, 4) * [width, height, width, height]


def split_episodes(
    episodes: list[Path], val_fraction: float, val_names: tuple[str, ...] = ()
) -> tuple[list[Path], list[Path]]:
    """(train, val) by whole episodes: those named in `val_names`, else the last ceil(n * val_fraction)."""
    episodes = sorted(episodes)
    if len(episodes) < 2:
        raise DetectorError(f"need at least 2 episodes to split train/val by episode, got {len(episodes)}")
    if val_names:
        missing = sorted(set(val_names) - {p.name for p in episodes})
        if missing or len(val_names) >= len(episodes):
            raise DetectorError(
                f"--val-episodes: {missing or 'all episodes'} not usable; found {[p.name for p in episodes]}"
            )
        return [p for p in episodes if p.name not in val_names], [p for p in episodes if p.name in val_names]
    n_val = min(len(episodes) - 1, max(1, math.ceil(len(episodes) * val_fraction)))
    return episodes[:-n_val], episodes[-n_val:]


def gt_episodes(root: Path, profile: GameProfile) -> list[Path]:
    """Episodes under `root` that carry ground-truth boxes of this profile's game."""
    found = []
    for path in find_episodes(root):
        episode = open_episode(path)
        if episode.meta.game != profile.name:
            log.warning("skipping %s: game %r, not %r", path, episode.meta.game, profile.name)
        elif "gt_objects" not in episode.steps().schema.names:
            log.warning("skipping %s: no gt_objects column (not an Arena episode)", path)
        else:
            found.append(path)
    if not found:
        raise DetectorError(f"{root}: no episodes of game {profile.name!r} with ground-truth boxes")
    return found


def export_episode(
    path: Path,
    out: Path,
    split: str,
    classes: list[str],
    imgsz: int,
    every: int,
    max_frames: int,
    min_box: float,
    mask: Sequence[Sequence[float]] = (),
) -> int:
    """Write sampled frames of one episode as YOLO images + labels; returns the number of images.

    Images are `resize_for` (what the Detector does live) with the `mask` regions blanked.
    """
    episode = open_episode(path)
    objects = episode.steps().column("gt_objects").to_pylist()
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    count = 0
    for index, frame in episode.frames(every=every):
        if max_frames and count >= max_frames:
            break
        h, w = frame.shape[:2]
        shape = input_shape(imgsz, w, h)
        scale = min(shape[0] / h, shape[1] / w)
        cls, xyxy = gt_labels(objects[index], classes, min_box / scale, hidden_px(mask, w, h))
        image = resize_for(frame, shape, mask)
        stem = f"{episode.name}_{index:06d}"
        cv2.imwrite(str(out / "images" / split / f"{stem}.png"), image[:, :, ::-1])
        centre = (xyxy[:, :2] + xyxy[:, 2:]) / 2.0 / [w, h]
        size = (xyxy[:, 2:] - xyxy[:, :2]) / [w, h]
        rows = [f"{c} {x:.6f} {y:.6f} {bw:.6f} {bh:.6f}" for c, (x, y), (bw, bh) in zip(cls, centre, size)]
        (out / "labels" / split / f"{stem}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
        count += 1
    return count


def export_dataset(
    cfg: DetectorTrainConfig, profile: GameProfile, imgsz: int, out: Path, mask: Sequence[Sequence[float]]
) -> tuple[Path, dict]:
    """Build a YOLO dataset from episodes with ground truth; returns (data.yaml, stats)."""
    from tqdm import tqdm

    train, val = split_episodes(gt_episodes(cfg.data, profile), cfg.val_fraction, cfg.val_episodes)
    if out.exists():
        shutil.rmtree(out)  # a dataset is derived data: rebuilt whole, never mixed with an older export
    stats = {"train_episodes": [p.name for p in train], "val_episodes": [p.name for p in val]}
    counts = {"train": 0, "val": 0}
    jobs = [(p, "train") for p in train] + [(p, "val") for p in val]
    for path, split in tqdm(jobs, desc="export dataset", unit="episode"):
        counts[split] += export_episode(
            path, out, split, profile.class_names, imgsz, cfg.every, cfg.max_frames, cfg.min_box, mask
        )
    stats.update(train_images=counts["train"], val_images=counts["val"])
    yaml_path = out / "data.yaml"
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(profile.class_names))
    yaml_path.write_text(f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    log.info("dataset %s: %d train / %d val images", out, counts["train"], counts["val"])
    return yaml_path, stats


def dataset_classes(yaml_path: Path) -> list[str]:
    import yaml

    try:
        data = yaml.safe_load(yaml_path.read_text())
        names = data["names"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise DetectorError(f"{yaml_path}: not a YOLO dataset YAML with `names` ({exc})") from None
    return [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)


# ------------------------------------------------------------------------------------------------ training


def train_yolo(cfg: DetectorTrainConfig, data_yaml: Path, imgsz: int) -> tuple[Path, dict, float]:
    """Train with ultralytics, offline; returns (best.pt, final validation metrics, seconds)."""
    ultralytics_offline(cfg.config_dir)
    import torch
    from ultralytics import YOLO

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = YOLO(cfg.model)
    args = dict(
        data=str(data_yaml),
        epochs=cfg.epochs,
        imgsz=imgsz,
        batch=cfg.batch,
        device="cpu" if not torch.cuda.is_available() else 0,
        workers=0,
        optimizer=cfg.optimizer,
        lr0=cfg.lr0,
        warmup_epochs=cfg.warmup_epochs,
        patience=cfg.patience or cfg.epochs,
        seed=cfg.seed,
        pretrained=False,
        amp=False,  # the AMP check downloads yolo26n.pt on a GPU
        plots=False,
        project=str(cfg.out.resolve()),
        name="train",
        exist_ok=True,
        verbose=False,
        close_mosaic=max(1, cfg.epochs // 5),
        scale=0.25,  # game objects have fixed on-screen sizes: mild scale jitter only
    )
    args.update(cfg.extra)
    start = time.perf_counter()
    model.train(**args)
    seconds = time.perf_counter() - start
    best = Path(model.trainer.best)
    if not best.exists():
        best = Path(model.trainer.last)
    metrics = {k: float(v) for k, v in (model.trainer.metrics or {}).items() if isinstance(v, (int, float))}
    return best, metrics, seconds


def export_onnx(best: Path, shape: tuple[int, int], out: Path) -> Path:
    """model.onnx with dynamic axes: batch 1 live, batches of frames in `pilot perceive`.

    Exported at the detector's (h, w) input shape; the Detector always feeds that shape, so the dynamic
    height/width are never exercised, only the batch.
    """
    ultralytics_offline()
    from ultralytics import YOLO

    exported = YOLO(str(best)).export(
        format="onnx", imgsz=list(shape), dynamic=True, simplify=True, device="cpu"
    )
    target = out / ONNX_NAME
    shutil.move(str(exported), target)
    return target


# ------------------------------------------------------------------------------------------------ evaluation


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def match_detections(gt_cls, gt_xyxy, det_cls, det_xyxy) -> np.ndarray:
    """(D, 10) bool: detection d (sorted by confidence) is a true positive at each IoU threshold 0.5..0.95.

    Greedy in confidence order, each target claimed once per threshold: ultralytics' validator rule.
    """
    correct = np.zeros((len(det_cls), len(IOU_THRESHOLDS)), bool)
    if not len(gt_cls) or not len(det_cls):
        return correct
    iou = _box_iou(gt_xyxy, det_xyxy) * (gt_cls[:, None] == det_cls[None, :])
    matched = np.zeros((len(gt_cls), len(IOU_THRESHOLDS)), bool)
    for j in np.flatnonzero((iou >= IOU_THRESHOLDS[0]).any(0)):
        available = np.where(matched, 0.0, iou[:, j, None])
        k = available.argmax(0)
        correct[j] = available[k, range(len(IOU_THRESHOLDS))] >= IOU_THRESHOLDS
        matched[k, range(len(IOU_THRESHOLDS))] |= correct[j]
    return correct


def evaluate_detector(
    detector: Detector, episodes: list[Path], classes: list[str], every: int = 10, min_box: float = 2.0
) -> dict[str, Any]:
    """mAP50 / mAP50-95 of `detector` as deployed (runtime, input size, NMS) on the episodes' ground truth.

    Ground truth not in view is left out as in training: boxes under `min_box` px at the detector's input and
    objects mostly under the HUD panels the detector blanks (its config.json's `mask`).
    """
    ultralytics_offline()
    from ultralytics.utils.metrics import ap_per_class

    tps, confs, pred_cls, target_cls = [], [], [], []
    frames = 0
    for path in episodes:
        episode = open_episode(path)
        objects = episode.steps().column("gt_objects").to_pylist()
        w, h = episode.meta.width, episode.meta.height
        shape = detector.shape_for(w, h)
        min_box_px = min_box / min(shape[0] / h, shape[1] / w)
        hidden = hidden_px(detector.mask, w, h)
        for index, frame in episode.frames(every=every):
            gt_cls, gt_xyxy = gt_labels(objects[index], classes, min_box_px, hidden)
            det = detector.detect(frame)
            order = np.argsort(-det.conf, kind="stable")
            tps.append(match_detections(gt_cls, gt_xyxy, det.cls[order], det.xyxy[order]))
            confs.append(det.conf[order])
            pred_cls.append(det.cls[order])
            target_cls.append(gt_cls)
            frames += 1
    tp, conf, pcls, tcls = (np.concatenate(x) for x in (tps, confs, pred_cls, target_cls))
    result = ap_per_class(tp, conf, pcls, tcls, names=dict(enumerate(classes)))
    p, r, ap, unique = result[2], result[3], result[5], result[6]
    per_class = {classes[int(c)]: round(float(ap[i, 0]), 4) for i, c in enumerate(unique)}
    return {
        "frames": frames,
        "objects": int(len(tcls)),
        "mAP50": float(ap[:, 0].mean()) if len(ap) else 0.0,
        "mAP50-95": float(ap.mean()) if len(ap) else 0.0,
        "precision": float(p.mean()) if len(p) else 0.0,
        "recall": float(r.mean()) if len(r) else 0.0,
        "AP50_per_class": per_class,
        "detector": detector.id,
        "conf": detector.cfg.conf,
    }


# ------------------------------------------------------------------------------------------------ main


def _frame_size(cfg: DetectorTrainConfig, profile: GameProfile) -> tuple[int, int]:
    """(w, h) of the frames this detector is for: the episodes' size, else the profile's window size."""
    if cfg.data.suffix not in (".yaml", ".yml"):
        episodes = find_episodes(cfg.data)
        if episodes:
            meta = open_episode(episodes[0]).meta
            return meta.width, meta.height
    return profile.window.size


def run(cfg: DetectorTrainConfig) -> dict[str, Any]:
    """Export (or take) the dataset, train, export ONNX, evaluate; returns what config.json holds."""
    profile = load_profile(cfg.profile)
    imgsz = cfg.imgsz or profile.detector.imgsz
    cfg.out.mkdir(parents=True, exist_ok=True)
    frame_w, frame_h = _frame_size(cfg, profile)
    shape = input_shape(imgsz, frame_w, frame_h)
    if cfg.data.suffix in (".yaml", ".yml"):
        # a dataset of your own was not exported here, nothing was blanked in it: no mask at inference
        data_yaml, stats, classes = cfg.data, {"dataset": str(cfg.data)}, dataset_classes(cfg.data)
        mask = []
        missing = [c for c in classes if c not in profile.class_names]
        if missing:
            raise DetectorError(
                f"{cfg.data}: classes {missing} are not in profile {profile.name!r}; rename them"
            )
    else:
        mask = list(profile.hud.panels.values()) if profile.detector.mask_hud else []
        data_yaml, stats = export_dataset(cfg, profile, imgsz, cfg.out / "dataset", mask)
        classes = profile.class_names
    best, val_metrics, seconds = train_yolo(cfg, data_yaml, imgsz)
    shutil.copyfile(best, cfg.out / PT_NAME)
    summary: dict[str, Any] = {
        "run_id": uuid.uuid4().hex[:8],
        "profile": profile.name,
        "classes": classes,
        "imgsz": imgsz,
        "input_shape": list(shape),
        "mask": [list(r) for r in mask],  # frame fractions blanked in training images and before inference
        "frame_size": [frame_w, frame_h],
        "model": cfg.model,
        "train_seconds": round(seconds, 1),
        "dataset": stats,
        "val_metrics_ultralytics": val_metrics,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
    }
    _write_config(cfg.out, summary)
    if cfg.onnx:
        export_onnx(cfg.out / PT_NAME, shape, cfg.out)
    if cfg.eval is not None:
        detector = Detector(DetectorConfig(cfg.out, conf=0.001, max_det=300), profile.class_names)
        heldout = gt_episodes(cfg.eval, profile)
        summary["heldout"] = evaluate_detector(
            detector, heldout, profile.class_names, cfg.eval_every, cfg.min_box
        )
        summary["heldout"]["episodes"] = [p.name for p in heldout]
        _write_config(cfg.out, summary)
    log.info(
        "detector written to %s (trained %.0f s): %s", cfg.out, seconds, summary.get("heldout", val_metrics)
    )
    return summary


def _write_config(out: Path, summary: dict[str, Any]) -> None:
    (out / CONFIG_NAME).write_text(json.dumps(summary, indent=2))


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(DetectorTrainConfig, args=argv, prog="pilot train detector", description=__doc__)
    run(cfg)
    return 0
