"""Layers shared by the Strategist and the Tactician: MLP, SDPA self-attention, the Pre-LN block, RoPE.

Attention always goes through `F.scaled_dot_product_attention` with q, k, v (B, H, T, Dh), so that on CUDA in
bf16/fp16 it may pick the flash kernel (no `attn_mask`, Dh <= 256: docs/notes/models.md, "models/layers.py").

`PreLNBlock` computes exactly what `nn.TransformerEncoderLayer(norm_first=True, activation="gelu",
batch_first=True)` computes, with the weights renamed (tests/models/test_strategist.py copies them across):

    self_attn.in_proj_weight/bias -> attn.qkv      self_attn.out_proj -> attn.proj
    linear1 / linear2             -> mlp.fc1 / fc2   norm1 / norm2      -> ln1 / ln2
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def log_parameter_count(module: nn.Module) -> None:
    """Log "<Class>: <n> parameters" on the logger of the module's own file."""
    logger = logging.getLogger(type(module).__module__)
    logger.info("%s: %s parameters", type(module).__name__, f"{count_parameters(module):,}")


class MLP(nn.Module):
    """fc1 -> GELU -> dropout -> fc2, applied to the last dimension."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_out)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(F.gelu(self.fc1(x))))


# ------------------------------------------------------------------------------------------------ RoPE


def rope_tables(length: int, head_dim: int, base: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos, sin of rotary angles for positions 0..length-1: each (length, head_dim // 2), fp32."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1) * inv_freq  # (T, Dh/2)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (B, H, T, Dh) by position (half-split pairs, as GPT-NeoX); cos, sin (T, Dh/2); keeps dtype."""
    half = x.shape[-1] // 2
    x1, x2 = x.float()[..., :half], x.float()[..., half:]  # (B, H, T, Dh/2) each
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (B, H, T, Dh)
    return rotated.to(x.dtype)


# ------------------------------------------------------------------------------------------- attention


class SelfAttention(nn.Module):
    """Multi-head self-attention through F.scaled_dot_product_attention: (B, T, d) -> (B, T, d)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        assert d_model % n_heads == 0, f"d_model {d_model} must be a multiple of n_heads {n_heads}"
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def split_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, d_model) -> q, k, v, each (B, H, T, Dh) with stride 1 on Dh."""
        batch, length, d_model = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.n_heads, d_model // self.n_heads)  # (B, T, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, Dh)
        return q, k, v

    def merge_heads(self, o: Tensor) -> Tensor:
        """o (B, H, T, Dh) -> proj of (B, T, d_model)."""
        batch, heads, length, head_dim = o.shape
        return self.proj(o.transpose(1, 2).reshape(batch, length, heads * head_dim))  # (B, T, d_model)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, is_causal: bool) -> Tensor:
        dropout = self.dropout if self.training else 0.0
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=dropout, is_causal=is_causal
        )
        return self.merge_heads(o)  # (B, T, d_model)

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        rope: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """x (B, T, d_model); attn_mask bool (B or 1, 1, T, T) with True = may attend; rope = (cos, sin)."""
        q, k, v = self.split_heads(x)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return self.attend(q, k, v, attn_mask, is_causal)


class PreLNBlock(nn.Module):
    """x + attn(LN(x)), then x + MLP(LN(x)): the Pre-LN Transformer encoder layer."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, d_ff, d_model, dropout)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        rope: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """x (B, T, d_model) -> (B, T, d_model); arguments as SelfAttention.forward."""
        x = x + self.drop1(self.attn(self.ln1(x), attn_mask, is_causal, rope))
        return self.feed_forward(x)

    def feed_forward(self, x: Tensor) -> Tensor:
        """The second half of the block: x + MLP(LN(x))."""
        return x + self.drop2(self.mlp(self.ln2(x)))


def key_padding_mask(valid: Tensor) -> Tensor:
    """valid (B, S) bool, True = real element -> SDPA attn_mask (B, 1, 1, S): every query may attend to it."""
    return valid[:, None, None, :]


class Normalizer(nn.Module):
    """(x - mean) / std on the last dim; mean and std are buffers fitted from data, saved with the model."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, samples: Tensor, min_std: float = 1e-3) -> None:
        """Set the statistics from samples (..., dim); std is floored at `min_std` (constant features)."""
        flat = samples.reshape(-1, samples.shape[-1]).double()  # (M, dim)
        self.mean.copy_(flat.mean(0))
        self.std.copy_(flat.std(0, unbiased=False).clamp_min(min_std))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std
