"""The Task contract: what a model's training script gives the shared loop (model, data, loss, metrics)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn
from torch.utils.data import Dataset

from training.errors import TaskError


@runtime_checkable
class Task(Protocol):
    """What a model's training script gives the loop.

    `loss` receives the module to call for the forward pass (possibly wrapped by DDP or torch.compile, so
    call `model(...)`; reach other methods through `unwrap_model(model)`) and a batch already on the device.
    It returns the scalar loss (a mean over the batch, so that gradient accumulation matches a bigger batch)
    and training metrics (floats or 0-dim tensors, the same keys every step), logged as train/<key>.
    `evaluate` receives the EMA model in eval mode under no_grad and autocast, and an iterable of validation
    batches on the device; it returns the real metrics (training/metrics.py), logged as eval/<key>.
    Datasets are map-style (`len`, `[i]`); `collate` turns a list of samples into a batch.
    Optional: `test_dataset()` (a Dataset or None): episodes kept out of training and of the choice of best/,
    scored once when the run ends with the best/ weights (`evaluate` again), logged as "test ..." and written
    to <out_dir>/test_metrics.json.
    """

    name: str  # e.g. "strategist"; names the run in logs and config.json

    def build_model(self) -> nn.Module: ...

    def train_dataset(self) -> Dataset: ...

    def val_dataset(self) -> Dataset | None: ...

    def collate(self, samples: list[Any]) -> Any: ...

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, Mapping[str, float | Tensor]]: ...

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> Mapping[str, float]: ...

    def metadata(self) -> Mapping[str, Any]: ...  # JSON facts for config.json: obs_spec, game profile, data


TASK_MEMBERS = (
    "name",
    "build_model",
    "train_dataset",
    "val_dataset",
    "collate",
    "loss",
    "evaluate",
    "metadata",
)


def check_task(task: object) -> None:
    if not isinstance(task, Task):
        missing = [name for name in TASK_MEMBERS if not hasattr(task, name)]
        raise TaskError(f"{type(task).__name__}: not a training Task, missing {sorted(missing)}")
