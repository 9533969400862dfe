"""The one training loop of Orbit Pilot: the Strategist, Tactician and Executor all train through `train`.

A model's training script implements `Task` (model, datasets, loss, validation metrics) and calls
`run_training(task, cfg)` (or `train`). Examples, through the entry points of training/entry.py (which
name the TrainConfig flags their own way):

    train_strategist ... --train.out-dir data/checkpoints/strategist --train.epochs 20
    train_strategist ... --train.resume auto              # continue a run stopped by Ctrl+C or a crash
    torchrun --standalone --nproc_per_node=4 $(which train_strategist) ...   # DDP, one process per GPU

One optimizer step (`train_step`):

    micro-batch 1 .. grad_accum ──forward under bf16 autocast (CUDA)──▶ loss / grad_accum ──backward──▶ grads
        (DDP: gradients are all-reduced on the last micro-batch only; no_sync before it)
    ──▶ clip the global grad norm ──▶ loss or norm non-finite on any rank? ──yes──▶ skip the step, count it
                                                         └──no──▶ AdamW step (LR from lr_at) ──▶ EMA update

After every `eval_every` epochs the EMA weights are validated (Task.evaluate -> eval/*), `last/` is saved and
`best/` becomes a copy of it when TrainConfig.best_metric improved (training/checkpoint.py for the layout).

Data order: each epoch is a permutation of the training set seeded by (seed, epoch), sharded by rank; the
trainer state records the next micro-batch, so a resumed run skips exactly the consumed ones and loads nothing
twice. Exact resume: the checkpoint holds raw and EMA weights, the AdamW moments and step counts, the EMA
update count, the data position and every RNG (python, numpy, torch CPU and CUDA, per rank). Validation
puts every RNG back when it ends and the data loaders draw from their own generators, so neither moves the
training RNG. On CPU in fp32 an interrupted and resumed run ends bit-identical to an uninterrupted one
(tests/training/test_loop.py); on CUDA the same holds given deterministic kernels (TrainConfig.deterministic).
A Task must therefore draw any per-sample randomness (augmentation) from (seed, epoch, index), not from a
DataLoader worker's RNG, whose state is not part of the checkpoint.

Signals: SIGINT/SIGTERM make the loop stop at the next step boundary, save `last/` and raise
TrainingInterrupted (run_training returns 128 + signal); a second SIGINT aborts at once (the previous
checkpoint stays intact, saves being atomic). Non-finite steps are skipped and counted; after
`max_consecutive_nonfinite` in a row the run stops with NonFiniteLossError instead of training on garbage.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import gc
import json
import logging
import math
import os
import random
import signal
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from training.checkpoint import (
    MODEL_FILE,
    STATE_FILE,
    RngState,
    TrainerState,
    capture_rng,
    copy_checkpoint,
    find_checkpoint,
    load_checkpoint,
    read_config,
    read_weights,
    restore_rng,
    save_checkpoint,
    versions,
)
from training.errors import (
    NonFiniteLossError,
    TaskError,
    TrainConfigError,
    TrainingError,
    TrainingInterrupted,
)

log = logging.getLogger(__name__)

# Parameters of these modules are never decayed: decay would pull norm gains and embedding rows towards 0.
NO_DECAY_MODULES: tuple[type[nn.Module], ...] = (
    nn.Embedding,
    nn.EmbeddingBag,
    nn.LayerNorm,
    nn.RMSNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*
)


# ------------------------------------------------------------------------------------------------ config


@dataclass
class TrainConfig:
    """Hyper-parameters and run settings of the shared training loop (saved in every config.json)."""

    out_dir: Path = Path("data/checkpoints/run")  # folder of last/, best/ and tb/ (TensorBoard)
    lr: float = 3e-4  # peak learning rate, reached at the end of warm-up
    weight_decay: float = 0.05  # AdamW decoupled decay of matmul weights (see param_groups)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW moment decays
    eps: float = 1e-8  # AdamW denominator epsilon
    warmup_steps: int = 100  # optimizer steps of linear warm-up from lr / warmup_steps to lr
    min_lr_ratio: float = 0.1  # cosine floor, as a fraction of lr (nanoGPT uses about 0.1)
    epochs: int = 10  # passes over the training set (ignored when max_steps > 0)
    max_steps: int = 0  # optimizer steps of the run; 0 = epochs x steps per epoch
    batch_size: int = 32  # samples per micro-batch per process
    grad_accum: int = 1  # micro-batches per step; global batch = batch_size x grad_accum x processes
    eval_batch_size: int = 0  # samples per validation batch; 0 = batch_size
    clip_norm: float = 1.0  # max global L2 norm of the gradient; 0 = no clipping
    ema_decay: float = 0.999  # EMA decay per optimizer step (warmed up, see EMA); 0 = no EMA
    max_consecutive_nonfinite: int = 10  # stop with an error after this many skipped steps in a row
    seed: int = 0  # seeds model init, data order and every RNG
    device: str = "auto"  # "auto" (CUDA if visible), "cpu" or "cuda"
    bf16: str = "auto"  # bf16 autocast: "auto" (on CUDA with bf16 support), "on" or "off"
    compile: bool = False  # torch.compile the training forward
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower; exact resume on CUDA)
    eval_every: int = 1  # epochs between validations (and the run's end)
    save_every: int = 0  # optimizer steps between extra saves of last/; 0 = at validations and the end only
    log_every: int = 10  # optimizer steps between train/* and perf/* scalars
    resume: str = ""  # "" = new run, "auto" = continue out_dir/last if present, or a checkpoint folder
    best_metric: str = "loss"  # validation metric (a key of Task.evaluate) that selects best/
    best_mode: str = "min"  # "min" or "max": which direction of best_metric is better
    num_workers: int = 0  # DataLoader worker processes
    progress: bool = True  # tqdm progress bar (rank 0)
    tensorboard: bool = True  # TensorBoard scalars in out_dir/tb (rank 0)
    ddp_find_unused: bool = False  # DDP find_unused_parameters, for models whose loss skips some heads

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        for name in ("lr", "eps"):
            _check_float(self, name, low=0.0, low_open=True)
        for name in ("weight_decay", "clip_norm"):
            _check_float(self, name, low=0.0)
        _check_float(self, "min_lr_ratio", low=0.0, high=1.0)
        _check_float(self, "ema_decay", low=0.0, high=1.0, high_open=True)
        betas = self.betas
        if not (
            isinstance(betas, tuple | list)
            and len(betas) == 2
            and all(_is_number(b) and 0 <= b < 1 for b in betas)
        ):
            raise _config_error("betas", "two numbers in [0, 1)", betas)
        self.betas = (float(betas[0]), float(betas[1]))
        for name in (
            "epochs",
            "batch_size",
            "grad_accum",
            "max_consecutive_nonfinite",
            "eval_every",
            "log_every",
        ):
            _check_int(self, name, 1)
        for name in ("warmup_steps", "max_steps", "eval_batch_size", "save_every", "seed", "num_workers"):
            _check_int(self, name, 0)
        _check_choice(self, "device", ("auto", "cpu", "cuda"))
        _check_choice(self, "bf16", ("auto", "on", "off"))
        _check_choice(self, "best_mode", ("min", "max"))
        for name in ("compile", "deterministic", "progress", "tensorboard", "ddp_find_unused"):
            if not isinstance(getattr(self, name), bool):
                raise _config_error(name, "a bool", getattr(self, name))
        if not isinstance(self.best_metric, str) or not self.best_metric:
            raise _config_error("best_metric", "a metric name returned by Task.evaluate", self.best_metric)
        if not isinstance(self.resume, str):
            raise _config_error("resume", "'', 'auto' or a checkpoint folder", self.resume)

    def to_json(self) -> dict[str, Any]:
        """The resolved config as JSON-ready values (Path -> str, tuple -> list)."""
        return {
            k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()
        }


def _config_error(name: str, expected: str, value: object) -> TrainConfigError:
    return TrainConfigError(f"TrainConfig.{name}: expected {expected}, got {value!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_float(
    cfg: TrainConfig,
    name: str,
    low: float,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    value = getattr(cfg, name)
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    expected = f"a finite number in {left}{low}, {'inf' if high is None else high}{right}"
    if not _is_number(value) or (value <= low if low_open else value < low):
        raise _config_error(name, expected, value)
    if high is not None and (value >= high if high_open else value > high):
        raise _config_error(name, expected, value)
    setattr(cfg, name, float(value))


def _check_int(cfg: TrainConfig, name: str, minimum: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _config_error(name, f"an int >= {minimum}", value)


def _check_choice(cfg: TrainConfig, name: str, choices: tuple[str, ...]) -> None:
    if getattr(cfg, name) not in choices:
        raise _config_error(name, "one of " + ", ".join(repr(c) for c in choices), getattr(cfg, name))


# ------------------------------------------------------------------------------------------------ task


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


# ------------------------------------------------------------------------------------------------ pieces


def derive_seed(seed: int, *keys: int | str) -> int:
    """An independent 63-bit seed for a named random stream ("data", epoch), ("train", rank), ..."""
    words = [seed] + [zlib.crc32(k.encode()) if isinstance(k, str) else k for k in keys]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def seed_everything(seed: int) -> None:
    """Seed python, numpy (legacy global) and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay for matmul weights; none for biases, norms, embeddings and `_no_weight_decay`.

    Every parameter with fewer than 2 dims (biases, norm gains, Mamba's D), every parameter of a
    NO_DECAY_MODULES module (embeddings, norms) and every parameter carrying `_no_weight_decay = True`
    (Mamba's A_log and D, as mamba-ssm marks them) goes to the no-decay group. Groups carry `param_names`,
    which the checkpoint uses to name optimizer tensors.
    """
    exempt = {id(p) for m in model.modules() if isinstance(m, NO_DECAY_MODULES) for p in m.parameters(False)}
    decay: tuple[list[str], list[nn.Parameter]] = ([], [])
    no_decay: tuple[list[str], list[nn.Parameter]] = ([], [])
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim < 2 or id(param) in exempt or getattr(param, "_no_weight_decay", False)
        names, params = no_decay if skip else decay
        names.append(name)
        params.append(param)
    groups = [(decay, weight_decay), (no_decay, 0.0)]
    return [{"params": p, "param_names": n, "weight_decay": wd} for (n, p), wd in groups if p]


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over `param_groups`; the fused CUDA kernel on CUDA (as nanoGPT)."""
    fused = device.type == "cuda" or None
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused
    )


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warm-up, cosine decay, then the floor.

    step < warmup:             lr * (step + 1) / warmup
    warmup <= step < total:    floor + (lr - floor) * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2
    step >= total:             floor = lr * min_lr_ratio
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    floor = cfg.lr * cfg.min_lr_ratio
    if step >= total_steps:
        return floor
    progress = (step - cfg.warmup_steps) / (total_steps - cfg.warmup_steps)
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - floor)


