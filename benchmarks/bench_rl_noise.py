"""Calibrate `pilot train rl`'s perception-noise model (training/rl/noise.py) on a real detector: miss rate,
class flips, box jitter, confidences and spurious boxes of the shipped Arena detector against the ground
truth, on expert play of seeds no model trained on (9000..). Prints the measured NoiseConfig fields.

    .venv/bin/python -m benchmarks.bench_rl_noise --detector data/pretrained/arena/detector --frames 120
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_perception import arena_frames
from bot.perception.detector import Detector
from bot.profile import load_profile
from training.rl.noise import truth_boxes

IOU = 0.5


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) xyxy -> (N, M)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def match(gt: np.ndarray, det: np.ndarray, conf: np.ndarray) -> list[tuple[int, int]]:
    """Greedy class-agnostic matches (gt index, detection index), detections by falling confidence."""
    if not len(gt) or not len(det):
        return []
    overlap, used, pairs = iou(det, gt), set(), []
    for d in np.argsort(-conf):
        g = int(np.argmax(np.where([i in used for i in range(len(gt))], -1, overlap[d])))
        if overlap[d, g] >= IOU and g not in used:
            used.add(g)
            pairs.append((g, int(d)))
    return pairs


def measure(detector: Detector, frames: list[tuple[np.ndarray, dict]], profile: Any) -> dict[str, Any]:
    masked = list(profile.hud.panels.values())
    n_gt = n_match = n_flip = n_false = n_false_high = 0
    errors, tp_conf, fp_conf = [], [], []
    for image, info in frames:
        size = (image.shape[1], image.shape[0])
        gt, gt_cls = truth_boxes(info["objects"], profile.class_names, size, masked)
        det = detector.detect(image)
        pairs = match(gt, det.xyxy, det.conf)
        n_gt, n_match = n_gt + len(gt), n_match + len(pairs)
        for g, d in pairs:
            n_flip += int(det.cls[d] != gt_cls[g])
            tp_conf.append(float(det.conf[d]))
            errors.append(_box_error(gt[g], det.xyxy[d]))
        unmatched = sorted(set(range(len(det))) - {d for _, d in pairs})
        n_false += len(unmatched)
        n_false_high += int((det.conf[unmatched] >= 0.5).sum())
        fp_conf += det.conf[unmatched].tolist()
    err = np.asarray(errors).reshape(-1, 4)
    return {
        "frames": len(frames), "objects": n_gt,
        "miss_rate": 1 - n_match / max(n_gt, 1), "class_flip": n_flip / max(n_match, 1),
        "jitter": float(err.std(axis=0).mean()) if len(err) else float("nan"),
        "jitter_cx_cy_w_h": err.std(axis=0).round(4).tolist() if len(err) else [],
        "false_per_frame": n_false / len(frames), "false_per_frame_conf_ge_0.5": n_false_high / len(frames),
        "conf_mean": float(np.mean(tp_conf)), "conf_std": float(np.std(tp_conf)),
        "false_conf_p90": float(np.percentile(fp_conf, 90)) if fp_conf else float("nan"),
    }  # fmt: skip


def _box_error(gt: np.ndarray, det: np.ndarray) -> list[float]:
    """Centre offset over the size, and log size ratio: the quantities NoiseConfig.jitter scales."""
    gw, gh = gt[2] - gt[0], gt[3] - gt[1]
    dw, dh = det[2] - det[0], det[3] - det[1]
    dcx = ((det[0] + det[2]) - (gt[0] + gt[2])) / 2 / max(gw, 1e-6)
    dcy = ((det[1] + det[3]) - (gt[1] + gt[3])) / 2 / max(gh, 1e-6)
    return [
        dcx,
        dcy,
        float(np.log(max(dw, 1e-6) / max(gw, 1e-6))),
        float(np.log(max(dh, 1e-6) / max(gh, 1e-6))),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--detector", type=Path, default=Path("data/pretrained/arena/detector"))
    parser.add_argument("--frames", type=int, default=120, help="frames per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[9000, 9001])
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    args = parser.parse_args(argv)
    profile = load_profile("arena")
    detector = Detector.load(args.detector, profile.class_names, conf=profile.detector.conf, threads=1)
    frames = [f for seed in args.seeds for f in arena_frames(args.width, args.height, args.frames, seed)]
    print(json.dumps(measure(detector, frames, profile), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
