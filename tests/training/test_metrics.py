"""Validation metrics against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from training import metrics as M

# pred:   0 0 1 1 2 2 0     target: 0 1 1 1 2 0 2    (rows = true class, columns = predicted)
PRED = torch.tensor([0, 0, 1, 1, 2, 2, 0])
TARGET = torch.tensor([0, 1, 1, 1, 2, 0, 2])
CONFUSION = [[1, 0, 1], [1, 2, 0], [1, 0, 1]]
# class 0: tp 1, fp 2, fn 1 -> 2/5;  class 1: tp 2, fp 0, fn 1 -> 4/5;  class 2: tp 1, fp 1, fn 1 -> 2/4
F1 = [0.4, 0.8, 0.5]


def test_accuracy_ignores_unlabelled_items_and_takes_logits() -> None:
    assert M.accuracy(PRED, TARGET) == pytest.approx(4 / 7)
    target = TARGET.clone()
    target[[1, 6]] = M.IGNORE_INDEX  # two wrong predictions are no longer counted
    assert M.accuracy(PRED, target) == pytest.approx(4 / 5)
    logits = torch.nn.functional.one_hot(PRED, 3).float() * 5 - 1
    assert M.accuracy(logits, TARGET) == pytest.approx(4 / 7)
    assert math.isnan(M.accuracy(PRED[:2], torch.full((2,), M.IGNORE_INDEX)))


def test_confusion_matrix_and_f1() -> None:
    confusion = M.confusion_matrix(PRED, TARGET, 3)
    assert confusion.tolist() == CONFUSION
    assert M.f1_per_class(confusion).tolist() == pytest.approx(F1)
    assert M.macro_f1(confusion) == pytest.approx(sum(F1) / 3)
    halves = M.confusion_matrix(PRED[:3], TARGET[:3], 3) + M.confusion_matrix(PRED[3:], TARGET[3:], 3)
    assert torch.equal(halves, confusion)  # sums over batches are exact


def test_absent_class_has_undefined_f1_and_is_left_out_of_macro() -> None:
    confusion = M.confusion_matrix(PRED, TARGET, 4)  # class 3 is neither labelled nor predicted
    f1 = M.f1_per_class(confusion)
    assert math.isnan(f1[3]) and f1[:3].tolist() == pytest.approx(F1)
    assert M.macro_f1(confusion) == pytest.approx(sum(F1) / 3)


def test_mode_metrics_names_every_class() -> None:
    result = M.mode_metrics(PRED, TARGET, ("FIGHT", "LOOT", "FLEE"))
    assert result == pytest.approx(
        {
            "mode_acc": 4 / 7,
            "mode_f1_macro": sum(F1) / 3,
            "mode_f1_fight": 0.4,
            "mode_f1_loot": 0.8,
            "mode_f1_flee": 0.5,
        }
    )


def test_labels_out_of_range_are_an_error() -> None:
    with pytest.raises(ValueError, match=r"labels in \[0, 2\)"):
        M.confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 2]), 2)
    with pytest.raises(ValueError, match="expected pred of shape"):
        M.accuracy(torch.zeros(3, 2, 2), torch.zeros(3, dtype=torch.long))


def test_target_accuracy_never_picks_a_padded_object() -> None:
    logits = torch.tensor([[0.1, 0.9, 5.0], [2.0, 0.1, 0.0], [0.0, 0.3, 0.2]])
    valid = torch.tensor([[True, True, False], [True, True, True], [True, True, True]])
    target = torch.tensor([1, 0, 2])
    # row 0: the padded object (logit 5) is masked -> object 1, right; row 1 right; row 2 predicts 1, wrong
    assert M.target_accuracy(logits, target, valid) == pytest.approx(2 / 3)
    assert M.target_accuracy(logits, target) == pytest.approx(1 / 3)  # unmasked, row 0 would pick the pad


def test_mouse_error_in_pixels_of_the_frame() -> None:
    pred = torch.tensor([[0.1, 0.2], [0.5, 0.5], [0.9, 0.9]])
    target = torch.tensor([[0.4, 0.6], [0.5, 0.5], [0.0, 0.0]])
    # frame 100 x 50 px: (30 px, 20 px) -> sqrt(1300); 0; the third is masked out
    mask = torch.tensor([True, True, False])
    assert M.mouse_error_px(pred, target, (100, 50), mask) == pytest.approx(math.sqrt(1300) / 2)
    assert M.mouse_error_px(pred[:1], target[:1], (100, 50)) == pytest.approx(math.sqrt(1300))


def test_click_f1_from_logits_or_bools() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0])
    target = torch.tensor([True, True, False, False])
    assert M.click_f1(logits, target) == pytest.approx(0.5)  # tp 1, fp 1, fn 1
    assert M.click_f1(logits > 0, target) == pytest.approx(0.5)
    assert M.click_f1(logits, target, mask=torch.tensor([True, False, False, True])) == pytest.approx(1.0)
    assert math.isnan(M.binary_f1(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)))


def test_key_accuracy() -> None:
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
    target = torch.tensor([0, 2, 0, M.IGNORE_INDEX])
    assert M.key_accuracy(logits, target) == pytest.approx(2 / 3)
