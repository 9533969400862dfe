"""The one training loop of Orbit Pilot: the Strategist, Tactician and Executor all train through `train`.

A model's training script implements `Task` (training/task.py) and calls `run_training(task, cfg)`. Examples,
through the entry points of training/entry.py:

    train_strategist ... --train.out-dir data/checkpoints/strategist --train.epochs 20
    train_strategist ... --train.resume auto              # continue a run stopped by Ctrl+C or a crash
    torchrun --standalone --nproc_per_node=4 $(which train_strategist) ...   # DDP, one process per GPU

Validation, checkpoints, exact resume and signals: docs/notes/training.md (training/loop.py).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm.contrib.logging import logging_redirect_tqdm

from training.checkpoint import (
    MODEL_FILE,
    STATE_FILE,
    RngState,
    capture_rng,
    copy_checkpoint,
    find_checkpoint,
    read_weights,
    save_checkpoint,
)
from training.config import TrainConfig, config_error
from training.distributed import StopOnSignal, ignore_sigint, leave_group, setup_distributed
from training.errors import NonFiniteLossError, TrainingError, TrainingInterrupted
from training.loop_state import Run, close, prepare, reset_window, restart_clock, validation_batches
from training.optim import lr_at
from training.resume import EpochBatchSampler, derive_seed
from training.step import StepOutput, evaluate, move_to_device, train_step
from training.task import Task, check_task

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What `train` returns: where the run ended and what it produced."""

    step: int  # optimizer steps taken (applied + skipped)
    epoch: int  # completed epochs
    skipped_steps: int  # steps skipped for a non-finite loss or gradient
    metrics: dict[str, float]  # latest validation metrics ("eval/...")
    best_metric: float | None  # best value of TrainConfig.best_metric
    best_step: int  # step of best/ (-1 if none)
    last_dir: Path | None  # out_dir/last (None on ranks other than 0)
    best_dir: Path | None  # out_dir/best, if validation ran
    model: nn.Module  # raw weights
    ema_model: nn.Module  # EMA weights (the raw model when EMA is off)
    test_metrics: dict[str, float] | None = None  # Task.test_dataset scored with best/ (None: no test set)


def train(task: Task, cfg: TrainConfig) -> TrainResult:
    """Train `task`'s model as `cfg` says (docs/notes/training.md, training/loop.py). Raises TrainingError
    subclasses."""
    check_task(task)
    ctx = setup_distributed(cfg)
    run: Run | None = None
    finished = False
    try:
        run = prepare(task, cfg, ctx)
        with StopOnSignal() as stop, logging_redirect_tqdm():  # log lines print above the progress bar
            _run_steps(run, stop)
        result = _result(run)
        result.test_metrics = _test(run)
        finished = True
        return result
    finally:
        if run is not None:
            close(run)
            run.forward = run.model  # the DDP wrapper's reducer holds the group: release it first
        if ctx.owns_group:
            leave_group(finished)


def run_training(task: Task, cfg: TrainConfig) -> int:
    """`train` for command lines: returns the exit code (0 done, 1 error, 128 + signal when interrupted)."""
    try:
        train(task, cfg)
    except TrainingInterrupted as exc:
        log.warning("%s", exc)
        return exc.exit_code
    except TrainingError as exc:
        log.error("%s", exc)
        return 1
    return 0


# ------------------------------------------------------------------------------------------------ the loop


def _run_steps(run: Run, stop: StopOnSignal) -> None:
    """Optimizer steps until total_steps, epoch ends included; then a last validation and save."""
    s = run.state
    while s.step < s.total_steps:
        for micro_batches in _epoch_micro_batches(run):
            _step(run, micro_batches)
            if signum := _stop_signal(run, stop):
                _interrupt(run, signum)
            if run.cfg.save_every and s.step % run.cfg.save_every == 0:
                _save(run)
            if s.step >= s.total_steps:
                break
        if s.batch_index >= run.batches_per_epoch:
            _end_epoch(run)
            if signum := _stop_signal(run, stop):
                _interrupt(run, signum)
    if run.val_batches is not None and s.eval_step != s.step:
        _validate(run)
    _save(run)


