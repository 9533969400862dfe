"""The Mamba (selective state-space) block: config, recurrent state, the no-autograd fused step, the block.

Parameters are named and shaped as in `mamba_ssm.Mamba`, so one state dict serves both paths:

    forward(x (B, L, d_model), state=None, return_state=False)   training / prefill, O(L)
    step(x (B, d_model), state) -> (y (B, d_model), state)        live, O(1) per frame

models/kernels.py picks the path: the mamba-ssm kernels or the pure-PyTorch reference (scan in
models/scan.py). Without autograd the reference step() runs `fused_step` on cached `StepWeights`.
Design and measurements: docs/notes/models.md, "models/mamba.py"; timings: benchmarks/RESULTS.md.
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
from models.scan import selective_scan
from validation import check_choice, check_float, check_int

log = logging.getLogger(__name__)

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
    scan_chunk: int = 0  # steps per chunk of the reference scan; 0 = auto (models/scan.py CHUNK_ELEMENTS)

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

    The same arithmetic as MambaBlock._step_autograd in ~30 ops (docs/notes/models.md). The new conv window is
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

    def _check_input(self, method: str, x: Tensor, dims: int) -> None:
        """A ValueError naming `x` unless it is (B, L >= 1, d_model) (dims 3) or (B, d_model) (dims 2)."""
        d_model = self.config.d_model
        if x.dim() == dims and x.shape[-1] == d_model and x.shape[1] >= 1:
            return
        expected = f"(B, L >= 1, d_model={d_model})" if dims == 3 else f"(B, d_model={d_model})"
        raise ValueError(f"MambaBlock.{method}: expected x of shape {expected}, got {tuple(x.shape)}")

    def forward(
        self, x: Tensor, state: MambaState | None = None, return_state: bool = False
    ) -> Tensor | tuple[Tensor, MambaState]:
        """x (B, L, d_model) -> (B, L, d_model) [, state after the last step]; `state` continues a stream."""
        self._check_input("forward", x, dims=3)
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
        self._check_input("step", x, dims=2)
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