class EMA:
    """Exponential moving average of a model's parameters (buffers are copied, not averaged).

    The decay warms up as min(decay, (1 + t) / (10 + t)) after t updates (the num_updates rule of
    TensorFlow's ExponentialMovingAverage): early on the average follows the fast-moving weights instead of
    staying near the random initialisation, which matters for short runs and small datasets.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, updates: int) -> float:
        return min(self.decay, (1.0 + updates) / (10.0 + updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1.0 - self.decay_at(self.updates)
        ema_params = list(self.module.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], weight)  # as timm
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)
        self.updates += 1


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


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside DDP and torch.compile wrappers."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


# ------------------------------------------------------------------------------------------------ one step


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


# ------------------------------------------------------------------------------------------------ processes


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
        raise _config_error("device", "'auto' or 'cpu' (no CUDA device is visible)", name)
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


def _ignore_sigint(worker_id: int) -> None:
    # Ctrl+C reaches the whole process group; the main process saves and stops, so workers must not die first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ------------------------------------------------------------------------------------------------ the run


@dataclass
class _Run:
    """Everything one call of `train` holds; the loop's functions below read and update it."""

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


def train(task: Task, cfg: TrainConfig) -> TrainResult:
    """Train `task`'s model as `cfg` says; see the module docstring. Raises TrainingError subclasses."""
    _check_task(task)
    ctx = setup_distributed(cfg)
    run: _Run | None = None
    finished = False
    try:
        run = _prepare(task, cfg, ctx)
        with StopOnSignal() as stop, logging_redirect_tqdm():  # log lines print above the progress bar
            _run_steps(run, stop)
        result = _result(run)
        result.test_metrics = _test(run)
        finished = True
        return result
    finally:
        if run is not None:
            _close(run)
            run.forward = run.model  # the DDP wrapper's reducer holds the group: release it first
        if ctx.owns_group:
            _leave_group(finished)


