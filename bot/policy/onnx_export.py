"""`pilot export`: a copy of a policy bundle whose three models are ONNX graphs, for ONNX Runtime (read back
by bot/policy/onnx_models.py): the Strategist step with its KV cache, the Tactician forward and the Executor
step with its Mamba state, all as explicit inputs and outputs; `--int8` quantises the weights dynamically.
bundle.json, the inference settings, the detector and the profile are kept. Why: docs/notes/play.md.

Examples:
    pilot export --policy data/pretrained/arena --out data/pretrained/arena-onnx
    pilot export --policy data/pretrained/arena --out data/pretrained/arena-int8 --int8
    pilot eval --policy data/pretrained/arena-onnx --episodes 3 --seconds 60
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bot.errors import PolicyError
from bot.perception.pipeline import PerceptionStep
from bot.perception.state import OBS_SPEC, Observation
from bot.policy.bundle import BUNDLE_FILE, STAGES, PolicyBundle, write_bundle_json
from bot.policy.onnx_models import IO_NAMES, META, ONNX_FILE
from bot.policy.runner import Decision, PolicyRunner
from models.config import config_to_dict
from models.executor import Executor, ExecutorState
from models.io import CONFIG_FILE
from models.mamba import MambaState
from models.strategist import Strategist, StrategistCache
from models.tactician import Tactician

log = logging.getLogger(__name__)

OPSET = 17  # LayerNormalization is in the standard set from 17; the TorchScript exporter goes to 20
PRECISIONS = ("fp32", "int8")


@dataclass
class ExportConfig:
    """Write a copy of a policy bundle with ONNX models (see the module docstring)."""

    policy: Path  # the policy bundle to export (`pilot train policy --out`)
    out: Path  # the exported bundle's folder (must not exist, or be empty, or --overwrite an export)
    int8: bool = False  # quantise the weights to int8 (onnxruntime.quantization.quantize_dynamic)
    overwrite: bool = False  # replace `out` when it holds an earlier export
    check_steps: int = 64  # random frames run through both bundles after export to log their agreement


# ------------------------------------------------------------------------------------ graphs for export


class PlainRMSNorm(nn.Module):
    """nn.RMSNorm as elementary ops: opset <= 20 has no RMSNormalization, and the exporter none for it."""

    def __init__(self, norm: nn.RMSNorm) -> None:
        super().__init__()
        self.weight, self.eps = norm.weight, norm.eps

    def forward(self, x: Tensor) -> Tensor:
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return y if self.weight is None else y * self.weight


def exportable(model: nn.Module) -> nn.Module:
    """A copy of `model` (eval mode, fp32) with every nn.RMSNorm as PlainRMSNorm."""
    model = copy.deepcopy(model).float().eval()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.RMSNorm):
                setattr(module, name, PlainRMSNorm(child))
    return model


class StrategistStep(nn.Module):
    """Strategist.step, cache flat: (summary, keys..., values...) -> (logits, goal, keys..., values...)."""

    def __init__(self, model: Strategist) -> None:
        super().__init__()
        self.model = exportable(model)

    def forward(self, summary: Tensor, *cache: Tensor) -> tuple[Tensor, ...]:
        n = len(cache) // 2
        out, new = self.model.step(summary, StrategistCache(list(cache[:n]), list(cache[n:])))
        return (out.mode_logits, out.goal, *new.keys, *new.values)


class TacticianForward(nn.Module):
    """Tactician.forward -> (target_logits, approach, query)."""

    def __init__(self, model: Tactician) -> None:
        super().__init__()
        self.model = exportable(model)

    def forward(self, objects: Tensor, valid: Tensor, goal: Tensor, context: Tensor | None = None) -> tuple:
        out = self.model(objects, valid, goal, context)
        return out.target_logits, out.approach, out.query


class ExecutorStep(nn.Module):
    """Executor.step with the state flat: (frame, goal, target, approach, convs..., ssms...) -> (heads...,
    convs..., ssms...). Traced with autograd on, so step() takes its plain module path, not the fused one."""

    def __init__(self, model: Executor) -> None:
        super().__init__()
        self.model = exportable(model)

    def forward(self, frame: Tensor, goal: Tensor, target: Tensor, approach: Tensor, *state: Tensor) -> tuple:
        n = len(state) // 2
        layers = [MambaState(conv, ssm) for conv, ssm in zip(state[:n], state[n:])]
        with torch.enable_grad():
            out, new = self.model.step(frame, goal, target, approach, ExecutorState(layers))
        heads = [out.mouse_logits, out.mouse_offsets, out.click_logit, out.key_logits]
        heads += [out.held_logits] if out.held_logits is not None else []
        return (*heads, *[s.conv for s in new.layers], *[s.ssm for s in new.layers])


def example_inputs(model: nn.Module) -> tuple[nn.Module, tuple[Tensor, ...], dict[str, dict[int, str]]]:
    """The export wrapper of `model`, inputs to trace it with, and the dynamic axes of its graph names."""
    c, g = model.config, torch.Generator().manual_seed(0)
    inputs, outputs = IO_NAMES[type(model).__name__](c)
    dynamic = {name: {0: "batch"} for name in inputs + outputs}
    if isinstance(model, Strategist):
        head_dim = c.d_model // c.n_heads
        cache = [torch.randn(1, c.n_heads, 2, head_dim, generator=g) for _ in range(2 * c.n_layers)]
        dynamic.update({name: {0: "batch", 2: "cached"} for name in inputs[1:]})
        dynamic.update({name: {0: "batch", 2: "cached_out"} for name in outputs[2:]})
        return StrategistStep(model), (torch.randn(1, c.d_in, generator=g), *cache), dynamic
    if isinstance(model, Tactician):
        valid = torch.arange(c.n_max).unsqueeze(0) < max(
            1, c.n_max // 2
        )  # (1, N): some objects, some padding
        args = [torch.randn(1, c.n_max, c.d_obj, generator=g), valid, torch.randn(1, c.goal_dim, generator=g)]
        args += [torch.randn(1, c.d_ctx, generator=g)] if c.d_ctx else []
        dynamic.update({"objects": {0: "batch", 1: "objects"}, "valid": {0: "batch", 1: "objects"}})
        dynamic["target_logits"] = {0: "batch", 1: "slots"}
        return TacticianForward(model), tuple(args), dynamic
    widths = (c.d_frame, c.goal_dim, c.d_target, c.approach_dim)
    frame = [torch.randn(1, width, generator=g) for width in widths]
    state = model.reset(1)
    arrays = [s.conv.contiguous() for s in state.layers] + [s.ssm for s in state.layers]
    return ExecutorStep(model), (*frame, *arrays), dynamic


def export_model(model: nn.Module, folder: Path) -> Path:
    """Write `model`'s graph to <folder>/model.onnx (fp32) with the graph names of onnx_models.IO_NAMES."""
    import onnx

    wrapper, args, dynamic = example_inputs(model)
    inputs, outputs = IO_NAMES[type(model).__name__](model.config)
    path = folder / ONNX_FILE
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, args, str(path), dynamo=False, input_names=inputs, output_names=outputs,
            dynamic_axes=dynamic, opset_version=OPSET, do_constant_folding=True,
        )  # fmt: skip
    onnx.checker.check_model(str(path))
    return path


