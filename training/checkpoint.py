"""Training checkpoints: everything needed to resume a run exactly, without pickle, written atomically.

    <out_dir>/last/  and  <out_dir>/best/  (a real copy of last/ taken when validation improved)
        model.safetensors      EMA weights (raw weights when EMA is off): what evaluation and the live bot use
        config.json            models.io header + "train", "task", "metadata", "versions"
        raw.safetensors        raw (optimised) weights
        optimizer.safetensors  optimizer state, one tensor per "<parameter name>/<slot>"
        rng.safetensors        torch RNG states per rank
        trainer_state.json     step, epoch, batch index, counters, best metric, optimizer groups, python and
                               numpy RNG states per rank

Atomic writes, load checks, and why not models.io: docs/notes/training.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import random
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from models import io as model_io
from models.config import config_to_dict
from models.errors import CheckpointError as ModelsCheckpointError
from training.errors import CheckpointError

log = logging.getLogger(__name__)

MODEL_FILE = model_io.WEIGHTS_FILE  # "model.safetensors"
CONFIG_FILE = model_io.CONFIG_FILE  # "config.json"
RAW_FILE = "raw.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
STATE_FILE = "trainer_state.json"
STATE_FORMAT = "orbit-pilot-trainer-state"
STATE_FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------------------ state


@dataclass
class RngState:
    """The random number generators of one process: python and numpy as JSON, torch as uint8 tensors."""

    python: list[Any]  # random.getstate() as [version, [625 ints], gauss_next]
    numpy: dict[str, Any]  # np.random.get_state() (legacy MT19937) as a dict
    torch_cpu: Tensor  # torch.get_rng_state(), uint8
    torch_cuda: list[Tensor] = field(default_factory=list)  # one per visible CUDA device, if CUDA was used


def capture_rng() -> RngState:
    """Snapshot this process's RNGs (consumes no random numbers)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return RngState(
        python=[version, list(internal), gauss],
        numpy={"kind": kind, "keys": keys.tolist(), "pos": pos, "has_gauss": has_gauss, "cached": cached},
        torch_cpu=torch.get_rng_state(),
        torch_cuda=list(cuda),
    )


