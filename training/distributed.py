"""Processes and wrappers: the rank/device of this process (torchrun DDP set-up and tear-down), the DDP and
torch.compile wrappers around a model, and the stop-on-signal handler shared by every rank."""

from __future__ import annotations

import gc
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from training.config import TrainConfig, config_error


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run: rank, world size, device; `owns_group` if train() created it."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise config_error("device", "'auto' or 'cpu' (no CUDA device is visible)", name)
    return torch.device(name)


def setup_distributed(cfg: TrainConfig) -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA.

    A process group created by the caller (e.g. torch.multiprocessing tests) is used as it is.
    """
    device = resolve_device(cfg.device)
    owns = False
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return DistContext(device=device)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    elif device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    return DistContext(dist.get_rank(), dist.get_world_size(), device, owns)


class StopOnSignal:
    """Inside `with`: SIGINT/SIGTERM ask the loop to stop at the next step boundary (it saves first).

    A second SIGINT (Ctrl+C twice) aborts at once with KeyboardInterrupt. A second SIGTERM does not: a
    supervisor such as torchrun forwards SIGTERM after SIGINT, and the checkpoint must still be written.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # signal handlers live on the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = self.signum or signum


def ignore_sigint(worker_id: int) -> None:
    # Ctrl+C reaches the whole process group; the main process saves and stops, so workers must not die first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def leave_group(finished: bool) -> None:
    """Destroy the process group with no collective left in flight: after a finished run every rank meets
    at a barrier first (gloo aborted the process now and then when one rank tore down while the other
    still held work); after an error there is no barrier, the other rank may never reach it."""
    gc.collect()  # DDP buckets and gloo work objects go while the group is alive
    if finished:
        dist.barrier()
    dist.destroy_process_group()


def wrap_model(model: nn.Module, cfg: TrainConfig, ctx: DistContext) -> nn.Module:
    forward = torch.compile(model) if cfg.compile else model
    if ctx.distributed:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        forward = DistributedDataParallel(
            forward, device_ids=device_ids, find_unused_parameters=cfg.ddp_find_unused
        )
    return forward


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside DDP and torch.compile wrappers."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
