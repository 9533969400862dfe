"""Overhead of the shared training loop (training/loop.py) over a bare optimizer loop, on a tiny model.

    .venv/bin/python benchmarks/bench_training_loop.py                 # MLP width 256 x 4, batch 64, CPU
    .venv/bin/python benchmarks/bench_training_loop.py --width 1024 --json

Rows, all on the same model, batch and device, from one run:
    bare           forward + backward + AdamW step on tensors already in memory
    train_step     the loop's step: + global-norm clipping, non-finite check, one host sync for the stats
    + EMA          train_step followed by the EMA update
    train()        the whole loop: DataLoader and collate, LR schedule, EMA, logging, TensorBoard, validation
                   and a checkpoint at every epoch end (set-up included, so it is a lower bound)
The model is deliberately small: that is where per-step overhead shows; with the real models the forward
and backward dominate and the ratios move towards 1.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from benchmarks.common import add_common_args, apply_threads, report, time_call
from training.config import TrainConfig
from training.loop import train
from training.optim import EMA, build_optimizer
from training.step import train_step

COLUMNS = ("what", "device", "samples_per_s", "ratio_vs_bare", "median_ms")


def mlp(width: int, layers: int) -> nn.Module:
    blocks: list[nn.Module] = [nn.Linear(32, width)]
    for _ in range(layers - 1):
        blocks += [nn.LayerNorm(width), nn.GELU(), nn.Linear(width, width)]
    return nn.Sequential(*blocks, nn.LayerNorm(width), nn.Linear(width, 5))


class Random(Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 32, generator=g), torch.randint(0, 5, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]


class BenchTask:
    """A classification Task on random data for the end-to-end row."""

    name = "bench"

    def __init__(self, width: int, layers: int, n_train: int) -> None:
        self.width, self.layers, self.n_train = width, layers, n_train

    def build_model(self) -> nn.Module:
        return mlp(self.width, self.layers)

    def train_dataset(self) -> Dataset:
        return Random(self.n_train)

    def val_dataset(self) -> Dataset | None:
        return Random(256)

    def collate(self, samples: list[Any]) -> Any:
        return default_collate(samples)

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Any]]:
        x, y = batch
        return F.cross_entropy(model(x), y), {}

    def evaluate(self, model: nn.Module, batches: Any) -> dict[str, float]:
        losses = [float(F.cross_entropy(model(x), y)) for x, y in batches]
        return {"loss": sum(losses) / len(losses)}

    def metadata(self) -> dict[str, Any]:
        return {}


def step_rows(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    cfg = TrainConfig(device=device.type, batch_size=args.batch)
    x = torch.randn(args.batch, 32, device=device)
    y = torch.randint(0, 5, (args.batch,), device=device)
    task = BenchTask(args.width, args.layers, 0)
    rows = []
    torch.manual_seed(0)
    model = mlp(args.width, args.layers).to(device)
    optimizer = build_optimizer(model, cfg, device)
    ema = EMA(model, 0.999)

    def bare() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    def step() -> None:
        train_step(model, task, optimizer, [(x, y)], clip_norm=1.0)

    def step_ema() -> None:
        step()
        ema.update(model)

    for name, fn in (("bare", bare), ("train_step", step), ("train_step + EMA", step_ema)):
        timing = time_call(fn, number=args.number, repeats=args.repeats, warmup=5)
        rows.append({"what": name, "device": device.type, **timing})
    return rows


def loop_row(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    n_train = args.batch * args.steps_per_epoch
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(out_dir=Path(out), device=device.type, batch_size=args.batch, epochs=args.epochs,
                          warmup_steps=10, progress=False, log_every=10)  # fmt: skip
        start = time.perf_counter()
        result = train(BenchTask(args.width, args.layers, n_train), cfg)
        seconds = time.perf_counter() - start
    per_step_ms = seconds / result.step * 1000.0
    return {"what": f"train() {result.step} steps", "device": device.type, "median_ms": per_step_ms}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--number", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    add_common_args(parser)
    args = parser.parse_args(argv)
    apply_threads(args)
    device = torch.device(args.device)
    rows = [*step_rows(args, device), loop_row(args, device)]
    bare_ms = rows[0]["median_ms"]
    for row in rows:
        row["samples_per_s"] = round(args.batch / row["median_ms"] * 1000.0)
        row["ratio_vs_bare"] = round(bare_ms / row["median_ms"], 3)
    title = f"training loop overhead: MLP {args.width} x {args.layers}, batch {args.batch}"
    report(title, rows, COLUMNS, args.json)


if __name__ == "__main__":
    main()