def _leave_group(finished: bool) -> None:
    """Destroy the process group with no collective left in flight: after a finished run every rank meets
    at a barrier first (gloo aborted the process now and then when one rank tore down while the other
    still held work); after an error there is no barrier, the other rank may never reach it."""
    gc.collect()  # DDP buckets and gloo work objects go while the group is alive
    if finished:
        dist.barrier()
    dist.destroy_process_group()


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


def _check_task(task: object) -> None:
    if not isinstance(task, Task):
        missing = [name for name in TASK_MEMBERS if not hasattr(task, name)]
        raise TaskError(f"{type(task).__name__}: not a training Task, missing {sorted(missing)}")


def _prepare(task: Task, cfg: TrainConfig, ctx: DistContext) -> _Run:
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
    resume_from = _resume_dir(cfg)
    state = _restore(resume_from, cfg, ctx, model, ema, optimizer) if resume_from else TrainerState()
    state.total_steps, state.world_size = total_steps, ctx.world_size
    run = _Run(
        task=task,
        cfg=cfg,
        ctx=ctx,
        model=model,
        forward=_wrap(model, cfg, ctx),
        ema=ema,
        optimizer=optimizer,
        state=state,
        train_set=train_set,
        val_batches=_val_batches(task, val_set, cfg, ctx),
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
        raise _config_error(
            "batch_size",
            f"batch_size x grad_accum x processes <= {size} training samples",
            f"{need} samples/step",
        )
    return steps * cfg.grad_accum


def _resume_dir(cfg: TrainConfig) -> Path | None:
    existing = find_checkpoint(cfg.out_dir)
    if cfg.resume == "":
        if existing is not None:
            raise _config_error(
                "resume", f"'auto' to continue the checkpoint in {existing}, or a new out_dir", ""
            )
        return None
    if cfg.resume == "auto":
        return existing
    folder = Path(cfg.resume)
    if not (folder / STATE_FILE).is_file():
        raise _config_error("resume", f"'', 'auto' or a checkpoint folder (with {STATE_FILE})", cfg.resume)
    return folder


def _restore(
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


def _wrap(model: nn.Module, cfg: TrainConfig, ctx: DistContext) -> nn.Module:
    forward = torch.compile(model) if cfg.compile else model
    if ctx.distributed:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        forward = DistributedDataParallel(
            forward, device_ids=device_ids, find_unused_parameters=cfg.ddp_find_unused
        )
    return forward


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


def _val_batches(
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
        worker_init_fn=_ignore_sigint if cfg.num_workers else None,
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


def _describe(run: _Run, resume_from: Path | None) -> None:
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


def _open_outputs(run: _Run, resumed: bool) -> None:
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
    _reset_window(run)


def _close(run: _Run) -> None:
    if run.bar is not None:
        run.bar.close()
    if run.writer is not None:
        run.writer.close()


# ------------------------------------------------------------------------------------------------ the loop


def _run_steps(run: _Run, stop: StopOnSignal) -> None:
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


def _epoch_micro_batches(run: _Run) -> Iterator[list[Any]]:
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
        worker_init_fn=_ignore_sigint if cfg.num_workers else None,
        generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "workers", s.epoch, ctx.rank)),
    )
    group: list[Any] = []
    for batch in loader:
        group.append(move_to_device(batch, ctx.device))
        if len(group) == cfg.grad_accum:
            yield group
            group = []


