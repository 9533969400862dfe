"""The three policy models of an exported bundle (`pilot export`, bot/policy/onnx_export.py) run by ONNX
Runtime, with the methods PolicyRunner calls on the torch models: strategist.reset/step, tactician(...),
executor.reset/step/decode. Recurrent state (the Strategist's KV cache, the Executor's Mamba conv and SSM
states) is explicit graph inputs and outputs, held here as arrays. Also the graph names and metadata keys the
exporter writes. Why and how: docs/notes/play.md, "pilot export".
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bot.errors import PolicyError
from models.config import config_from_dict, config_to_dict
from models.errors import CheckpointError, ConfigError
from models.executor import Executor, ExecutorConfig, ExecutorOutput
from models.io import CONFIG_FILE, MODEL_CLASSES, read_header
from models.mouse import MouseHead
from models.strategist import StrategistConfig, StrategistOutput
from models.tactician import TacticianConfig, TacticianOutput

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"  # beside the model's config.json (models/io.py format) in <bundle>/<model>/
META = "orbit_pilot."  # prefix of the metadata_props the exporter stamps: class, config, precision, edges
# Preferred first; ORT falls back to the CPU provider for any node another provider does not take.
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
THREADS = 1  # intra-op threads per session: batch-1 models this small lose to threading overhead, and the
# live loop shares the CPU with capture and detection (the torch models are run at 1 thread too)


# ------------------------------------------------------------------------------------------ graph names


def strategist_io(c: StrategistConfig) -> tuple[list[str], list[str]]:
    """Input and output names of the Strategist step graph: the KV cache of every layer in and out."""
    keys, values = [f"key_{i}" for i in range(c.n_layers)], [f"value_{i}" for i in range(c.n_layers)]
    inputs = ["summary", *keys, *values]
    return inputs, ["mode_logits", "goal", *[f"{n}_out" for n in keys + values]]


def tactician_io(c: TacticianConfig) -> tuple[list[str], list[str]]:
    """Input and output names of the Tactician forward graph (no context input when d_ctx is 0)."""
    inputs = ["objects", "valid", "goal"] + (["context"] if c.d_ctx else [])
    return inputs, ["target_logits", "approach", "query"]


def executor_io(c: ExecutorConfig) -> tuple[list[str], list[str]]:
    """Input and output names of the Executor step graph: conv and SSM state of every layer in and out."""
    state = [f"conv_{i}" for i in range(c.n_layers)] + [f"ssm_{i}" for i in range(c.n_layers)]
    heads = ["mouse_logits", "mouse_offsets", "click_logit", "key_logits"] + (
        ["held_logits"] if c.n_held else []
    )
    return ["frame", "goal", "target", "approach", *state], [*heads, *[f"{n}_out" for n in state]]


IO_NAMES = {"Strategist": strategist_io, "Tactician": tactician_io, "Executor": executor_io}


def providers(class_name: str = "") -> list[str]:
    """The execution providers of this onnxruntime build in PROVIDER_ORDER (the CPU one always last). Not
    TensorRT for the Strategist: its cache grows by a step per call up to max_len, and TensorRT builds an
    engine for every new input shape."""
    import onnxruntime as ort

    available = set(ort.get_available_providers()) | {"CPUExecutionProvider"}
    if class_name == "Strategist":
        available.discard("TensorrtExecutionProvider")
    return [p for p in PROVIDER_ORDER if p in available]


# ------------------------------------------------------------------------------------------ sessions


class Session:
    """An ONNX Runtime session on one exported model, checked against the model's config.json."""

    def __init__(self, folder: Path, class_name: str, config: Any, threads: int = THREADS) -> None:
        import onnxruntime as ort

        self.path = path = folder / ONNX_FILE
        if not path.is_file():
            raise PolicyError(f"{path}: missing (the exported {class_name}; `pilot export` writes it)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        options.log_severity_level = 3  # errors only: ORT warns about every node a GPU provider leaves
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers(class_name))
        except Exception as exc:  # ORT raises its own (non-Python) exception types for bad files
            raise PolicyError(f"{path}: cannot load ONNX model ({_first_line(exc)})") from None
        self.meta = self.session.get_modelmeta().custom_metadata_map
        self._check(class_name, config)
        self.inputs, self.outputs = IO_NAMES[class_name](config)
        log.info("%s: %s on %s", path, self.meta.get(META + "precision", "?"), self.session.get_providers())

    def _check(self, class_name: str, config: Any) -> None:
        """The graph was exported from this class and config, with the inputs and outputs it implies."""
        where = f"{self.path}: does not match {self.path.parent / CONFIG_FILE}"
        if self.meta.get(META + "class") != class_name:
            raise PolicyError(
                f"{where}: class: expected {class_name!r}, got {self.meta.get(META + 'class')!r}"
            )
        try:
            stamped = json.loads(self.meta.get(META + "config", "null"))
        except json.JSONDecodeError:
            stamped = None
        expected = config_to_dict(config)
        if not isinstance(stamped, dict) or stamped != expected:
            stamped = stamped if isinstance(stamped, dict) else {}
            diff = sorted(k for k in set(expected) | set(stamped) if stamped.get(k) != expected.get(k))
            raise PolicyError(f"{where}: config: exported from another model (fields differ: {diff})")
        inputs, outputs = IO_NAMES[class_name](config)
        got = [i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()]
        if got != (inputs, outputs):
            raise PolicyError(
                f"{where}: expected inputs {inputs} and outputs {outputs}, got {got[0]} and {got[1]}"
            )

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Outputs (in self.outputs order) of the inputs (in self.inputs order)."""
        try:
            return self.session.run(None, dict(zip(self.inputs, arrays)))
        except Exception as exc:  # wrong shapes or dtypes: ORT's own exception types
            raise ValueError(f"{self.path}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _array(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy())


@dataclass
class OnnxState:
    """Recurrent state as graph inputs: the arrays, in the step graph's state-input order."""

    arrays: list[np.ndarray]
    steps: int = 0  # steps since reset


