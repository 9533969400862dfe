"""The state of one call of `train` (Run) and how it is set up: model, EMA, optimizer, data, autocast,
resume, outputs (TensorBoard, progress bar). training/loop.py drives it."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from training.checkpoint import TrainerState, restore_rng, versions
from training.config import TrainConfig, config_error
from training.distributed import DistContext, ignore_sigint, wrap_model
from training.errors import TaskError
from training.optim import EMA, build_optimizer
from training.resume import derive_seed, restore, resume_dir, seed_everything
from training.step import move_to_device
from training.task import Task

log = logging.getLogger(__name__)


@dataclass
class Run:
    """Everything one call of `train` holds; the functions of training/loop.py read and update it."""

    task: Task
    cfg: TrainConfig
    ctx: DistContext
    model: nn.Module  # raw weights, unwrapped
    forward: nn.Module  # what the loss calls: model, compiled and/or DDP-wrapped
    ema: EMA | None
    optimizer: torch.optim.Optimizer
    state: TrainerState
    train_set: Dataset
    val_batches: Iterable[Any] | None
    batches_per_epoch: int  # micro-batches per epoch per rank (a multiple of grad_accum)
    autocast: Callable[[], contextlib.AbstractContextManager]
    bf16: bool  # whether autocast is enabled
    config_sections: dict[str, Any]  # config.json beyond the model header
    writer: Any = None  # SummaryWriter on rank 0
    bar: Any = None  # tqdm on rank 0
    saved_step: int = -1
    best_pending: bool = False
    window: dict[str, Any] = field(default_factory=dict)

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def info(self, message: str, *args: Any) -> None:
        if self.ctx.is_main:
            log.info(message, *args)


def prepare(task: Task, cfg: TrainConfig, ctx: DistContext) -> Run:
    """Build model, EMA, optimizer and data; restore a checkpoint when resuming; wrap for compile/DDP."""
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
        torch.use_deterministic_algorithms(True)
    seed_everything(cfg.seed)
    train_set, val_set = task.train_dataset(), task.val_dataset()
    seed_everything(derive_seed(cfg.seed, "init"))
    model = task.build_model().to(ctx.device)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    optimizer = build_optimizer(model, cfg, ctx.device)
    batches_per_epoch = _batches_per_epoch(len(train_set), cfg, ctx)
    total_steps = cfg.max_steps or cfg.epochs * batches_per_epoch // cfg.grad_accum
    autocast, bf16 = _autocast(cfg, ctx.device)
    resume_from = resume_dir(cfg)
    state = restore(resume_from, cfg, ctx, model, ema, optimizer) if resume_from else TrainerState()
    state.total_steps, state.world_size = total_steps, ctx.world_size
    run = Run(
        task=task,
        cfg=cfg,
        ctx=ctx,
        model=model,
        forward=wrap_model(model, cfg, ctx),
        ema=ema,
        optimizer=optimizer,
        state=state,
        train_set=train_set,
        val_batches=validation_batches(task, val_set, cfg, ctx),
        batches_per_epoch=batches_per_epoch,
        autocast=autocast,
        bf16=bf16,
        config_sections=_config_sections(task, cfg, ctx),
    )
    _describe(run, resume_from)
    if ctx.is_main:
        _open_outputs(run, resumed=resume_from is not None)
    if resume_from is None or len(state.rng) != ctx.world_size:
        if resume_from is not None:
            log.warning(
                "checkpoint has RNG states of %d ranks, this run has %d: reseeding",
                len(state.rng),
                ctx.world_size,
            )
        seed_everything(derive_seed(cfg.seed, "train", ctx.rank))
    else:
        restore_rng(state.rng[ctx.rank])  # last, so that nothing in the set-up moves the restored streams
    return run


def _batches_per_epoch(size: int, cfg: TrainConfig, ctx: DistContext) -> int:
    steps = (size // ctx.world_size) // cfg.batch_size // cfg.grad_accum
    if steps == 0:
        need = cfg.batch_size * cfg.grad_accum * ctx.world_size
        raise config_error(
            "batch_size",
            f"batch_size x grad_accum x processes <= {size} training samples",
            f"{need} samples/step",
        )
    return steps * cfg.grad_accum


def _autocast(
    cfg: TrainConfig, device: torch.device
) -> tuple[Callable[[], contextlib.AbstractContextManager], bool]:
    """A bf16 autocast factory for `device`, and whether it is on (bf16 needs no GradScaler, unlike fp16)."""
    if cfg.bf16 == "auto":
        enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    else:
        enabled = cfg.bf16 == "on"
    factory = functools.partial(
        torch.autocast, device_type=device.type, dtype=torch.bfloat16, enabled=enabled
    )
    return factory, enabled


def validation_batches(
    task: Task, val_set: Dataset | None, cfg: TrainConfig, ctx: DistContext
) -> Iterable[Any] | None:
    # Every rank validates the whole set: F1 and accuracies of shards cannot be averaged, and the EMA
    # weights are identical on all ranks, so the metrics are too.
    if val_set is None:
        return None
    loader = DataLoader(
        val_set,
        batch_size=cfg.eval_batch_size or cfg.batch_size,
        shuffle=False,
        collate_fn=task.collate,
        num_workers=cfg.num_workers,
        pin_memory=ctx.device.type == "cuda",
        generator=torch.Generator(),
        worker_init_fn=ignore_sigint if cfg.num_workers else None,
    )
    return _OnDevice(loader, ctx.device)


class _OnDevice:
    """An iterable over `loader`'s batches moved to `device`."""

    def __init__(self, loader: DataLoader, device: torch.device) -> None:
        self.loader, self.device = loader, device

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            yield move_to_device(batch, self.device)

    def __len__(self) -> int:
        return len(self.loader)