def restore_rng(rng: RngState) -> None:
    """Put this process's RNGs back to `rng`."""
    version, internal, gauss = rng.python
    random.setstate((version, tuple(internal), gauss))
    n = rng.numpy
    np.random.set_state(
        (n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(rng.torch_cpu)
    if rng.torch_cuda and torch.cuda.is_available():
        if len(rng.torch_cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng.torch_cuda)
        else:
            log.warning(
                "checkpoint has CUDA RNG states of %d devices, %d visible: CUDA RNG not restored",
                len(rng.torch_cuda),
                torch.cuda.device_count(),
            )


@dataclass
class TrainerState:
    """Where a run stands; saved as trainer_state.json (+ rng.safetensors) next to the weights."""

    step: int = 0  # optimizer steps taken, applied or skipped; the LR schedule position
    epoch: int = 0  # current epoch, from 0
    batch_index: int = 0  # next micro-batch of this epoch (per rank); earlier ones are consumed
    total_steps: int = 0  # planned optimizer steps of the whole run
    samples_seen: int = 0  # training samples consumed, all ranks
    skipped_steps: int = 0  # steps skipped for a non-finite loss or gradient
    consecutive_nonfinite: int = 0  # skipped steps in a row, up to now
    ema_updates: int = 0  # EMA updates so far (its decay warms up with them)
    best_metric: float | None = None  # best validation value of TrainConfig.best_metric so far
    best_step: int = -1  # step at which best/ was taken
    eval_step: int = -1  # step of the latest validation
    last_metrics: dict[str, float] = field(default_factory=dict)  # latest validation metrics ("eval/...")
    world_size: int = 1  # processes that trained this run
    rng: list[RngState] = field(default_factory=list)  # per rank, rank 0 first


# ------------------------------------------------------------------------------------------------ save


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    ema: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    state: TrainerState,
    config: Mapping[str, Any],
) -> Path:
    """Write a complete checkpoint folder atomically; `config` holds the extra config.json sections."""
    final = Path(directory)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a leftover of a save killed mid-way
    tmp.mkdir(parents=True)
    try:
        _write_tensors(tmp / MODEL_FILE, _cpu_state(ema if ema is not None else model))
        _write_tensors(tmp / RAW_FILE, _cpu_state(model))
        opt_tensors, opt_groups = _optimizer_tensors(optimizer)
        _write_tensors(tmp / OPTIMIZER_FILE, opt_tensors)
        _write_tensors(tmp / RNG_FILE, _rng_tensors(state.rng))
        _write_json(tmp / STATE_FILE, _state_json(state, opt_groups))
        _write_json(tmp / CONFIG_FILE, {**model_header(model), **config})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_in(tmp, final)
    log.info("checkpoint step %d -> %s", state.step, final)
    return final


def copy_checkpoint(source: str | Path, destination: str | Path) -> Path:
    """Copy a checkpoint folder file by file (a real copy, never a link), atomically like save_checkpoint."""
    final = Path(destination)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(source, tmp, symlinks=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_in(tmp, final)
    return final


def model_header(model: nn.Module) -> dict[str, Any]:
    """The models.io part of config.json: format, class name and the model's own config (if a dataclass)."""
    config = getattr(model, "config", None)
    is_config = dataclasses.is_dataclass(config) and not isinstance(config, type)
    return {
        "format": model_io.FORMAT,
        "format_version": model_io.FORMAT_VERSION,
        "class": type(model).__name__,
        "config": config_to_dict(config) if is_config else {},
    }


def versions() -> dict[str, str]:
    """Software versions recorded in config.json."""
    try:
        package = metadata.version("orbit-pilot")
    except metadata.PackageNotFoundError:
        package = "unknown"
    return {"orbit-pilot": package, "torch": torch.__version__, "python": platform.python_version()}


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`, keeping the old `final` as `<name>.old` until the new one is in place."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _cpu_state(module: nn.Module) -> dict[str, Tensor]:
    # A copy, not a view: safetensors refuses tensors that share memory, and the caller keeps training.
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


def _write_tensors(path: Path, tensors: dict[str, Tensor]) -> None:
    save_file(tensors, str(path), metadata={"format": STATE_FORMAT})


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """Optimizer state as {"<param name>/<key>": tensor} and its groups' hyper-parameters as JSON."""
    saved = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    groups = []
    for g, group in enumerate(saved["param_groups"]):
        names = group.get("param_names") or [f"group{g}.param{i}" for i in range(len(group["params"]))]
        hyper = {k: _json_value(v) for k, v in group.items() if k not in ("params", "param_names")}
        groups.append({"names": list(names), "hyper": hyper})
        for index, name in zip(group["params"], names):
            for key, value in saved["state"].get(index, {}).items():
                tensors[f"{name}/{key}"] = torch.as_tensor(value).detach().to("cpu", copy=True).contiguous()
    return tensors, groups


def _json_value(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return value


def _rng_tensors(rngs: list[RngState]) -> dict[str, Tensor]:
    tensors = {}
    for rank, rng in enumerate(rngs):
        tensors[f"rank{rank}/torch_cpu"] = rng.torch_cpu
        for device, cuda_state in enumerate(rng.torch_cuda):
            tensors[f"rank{rank}/cuda{device}"] = cuda_state
    return tensors


def _state_json(state: TrainerState, optimizer_groups: list[dict[str, Any]]) -> dict[str, Any]:
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state) if f.name != "rng"}
    return {
        "format": STATE_FORMAT,
        "format_version": STATE_FORMAT_VERSION,
        **fields,
        "rng": [{"python": r.python, "numpy": r.numpy, "cuda_devices": len(r.torch_cuda)} for r in state.rng],
        "optimizer_groups": optimizer_groups,
    }


# ------------------------------------------------------------------------------------------------ load


def find_checkpoint(out_dir: str | Path, name: str = "last") -> Path | None:
    """`<out_dir>/<name>`, or `<name>.old` if a save was killed between its two renames; None if neither."""
    for candidate in (Path(out_dir) / name, Path(out_dir) / f"{name}.old"):
        if (candidate / STATE_FILE).is_file():
            return candidate
    return None


def load_checkpoint(
    directory: str | Path,
    model: nn.Module,
    ema: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> TrainerState:
    """Load raw weights into `model`, EMA weights into `ema`, the optimizer state; returns the trainer state.

    Everything is checked before anything is copied, so a mismatch leaves the model untouched.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    raw = read_weights(folder / RAW_FILE, model)
    averaged = read_weights(folder / MODEL_FILE, ema) if ema is not None else None
    state_json = _read_json(folder / STATE_FILE)
    state = _parse_state(folder / STATE_FILE, state_json, read_tensors(folder / RNG_FILE))
    if optimizer is not None:
        optimizer_state = _optimizer_state(folder / OPTIMIZER_FILE, state_json, optimizer)
    model.load_state_dict(raw, strict=True)
    if ema is not None:
        ema.load_state_dict(averaged, strict=True)
    if optimizer is not None:
        optimizer.load_state_dict(optimizer_state)
    log.info("loaded checkpoint %s (step %d, epoch %d)", folder, state.step, state.epoch)
    return state


def read_config(directory: str | Path) -> dict[str, Any]:
    """config.json of a checkpoint folder."""
    data = _read_json(Path(directory) / CONFIG_FILE)
    if data.get("format") != model_io.FORMAT:
        raise CheckpointError(
            f"{Path(directory) / CONFIG_FILE}: expected format {model_io.FORMAT!r}, "
            f"got {data.get('format')!r}"
        )
    return data


def read_tensors(path: Path) -> dict[str, Tensor]:
    """All tensors of a safetensors file, with a one-line error when it is missing or unreadable."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None


def read_weights(path: Path, module: nn.Module) -> dict[str, Tensor]:
    """The tensors of `path`, checked name by name and shape by shape against `module`'s state dict."""
    try:
        return model_io.read_weights(path, module)
    except ModelsCheckpointError as exc:
        raise CheckpointError(str(exc)) from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _parse_state(path: Path, data: dict[str, Any], rng_tensors: dict[str, Tensor]) -> TrainerState:
    if data.get("format") != STATE_FORMAT or data.get("format_version") != STATE_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: expected format {STATE_FORMAT!r} version {STATE_FORMAT_VERSION}, "
            f"got {data.get('format')!r} version {data.get('format_version')!r}"
        )
    kwargs = {}
    for f in dataclasses.fields(TrainerState):
        if f.name == "rng":
            continue
        if f.name not in data:
            raise CheckpointError(f"{path}: field {f.name!r} missing")
        kwargs[f.name] = data[f.name]
    rngs = []
    for rank, entry in enumerate(data.get("rng", [])):
        try:
            cuda = [rng_tensors[f"rank{rank}/cuda{d}"] for d in range(entry["cuda_devices"])]
            rngs.append(RngState(entry["python"], entry["numpy"], rng_tensors[f"rank{rank}/torch_cpu"], cuda))
        except KeyError as exc:
            raise CheckpointError(
                f"{path.parent / RNG_FILE}: RNG state {exc.args[0]!r} of rank {rank} missing"
            ) from None
    return TrainerState(**kwargs, rng=rngs)


def _optimizer_state(
    path: Path, state_json: dict[str, Any], optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """A torch optimizer state dict rebuilt from `path`, checked against `optimizer`'s groups and params."""
    by_param: dict[str, dict[str, Tensor]] = {}
    for key, tensor in read_tensors(path).items():
        name, _, slot = key.partition("/")
        by_param.setdefault(name, {})[slot] = tensor
    saved_groups = state_json.get("optimizer_groups")
    current = optimizer.state_dict()["param_groups"]
    if not isinstance(saved_groups, list) or len(saved_groups) != len(current):
        got = len(saved_groups) if isinstance(saved_groups, list) else saved_groups
        raise CheckpointError(
            f"{path.parent / STATE_FILE}: expected {len(current)} optimizer groups, got {got}"
        )
    state: dict[int, dict[str, Tensor]] = {}
    groups = []
    for g, (saved, group, live) in enumerate(zip(saved_groups, current, optimizer.param_groups)):
        names = list(group.get("param_names") or [f"group{g}.param{i}" for i in range(len(group["params"]))])
        if saved["names"] != names:
            ours, theirs = next((a, b) for a, b in zip([*saved["names"], None], [*names, None]) if a != b)
            raise CheckpointError(
                f"{path.parent / STATE_FILE}: optimizer group {g} holds parameter {ours!r} "
                f"where the model has {theirs!r}"
            )
        for index, name, param in zip(group["params"], names, live["params"]):
            slots = by_param.pop(name, {})
            for slot, tensor in slots.items():
                # AdamW's moments have the parameter's shape; its "step" is a scalar.
                if tensor.dim() > 0 and tensor.shape != param.shape:
                    raise CheckpointError(
                        f"{path}: tensor {name + '/' + slot!r} has shape {tuple(tensor.shape)}, "
                        f"parameter {name!r} has {tuple(param.shape)}"
                    )
            if slots:
                state[index] = slots
        hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in saved["hyper"].items()}
        groups.append(
            {**hyper, "params": group["params"], **({"param_names": names} if "param_names" in group else {})}
        )
    if by_param:
        extra = sorted(by_param)
        raise CheckpointError(
            f"{path}: tensors of unknown parameter {extra[0]!r} ({len(extra)} in all), not in the optimizer"
        )
    return {"state": state, "param_groups": groups}
