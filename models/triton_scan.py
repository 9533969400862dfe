"""The selective scan as two fused Triton kernels (forward, recomputing backward) for CUDA tensors.

Same contract as models/scan.py `selective_scan`: h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t,
y_t = sum_n C_t,n h_t,n. Each program owns one batch row and BLOCK_D channels with all N states in
registers and walks the sequence; only y, the final state and the chunk-start states reach memory.
Imported lazily by models/scan.py (it imports Triton). Design and tests: docs/notes/models.md,
"models/triton_scan.py".
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

DEFAULT_CHUNK = 64  # steps between saved states; backward recomputes chunk + 1 states per program
BLOCK_D = 32  # channels per program (not yet tuned on a GPU: docs/notes/models.md)
NUM_WARPS = 4
DTYPES = (torch.float32, torch.float64)
MAX_ELEMENTS = 2**31 - 1  # the kernels index with int32


@triton.jit
def _load_step(u_ptr, delta_ptr, B_ptr, C_ptr, b, t, L, D, N, offs_d, offs_n, mask_d, mask_n):
    """u, delta (BLOCK_D,) and B, C (BLOCK_N,) of step t of row b; zeros when t is outside 0..L-1."""
    inside = (t >= 0) & (t < L)
    row_d, row_n = (b * L + t) * D + offs_d, (b * L + t) * N + offs_n
    u = tl.load(u_ptr + row_d, mask=mask_d & inside, other=0.0)
    delta = tl.load(delta_ptr + row_d, mask=mask_d & inside, other=0.0)
    B_t = tl.load(B_ptr + row_n, mask=mask_n & inside, other=0.0)
    C_t = tl.load(C_ptr + row_n, mask=mask_n & inside, other=0.0)
    return u, delta, B_t, C_t


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, h0_ptr,  # inputs
    y_ptr, h_last_ptr, starts_ptr,  # outputs
    L, D, N, chunk, n_chunks,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    b, pid_d = tl.program_id(0), tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
    offs_n = tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    mask_d, mask_n = offs_d < D, offs_n < N
    mask = mask_d[:, None] & mask_n[None, :]  # (BLOCK_D, BLOCK_N)
    dn = offs_d[:, None] * N + offs_n[None, :]  # offsets into a (D, N) matrix
    A = tl.load(A_ptr + dn, mask=mask, other=0.0)  # padded lanes: a = 1, b = 0, so h stays 0 there
    h = tl.load(h0_ptr + b * D * N + dn, mask=mask, other=0.0)
    u, delta, B_t, C_t = _load_step(
        u_ptr, delta_ptr, B_ptr, C_ptr, b, 0, L, D, N, offs_d, offs_n, mask_d, mask_n
    )
    for c in range(0, n_chunks):
        tl.store(starts_ptr + (b * n_chunks + c) * D * N + dn, h, mask=mask)
        for t in range(c * chunk, tl.minimum(c * chunk + chunk, L)):
            # step t + 1's inputs are loaded before step t's arithmetic, so their latency overlaps it
            u_n, delta_n, B_n, C_n = _load_step(
                u_ptr, delta_ptr, B_ptr, C_ptr, b, t + 1, L, D, N, offs_d, offs_n, mask_d, mask_n
            )
            h = tl.exp(delta[:, None] * A) * h + (delta * u)[:, None] * B_t[None, :]
            tl.store(y_ptr + (b * L + t) * D + offs_d, tl.sum(h * C_t[None, :], axis=1), mask=mask_d)
            u, delta, B_t, C_t = u_n, delta_n, B_n, C_n
    tl.store(h_last_ptr + b * D * N + dn, h, mask=mask)


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, starts_ptr, dy_ptr, dh_last_ptr,  # inputs
    scratch_ptr,  # (Bt, chunk + 1, D, N): one chunk's states, recomputed
    du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dh0_ptr,  # outputs; dA, dB, dC per-program partials
    n_batch, L, D, N, chunk, n_chunks,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    b, pid_d = tl.program_id(0), tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d, mask_n = offs_d < D, offs_n < N
    mask = mask_d[:, None] & mask_n[None, :]
    dn = offs_d[:, None] * N + offs_n[None, :]
    A = tl.load(A_ptr + dn, mask=mask, other=0.0)
    g = tl.load(dh_last_ptr + b * D * N + dn, mask=mask, other=0.0)  # dL/dh_t from the steps after t
    dA = tl.zeros_like(g)
    scratch = scratch_ptr + b * (chunk + 1) * D * N  # slot k holds h_{start + k - 1}
    part = (pid_d * n_batch + b) * L * N  # this program's (L, N) slice of the dB, dC partials
    for ci in range(0, n_chunks):
        c = n_chunks - 1 - ci
        start, end = c * chunk, tl.minimum(c * chunk + chunk, L)
        h = tl.load(starts_ptr + (b * n_chunks + c) * D * N + dn, mask=mask, other=0.0)
        tl.store(scratch + dn, h, mask=mask)
        u, delta, B_t, C_t = _load_step(
            u_ptr, delta_ptr, B_ptr, C_ptr, b, start, L, D, N, offs_d, offs_n, mask_d, mask_n
        )
        for t in range(start, end):  # the forward again, from the chunk's saved start state
            u_n, delta_n, B_n, C_n = _load_step(
                u_ptr, delta_ptr, B_ptr, C_ptr, b, t + 1, L, D, N, offs_d, offs_n, mask_d, mask_n
            )
            h = tl.exp(delta[:, None] * A) * h + (delta * u)[:, None] * B_t[None, :]
            tl.store(scratch + (t - start + 1) * D * N + dn, h, mask=mask)
            u, delta, B_t, C_t = u_n, delta_n, B_n, C_n
        tl.debug_barrier()
        # the adjoint, last step first; h_t is in registers, h_{t-1} (and step t-1's inputs) loaded ahead
        h_prev = tl.load(scratch + (end - 1 - start) * D * N + dn, mask=mask, other=0.0)
        u, delta, B_t, C_t = _load_step(
            u_ptr, delta_ptr, B_ptr, C_ptr, b, end - 1, L, D, N, offs_d, offs_n, mask_d, mask_n
        )
        dy = tl.load(dy_ptr + (b * L + end - 1) * D + offs_d, mask=mask_d, other=0.0)
        for i in range(0, end - start):
            t = end - 1 - i
            u_n, delta_n, B_n, C_n = _load_step(
                u_ptr, delta_ptr, B_ptr, C_ptr, b, t - 1, L, D, N, offs_d, offs_n, mask_d, mask_n
            )
            dy_n = tl.load(dy_ptr + (b * L + t - 1) * D + offs_d, mask=mask_d & (t > 0), other=0.0)
            h_pp = tl.load(scratch + (t - 1 - start) * D * N + dn, mask=mask & (t > start), other=0.0)
            a = tl.exp(delta[:, None] * A)
            g += dy[:, None] * C_t[None, :]  # now dL/dh_t
            g_dot_B = tl.sum(g * B_t[None, :], axis=1)  # (BLOCK_D,)
            q = g * a * h_prev  # dL/da_t * a_t
            row_d, row_n = (b * L + t) * D + offs_d, part + t * N + offs_n
            tl.store(du_ptr + row_d, g_dot_B * delta, mask=mask_d)
            tl.store(ddelta_ptr + row_d, tl.sum(q * A, axis=1) + g_dot_B * u, mask=mask_d)
            tl.store(dB_ptr + row_n, tl.sum((delta * u)[:, None] * g, axis=0), mask=mask_n)
            tl.store(dC_ptr + row_n, tl.sum(dy[:, None] * h, axis=0), mask=mask_n)
            dA += q * delta[:, None]
            g = a * g  # dL/dh_{t-1} through h_t
            h, h_prev = h_prev, h_pp
            u, delta, B_t, C_t, dy = u_n, delta_n, B_n, C_n, dy_n
        tl.debug_barrier()  # the next chunk overwrites the scratch
    tl.store(dh0_ptr + b * D * N + dn, g, mask=mask)
    tl.store(dA_ptr + b * D * N + dn, dA, mask=mask)


def _launch_shape(batch: int, d_inner: int, d_state: int) -> tuple[tuple[int, int], int, int]:
    """Grid (rows, channel blocks), BLOCK_D and BLOCK_N for a (batch, d_inner, d_state) scan."""
    block_d = min(BLOCK_D, triton.next_power_of_2(d_inner))
    return (batch, triton.cdiv(d_inner, block_d)), block_d, triton.next_power_of_2(d_state)


def _on_device(x: Tensor) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device: make it x's (CPU tensors run under the interpreter)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


class _TritonScan(torch.autograd.Function):
    """Forward and backward of the scan in one Triton kernel each; saves only the chunk-start states."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, h0, chunk):
        u, delta, A, B, C, h0 = (x.contiguous() for x in (u, delta, A, B, C, h0))
        batch, length, d_inner = u.shape
        d_state = A.shape[1]
        n_chunks = triton.cdiv(length, chunk)
        grid, block_d, block_n = _launch_shape(batch, d_inner, d_state)
        y = torch.empty_like(u)  # (Bt, L, D)
        h_last = torch.empty_like(h0)  # (Bt, D, N)
        starts = u.new_empty(batch, n_chunks, d_inner, d_state)  # (Bt, n_chunks, D, N); starts[:, 0] = h0
        with _on_device(u):
            _scan_fwd_kernel[grid](
                u, delta, A, B, C, h0, y, h_last, starts, length, d_inner, d_state, chunk, n_chunks,
                BLOCK_D=block_d, BLOCK_N=block_n, num_warps=NUM_WARPS,
            )  # fmt: skip
        ctx.save_for_backward(u, delta, A, B, C, starts)
        ctx.chunk = chunk
        return y, h_last

    @staticmethod
    def backward(ctx, dy, dh_last):
        u, delta, A, B, C, starts = ctx.saved_tensors
        batch, length, d_inner = u.shape
        n_chunks, d_state = starts.shape[1], A.shape[1]
        grid, block_d, block_n = _launch_shape(batch, d_inner, d_state)
        dy = torch.zeros_like(u) if dy is None else dy.contiguous()
        dh_last = torch.zeros_like(starts[:, 0]) if dh_last is None else dh_last.contiguous()
        scratch = u.new_empty(batch, ctx.chunk + 1, d_inner, d_state)
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dh0 = torch.empty_like(dh_last)
        dA_part = u.new_empty(batch, d_inner, d_state)  # summed over the batch below
        dB_part = u.new_empty(grid[1], batch, length, d_state)  # summed over the channel blocks below
        dC_part = torch.empty_like(dB_part)
        with _on_device(u):
            _scan_bwd_kernel[grid](
                u, delta, A, B, C, starts, dy, dh_last, scratch, du, ddelta, dA_part, dB_part, dC_part, dh0,
                batch, length, d_inner, d_state, ctx.chunk, n_chunks,
                BLOCK_D=block_d, BLOCK_N=block_n, num_warps=NUM_WARPS,
            )  # fmt: skip
        return du, ddelta, dA_part.sum(0), dB_part.sum(0), dC_part.sum(0), dh0, None


