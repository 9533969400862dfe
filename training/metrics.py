"""Validation metrics of the three policy models, as pure functions on tensors (no state, no device moves).

    Strategist  mode_metrics      accuracy, per-class F1 and macro F1 over the mode set
    Tactician   target_accuracy   argmax over the valid objects (+ "none") equals the labelled target
    Executor    mouse_error_px    Euclidean cursor error in pixels of the game region
                click_f1          F1 of the "click" class (a click is the rare, important event)
                key_accuracy      key index (0 = none) equals the label
                near_f1           F1 of rare events where one within +-slack frames counts as a hit

Logits (N, C) are reduced by argmax; labels equal to `ignore_index` are left out; a metric with nothing to
measure is NaN, not 0 (docs/notes/training.md). Results are Python floats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

IGNORE_INDEX = -100  # label of padded / unlabelled items, as F.cross_entropy's default


def _as_indices(pred: Tensor, target: Tensor) -> Tensor:
    """pred as class indices with target's shape: logits (..., C) are reduced by argmax."""
    if pred.dim() == target.dim() + 1:
        pred = pred.argmax(dim=-1)
    if pred.shape != target.shape:
        raise ValueError(
            f"metrics: expected pred of shape {tuple(target.shape)} (or logits), got {tuple(pred.shape)}"
        )
    return pred


def accuracy(pred: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> float:
    """Fraction of labelled items whose predicted index equals the label; NaN when none is labelled."""
    pred = _as_indices(pred, target)
    keep = target != ignore_index
    total = int(keep.sum())
    if total == 0:
        return math.nan
    return int((pred[keep] == target[keep]).sum()) / total


def confusion_matrix(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """(C, C) int64 counts, rows = true class, columns = predicted class; sums over batches stay valid."""
    pred = _as_indices(pred, target)
    keep = target != ignore_index
    pred, target = pred[keep].long(), target[keep].long()
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ValueError(
            f"metrics: expected predictions in [0, {num_classes}), got [{int(pred.min())}, {int(pred.max())}]"
        )
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(
            f"metrics: expected labels in [0, {num_classes}), got [{int(target.min())}, {int(target.max())}]"
        )
    flat = target * num_classes + pred
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


def f1_per_class(confusion: Tensor) -> Tensor:
    """(C,) float64 F1 = 2TP / (2TP + FP + FN) per class; NaN for a class neither labelled nor predicted."""
    confusion = confusion.double()
    tp = confusion.diagonal()
    fp = confusion.sum(dim=0) - tp  # predicted as the class, labelled otherwise
    fn = confusion.sum(dim=1) - tp  # labelled as the class, predicted otherwise
    denominator = 2 * tp + fp + fn
    return torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), torch.full_like(tp, math.nan))


def macro_f1(confusion: Tensor) -> float:
    """Mean F1 over the classes present in labels or predictions (as scikit-learn's average="macro")."""
    f1 = f1_per_class(confusion)
    present = ~f1.isnan()
    return float(f1[present].mean()) if bool(present.any()) else math.nan


def mode_metrics(
    pred: Tensor, target: Tensor, class_names: Sequence[str], ignore_index: int = IGNORE_INDEX
) -> dict[str, float]:
    """{"mode_acc", "mode_f1_macro", "mode_f1_<name>" per class} for mode logits (N, C) or indices (N,)."""
    confusion = confusion_matrix(pred, target, len(class_names), ignore_index)
    total = int(confusion.sum())
    metrics = {
        "mode_acc": float(confusion.diagonal().sum()) / total if total else math.nan,
        "mode_f1_macro": macro_f1(confusion),
    }
    for name, value in zip(class_names, f1_per_class(confusion).tolist()):
        metrics[f"mode_f1_{name.lower()}"] = value
    return metrics


def target_accuracy(
    logits: Tensor, target: Tensor, valid: Tensor | None = None, ignore_index: int = IGNORE_INDEX
) -> float:
    """Accuracy of argmax over the choosable targets: logits (N, K), target (N,), valid (N, K) bool or None.

    Padded objects (valid False) can never be the prediction, whatever their logit.
    """
    if valid is not None:
        if valid.shape != logits.shape:
            raise ValueError(
                f"target_accuracy: expected valid of shape {tuple(logits.shape)}, got {tuple(valid.shape)}"
            )
        logits = logits.masked_fill(~valid, -math.inf)
    return accuracy(logits, target, ignore_index)


def mouse_error_px(
    pred_xy: Tensor, target_xy: Tensor, frame_size: tuple[int, int], mask: Tensor | None = None
) -> float:
    """Mean Euclidean error in px; xy (N, 2) normalised to the game region (0..1), frame_size (w, h) px."""
    if pred_xy.shape != target_xy.shape or pred_xy.shape[-1] != 2:
        raise ValueError(
            f"mouse_error_px: expected pred and target of the same shape (..., 2), "
            f"got {tuple(pred_xy.shape)} and {tuple(target_xy.shape)}"
        )
    scale = torch.tensor(frame_size, dtype=torch.float64, device=pred_xy.device)  # (2,) px per unit
    error = ((pred_xy.double() - target_xy.double()) * scale).norm(dim=-1)  # (...,) px
    if mask is not None:
        error = error[mask]
    return float(error.mean()) if error.numel() else math.nan


def binary_f1(pred: Tensor, target: Tensor) -> float:
    """F1 of the positive class for bool tensors of equal shape; NaN when neither has a positive."""
    if pred.shape != target.shape:
        raise ValueError(f"binary_f1: expected pred of shape {tuple(target.shape)}, got {tuple(pred.shape)}")
    pred, target = pred.bool(), target.bool()
    tp = int((pred & target).sum())
    wrong = int((pred ^ target).sum())  # false positives + false negatives
    return 2 * tp / (2 * tp + wrong) if (2 * tp + wrong) else math.nan


def click_f1(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """F1 of clicks: pred is bool, or click logits (float, a click where logit > 0); target bool."""
    pred = pred if pred.dtype == torch.bool else pred > 0
    if mask is not None:
        pred, target = pred[mask], target[mask]
    return binary_f1(pred, target)


def held_metrics(pred: Tensor, true: Tensor) -> dict[str, float]:
    """Held-key agreement, pred / true (M, n_held) bool over frames: the share of frames with every bit right,
    and the mean F1 over the key bits the demonstrations hold."""
    f1s = [binary_f1(pred[:, k], true[:, k]) for k in range(true.shape[1]) if bool(true[:, k].any())]
    f1s = [f for f in f1s if not math.isnan(f)]
    return {
        "held_exact": float((pred == true).all(-1).float().mean()) if len(pred) else 0.0,
        "held_f1": float(np.mean(f1s)) if f1s else 0.0,
    }


def key_accuracy(pred: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> float:
    """Accuracy of the key index (0 = no key): key logits (N, K) or indices (N,) against labels (N,)."""
    return accuracy(pred, target, ignore_index)


def near_f1(pred: np.ndarray, true: np.ndarray, slack: int) -> float:
    """F1 of rare events (bool (N,) in frame order) where an event within +-slack frames counts as a hit.

    Precision: share of predicted events with a true one within slack; recall: share of true events with a
    predicted one within slack. 0 when either side has none (a head that never fires scores 0).
    """
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    if not pred.any() or not true.any():
        return 0.0
    kernel = np.ones(2 * slack + 1)
    near_true = np.convolve(true, kernel, mode="same") > 0
    near_pred = np.convolve(pred, kernel, mode="same") > 0
    precision, recall = float(near_true[pred].mean()), float(near_pred[true].mean())
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