def _step(run: _Run, micro_batches: list[Any]) -> None:
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


def _skip(run: _Run, out: StepOutput) -> None:
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


def _stop_signal(run: _Run, stop: StopOnSignal) -> int:
    """The stop signal received by any rank (0 if none), so that every rank stops at the same step."""
    signum = stop.signum or 0
    if not run.ctx.distributed:
        return signum
    value = torch.tensor([signum], device=run.ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value.item())


def _interrupt(run: _Run, signum: int) -> None:
    raise TrainingInterrupted(signum, run.state.step, _save(run))


def _end_epoch(run: _Run) -> None:
    s = run.state
    s.epoch += 1
    s.batch_index = 0
    if run.val_batches is not None and s.epoch % run.cfg.eval_every == 0:
        _validate(run)
    _save(run)


def _validate(run: _Run) -> None:
    s, cfg = run.state, run.cfg
    metrics = evaluate(run.task, run.eval_model, run.val_batches, run.autocast)
    key = cfg.best_metric.removeprefix("eval/")
    if key not in metrics:
        raise _config_error(
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
    _restart_clock(run)
    if run.writer is not None:
        for name, v in s.last_metrics.items():
            run.writer.add_scalar(name, v, s.step)
        if s.best_metric is not None:
            run.writer.add_scalar(f"eval/best_{key}", s.best_metric, s.step)


def _save(run: _Run) -> Path | None:
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
    _restart_clock(run)
    return last


def _reset_window(run: _Run) -> None:
    # "seconds" counts data loading and steps only: validation and saving reset "mark" (see _restart_clock).
    run.window = {"steps": 0, "finite": 0, "loss": 0.0, "grad_norm": 0.0, "metrics": {}, "seconds": 0.0}
    _restart_clock(run)


def _restart_clock(run: _Run) -> None:
    run.window["mark"] = time.perf_counter()


def _accumulate(run: _Run, out: StepOutput, lr: float) -> None:
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
    _reset_window(run)


TEST_FILE = "test_metrics.json"


def _test(run: _Run) -> dict[str, float] | None:
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
    metrics = evaluate(run.task, model, _val_batches(run.task, test_set, run.cfg, run.ctx), run.autocast)
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


def _result(run: _Run) -> TrainResult:
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
