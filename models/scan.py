"""The reference selective scan in pure PyTorch: chunked over time, with an analytic backward.

    a_t = exp(delta_t * A);  b_t = delta_t * u_t * B_t;  h_t = a_t * h_{t-1} + b_t;  y_t = sum_n C_t,n h_t,n

(Mamba, https://arxiv.org/abs/2312.00752, Algorithm 2; the D skip and the gate are in models/mamba.py.)
Per chunk of K steps the exp, the contractions and the gradient reductions are batched; only the recurrence
is stepped, and backward re-runs each chunk from its saved start state. On CUDA, `selective_scan` runs the
fused Triton kernel of models/triton_scan.py instead (imported once, lazily; without Triton it falls back
here, logged once). Why this shape, with measurements: docs/notes/models.md, "models/scan.py".
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
from torch import Tensor

log = logging.getLogger(__name__)

CHUNK_ELEMENTS = 1 << 19  # elements in one (B, K, D, N) chunk tensor of the reference scan: 2 MiB in fp32
SERIAL_ELEMENTS = 1 << 15  # ATen's GRAIN_SIZE: elementwise ops on fewer elements run single-threaded


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


@functools.cache
def triton_scan() -> Callable[..., tuple[Tensor, Tensor]] | None:
    """models/triton_scan.py's `triton_selective_scan` if Triton imports (tried once), else None (logged)."""
    try:
        from models.triton_scan import triton_selective_scan
    except Exception as exc:  # ImportError, or a Triton that cannot set itself up on this machine
        log.warning(
            "Triton selective scan unavailable (%s: %s); CUDA uses the reference scan",
            type(exc).__name__,
            exc,
        )
        return None
    log.info("Selective scan on CUDA: the Triton kernel (models/triton_scan.py)")
    return triton_selective_scan


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    h0: Tensor | None = None,
    chunk: int = 0,
    fused: bool = True,
) -> tuple[Tensor, Tensor]:
    """Selective scan (no D skip, no gate); all in the dtype given (fp32 in the block).

    u, delta: (Bt, L, D) with delta already softplus'ed; A: (D, N) (negative); B, C: (Bt, L, N);
    h0: (Bt, D, N) or None for zeros; chunk: steps per chunk of the reference scan (0 = auto).
    fused: CUDA tensors go to the Triton kernel when Triton imports (fp32/fp64 only, with its own chunk);
    False keeps them on this reference scan. CPU tensors always run the reference scan.
    Returns y (Bt, L, D) and the last state h_{L-1} (Bt, D, N), both differentiable.
    """
    batch, length, d_inner = u.shape
    if length < 1:
        raise ValueError(f"selective_scan: expected u of shape (Bt, L >= 1, D), got {tuple(u.shape)}")
    if fused and u.is_cuda and (kernel := triton_scan()) is not None:
        return kernel(u, delta, A, B, C, h0)
    if h0 is None:
        h0 = u.new_zeros(batch, d_inner, A.shape[1])
    chunk = chunk or scan_chunk_size(batch, d_inner, A.shape[1], length)
    return _SelectiveScan.apply(u, delta, A, B, C, h0, chunk)
