"""Save and load a model as a folder: `model.safetensors` (every parameter and buffer) + `config.json`.

    config.json = {"format": "orbit-pilot-model", "format_version": 1, "class": "Executor", "config": {...}}

Never pickle: weights go through safetensors, the config through JSON; a round trip is bit-exact (tested).
Loading rebuilds the model from config.json (optionally overriding runtime fields such as `mamba_path`) and
checks every tensor's name and shape first, so a mismatch is one line naming the file and the tensor.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from models.config import config_from_dict, config_to_dict
from models.errors import CheckpointError, ConfigError
from models.executor import Executor, ExecutorConfig
from models.strategist import Strategist, StrategistConfig
from models.tactician import Tactician, TacticianConfig

log = logging.getLogger(__name__)

FORMAT = "orbit-pilot-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
MODEL_CLASSES: dict[str, tuple[type[nn.Module], type]] = {
    "Strategist": (Strategist, StrategistConfig),
    "Tactician": (Tactician, TacticianConfig),
    "Executor": (Executor, ExecutorConfig),
}


def save_model(directory: str | Path, model: nn.Module) -> Path:
    """Write `model` (a Strategist, Tactician or Executor) into `directory` (created); returns the folder."""
    name = type(model).__name__
    if name not in MODEL_CLASSES:
        raise CheckpointError(f"save_model: expected one of {sorted(MODEL_CLASSES)}, got {name}")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    _write_atomic(
        folder / WEIGHTS_FILE, lambda path: save_file(tensors, str(path), metadata={"format": FORMAT})
    )
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": name,
        "config": config_to_dict(model.config),
    }
    text = json.dumps(header, indent=2, sort_keys=True) + "\n"
    _write_atomic(folder / CONFIG_FILE, lambda path: path.write_text(text, encoding="utf-8"))
    log.info("saved %s (%d tensors) to %s", name, len(tensors), folder)
    return folder


def _write_atomic(path: Path, write: Any) -> None:
    """Write through a temporary file and rename, so a crash never leaves half a file under the real name."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def read_header(directory: str | Path) -> dict[str, Any]:
    """The validated config.json of a saved model folder."""
    path = Path(directory) / CONFIG_FILE
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (not a saved model folder)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        got = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise CheckpointError(f"{path}: expected format {FORMAT!r}, got {got!r}")
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: expected format_version {FORMAT_VERSION}, got {header.get('format_version')!r}"
        )
    if header.get("class") not in MODEL_CLASSES:
        raise CheckpointError(
            f"{path}: expected class in {sorted(MODEL_CLASSES)}, got {header.get('class')!r}"
        )
    if not isinstance(header.get("config"), dict):
        raise CheckpointError(f"{path}: expected a 'config' object, got {header.get('config')!r}")
    return header


def load_model(
    directory: str | Path,
    expected_class: str | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild the model saved in `directory`; `config_overrides` replaces config fields (e.g. mamba_path)."""
    folder = Path(directory)
    header = read_header(folder)
    name = header["class"]
    if expected_class is not None and name != expected_class:
        raise CheckpointError(f"{folder / CONFIG_FILE}: expected class {expected_class!r}, got {name!r}")
    model_cls, config_cls = MODEL_CLASSES[name]
    try:
        config = config_from_dict(config_cls, {**header["config"], **(config_overrides or {})})
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{folder / CONFIG_FILE}: {exc}") from None
    model = model_cls(config)
    model.load_state_dict(read_weights(folder / WEIGHTS_FILE, model), strict=True)
    return model.to(device)


def read_weights(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """Tensors of `path`, checked name by name and shape by shape against `model` (nothing is copied)."""
    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in tensors:
            raise CheckpointError(
                f"{path}: tensor {key!r} missing (the model expects shape {tuple(value.shape)})"
            )
        if tensors[key].shape != value.shape:
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {tuple(tensors[key].shape)}, "
                f"the model expects {tuple(value.shape)}"
            )
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise CheckpointError(
            f"{path}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} in all), "
            f"not in {type(model).__name__}"
        )
    return tensors