def _config_sections(task: Task, cfg: TrainConfig, ctx: DistContext) -> dict[str, Any]:
    sections = {
        "train": cfg.to_json(),
        "task": task.name,
        "metadata": dict(task.metadata()),
        "world_size": ctx.world_size,
        "versions": versions(),
    }
    try:
        json.dumps(sections)
    except (TypeError, ValueError) as exc:
        raise TaskError(f"{task.name}: Task.metadata must be JSON-serialisable ({exc})") from None
    return sections


def _describe(run: Run, resume_from: Path | None) -> None:
    cfg, ctx, s = run.cfg, run.ctx, run.state
    run.info("%s: train config %s", run.task.name, json.dumps(cfg.to_json(), sort_keys=True))
    n_params = sum(p.numel() for p in run.model.parameters())
    decayed = sum(p.numel() for g in run.optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"])
    run.info(
        "%s: %s parameters (%s decayed), device %s x %d process(es), bf16 %s, compile %s, EMA %s",
        type(run.model).__name__,
        f"{n_params:,}",
        f"{decayed:,}",
        ctx.device,
        ctx.world_size,
        run.bf16,
        cfg.compile,
        cfg.ema_decay or "off",
    )
    run.info(
        "%d training samples, %d optimizer steps per epoch, %d steps in all%s",
        len(run.train_set),
        run.batches_per_epoch // cfg.grad_accum,
        s.total_steps,
        f"; resuming {resume_from} at step {s.step} (epoch {s.epoch}, batch {s.batch_index})"
        if resume_from
        else "",
    )


def _open_outputs(run: Run, resumed: bool) -> None:
    run.cfg.out_dir.mkdir(parents=True, exist_ok=True)
    if run.cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter  # imported here: slow, and only rank 0 writes

        # purge_step drops scalars a crashed run logged after the checkpoint we resume from.
        run.writer = SummaryWriter(
            str(run.cfg.out_dir / "tb"), purge_step=run.state.step + 1 if resumed else None
        )
    run.bar = tqdm(
        total=run.state.total_steps,
        initial=run.state.step,
        desc=run.task.name,
        unit="step",
        disable=not run.cfg.progress,
        dynamic_ncols=True,
    )
    reset_window(run)


def close(run: Run) -> None:
    if run.bar is not None:
        run.bar.close()
    if run.writer is not None:
        run.writer.close()


# ------------------------------------------------------------------------------------------------ the loop


def reset_window(run: Run) -> None:
    # "seconds" counts data loading and steps only: validation and saving reset "mark" (see restart_clock).
    run.window = {"steps": 0, "finite": 0, "loss": 0.0, "grad_norm": 0.0, "metrics": {}, "seconds": 0.0}
    restart_clock(run)


def restart_clock(run: Run) -> None:
    run.window["mark"] = time.perf_counter()
