"""One optimizer step of a Task (`train_step`), one evaluation (`evaluate`), and batches moved to a device:

micro-batch 1 .. grad_accum ──forward under bf16 autocast (CUDA)──▶ loss / grad_accum ──backward──▶ grads
    (DDP: gradients are all-reduced on the last micro-batch only; no_sync before it)
──▶ clip the global grad norm ──▶ loss or norm non-finite on any rank? ──yes──▶ skip the step, count it
                                                     └──no──▶ AdamW step (LR set by the caller)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from training.checkpoint import capture_rng, restore_rng
from training.errors import TaskError
from training.task import Task


def move_to_device(batch: Any, device: torch.device) -> Any:
    """`batch` with every tensor moved to `device` (through dicts, lists, tuples and dataclasses)."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(v, device) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        fields = {
            f.name: move_to_device(getattr(batch, f.name), device)
            for f in dataclasses.fields(batch)
            if f.init
        }
        return dataclasses.replace(batch, **fields)
    return batch


@dataclass
class StepOutput:
    """What one optimizer step reports (means over its micro-batches and, under DDP, all ranks)."""

    loss: float
    grad_norm: float  # global L2 norm of the gradient before clipping
    finite: bool  # False: loss or gradient was non-finite somewhere, the step was skipped
    metrics: dict[str, float]  # the task's training metrics


def train_step(
    model: nn.Module,
    task: Task,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[Any],
    clip_norm: float = 0.0,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    distributed: bool = False,
) -> StepOutput:
    """One optimizer step over `micro_batches` (on the device); the LR is set by the caller.

    The gradients stay in `.grad` after an applied step (clipped), so they can be inspected; they are
    cleared at the start of the next step, and at once when the step is skipped.
    """
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, Tensor] = {}
    loss_sum: Tensor | None = None
    last = len(micro_batches) - 1
    for i, batch in enumerate(micro_batches):
        defer_sync = isinstance(model, DistributedDataParallel) and i < last
        with model.no_sync() if defer_sync else contextlib.nullcontext():
            with autocast():
                loss, metrics = task.loss(model, batch)
            _check_loss(task, loss)
            (loss / len(micro_batches)).backward()
        loss_sum = loss.detach().float() + (0.0 if loss_sum is None else loss_sum)
        for key, value in metrics.items():
            sums[key] = torch.as_tensor(value, dtype=torch.float32, device=loss.device).detach() + sums.get(
                key, 0.0
            )
    params = [p for group in optimizer.param_groups for p in group["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, clip_norm if clip_norm > 0 else math.inf)
    bad = (~torch.isfinite(loss_sum) | ~torch.isfinite(norm)).float()
    keys = sorted(sums)
    stats = torch.stack([loss_sum, bad, *(sums[k] for k in keys)])
    if distributed:
        dist.all_reduce(stats)  # every rank takes the same skip decision
    values = stats.tolist()  # the step's one host sync
    count = len(micro_batches) * (dist.get_world_size() if distributed else 1)
    finite = values[1] == 0
    if finite:
        optimizer.step()
    else:
        optimizer.zero_grad(set_to_none=True)
    return StepOutput(
        values[0] / count, float(norm), finite, {k: v / count for k, v in zip(keys, values[2:])}
    )


def _check_loss(task: Task, loss: Any) -> None:
    if not isinstance(loss, Tensor) or loss.dim() != 0 or not loss.requires_grad:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise TaskError(f"{task.name}: Task.loss must return a scalar tensor that requires grad, got {shape}")


@torch.no_grad()
def evaluate(
    task: Task,
    model: nn.Module,
    batches: Iterable[Any],
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """Task.evaluate on `model` in eval mode, without gradients, leaving every training RNG untouched."""
    was_training = model.training
    model.eval()
    rng = capture_rng()  # restored below: validation must not shift the training run's random streams
    try:
        with autocast():
            metrics = task.evaluate(model, batches)
    finally:
        model.train(was_training)
        restore_rng(rng)
    return {key: float(value) for key, value in metrics.items()}
