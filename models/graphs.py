"""CUDA graphs for the live calls at batch 1: Executor.step and the Tactician forward, one replay each.

    inputs (any device) --copy--> static buffers on the GPU --replay--> one flat output buffer
        --one copy--> outputs on the caller's model's device          the Executor's state stays on the GPU

`graphed({name: model}, device)` wraps the Executor and the Tactician and returns everything else as given,
the Strategist included (it stays eager); without CUDA it returns every model as given (logged once). A
graph is recaptured when a parameter or buffer of the model changes. Design and what still waits for a GPU:
docs/notes/models.md, "models/graphs.py".
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from models.executor import Executor, ExecutorOutput, ExecutorState
from models.mamba import InferenceCache, MambaState, module_tensors
from models.tactician import Tactician, TacticianOutput

log = logging.getLogger(__name__)

WARMUP_CALLS = 3  # eager calls on a side stream before capture (cuBLAS workspaces, Triton compiles, caches)
MAX_SHAPES = 8  # Tactician graphs kept per model (one per input shape); further shapes run eagerly
_logged: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        log.info("%s", message)


# ------------------------------------------------------------------------------------------- plumbing


class Replay:
    """`body()` captured once as a CUDA graph and replayed per call, or (capture=False) called as is.

    Both ways use the same static buffers, so the CPU tests exercise everything but the capture itself.
    """

    def __init__(self, body: Callable[[], None], device: torch.device, capture: bool) -> None:
        self._body, self._graph, self._device = body, None, device
        if not capture:
            return
        with torch.cuda.device(device):
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(WARMUP_CALLS):
                    body()
            torch.cuda.current_stream().wait_stream(stream)
            self._graph = torch.cuda.CUDAGraph()
            # thread_local: another thread of the live process (say, the detector) may use CUDA meanwhile
            with torch.cuda.graph(self._graph, capture_error_mode="thread_local"):
                body()

    def __call__(self) -> None:
        if self._graph is None:
            self._body()
        elif torch.cuda.current_device() == self._device.index:
            self._graph.replay()
        else:
            with torch.cuda.device(self._device):
                self._graph.replay()


class FlatLayout:
    """Several tensors of one dtype stored back to back in one flat buffer, and views to read them back."""

    def __init__(self, tensors: Sequence[Tensor], owner: str) -> None:
        dtypes = {t.dtype for t in tensors}
        if len(dtypes) != 1:
            raise ValueError(f"{owner}: expected tensors of one dtype, got {sorted(map(str, dtypes))}")
        self.shapes = [t.shape for t in tensors]
        self.strides = [torch.empty(t.shape, device="meta").stride() for t in tensors]  # contiguous
        sizes = [t.numel() for t in tensors]
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        self.numel, self.dtype = sum(sizes), tensors[0].dtype

    def empty(self, device: torch.device) -> Tensor:
        return torch.empty(self.numel, dtype=self.dtype, device=device)

    @staticmethod
    def write(tensors: Sequence[Tensor], flat: Tensor) -> None:
        torch.cat([t.reshape(-1) for t in tensors], out=flat)

    def views(self, flat: Tensor) -> list[Tensor]:
        """as_strided: one op per view (split + view takes two, and these run every frame)."""
        base = flat.storage_offset()
        return [
            flat.as_strided(shape, stride, base + offset)
            for shape, stride, offset in zip(self.shapes, self.strides, self.offsets)
        ]


def check_live(model: nn.Module, owner: str) -> None:
    """Graphs need eval mode (no dropout), fp32/fp64 weights and weights whose changes can be seen."""
    if model.training:
        raise ValueError(f"{owner}: expected the model in eval() mode (dropout is not captured), got train()")
    tensors = module_tensors(model)
    dtypes = {t.dtype for t in tensors if t.is_floating_point()}
    if not dtypes <= {torch.float32, torch.float64} or len(dtypes) != 1:
        raise ValueError(f"{owner}: expected float32 or float64 weights, got {sorted(map(str, dtypes))}")
    if any(t.is_inference() for t in tensors):
        raise ValueError(
            f"{owner}: expected weights made outside torch.inference_mode(), got inference tensors "
            "(they have no version counter, so a changed weight could not trigger a recapture)"
        )


def on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """The model itself when all of it is on `device`, else a copy there (the caller's model is not moved)."""
    if all(t.device == device for t in module_tensors(model)):
        return model
    return copy.deepcopy(model).to(device)


def home_device(model: nn.Module) -> torch.device:
    return next(iter(module_tensors(model))).device


def resolve_device(device: str | torch.device) -> torch.device:
    """`device` with the current CUDA index filled in ("cuda" -> "cuda:0"), as tensors report theirs."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _capture_flag(device: torch.device, capture: bool | None, owner: str) -> bool:
    if capture is None:
        return device.type == "cuda"
    if capture and device.type != "cuda":
        raise ValueError(f"{owner}: expected a CUDA device to capture on, got {device}")
    return capture


# ------------------------------------------------------------------------------------------- Executor


class ExecutorGraph:
    """One capture of Executor.step: the model on the device, its static buffers, the replay, the layouts."""

    def __init__(self, source: Executor, device: torch.device, batch: int, capture: bool) -> None:
        self.model, self.batch, self.home = on_device(source, device), batch, home_device(source)
        c = self.model.config
        self.widths = (c.d_frame, c.goal_dim, c.d_target, c.approach_dim)
        like = self.model.embed.weight
        self.x = like.new_zeros(batch, sum(self.widths))  # (B, d_in): frame | goal | target | approach
        self.x_home = self.x.to(self.home) if self.home != device else None  # staging for one copy
        self.inputs = self.x.split(self.widths, dim=-1)  # static views, what the graph reads
        start = self.model.reset(batch)
        self.state_layout = FlatLayout(_state_parts(start), "GraphedExecutor")
        self.state = self.state_layout.empty(device)  # the state the graph reads and then overwrites
        self.state_in = _state_of(self.state_layout, self.state)
        FlatLayout.write(_state_parts(start), self.state)
        self.out_layout = FlatLayout(self._outputs(*self._step()), "GraphedExecutor")
        self.out = self.out_layout.empty(device)
        self.held = self.model.held is not None
        self.replay = Replay(self._body, device, capture)
        self.last: ExecutorState | None = None  # the state step() returned last: its values are in self.state

    def _step(self) -> tuple[ExecutorOutput, ExecutorState]:
        return self.model.step(*self.inputs, ExecutorState(self.state_in))

    @staticmethod
    def _outputs(out: ExecutorOutput, state: ExecutorState) -> list[Tensor]:
        heads = [out.mouse_logits, out.mouse_offsets, out.click_logit, out.key_logits]  # offsets: computed
        return heads + ([out.held_logits] if out.held_logits is not None else [])

    def _body(self) -> None:
        out, state = self._step()
        FlatLayout.write(self._outputs(out, state), self.out)
        FlatLayout.write(_state_parts(state), self.state)  # after every read of it (one stream)

    def load_inputs(self, parts: Sequence[Tensor]) -> None:
        for name, part, width in zip(("frame", "goal", "target", "approach"), parts, self.widths):
            if part.shape != (self.batch, width):
                raise ValueError(
                    f"GraphedExecutor.step: expected {name} {(self.batch, width)}, got {tuple(part.shape)}"
                )
        if self.x_home is not None and all(p.device == self.home for p in parts):
            torch.cat(parts, dim=-1, out=self.x_home)  # one host-to-device copy instead of four
            self.x.copy_(self.x_home)
        else:
            torch.cat([p.to(self.x.device) for p in parts], dim=-1, out=self.x)

    def load_state(self, state: ExecutorState) -> None:
        if isinstance(state, GraphState) and state.layout.shapes == self.state_layout.shapes:
            self.state.copy_(state.flat)  # one copy (an earlier state of this or a former graph)
            return
        parts = _state_parts(state)
        if [p.shape for p in parts] != self.state_layout.shapes:
            got = [tuple(p.shape) for p in parts]
            raise ValueError(
                f"GraphedExecutor.step: expected the state of reset({self.batch}) or step(), got shapes {got}"
            )
        FlatLayout.write([p.to(self.state.device) for p in parts], self.state)

    def result(self, frames: int) -> tuple[ExecutorOutput, ExecutorState]:
        heads = self.out_layout.views(self.out.to(self.home, copy=True))
        held = heads.pop() if self.held else None
        out = ExecutorOutput(*heads, held_logits=held)
        return out, GraphState(self.state.clone(), self.state_layout, frames)


class GraphState(ExecutorState):
    """An ExecutorState held as one flat copy of the graph's state buffer; `layers` (views) are made when
    first read, since the live loop only passes the state back."""

    def __init__(self, flat: Tensor, layout: FlatLayout, frames: int) -> None:
        self.flat, self.layout, self.frames = flat, layout, frames
        self._layers: list[MambaState] | None = None

    @property
    def layers(self) -> list[MambaState]:  # type: ignore[override]
        if self._layers is None:
            self._layers = _state_of(self.layout, self.flat)
        return self._layers


def _state_parts(state: ExecutorState) -> list[Tensor]:
    """Per layer the conv window as (B, d_conv, Di) (allocate_state's layout: a free view), the SSM state."""
    return [t for layer in state.layers for t in (layer.conv.transpose(1, 2), layer.ssm)]


def _state_of(layout: FlatLayout, flat: Tensor) -> list[MambaState]:
    views = layout.views(flat)
    return [MambaState(conv=conv.transpose(1, 2), ssm=ssm) for conv, ssm in zip(views[::2], views[1::2])]


class GraphedExecutor:
    """Executor.step as one CUDA graph replay per frame; reset()/step() as the Executor's, the rest delegated.

    Outputs come back on the device of the given executor (as its own step() would return them) as a plain
    ExecutorOutput; the state lives on `device` and is never modified once returned. Passing back the state
    step() returned last skips copying it in. capture=False runs the same buffers without a graph (tests).
    """

    def __init__(
        self,
        executor: Executor,
        device: str | torch.device = "cuda",
        batch_size: int = 1,
        capture: bool | None = None,
    ) -> None:
        self.executor, self.device, self.batch_size = executor, resolve_device(device), batch_size
        self.capture = _capture_flag(self.device, capture, "GraphedExecutor")
        check_live(executor, "GraphedExecutor")
        self._cache = InferenceCache()  # the ExecutorGraph, recaptured when the executor's tensors change

    def graph(self) -> ExecutorGraph:
        build = lambda: ExecutorGraph(self.executor, self.device, self.batch_size, self.capture)  # noqa: E731
        return self._cache.get((self.executor,), build)

    @property
    def model(self) -> Executor:
        """The executor the graph runs (the given one when it is already on `device`)."""
        return self.graph().model

    def reset(self, batch_size: int = 1) -> ExecutorState:
        """Zero state on `device` for the captured batch, to pass to the first step()."""
        if batch_size != self.batch_size:
            raise ValueError(
                f"GraphedExecutor.reset: expected batch_size {self.batch_size}, got {batch_size}"
            )
        return self.graph().model.reset(batch_size)

    @torch.no_grad()
    def step(
        self, frame: Tensor, goal: Tensor, target: Tensor, approach: Tensor, state: ExecutorState
    ) -> tuple[ExecutorOutput, ExecutorState]:
        """One frame, inputs (B, ·) on any device -> outputs (B, ·) and the next state (Executor.step)."""
        if state is None:
            raise RuntimeError("GraphedExecutor.step: expected the state from reset() or step(), got None")
        g = self.graph()
        g.load_inputs((frame, goal, target, approach))
        if state is not g.last:
            g.load_state(state)
        g.replay()
        out, g.last = g.result(state.frames + 1)
        return out, g.last

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.executor(*args, **kwargs)  # forward() over sequences stays eager

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "executor":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.executor, name)  # decode, config, mouse, ... of the given executor


# ------------------------------------------------------------------------------------------ Tactician


class TacticianGraph:
    """One capture of the Tactician forward for one set of input shapes."""

    def __init__(self, model: Tactician, inputs: Sequence[Tensor | None], home: torch.device, capture: bool):
        device = model.no_target.device
        self.model, self.home = model, home
        self.inputs = [None if x is None else x.to(device, copy=True) for x in inputs]  # static buffers
        self.layout = FlatLayout(self._outputs(), "GraphedTactician")  # also checks the inputs
        self.out = self.layout.empty(device)
        self.replay = Replay(self._body, device, capture)

    def _outputs(self) -> list[Tensor]:
        out = self.model(*self.inputs)
        return [out.target_logits, out.approach, out.query]

    def _body(self) -> None:
        FlatLayout.write(self._outputs(), self.out)

    def __call__(self, inputs: Sequence[Tensor | None]) -> TacticianOutput:
        for static, x in zip(self.inputs, inputs):
            if static is not None:
                static.copy_(x)
        self.replay()
        return TacticianOutput(*self.layout.views(self.out.to(self.home, copy=True)))


class GraphedTactician:
    """The Tactician forward as one CUDA graph replay per call (one graph per input shape, up to MAX_SHAPES).

    Called like the Tactician; outputs come back on the device of the given model. Other attributes are the
    given model's. capture=False runs the same buffers without a graph (tests).
    """

    def __init__(
        self, tactician: Tactician, device: str | torch.device = "cuda", capture: bool | None = None
    ):
        self.tactician, self.device = tactician, resolve_device(device)
        self.capture = _capture_flag(self.device, capture, "GraphedTactician")
        check_live(tactician, "GraphedTactician")
        self._cache = InferenceCache()  # (model on the device, {shapes: TacticianGraph}), rebuilt on change

    def _graphs(self) -> tuple[Tactician, dict[tuple, TacticianGraph]]:
        return self._cache.get((self.tactician,), lambda: (on_device(self.tactician, self.device), {}))

    @torch.no_grad()
    def __call__(
        self, objects: Tensor, valid: Tensor, goal: Tensor, context: Tensor | None = None
    ) -> TacticianOutput:
        """objects (B, N, d_obj), valid (B, N) bool, goal (B, goal_dim), context (B, d_ctx) -> outputs."""
        model, graphs = self._graphs()
        inputs = (objects, valid, goal, context)
        key = tuple(None if x is None else (tuple(x.shape), x.dtype) for x in inputs)
        if key not in graphs and len(graphs) < MAX_SHAPES:
            with torch.inference_mode(False):  # static buffers the next calls may write in any mode
                graphs[key] = TacticianGraph(model, inputs, home_device(self.tactician), self.capture)
        if key in graphs:
            return graphs[key](inputs)
        _log_once(f"GraphedTactician: more than {MAX_SHAPES} input shapes, the others run eagerly")
        out = model(*(None if x is None else x.to(self.device) for x in inputs))
        home = home_device(self.tactician)
        return TacticianOutput(out.target_logits.to(home), out.approach.to(home), out.query.to(home))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "tactician":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.tactician, name)  # config, select, loss, ... of the given tactician


# --------------------------------------------------------------------------------------------- factory


def graphed(models: Mapping[str, Any], device: str | torch.device = "cuda") -> dict[str, Any]:
    """{name: model} -> the same names, each Executor and Tactician graphed on `device`; the Strategist and
    anything else (ONNX stand-ins) as given. Without CUDA, every model as given (one log line)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        why = f"device {device}" if device.type != "cuda" else "torch.cuda.is_available() is False"
        _log_once(f"CUDA graphs: off ({why}); the models run eagerly where they are")
        return dict(models)
    wrapped: dict[str, Any] = {}
    for name, model in models.items():
        if isinstance(model, Executor):
            wrapped[name] = GraphedExecutor(model, device)
        elif isinstance(model, Tactician):
            wrapped[name] = GraphedTactician(model, device)
        else:
            wrapped[name] = model
    kinds = {name: type(model).__name__ for name, model in wrapped.items()}
    log.info("CUDA graphs on %s: %s (the Strategist, at 1 Hz, stays eager)", device, kinds)
    return wrapped
