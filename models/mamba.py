"""The Mamba (selective state-space) block: a pure-PyTorch reference path and the mamba-ssm CUDA kernels.

Both paths share the parameter names and shapes of `mamba_ssm.Mamba` (in_proj, conv1d, x_proj, dt_proj, A_log,
D, out_proj), so one state dict serves both, and both expose

    forward(x (B, L, d_model), state=None, return_state=False)   training / prefill, O(L)
    step(x (B, d_model), state) -> (y (B, d_model), state)        live, O(1) per frame

where `MambaState` carries the conv window (B, d_inner, d_conv) and the SSM state (B, d_inner, d_state) across
frames. Which path runs is decided by models/kernels.py (logged once per device; "kernels" requested where
they cannot run is an error).

step() without autograd (torch.no_grad / inference_mode, reference path, fp32 or fp64: the live loop) runs
`fused_step` on `StepWeights`; otherwise (autograd on, fp16/bf16, the kernels) it goes module by module
(`_step_autograd`). A batch-1 step is bound by per-op dispatch (~2-3 us an op on the project VM) as much as by
reading the weights, so the fused step does the same arithmetic in ~30 ops where the module path takes ~60:
weights pre-transposed to contiguous (K, N), the fastest batch-1 product layout here; A = -exp(A_log)
precomputed; a preceding RMSNorm's weight folded into in_proj and the residual add into out_proj's addmm
(ResidualMamba); in-place ops on buffers it just made; no Python numbers as tensor operands. `InferenceCache`
rebuilds StepWeights whenever any parameter or buffer changes (load_state_dict, optimizer steps, .to(),
replaced parameters). The two steps agree to ~1e-6 (tests/models/test_mamba.py); the (K, N) products
accumulate in another order, so the fused step sits ~3e-6 from forward() at d_model 256 where the module path
sits ~1e-6. Executor.step() at its defaults (benchmarks/bench_executor_step.py): ~2.3 -> ~0.75 ms.

The selective scan (anchors-and-apis.md §2.4), per batch b, channel d, state n:

    delta = softplus(dt_proj(dt));  a_t = exp(delta_t * A);  b_t = delta_t * u_t * B_t
    h_t = a_t * h_{t-1} + b_t;      y_t = sum_n C_t,n h_t,n + D * u_t;  out_t = y_t * silu(z_t)

Reference scan (`selective_scan`): chunked, with an analytic backward (`_SelectiveScan`).
The sequence is cut into chunks of K steps. Per chunk, the discretisation (the exp), the input and output
contractions and every gradient reduction are batched over the whole (B, K, D, N) chunk; only the recurrence
itself, one fused multiply-add per step, is stepped. The state is carried from chunk to chunk, and only the
chunk-start states are saved: backward re-runs a chunk from its start state, then runs the adjoint recurrence
g_t = dL/dh_t = C_t dy_t + a_{t+1} g_{t+1} backwards through it (the CUDA kernel recomputes the same way).
Why this shape, measured on the 2-core CPU this project targets (B16 L256 d_inner 256 N16):
  - a fresh (B, L, D, N) fp32 tensor is 67 MB: x * y into a new one took 114 ms, into an existing one 6 ms
    (page faults: glibc maps every block above 32 MB afresh). Chunk tensors of about 2 MB are reused from
    the heap and stay in cache, where an elementwise op runs ~5x faster per element.
  - an autograd graph with one node per time step made backward 27x slower than forward
    (feasibility-here.md §4); the hand-written backward has no per-step autograd nodes.
  - a parallel scan inside the chunk costs more, not less, here. Measured on the scan alone (1 thread,
    fwd / fwd+bwd): this scan 51 / 142 ms; the cumsum-of-log-decay form h_k = exp(S_k) sum_j exp(-S_j) b_j
    (S = cumsum of delta*A, K=16) 134 / 357 ms, and it overflows fp32 once the decay inside a chunk passes
    ~88 nats, which Mamba reaches whenever a large delta resets the state (this scan is tested at 300 nats
    per step); a Hillis-Steele scan
    (log2 K levels) 102 / 463 ms. The stepped recurrence is one addcmul per step on (B, D, N), run in row
    blocks below ATen's grain size so that it never waits on a second thread.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.errors import KernelUnavailableError
from models.kernels import MAMBA_PATHS, MambaKernels, mamba_kernels, resolve_mamba_path
from validation import check_choice, check_float, check_int

log = logging.getLogger(__name__)

CHUNK_ELEMENTS = 1 << 19  # elements in one (B, K, D, N) chunk tensor of the reference scan: 2 MiB in fp32
SERIAL_ELEMENTS = 1 << 15  # ATen's GRAIN_SIZE: elementwise ops on fewer elements run single-threaded
T = TypeVar("T")


# --------------------------------------------------------------------------------------------------- config


@dataclass
class MambaConfig:
    """One Mamba block (same arguments and defaults as mamba_ssm.Mamba)."""

    d_model: int = 256  # width of the residual stream, features
    d_state: int = 16  # N: SSM state size per channel
    d_conv: int = 4  # width of the causal depthwise convolution, steps
    expand: int = 2  # d_inner = expand * d_model
    dt_rank: int = 0  # rank of the delta projection; 0 = ceil(d_model / 16) as in mamba-ssm
    dt_min: float = 0.001  # initial delta range (log-uniform), in steps
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False  # biases of in_proj and out_proj
    path: str = "auto"  # "auto" | "kernels" | "reference" (models/kernels.py)
    scan_chunk: int = 0  # steps per chunk of the reference scan; 0 = auto (CHUNK_ELEMENTS per chunk)

    def __post_init__(self) -> None:
        check_int(self, "d_model", 1)
        check_int(self, "d_state", 1)
        check_int(self, "d_conv", 1)
        check_int(self, "expand", 1)
        check_int(self, "dt_rank", 0)
        check_float(self, "dt_min", 0.0, low_open=True)
        check_float(self, "dt_max", self.dt_min, low_open=True)
        check_float(self, "dt_init_floor", 0.0, low_open=True)
        check_choice(self, "path", MAMBA_PATHS)
        check_int(self, "scan_chunk", 0)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def rank(self) -> int:
        return self.dt_rank or math.ceil(self.d_model / 16)


@dataclass
class MambaState:
    """Recurrent state of one block: the last d_conv conv inputs and the SSM state (kept in fp32).

    `conv` may be a transposed view, stride 1 over channels (allocate_state and fused_step make it so: the
    shift by one frame is then a copy of whole rows); the kernels path copies it to contiguous first.
    """

    conv: Tensor  # (B, d_inner, d_conv), newest input last
    ssm: Tensor  # (B, d_inner, d_state)


# ------------------------------------------------------------------------------------- reference scan


def scan_chunk_size(batch: int, d_inner: int, d_state: int, length: int) -> int:
    """Steps per chunk so that a (batch, K, d_inner, d_state) chunk holds about CHUNK_ELEMENTS elements."""
    return max(1, min(length, CHUNK_ELEMENTS // max(1, batch * d_inner * d_state)))


def _discretize(u: Tensor, delta: Tensor, A: Tensor, B: Tensor) -> tuple[Tensor, Tensor]:
    """a = exp(delta A), b = delta u B of a chunk: u, delta (Bt, K, D), B (Bt, K, N) -> 2 x (Bt, K, D, N)."""
    a = torch.exp(delta.unsqueeze(-1) * A)  # (Bt, K, D, N)
    b = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # (Bt, K, D, N)
    return a, b


def _row_blocks(batch: int, per_row: int) -> list[slice]:
    """Batch slices whose per-step ops stay under ATen's grain size, so they run on the calling thread."""
    rows = max(1, (SERIAL_ELEMENTS - 1) // per_row)
    return [slice(start, start + rows) for start in range(0, batch, rows)]


def _run_chunk(a: Tensor, b: Tensor, h: Tensor, out: Tensor) -> Tensor:
    """States h_k = a_k h_{k-1} + b_k of a chunk, written into `out` (Bt, K, D, N); h (Bt, D, N) = h_-1."""
    for rows in _row_blocks(a.shape[0], a[0, 0].numel()):
        h_rows = h[rows]  # (rows, D, N)
        for k in range(a.shape[1]):
            h_rows = torch.addcmul(b[rows, k], a[rows, k], h_rows, out=out[rows, k])
    return out


def _run_adjoint(a: Tensor, g_all: Tensor, g_end: Tensor) -> Tensor:
    """In place g_all[:, k] += a_{k+1} g_{k+1}, last step first (g_end: dL/dh after the chunk) -> dL/dh_-1."""
    g_start = torch.empty_like(g_end)  # (Bt, D, N)
    for rows in _row_blocks(a.shape[0], a[0, 0].numel()):
        g = g_end[rows]
        for k in reversed(range(a.shape[1])):
            g = a[rows, k] * g_all[rows, k].add_(g)  # dL/dh_k in place, then dL/dh_{k-1}
        g_start[rows] = g
    return g_start


class _SelectiveScan(torch.autograd.Function):
    """y_t = sum_n C_t h_t for h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t; chunked, analytic backward."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, h0, chunk):
        length = u.shape[1]
        y = torch.empty_like(u)  # (Bt, L, D)
        starts, h = [], h0
        for s in range(0, length, chunk):
            e = min(length, s + chunk)
            a, b = _discretize(u[:, s:e], delta[:, s:e], A, B[:, s:e])
            states = _run_chunk(a, b, h, out=b)  # in place: b is not needed again
            y[:, s:e] = torch.matmul(states, C[:, s:e].unsqueeze(-1)).squeeze(-1)  # (Bt, K, D)
            starts.append(h)
            h = states[:, -1].clone()  # (Bt, D, N); a view would keep the whole chunk alive
        ctx.save_for_backward(u, delta, A, B, C, torch.stack(starts))
        ctx.chunk = chunk
        return y, h

    @staticmethod
    def backward(ctx, dy, dh_last):
        u, delta, A, B, C, starts = ctx.saved_tensors
        length, chunk = u.shape[1], ctx.chunk
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dB, dC, dA = torch.empty_like(B), torch.empty_like(C), torch.zeros_like(A)
        g = torch.zeros_like(starts[0]) if dh_last is None else dh_last  # dL/dh at the end of the chunk
        if dy is None:
            dy = torch.zeros_like(u)
        for index, s in reversed(list(enumerate(range(0, length, chunk)))):
            e = min(length, s + chunk)
            grads, g = _chunk_backward(
                u[:, s:e], delta[:, s:e], A, B[:, s:e], C[:, s:e], starts[index], dy[:, s:e], g
            )
            du[:, s:e], ddelta[:, s:e], dB[:, s:e], dC[:, s:e] = grads[:4]
            dA += grads[4]
        return du, ddelta, dA, dB, dC, g, None


def _chunk_backward(u, delta, A, B, C, h_start, dy, g_end):
    """Gradients of one chunk from dL/dy (Bt, K, D) and dL/dh at its end; also returns dL/dh at its start."""
    a, b = _discretize(u, delta, A, B)  # (Bt, K, D, N) each
    states = _run_chunk(a, b, h_start, out=torch.empty_like(b))  # (Bt, K, D, N)
    g_all = dy.unsqueeze(-1) * C.unsqueeze(2)  # (Bt, K, D, N): the direct part C_t dy_t, then dL/dh_t
    g = _run_adjoint(a, g_all, g_end)  # (Bt, D, N)
    dC = torch.matmul(dy.unsqueeze(2), states).squeeze(2)  # (Bt, K, 1, D) @ (Bt, K, D, N) -> (Bt, K, N)
    dB = torch.matmul((delta * u).unsqueeze(2), g_all).squeeze(2)  # (Bt, K, N)
    g_dot_B = (g_all * B.unsqueeze(2)).sum(-1)  # (Bt, K, D); mul+sum beats a matmul with N=16 inner
    q = states.sub_(b).mul_(g_all)  # (Bt, K, D, N) = g_t a_t h_{t-1} = dL/da_t * a_t
    ddelta = (q * A).sum(-1) + g_dot_B * u  # (Bt, K, D)
    d_inner, d_state = A.shape
    flat = q.view(-1, d_inner, d_state).mul_(delta.reshape(-1, d_inner, 1))  # (Bt*K, D, N); q is done
    dA = flat.sum(0)  # (D, N); summing a flat leading dim is ~10x faster here than sum((0, 1)) or einsum
    return (g_dot_B * delta, ddelta, dB, dC, dA), g


def selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None = None, chunk: int = 0
) -> tuple[Tensor, Tensor]:
    """Reference selective scan (no D skip, no gate); all in the dtype given (fp32 in the block).

    u, delta: (Bt, L, D) with delta already softplus'ed; A: (D, N) (negative); B, C: (Bt, L, N);
    h0: (Bt, D, N) or None for zeros; chunk: steps per chunk (0 = auto).
    Returns y (Bt, L, D) and the last state h_{L-1} (Bt, D, N), both differentiable.
    """
    batch, length, d_inner = u.shape
    assert length >= 1, f"selective_scan: expected a sequence of >= 1 step, got length {length}"
    if h0 is None:
        h0 = u.new_zeros(batch, d_inner, A.shape[1])
    chunk = chunk or scan_chunk_size(batch, d_inner, A.shape[1], length)
    return _SelectiveScan.apply(u, delta, A, B, C, h0, chunk)


# ------------------------------------------------------------------------------ step without autograd


def module_tensors(*modules: nn.Module) -> list[Tensor]:
    """Every parameter and buffer under `modules`, by a plain walk (~2x cheaper than .parameters())."""
    tensors, stack = [], list(reversed(modules))
    while stack:
        module = stack.pop()
        tensors += [t for t in module._parameters.values() if t is not None]
        tensors += [t for t in module._buffers.values() if t is not None]
        stack += reversed(module._modules.values())
    return tensors


_registrations = [0]  # bumped whenever any module anywhere registers a submodule, parameter or buffer


def _count_registration(*_: Any) -> None:
    _registrations[0] += 1


for _register in (
    nn.modules.module.register_module_module_registration_hook,
    nn.modules.module.register_module_parameter_registration_hook,
    nn.modules.module.register_module_buffer_registration_hook,
):
    _register(_count_registration)


class InferenceCache:
    """A value derived from a module's tensors (say, transposed weights) for no-grad use, rebuilt on change.

    The key is every parameter's and buffer's storage address and version counter, so in-place updates
    (load_state_dict, optimizer steps, Normalizer.fit) and replaced tensors (module.to(), `p.data = ...`,
    load_state_dict(assign=True)) rebuild the value; the entry keeps its sources' storages alive, so an
    address cannot be recycled while it is cached. The modules are re-walked only after some module
    registered a submodule, parameter or buffer (a global registration hook counts those), which keeps the
    check at ~10 us for the Executor. Not seen: in-place writes through a `p.data` alias, which bypass the
    version counter (call clear() after those). Inference tensors have no version counter: with one among
    the sources the value is rebuilt on every call. It is built under no_grad outside inference mode, so
    any mode may read it.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self._walk: tuple = ()
        self._sources: list[Tensor] = []
        self._key: list[tuple[int, int]] | None = None
        self._value: Any = None
        self._keep: list[Tensor] = []

    def get(self, modules: Sequence[nn.Module], build: Callable[[], T]) -> T:
        walk = (_registrations[0], *[id(module) for module in modules])
        if walk != self._walk:
            self._walk, self._sources = walk, module_tensors(*modules)
        try:
            key = [(t.data_ptr(), t._version) for t in self._sources]
        except RuntimeError:  # an inference tensor: no version counter to key on
            return _build_plain(build)
        if key != self._key:
            self._value = _build_plain(build)
            self._key, self._keep = key, [t.detach() for t in self._sources]
        return self._value


def _build_plain(build: Callable[[], T]) -> T:
    with torch.inference_mode(False), torch.no_grad():
        return build()


@dataclass(frozen=True)
class StepWeights:
    """A block's weights as fused_step() reads them: transposed to contiguous (K, N), A precomputed."""

    in_t: Tensor  # (d_model, 2 Di): in_proj.weight^T, row j scaled by the folded RMSNorm's weight g_j
    in_b: Tensor | None  # (2 Di,)
    conv_t: Tensor  # (d_conv, Di): conv1d.weight, transposed like the window
    conv_b: Tensor | None  # (Di,)
    x_t: Tensor  # (Di, R + 2N)
    x_split: list[int]  # [R, N, N]
    dt_t: Tensor  # (R, Di)
    dt_b: Tensor  # (Di,)
    A: Tensor  # (Di, N) = -exp(A_log)
    D: Tensor  # (Di,)
    out_t: Tensor  # (Di, d_model)
    out_b: Tensor | None  # (d_model,)
    norm_eps: Tensor  # () the folded RMSNorm's eps (unused without one)

    @staticmethod
    def of(block: MambaBlock, norm: nn.RMSNorm | None = None) -> StepWeights:
        c, in_w = block.config, block.in_proj.weight  # (2 Di, d_model)
        if norm is not None and norm.weight is not None:
            in_w = in_w * norm.weight  # (x r g) W^T = (x r) (W diag g)^T
        return StepWeights(
            in_t=in_w.t().contiguous(),
            in_b=_plain(block.in_proj.bias),
            conv_t=block.conv1d.weight.squeeze(1).t().contiguous(),
            conv_b=_plain(block.conv1d.bias),
            x_t=block.x_proj.weight.t().contiguous(),
            x_split=[c.rank, c.d_state, c.d_state],
            dt_t=block.dt_proj.weight.t().contiguous(),
            dt_b=block.dt_proj.bias.detach(),
            A=-torch.exp(block.A_log),
            D=block.D.detach(),
            out_t=block.out_proj.weight.t().contiguous(),
            out_b=_plain(block.out_proj.bias),
            norm_eps=norm_eps(norm, block.A_log),
        )


def _plain(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach()


def norm_eps(norm: nn.RMSNorm | None, like: Tensor) -> Tensor:
    """nn.RMSNorm's eps as a 0-dim tensor (None there means the dtype's machine epsilon)."""
    eps = 0.0 if norm is None else (torch.finfo(like.dtype).eps if norm.eps is None else norm.eps)
    return torch.tensor(eps, dtype=like.dtype, device=like.device)


def rms_scale(x: Tensor, eps: Tensor) -> Tensor:
    """1 / sqrt(mean(x^2) + eps) over the last dim -> (..., 1), in 3 ops (nn.RMSNorm, less its weight)."""
    n = torch.linalg.vector_norm(x, dim=-1, keepdim=True)  # (..., 1)
    return torch.addcmul(eps, n, n, value=1.0 / x.shape[-1]).rsqrt_()  # no Python-number tensor operands


def fused_step(w: StepWeights, x: Tensor, state: MambaState, residual: bool) -> tuple[Tensor, MambaState]:
    """MambaBlock.step() without autograd: mixer(x) or, with `residual`, x + mixer(RMSNorm(x)) (norm in w).

    The same arithmetic as MambaBlock._step_autograd in ~30 ops (module docstring). The new conv window is
    made (B, d_conv, Di)-contiguous and returned transposed, so the next shift copies whole rows. The given
    state is not modified.
    """
    h = x * rms_scale(x, w.norm_eps) if residual else x  # (B, d_model); the norm's weight is in w.in_t
    xz = torch.mm(h, w.in_t) if w.in_b is None else torch.addmm(w.in_b, h, w.in_t)  # (B, 2 Di)
    xs, z = xz.chunk(2, dim=-1)  # (B, Di) each
    window = state.conv.transpose(1, 2)  # (B, W, Di), contiguous when fused_step made the state
    window = torch.cat((window.narrow(1, 1, window.shape[1] - 1), xs.unsqueeze(1)), dim=1)  # (B, W, Di)
    u = torch.mul(window, w.conv_t).sum(1)  # (B, Di)
    u = F.silu(u if w.conv_b is None else u.add_(w.conv_b), inplace=True)
    dt, B, C = torch.mm(u, w.x_t).split_with_sizes(w.x_split, dim=-1)  # (B, R), (B, N), (B, N)
    delta = F.softplus(torch.addmm(w.dt_b, dt, w.dt_t))  # (B, Di)
    a = torch.mul(delta.unsqueeze(-1), w.A).exp_()  # (B, Di, N)
    ssm = torch.mul((delta * u).unsqueeze(-1), B.unsqueeze(1)).addcmul_(a, state.ssm)  # b + a h, as the scan
    y = torch.bmm(ssm, C.unsqueeze(-1)).squeeze(-1)  # (B, Di)
    y = torch.addcmul(y, u, w.D).mul_(F.silu(z))
    if residual:
        out = torch.addmm(x if w.out_b is None else x + w.out_b, y, w.out_t)  # x + out_proj(y)
    else:
        out = torch.mm(y, w.out_t) if w.out_b is None else torch.addmm(w.out_b, y, w.out_t)
    return out, MambaState(conv=window.transpose(1, 2), ssm=ssm)


# --------------------------------------------------------------------------------------------- block


class MambaBlock(nn.Module):
    """A Mamba mixer (no norm, no residual): (B, L, d_model) -> (B, L, d_model), params as mamba_ssm.Mamba."""

    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        self.config = c = config
        self.in_proj = nn.Linear(c.d_model, 2 * c.d_inner, bias=c.bias)
        self.conv1d = nn.Conv1d(
            c.d_inner, c.d_inner, c.d_conv, groups=c.d_inner, padding=c.d_conv - 1, bias=c.conv_bias
        )
        self.x_proj = nn.Linear(c.d_inner, c.rank + 2 * c.d_state, bias=False)
        self.dt_proj = nn.Linear(c.rank, c.d_inner, bias=True)
        self.A_log = nn.Parameter(
            torch.log(torch.arange(1, c.d_state + 1, dtype=torch.float32)).repeat(c.d_inner, 1)
        )
        self.D = nn.Parameter(torch.ones(c.d_inner))
        self.out_proj = nn.Linear(c.d_inner, c.d_model, bias=c.bias)
        self.A_log._no_weight_decay = True  # as in mamba-ssm: decay would pull A towards -1
        self.D._no_weight_decay = True
        self._init_delta()
        self._step_cache = InferenceCache()

    def _init_delta(self) -> None:
        """dt_proj so that softplus(dt_proj(.)) starts log-uniform in [dt_min, dt_max] (Mamba §3.6)."""
        c = self.config
        bound = c.rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        log_dt = torch.rand(c.d_inner) * (math.log(c.dt_max) - math.log(c.dt_min)) + math.log(c.dt_min)
        dt = log_dt.exp().clamp(min=c.dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    def allocate_state(self, batch_size: int, device: torch.device | None = None) -> MambaState:
        """Zero state for `batch_size` streams: conv (B, d_inner, d_conv), ssm (B, d_inner, d_state) fp32."""
        c, device = self.config, device or self.A_log.device
        conv = torch.zeros(batch_size, c.d_conv, c.d_inner, device=device, dtype=self.conv1d.weight.dtype)
        return MambaState(
            conv=conv.transpose(1, 2),  # (B, d_inner, d_conv), stride 1 over channels (MambaState)
            ssm=torch.zeros(batch_size, c.d_inner, c.d_state, device=device, dtype=_upcast(self.A_log).dtype),
        )

    def path(self, device: torch.device) -> str:
        return resolve_mamba_path(self.config.path, device)

    def forward(
        self, x: Tensor, state: MambaState | None = None, return_state: bool = False
    ) -> Tensor | tuple[Tensor, MambaState]:
        """x (B, L, d_model) -> (B, L, d_model) [, state after the last step]; `state` continues a stream."""
        assert x.dim() == 3, f"MambaBlock.forward: expected x of shape (B, L, d_model), got {tuple(x.shape)}"
        if self.path(x.device) == "kernels":
            out, new_state = self._forward_kernels(x, state, return_state)
        else:
            out, new_state = self._forward_reference(x, state)
        return (out, new_state) if return_state else out

    def _conv_sequence(self, xs: Tensor, conv_state: Tensor | None) -> tuple[Tensor, Tensor]:
        """Causal depthwise conv + silu of xs (B, d_inner, L) after `conv_state`; returns u, the new state."""
        c = self.config
        if conv_state is None:
            prefix = xs.new_zeros(xs.shape[0], c.d_inner, c.d_conv - 1)  # (B, Di, d_conv - 1)
        else:
            prefix = conv_state[..., 1:].to(xs.dtype)
        padded = torch.cat([prefix, xs], dim=-1)  # (B, Di, d_conv - 1 + L)
        u = F.silu(F.conv1d(padded, self.conv1d.weight, self.conv1d.bias, groups=c.d_inner))  # (B, Di, L)
        new_conv = padded[..., -c.d_conv :]  # (B, Di, d_conv): the last d_conv inputs (L >= 1)
        return u, new_conv

    def _forward_reference(self, x: Tensor, state: MambaState | None) -> tuple[Tensor, MambaState]:
        c = self.config
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, Di) each
        u, conv = self._conv_sequence(xs.transpose(1, 2), None if state is None else state.conv)
        u = u.transpose(1, 2)  # (B, L, Di)
        dt, B, C = self.x_proj(u).split([c.rank, c.d_state, c.d_state], dim=-1)  # (B, L, R), 2 x (B, L, N)
        delta = F.softplus(_upcast(self.dt_proj(dt)))  # (B, L, Di)
        A = -torch.exp(_upcast(self.A_log))  # (Di, N)
        h0 = None if state is None else _upcast(state.ssm)
        u_wide = _upcast(u)
        y, h = selective_scan(u_wide, delta, A, _upcast(B), _upcast(C), h0, chunk=c.scan_chunk)  # (B, L, Di)
        y = (y + u_wide * _upcast(self.D)) * F.silu(_upcast(z))
        return self.out_proj(y.to(x.dtype)), MambaState(conv=conv, ssm=h)

    def _forward_kernels(
        self, x: Tensor, state: MambaState | None, return_state: bool
    ) -> tuple[Tensor, MambaState | None]:
        if state is not None:
            raise KernelUnavailableError(
                "mamba-ssm's selective_scan_fn cannot start from a given state; use step() or path=reference"
            )
        c, k = self.config, mamba_kernels()
        length = x.shape[1]
        xs, z = self.in_proj(x).transpose(1, 2).contiguous().chunk(2, dim=1)  # (B, Di, L) each
        conv = F.pad(xs, (c.d_conv - length, 0)) if return_state else None  # (B, Di, d_conv)
        if k.causal_conv1d_fn is not None:
            weight = self.conv1d.weight.squeeze(1)  # (Di, d_conv)
            u = k.causal_conv1d_fn(x=xs, weight=weight, bias=self.conv1d.bias, activation="silu")
        else:
            u = F.silu(self.conv1d(xs)[..., :length])  # (B, Di, L)
        dt, B, C = self.x_proj(u.transpose(1, 2)).split([c.rank, c.d_state, c.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (B, Di, L); the bias goes in as delta_bias
        result = k.selective_scan_fn(
            u,
            delta,
            -torch.exp(self.A_log.float()),
            B.transpose(1, 2).contiguous(),  # (B, N, L)
            C.transpose(1, 2).contiguous(),
            self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            return_last_state=return_state,
        )
        y, ssm = result if return_state else (result, None)
        out = self.out_proj(y.transpose(1, 2))  # (B, L, d_model)
        return out, (MambaState(conv=conv, ssm=ssm.float()) if return_state else None)

    # ------------------------------------------------------------------------------------- one step

    def step(self, x: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """One frame: x (B, d_model) -> (B, d_model) and the next state; the given state is not modified."""
        assert x.dim() == 2, f"MambaBlock.step: expected x of shape (B, d_model), got {tuple(x.shape)}"
        if self.can_step_fused(x):
            return fused_step(self.step_weights(), x, state, residual=False)
        return self._step_autograd(x, state)

    def can_step_fused(self, x: Tensor) -> bool:
        """Whether fused_step() may serve x: autograd off, reference path, fp32/fp64 like the weights."""
        return (
            not torch.is_grad_enabled()
            and x.dtype in (torch.float32, torch.float64)
            and x.dtype == self.A_log.dtype == self.in_proj.weight.dtype
            and self.path(x.device) == "reference"
        )

    def step_weights(self) -> StepWeights:
        """fused_step()'s weights, cached until a parameter changes."""
        return self._step_cache.get((self,), lambda: StepWeights.of(self))

    def _step_autograd(self, x: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """step() as plain module calls: differentiable, any dtype, and the kernels path."""
        c = self.config
        kernels = mamba_kernels() if self.path(x.device) == "kernels" else None
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # (B, Di) each
        u, conv = self._conv_step(xs, state.conv, kernels)  # (B, Di), (B, Di, d_conv)
        dt, B, C = self.x_proj(u).split([c.rank, c.d_state, c.d_state], dim=-1)  # (B, R), 2 x (B, N)
        A = -torch.exp(_upcast(self.A_log))  # (Di, N)
        if kernels is not None and kernels.selective_state_update is not None:
            ssm = state.ssm.clone()  # the kernel updates it in place
            dt = F.linear(dt, self.dt_proj.weight)  # (B, Di); the bias goes in as dt_bias
            y = kernels.selective_state_update(
                ssm, u, dt, A, B, C, self.D, z=z, dt_bias=self.dt_proj.bias, dt_softplus=True
            )
        else:
            y, ssm = self._ssm_step(u, z, dt, A, B, C, state.ssm)
        return self.out_proj(y.to(x.dtype)), MambaState(conv=conv, ssm=ssm)

    def _conv_step(
        self, xs: Tensor, conv_state: Tensor, kernels: MambaKernels | None
    ) -> tuple[Tensor, Tensor]:
        """Push xs (B, Di) into the conv window (B, Di, d_conv); returns silu(conv) (B, Di) and the window."""
        if kernels is not None and kernels.causal_conv1d_update is not None:
            conv = conv_state.clone(memory_format=torch.contiguous_format)  # the kernel updates it in place
            u = kernels.causal_conv1d_update(
                xs, conv, self.conv1d.weight.squeeze(1), self.conv1d.bias, "silu"
            )
            return u, conv
        conv = torch.cat([conv_state[..., 1:], xs.unsqueeze(-1).type_as(conv_state)], dim=-1)  # (B, Di, W)
        u = (conv * self.conv1d.weight.squeeze(1)).sum(-1)  # (B, Di); 5x cheaper than F.conv1d on one step
        if self.conv1d.bias is not None:
            u = u + self.conv1d.bias
        return F.silu(u).type_as(xs), conv

    def _ssm_step(self, u, z, dt, A, B, C, ssm):
        """h = exp(delta A) h + delta u B, y = (C.h + D u) silu(z); u, z (B, Di), B, C (B, N), h (B, Di, N)"""
        delta = F.softplus(_upcast(self.dt_proj(dt)))  # (B, Di)
        u_wide = _upcast(u)
        a = torch.exp(delta.unsqueeze(-1) * _upcast(A))  # (B, Di, N)
        b = (delta * u_wide).unsqueeze(-1) * _upcast(B).unsqueeze(1)  # (B, Di, N)
        h = torch.addcmul(
            b, a, _upcast(ssm)
        )  # the op of the sequence scan, so the two agree to the last bits
        y = torch.matmul(h, _upcast(C).unsqueeze(-1)).squeeze(-1)  # (B, Di)
        return torch.addcmul(y, u_wide, _upcast(self.D)).mul_(F.silu(_upcast(z))), h


def _upcast(x: Tensor) -> Tensor:
    """The scan runs in fp32 at least (SSM recurrences are precision-sensitive), or fp64 if given fp64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()  # no dispatch when already wide