def triton_selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None = None, chunk: int = 0
) -> tuple[Tensor, Tensor]:
    """The Triton selective scan, forced (models/scan.py `selective_scan` picks it on CUDA by itself).

    u, delta: (Bt, L, D) with delta already softplus'ed; A: (D, N); B, C: (Bt, L, N); h0: (Bt, D, N) or
    None for zeros; chunk: steps between saved states (0 = DEFAULT_CHUNK). All fp32 (or all fp64), on CUDA,
    or on any device under TRITON_INTERPRET=1. Returns y (Bt, L, D) and the last state (Bt, D, N).
    """
    batch, length, d_inner = u.shape
    if length < 1:
        raise ValueError(f"triton_selective_scan: expected u of shape (Bt, L >= 1, D), got {tuple(u.shape)}")
    if u.dtype not in DTYPES or any(x.dtype != u.dtype for x in (delta, A, B, C)):
        raise ValueError(
            f"triton_selective_scan: expected u, delta, A, B, C all float32 or all float64, got "
            f"{[str(x.dtype) for x in (u, delta, A, B, C)]}"
        )
    chunk = chunk or min(DEFAULT_CHUNK, length)
    d_state = A.shape[1]
    n_chunks, n_blocks = triton.cdiv(length, chunk), _launch_shape(batch, d_inner, d_state)[0][1]
    per_row = (length * d_inner, (n_chunks + chunk + 1) * d_inner * d_state, n_blocks * length * d_state)
    largest = batch * max(per_row)  # u; the saved starts + the backward's scratch; the dB/dC partials
    if largest > MAX_ELEMENTS:
        raise ValueError(
            f"triton_selective_scan: expected tensors under 2**31 elements, got one of {largest}"
        )
    if h0 is None:
        h0 = u.new_zeros(batch, d_inner, d_state)
    return _TritonScan.apply(u, delta, A, B, C, h0.to(u.dtype), chunk)