# ------------------------------------------------------------------------------------------ models


class OnnxStrategist:
    """Strategist.reset/step on the exported step graph; the cache is each layer's keys and values."""

    def __init__(self, folder: Path, config: StrategistConfig) -> None:
        self.config, self.session = config, Session(folder, "Strategist", config)

    def reset(self, batch_size: int = 1) -> OnnxState:
        """An empty cache: per layer keys and values (B, H, 0, Dh)."""
        c = self.config
        empty = np.zeros((batch_size, c.n_heads, 0, c.d_model // c.n_heads), np.float32)
        return OnnxState([empty] * (2 * c.n_layers))

    def step(self, x: Tensor, cache: OnnxState) -> tuple[StrategistOutput, OnnxState]:
        """x (B, d_in) -> mode_logits (B, n_modes), goal (B, goal_dim), the next cache (<= max_len steps)."""
        mode_logits, goal, *kv = self.session.run([_array(x), *cache.arrays])
        return StrategistOutput(torch.from_numpy(mode_logits), torch.from_numpy(goal)), OnnxState(
            kv, cache.steps + 1
        )


class OnnxTactician:
    """Tactician.forward on the exported graph."""

    def __init__(self, folder: Path, config: TacticianConfig) -> None:
        self.config, self.session = config, Session(folder, "Tactician", config)

    def __call__(
        self, objects: Tensor, valid: Tensor, goal: Tensor, context: Tensor | None = None
    ) -> TacticianOutput:
        """objects (B, N, d_obj), valid (B, N) bool, goal (B, goal_dim), context (B, d_ctx) (as Tactician)."""
        inputs = [_array(objects), _array(valid).astype(bool), _array(goal)]
        if self.config.d_ctx:
            if context is None:
                raise ValueError(f"Tactician: expected context (B, {self.config.d_ctx}), got None")
            inputs.append(_array(context))
        logits, approach, query = (torch.from_numpy(a) for a in self.session.run(inputs))
        return TacticianOutput(logits, approach, query)


class OnnxExecutor:
    """Executor.reset/step on the exported step graph; decode() is the torch Executor's own (it reads only
    self.mouse: the grid's edges, stamped in the ONNX metadata), so both runtimes decode alike."""

    decode = Executor.decode

    def __init__(self, folder: Path, config: ExecutorConfig) -> None:
        self.config, self.session = config, Session(folder, "Executor", config)
        self.mouse = MouseHead(1, config.mouse_bins_x, config.mouse_bins_y)  # edges only: its Linears unused
        for name in ("x_edges", "y_edges"):
            edges = json.loads(self.session.meta.get(META + "mouse_" + name, "null") or "null")
            buffer = getattr(self.mouse, name)
            if not isinstance(edges, list) or len(edges) != buffer.numel():
                where = f"{self.session.path}: metadata {META}mouse_{name}"
                raise PolicyError(f"{where}: expected {buffer.numel()} numbers, got {edges!r}")
            buffer.copy_(torch.tensor(edges, dtype=buffer.dtype))
        self.n_heads = len(self.session.outputs) - 2 * config.n_layers

    def reset(self, batch_size: int = 1) -> OnnxState:
        """Zero state: per layer conv (B, d_inner, d_conv), then per layer ssm (B, d_inner, d_state)."""
        c = self.config
        d_inner = c.expand * c.d_model
        conv = [np.zeros((batch_size, d_inner, c.d_conv), np.float32)] * c.n_layers
        return OnnxState(conv + [np.zeros((batch_size, d_inner, c.d_state), np.float32)] * c.n_layers)

    def step(
        self, frame: Tensor, goal: Tensor, target: Tensor, approach: Tensor, state: OnnxState
    ) -> tuple[ExecutorOutput, OnnxState]:
        """One frame, inputs (B, ·) -> ExecutorOutput (B, ·) and the next state; `state` is not modified."""
        if state is None:
            raise RuntimeError("Executor.step: expected the state from reset(batch_size) or step(), got None")
        arrays = self.session.run([_array(t) for t in (frame, goal, target, approach)] + state.arrays)
        heads = [torch.from_numpy(a) for a in arrays[: self.n_heads]]
        held = heads[4] if self.config.n_held else None
        out = ExecutorOutput(heads[0], heads[1], heads[2], heads[3], held)
        return out, OnnxState(arrays[self.n_heads :], state.steps + 1)


ONNX_MODELS = {"Strategist": OnnxStrategist, "Tactician": OnnxTactician, "Executor": OnnxExecutor}


def load_onnx_model(folder: Path, class_name: str) -> OnnxStrategist | OnnxTactician | OnnxExecutor:
    """The exported `class_name` in `folder` (config.json + model.onnx); PolicyError naming the bad file."""
    try:
        header = read_header(folder)
    except CheckpointError as exc:
        raise PolicyError(str(exc)) from None
    where = folder / CONFIG_FILE
    if header["class"] != class_name:
        raise PolicyError(f"{where}: class: expected {class_name!r}, got {header['class']!r}")
    try:
        config = config_from_dict(MODEL_CLASSES[class_name][1], header["config"])
    except (ConfigError, TypeError) as exc:
        raise PolicyError(f"{where}: {exc}") from None
    return ONNX_MODELS[class_name](folder, config)