def _epoch_micro_batches(run: Run) -> Iterator[list[Any]]:
    """Groups of grad_accum micro-batches (on the device) of the current epoch, from state.batch_index on."""
    cfg, ctx, s = run.cfg, run.ctx, run.state
    sampler = EpochBatchSampler(
        len(run.train_set),
        cfg.batch_size,
        run.batches_per_epoch,
        cfg.seed,
        s.epoch,
        ctx.rank,
        ctx.world_size,
        s.batch_index,
    )
    loader = DataLoader(
        run.train_set,
        batch_sampler=sampler,
        collate_fn=run.task.collate,
        num_workers=cfg.num_workers,
        pin_memory=ctx.device.type == "cuda",
        worker_init_fn=ignore_sigint if cfg.num_workers else None,
        generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "workers", s.epoch, ctx.rank)),
    )
    group: list[Any] = []
    for batch in loader:
        group.append(move_to_device(batch, ctx.device))
        if len(group) == cfg.grad_accum:
            yield group
            group = []


def _step(run: Run, micro_batches: list[Any]) -> None:
    cfg, s = run.cfg, run.state
    lr = lr_at(s.step, cfg, s.total_steps)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    out = train_step(
        run.forward, run.task, run.optimizer, micro_batches, cfg.clip_norm, run.autocast, run.ctx.distributed
    )
    s.step += 1
    s.batch_index += len(micro_batches)
    s.samples_seen += cfg.batch_size * len(micro_batches) * run.ctx.world_size
    if out.finite:
        s.consecutive_nonfinite = 0
        if run.ema is not None:
            run.ema.update(run.model)
            s.ema_updates = run.ema.updates
    else:
        _skip(run, out)
    if run.ctx.is_main:
        _accumulate(run, out, lr)


def _skip(run: Run, out: StepOutput) -> None:
    s, cfg = run.state, run.cfg
    s.skipped_steps += 1
    s.consecutive_nonfinite += 1
    if run.ctx.is_main:
        log.warning(
            "step %d skipped: non-finite loss %s or grad norm %s (%d in a row, %d in all)",
            s.step,
            out.loss,
            out.grad_norm,
            s.consecutive_nonfinite,
            s.skipped_steps,
        )
    if s.consecutive_nonfinite >= cfg.max_consecutive_nonfinite:
        last = find_checkpoint(cfg.out_dir)
        raise NonFiniteLossError(
            f"{run.task.name}: {s.consecutive_nonfinite} optimizer steps in a row had a non-finite loss or "
            f"gradient (step {s.step}: loss {out.loss}, grad norm {out.grad_norm}), the limit "
            f"TrainConfig.max_consecutive_nonfinite; stopped, last checkpoint {last or 'none'}; "
            f"check the data for NaN/inf or lower TrainConfig.lr"
        )


def _stop_signal(run: Run, stop: StopOnSignal) -> int:
    """The stop signal received by any rank (0 if none), so that every rank stops at the same step."""
    signum = stop.signum or 0
    if not run.ctx.distributed:
        return signum
    value = torch.tensor([signum], device=run.ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value.item())


def _interrupt(run: Run, signum: int) -> None:
    raise TrainingInterrupted(signum, run.state.step, _save(run))


def _end_epoch(run: Run) -> None:
    s = run.state
    s.epoch += 1
    s.batch_index = 0
    if run.val_batches is not None and s.epoch % run.cfg.eval_every == 0:
        _validate(run)
    _save(run)


def _validate(run: Run) -> None:
    s, cfg = run.state, run.cfg
    metrics = evaluate(run.task, run.eval_model, run.val_batches, run.autocast)
    key = cfg.best_metric.removeprefix("eval/")
    if key not in metrics:
        raise config_error(
            "best_metric", f"one of the metrics of Task.evaluate {sorted(metrics)}", cfg.best_metric
        )
    s.last_metrics = {f"eval/{k}": v for k, v in metrics.items()}
    s.eval_step = s.step
    value = metrics[key]
    better = s.best_metric is None or (
        value > s.best_metric if cfg.best_mode == "max" else value < s.best_metric
    )
    if better and math.isfinite(value):
        s.best_metric, s.best_step = value, s.step
        run.best_pending = True
    run.info(
        "step %d epoch %d validation: %s%s",
        s.step,
        s.epoch,
        ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())),
        " (best)" if run.best_pending else "",
    )
    restart_clock(run)
    if run.writer is not None:
        for name, v in s.last_metrics.items():
            run.writer.add_scalar(name, v, s.step)
        if s.best_metric is not None:
            run.writer.add_scalar(f"eval/best_{key}", s.best_metric, s.step)