def quantize(path: Path) -> None:
    """Replace the fp32 graph at `path` by its int8 dynamically quantised version (weights int8, activations
    quantised per call): MatMul/Gemm become MatMulInteger."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared, fp32 = path.with_suffix(".prep.onnx"), path.with_suffix(".fp32.onnx")
    path.replace(fp32)
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # the quantiser logs a line per tensor on the root logger
    try:
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(path), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    fp32.unlink()
    prepared.unlink()


def stamp(path: Path, model: nn.Module, precision: str) -> None:
    """Write the model's class, config, precision (and the Executor's mouse grid) into the ONNX metadata."""
    import onnx

    graph = onnx.load(str(path))
    meta = {
        "class": type(model).__name__,
        "config": json.dumps(config_to_dict(model.config)),
        "precision": precision,
    }
    if isinstance(model, Executor):
        meta["mouse_x_edges"] = json.dumps(model.mouse.x_edges.tolist())
        meta["mouse_y_edges"] = json.dumps(model.mouse.y_edges.tolist())
    kept = [(p.key, p.value) for p in graph.metadata_props if not p.key.startswith(META)]
    del graph.metadata_props[:]
    for key, value in kept:
        graph.metadata_props.add(key=key, value=value)
    for key, value in meta.items():
        graph.metadata_props.add(key=META + key, value=value)
    onnx.save(graph, str(path))


# ------------------------------------------------------------------------------------------ the bundle


def export_bundle(cfg: ExportConfig) -> Path:
    """Write the exported copy of cfg.policy into cfg.out (through a temporary folder); returns cfg.out."""
    bundle = PolicyBundle.load(cfg.policy)
    if bundle.meta.get("runtime", "torch") != "torch":
        raise PolicyError(
            f"{cfg.policy / BUNDLE_FILE}: already an exported ({bundle.meta['runtime']}) bundle"
        )
    _check_out(cfg)
    precision = "int8" if cfg.int8 else "fp32"
    tmp = cfg.out.parent / f".{cfg.out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name in STAGES:
            _export_stage(bundle, name, cfg, tmp / name, precision)
        write_bundle_json(tmp, _bundle_content(cfg, bundle, tmp, precision), bundle.inference)
        PolicyBundle.load(tmp)  # the export reads back, or the error names the file
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if cfg.out.exists():
        shutil.rmtree(cfg.out)
    tmp.replace(cfg.out)
    return cfg.out


def _export_stage(bundle: PolicyBundle, name: str, cfg: ExportConfig, folder: Path, precision: str) -> None:
    """<folder>/config.json (the source's) and model.onnx of the bundle's model `name`."""
    model = getattr(bundle, name)
    folder.mkdir()
    shutil.copy2(cfg.policy / bundle.meta["models"][name] / CONFIG_FILE, folder / CONFIG_FILE)
    path = export_model(model, folder)
    if cfg.int8:
        quantize(path)
    stamp(path, model, precision)
    log.info("exported %s (%s): %s, %.0f kB", name, precision, path, path.stat().st_size / 1024)


def _check_out(cfg: ExportConfig) -> None:
    out = cfg.out
    if out.resolve() == cfg.policy.resolve():
        raise PolicyError(f"--out: expected a folder other than --policy, got {out}")
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    try:
        is_export = json.loads((out / BUNDLE_FILE).read_text(encoding="utf-8")).get("runtime") == "onnx"
    except (OSError, ValueError, AttributeError):
        is_export = False
    if not (cfg.overwrite and is_export):
        hint = "pass --overwrite to replace it" if is_export else "not an earlier export: pick another --out"
        raise PolicyError(f"--out: {out} exists and is not empty ({hint})")


def _bundle_content(cfg: ExportConfig, bundle: PolicyBundle, tmp: Path, precision: str) -> dict[str, Any]:
    """The source bundle.json with runtime "onnx", the export's record, the models and the detector."""
    import onnx
    import onnxruntime

    content = {k: v for k, v in bundle.meta.items() if k not in ("format", "format_version", "inference")}
    content["runtime"] = "onnx"
    content["models"] = {name: name for name in STAGES}
    content["export"] = {
        "source": str(cfg.policy),
        "precision": precision,
        "opset": OPSET,
        "exporter": "torch.onnx.export(dynamo=False)",
        "versions": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }
    detector = dict(bundle.meta.get("detector") or {"path": None, "copied": False})
    if detector.get("copied") and bundle.detector_path is not None and bundle.detector_path.exists():
        shutil.copytree(bundle.detector_path, tmp / detector["path"])
    elif bundle.detector_path is not None:  # a referenced detector: kept, as an absolute path
        detector = {"path": str(bundle.detector_path.resolve()), "copied": False}
    content["detector"] = detector
    return content


# ------------------------------------------------------------------------------------ agreement check


def random_steps(n: int, seed: int = 0, summary_every: int = 30, fps: float = 30.0) -> list[PerceptionStep]:
    """`n` PerceptionSteps of random observations (1..N_max objects, track ids 1..), `fps` apart in time, with
    a random summary every `summary_every` frames: inputs on which to compare two runtimes."""
    rng = np.random.default_rng(seed)
    f_obj, f_glob, f_sum = (
        len(f) for f in (OBS_SPEC.obj_features, OBS_SPEC.glob_features, OBS_SPEC.summary_features)
    )
    steps = []
    for i in range(n):
        count = int(rng.integers(1, OBS_SPEC.n_max + 1))
        mask = np.arange(OBS_SPEC.n_max) < count
        track = np.where(mask, np.arange(1, OBS_SPEC.n_max + 1), 0).astype(np.int64)
        objects = (rng.standard_normal((OBS_SPEC.n_max, f_obj)) * mask[:, None]).astype(np.float32)
        glob = rng.standard_normal(f_glob).astype(np.float32)
        obs = Observation(objects, mask, track, np.where(mask, 0, -1), glob, i / fps)
        summary = (
            rng.standard_normal(f_sum).astype(np.float32) if i % summary_every == summary_every - 1 else None
        )
        steps.append(PerceptionStep(obs, None, None, None, summary))  # type: ignore[arg-type]
    return steps


def same_decision(a: Decision, b: Decision, mouse_tol: float = 1e-3) -> bool:
    """Whether two decisions act alike: click, key, held keys, target and mode equal, mouse within a tol."""
    close = max(abs(a.mouse[0] - b.mouse[0]), abs(a.mouse[1] - b.mouse[1])) <= mouse_tol
    return close and (a.click, a.key, a.held, a.target_id, a.mode) == (
        b.click,
        b.key,
        b.held,
        b.target_id,
        b.mode,
    )


def agreement(a: PolicyBundle, b: PolicyBundle, steps: list[PerceptionStep]) -> float:
    """The share of `steps` on which PolicyRunners of bundles a and b decide alike (same_decision)."""
    runs = [PolicyRunner(bundle) for bundle in (a, b)]
    return float(np.mean([same_decision(runs[0].act(s), runs[1].act(s)) for s in steps]))


def main(argv: list[str] | None = None) -> int:
    import tyro

    cfg = tyro.cli(ExportConfig, args=argv, prog="pilot export", description=__doc__)
    out = export_bundle(cfg)
    if cfg.check_steps > 0:
        share = agreement(
            PolicyBundle.load(cfg.policy), PolicyBundle.load(out), random_steps(cfg.check_steps)
        )
        log.info(
            "decisions equal to the torch bundle's on %.1f %% of %d random frames",
            100 * share,
            cfg.check_steps,
        )
    log.info("exported %s -> %s (%s)", cfg.policy, out, "int8" if cfg.int8 else "fp32")
    return 0
