"""Training throughput of the three policy models (samples/s and frames/s of one optimizer step) here.

    .venv/bin/python -m benchmarks.bench_training                 # CPU, the shipped settings, fp32
    .venv/bin/python -m benchmarks.bench_training --json --threads 1
    .venv/bin/python -m benchmarks.bench_training --device cuda   # + bf16 autocast and torch.compile rows
    .venv/bin/python -m benchmarks.bench_training --device cuda --preset gpu   # the GPU preset's batches

Each row times one `train_step` (forward, backward, clipping, AdamW) of one model at the size and batch of its
entry point (training/runs.py defaults, or with --preset that preset's batch) on random inputs; the data path
is not timed. A sample is one dataset item. bf16 autocast and torch.compile rows run only on CUDA.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.common import add_common_args, apply_threads, report, time_call
from bot.perception.state import OBS_SPEC
from models.executor import Executor
from models.kernels import resolve_mamba_path
from models.strategist import MODES, Strategist
from models.tactician import Tactician
from training.config import TrainConfig
from training.entry import parse_run
from training.optim import build_optimizer
from training.runs import ExecutorRun, StrategistRun, TacticianRun
from training.step import train_step

COLUMNS = (
    "model",
    "variant",
    "device",
    "batch",
    "samples_per_s",
    "steps_per_s",
    "median_ms",
    "params",
    "note",
)
RUNS = {"strategist": StrategistRun, "tactician": TacticianRun, "executor": ExecutorRun}
VARIANTS = {
    "fp32": (False, False),
    "bf16": (True, False),
    "bf16+compile": (True, True),
    "fp32+compile": (False, True),
}
F_OBJ, F_GLOB, F_SUM = (
    len(OBS_SPEC.obj_features),
    len(OBS_SPEC.glob_features),
    len(OBS_SPEC.summary_features),
)


class _Bench:
    """A minimal Task (training/loop.py) calling the model's own loss on a prepared batch."""

    name = "bench"

    def __init__(self, loss: Callable[[nn.Module, dict[str, Tensor]], Tensor]) -> None:
        self._loss = loss

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        return self._loss(model, batch), {}


def strategist_case(run: StrategistRun) -> tuple[nn.Module, dict[str, Tensor], _Bench, int, int]:
    model = Strategist(type(run.model)(**{**run.model.__dict__, "d_in": F_SUM, "n_modes": len(MODES)}))
    b, t = run.train.batch_size, run.history
    batch = {"x": torch.randn(b, t, F_SUM), "modes": torch.randint(0, len(MODES), (b, t))}
    task = _Bench(lambda m, x: m.loss(m(x["x"]), x["modes"], run.model.label_smoothing))
    return model, batch, task, b, b * t


def tactician_case(run: TacticianRun) -> tuple[nn.Module, dict[str, Tensor], _Bench, int, int]:
    cfg = {**run.model.__dict__, "d_obj": F_OBJ, "n_max": OBS_SPEC.n_max, "d_ctx": F_GLOB}
    model = Tactician(type(run.model)(**cfg))
    b, n = run.train.batch_size, OBS_SPEC.n_max
    batch = {
        "objects": torch.randn(b, n, F_OBJ),
        "valid": torch.arange(n).expand(b, n) < torch.randint(1, n + 1, (b, 1)),
        "goal": torch.randn(b, run.model.goal_dim),
        "context": torch.randn(b, F_GLOB),
        "target": torch.randint(0, 2, (b,)),
        "approach": torch.randn(b, 2),
    }

    def loss(m: nn.Module, x: dict[str, Tensor]) -> Tensor:
        return m.loss(m(x["objects"], x["valid"], x["goal"], x["context"]), x["target"], x["approach"])

    return model, batch, _Bench(loss), b, b