def _save(run: Run) -> Path | None:
    """Save last/ (all ranks take part: RNG states are gathered) and copy it to best/ after an improvement."""
    s = run.state
    last = run.cfg.out_dir / "last"
    if run.saved_step == s.step and not run.best_pending:
        return last if run.ctx.is_main else None
    rngs: list[RngState] = [capture_rng()]
    if run.ctx.distributed:
        gathered: list[Any] = [None] * run.ctx.world_size
        dist.all_gather_object(gathered, rngs[0])  # in-memory transfer between ranks, never a file
        rngs = gathered
    run.saved_step = s.step
    if not run.ctx.is_main:
        run.best_pending = False
        return None
    s.rng = rngs
    save_checkpoint(
        last,
        run.model,
        run.eval_model if run.ema is not None else None,
        run.optimizer,
        s,
        run.config_sections,
    )
    if run.best_pending:
        copy_checkpoint(last, run.cfg.out_dir / "best")
        run.best_pending = False
    restart_clock(run)
    return last


def _accumulate(run: Run, out: StepOutput, lr: float) -> None:
    """Add a step to the logging window; every log_every steps write train/* and perf/* scalars (rank 0)."""
    w, s, cfg = run.window, run.state, run.cfg
    now = time.perf_counter()
    w["steps"] += 1
    w["seconds"] += now - w["mark"]
    w["mark"] = now
    if out.finite:
        w["finite"] += 1
        w["loss"] += out.loss
        w["grad_norm"] += out.grad_norm
        for k, v in out.metrics.items():
            w["metrics"][k] = w["metrics"].get(k, 0.0) + v
    run.bar.update(1)
    if s.step % cfg.log_every and s.step < s.total_steps:
        return
    seconds = max(w["seconds"], 1e-9)
    scalars = {
        "train/lr": lr,
        "train/skipped_steps": s.skipped_steps,
        "train/epoch": s.epoch,
        "perf/steps_per_s": w["steps"] / seconds,
        "perf/samples_per_s": w["steps"] * cfg.batch_size * cfg.grad_accum * run.ctx.world_size / seconds,
    }
    if w["finite"]:
        scalars["train/loss"] = w["loss"] / w["finite"]
        scalars["train/grad_norm"] = w["grad_norm"] / w["finite"]
        scalars.update({f"train/{k}": v / w["finite"] for k, v in w["metrics"].items()})
    if run.writer is not None:
        for name, value in scalars.items():
            run.writer.add_scalar(name, value, s.step)
    run.bar.set_postfix(loss=f"{scalars.get('train/loss', math.nan):.4f}", lr=f"{lr:.2e}")
    log.info(
        "step %d/%d epoch %d: %s",
        s.step,
        s.total_steps,
        s.epoch,
        ", ".join(f"{k} {v:.4g}" for k, v in scalars.items()),
    )
    reset_window(run)


TEST_FILE = "test_metrics.json"


def _test(run: Run) -> dict[str, float] | None:
    """Score Task.test_dataset once with the best/ weights (last/ when the run never validated), on rank 0."""
    test_dataset = getattr(run.task, "test_dataset", None)
    test_set = test_dataset() if test_dataset is not None and run.ctx.is_main else None
    if test_set is None:
        return None
    out = run.cfg.out_dir
    folder = find_checkpoint(out, "best") or find_checkpoint(out, "last")
    assert folder is not None, "train() saves last/ before the test"
    model = copy.deepcopy(run.eval_model)
    model.load_state_dict(read_weights(folder / MODEL_FILE, model))
    metrics = evaluate(
        run.task, model, validation_batches(run.task, test_set, run.cfg, run.ctx), run.autocast
    )
    step = json.loads((folder / STATE_FILE).read_text())["step"]
    log.info(
        "test (%s/ of step %d, %d samples): %s", folder.name, step, len(test_set),
        ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())),
    )  # fmt: skip
    record = {"checkpoint": folder.name, "step": step, "samples": len(test_set),
              "metrics": {k: None if math.isnan(v) else v for k, v in metrics.items()}}  # fmt: skip
    tmp = out / (TEST_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    tmp.replace(out / TEST_FILE)
    return metrics


def _result(run: Run) -> TrainResult:
    s, out = run.state, run.cfg.out_dir
    best = out / "best" if run.ctx.is_main and s.best_step >= 0 else None
    return TrainResult(
        step=s.step,
        epoch=s.epoch,
        skipped_steps=s.skipped_steps,
        metrics=dict(s.last_metrics),
        best_metric=s.best_metric,
        best_step=s.best_step,
        last_dir=out / "last" if run.ctx.is_main else None,
        best_dir=best,
        model=run.model,
        ema_model=run.eval_model,
    )
