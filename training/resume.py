"""Exact resume: seeded random streams, the data order of an epoch, and continuing from a checkpoint.

Each epoch's order is a permutation seeded by (seed, epoch), sharded by rank; the trainer state records the
next micro-batch, so a resumed run skips exactly the consumed ones (docs/notes/training.md, training/loop.py).
"""

from __future__ import annotations

import logging
import random
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler

from training.checkpoint import STATE_FILE, TrainerState, find_checkpoint, load_checkpoint, read_config
from training.config import TrainConfig, config_error
from training.distributed import DistContext
from training.optim import EMA

log = logging.getLogger(__name__)


def derive_seed(seed: int, *keys: int | str) -> int:
    """An independent 63-bit seed for a named random stream ("data", epoch), ("train", rank), ..."""
    words = [seed] + [zlib.crc32(k.encode()) if isinstance(k, str) else k for k in keys]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def seed_everything(seed: int) -> None:
    """Seed python, numpy (legacy global) and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpochBatchSampler(Sampler[list[int]]):
    """Micro-batches of one epoch for one rank, from micro-batch `start` on (earlier ones were consumed).

    The epoch's order is a permutation seeded by (seed, epoch); rank r takes every world_size-th index of
    it (the tail that does not divide evenly is dropped, so every rank runs the same number of steps).
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        n_batches: int,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
    ) -> None:
        self.size, self.batch_size, self.n_batches = size, batch_size, n_batches
        self.seed, self.epoch, self.rank, self.world_size, self.start = seed, epoch, rank, world_size, start

    def __len__(self) -> int:
        return max(0, self.n_batches - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "data", self.epoch))
        order = torch.randperm(self.size, generator=generator)
        mine = order[: (self.size // self.world_size) * self.world_size][self.rank :: self.world_size]
        for b in range(self.start, self.n_batches):
            yield mine[b * self.batch_size : (b + 1) * self.batch_size].tolist()


def resume_dir(cfg: TrainConfig) -> Path | None:
    existing = find_checkpoint(cfg.out_dir)
    if cfg.resume == "":
        if existing is not None:
            raise config_error(
                "resume", f"'auto' to continue the checkpoint in {existing}, or a new out_dir", ""
            )
        return None
    if cfg.resume == "auto":
        return existing
    folder = Path(cfg.resume)
    if not (folder / STATE_FILE).is_file():
        raise config_error("resume", f"'', 'auto' or a checkpoint folder (with {STATE_FILE})", cfg.resume)
    return folder


def restore(
    folder: Path,
    cfg: TrainConfig,
    ctx: DistContext,
    model: nn.Module,
    ema: EMA | None,
    optimizer: torch.optim.Optimizer,
) -> TrainerState:
    state = load_checkpoint(folder, model, ema.module if ema is not None else None, optimizer)
    if ema is not None:
        ema.updates = state.ema_updates
    saved = read_config(folder).get("train", {})
    exact = (
        "seed",
        "lr",
        "weight_decay",
        "betas",
        "eps",
        "warmup_steps",
        "min_lr_ratio",
        "epochs",
        "max_steps",
        "batch_size",
        "grad_accum",
        "clip_norm",
        "ema_decay",
        "bf16",
    )
    changed = [
        f"{k} {saved.get(k)!r} -> {v!r}" for k, v in cfg.to_json().items() if k in exact and saved.get(k) != v
    ]
    if state.world_size != ctx.world_size:
        changed.append(f"processes {state.world_size} -> {ctx.world_size}")
    if changed and ctx.is_main:
        log.warning(
            "resuming %s with changed settings, the continuation is not exact: %s", folder, "; ".join(changed)
        )
    return state