def executor_case(run: ExecutorRun) -> tuple[nn.Module, dict[str, Tensor], _Bench, int, int]:
    cfg = {**run.model.__dict__, "d_frame": F_GLOB, "d_target": F_OBJ, "approach_dim": 2, "n_keys": 4}
    model = Executor(type(run.model)(**cfg))
    model.fit_mouse_bins(torch.rand(4096, 2))
    b, t, goal = run.train.batch_size, run.chunk, run.model.goal_dim
    batch = {
        "frame": torch.randn(b, t, F_GLOB),
        "goal": torch.randn(b, t, goal),
        "target": torch.randn(b, t, F_OBJ),
        "approach": torch.randn(b, t, 2),
        "mouse": torch.rand(b, t, 2),
        "click": torch.rand(b, t) < 0.02,
        "key": torch.randint(0, 4, (b, t)),
    }
    batch["key_weight"] = torch.tensor([1.0, 10.0, 10.0, 10.0])

    def loss(m: nn.Module, x: dict[str, Tensor]) -> Tensor:
        out = m(x["frame"], x["goal"], x["target"], x["approach"])
        core = m._orig_mod if hasattr(m, "_orig_mod") else m
        weight = x["key_weight"]
        parts = core.loss(out, x["mouse"], x["click"], x["key"], click_pos_weight=7.0, key_weight=weight)
        return parts["loss"]

    return model, batch, _Bench(loss), b, b * t


CASES = {"strategist": strategist_case, "tactician": tactician_case, "executor": executor_case}


def variants(device: torch.device, names: list[str] | None = None) -> list[tuple[str, bool, bool]]:
    """(name, bf16, compile) to run on this device: fp32 on a CPU; on CUDA `names` (default: fp32, bf16,
    bf16+compile, so that fp32 vs bf16 and eager vs compile are both in one run)."""
    if device.type != "cuda":
        return [("fp32", False, False)]
    return [(name, *VARIANTS[name]) for name in names or ("fp32", "bf16", "bf16+compile")]


def run_config(name: str, preset: str | None) -> Any:
    """The entry point's run config of model `name`, with `preset` applied as `--preset` would."""
    return parse_run(RUNS[name], ["--preset", preset] if preset else [], f"bench {name}", name)


def bench_row(name: str, variant: tuple[str, bool, bool], device: torch.device, args: Any) -> dict[str, Any]:
    try:
        return _bench_row(name, variant, device, args)
    except Exception as exc:  # a GPU row that fails (say, compile of an extension call) must not end the run
        if device.type != "cuda":
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        return {"model": name, "variant": variant[0], "device": device.type, "note": f"failed: {first[:120]}"}


def _bench_row(name: str, variant: tuple[str, bool, bool], device: torch.device, args: Any) -> dict[str, Any]:
    label, bf16, compiled = variant
    torch.manual_seed(0)
    model, batch, task, samples, steps = CASES[name](run_config(name, args.preset))
    model = model.to(device).train()
    batch = {k: v.to(device) for k, v in batch.items()}
    optimizer = build_optimizer(model, TrainConfig(lr=1e-4), device)
    forward = torch.compile(model) if compiled else model
    autocast = (
        functools.partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16)
        if bf16
        else contextlib.nullcontext
    )

    def step() -> None:
        train_step(forward, task, optimizer, [batch], clip_norm=1.0, autocast=autocast)

    timing = time_call(step, number=args.number, repeats=args.repeats, warmup=3 if not compiled else 5)
    per_s = 1000.0 / timing["median_ms"]
    return {
        "model": name,
        "variant": label,
        "device": device.type,
        "batch": samples,
        "samples_per_s": round(samples * per_s, 1),
        "steps_per_s": round(steps * per_s),
        "params": sum(p.numel() for p in model.parameters()),
        **{k: round(v, 2) for k, v in timing.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--number", type=int, default=5, help="optimizer steps per timing round")
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds")
    parser.add_argument("--preset", default=None, help="batch sizes of this training preset (e.g. gpu)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="CUDA variants to time")
    add_common_args(parser)
    args = parser.parse_args(argv)
    load = apply_threads(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible")
    device = torch.device(args.device)
    rows = [bench_row(name, v, device, args) for name in args.models for v in variants(device, args.variants)]
    notes: dict[str, Any] = {"load_1min": load, "preset": args.preset or "none (the entry points' batches)"}
    notes["executor mamba path"] = resolve_mamba_path(ExecutorRun().model.mamba_path, device)
    if device.type != "cuda":
        notes["skipped"] = "bf16 and bf16+compile rows run only with --device cuda (no CUDA here)"
    report("training throughput of the policy models (one optimizer step)", rows, COLUMNS, args.json, **notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
