"""The Tactician: which tracked object to act on, and how to approach, given the Strategist's goal.

    objects (B, N, d_obj) + a learned "no target" token -> PreLNBlocks over the set (no positions)
    goal (B, goal_dim) + context (B, d_ctx) -> query attending to the set
        -> target_logits (B, 1 + N): slot 0 = no target, slot i = objects[:, i - 1], -inf on padded slots
        -> approach (B, approach_dim), trained by MSE

Order-invariant in the objects (tested). Train the targets with `Tactician.loss` (no label smoothing: it would
put mass on -inf slots). Design: docs/notes/models.md, "models/tactician.py".
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.layers import MLP, Normalizer, PreLNBlock, key_padding_mask, log_parameter_count
from validation import check_divisible, check_float, check_int

log = logging.getLogger(__name__)

NO_TARGET = 0  # index of the "no target" slot in target_logits


# --------------------------------------------------------------------------------------------------- config


@dataclass
class TacticianConfig:
    d_obj: int = 16  # features per tracked object
    n_max: int = 32  # most objects per frame (the Observation's N_max)
    goal_dim: int = 64  # width of the Strategist's goal embedding
    d_ctx: int = 32  # recent-state context features (e.g. the last frames' globals); 0 = none
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 2  # self-attention blocks over the object set
    d_ff: int = 256
    dropout: float = 0.1
    approach_dim: int = 2  # (dx, dy)

    def __post_init__(self) -> None:
        for name in ("d_obj", "n_max", "goal_dim", "d_model", "n_heads", "d_ff", "approach_dim"):
            check_int(self, name, 1)
        check_int(self, "d_ctx", 0)
        check_int(self, "n_layers", 0)
        check_divisible(self, "d_model", "n_heads")
        check_float(self, "dropout", 0.0, 1.0)


@dataclass
class TacticianOutput:
    target_logits: Tensor  # (B, 1 + N): slot 0 = no target, slot i = object i - 1; -inf where padded
    approach: Tensor  # (B, approach_dim)
    query: Tensor  # (B, d_model): the goal query after attending to the objects


# --------------------------------------------------------------------------------------------- blocks


class CrossBlock(nn.Module):
    """Pre-LN cross-attention: q + attn(LN(q), LN(memory)), then q + MLP(LN(q))."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.ln_q, self.ln_kv = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, d_ff, d_model, dropout)

    def forward(self, query: Tensor, memory: Tensor, attn_mask: Tensor) -> Tensor:
        """query (B, Q, d), memory (B, S, d), attn_mask bool (B, 1, 1, S) -> (B, Q, d)."""
        batch, n_q, d_model = query.shape
        head_dim = d_model // self.n_heads
        q = self.q(self.ln_q(query)).view(batch, n_q, self.n_heads, head_dim).transpose(1, 2)  # (B, H, Q, Dh)
        kv = self.kv(self.ln_kv(memory)).view(batch, -1, 2, self.n_heads, head_dim)  # (B, S, 2, H, Dh)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, S, Dh) each
        dropout = self.dropout if self.training else 0.0
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)  # (B, H, Q, Dh)
        query = query + self.proj(o.transpose(1, 2).reshape(batch, n_q, d_model))
        return query + self.mlp(self.ln2(query))


# --------------------------------------------------------------------------------------------- model


class Tactician(nn.Module):
    """Set encoder + goal cross-attention -> target logits over objects and "no target", approach vector."""

    def __init__(self, config: TacticianConfig) -> None:
        super().__init__()
        self.config = c = config
        self.norm_obj = Normalizer(c.d_obj)
        self.embed_obj = nn.Linear(c.d_obj, c.d_model)
        self.no_target = nn.Parameter(torch.randn(1, 1, c.d_model) * 0.02)  # the "no target" set element
        self.blocks = nn.ModuleList(
            PreLNBlock(c.d_model, c.n_heads, c.d_ff, c.dropout) for _ in range(c.n_layers)
        )
        self.norm_set = nn.LayerNorm(c.d_model)
        self.norm_ctx = Normalizer(c.d_ctx)
        self.embed_query = nn.Linear(c.goal_dim + c.d_ctx, c.d_model)
        self.cross = CrossBlock(c.d_model, c.n_heads, c.d_ff, c.dropout)
        self.norm_query = nn.LayerNorm(c.d_model)
        self.pointer_q = nn.Linear(c.d_model, c.d_model)
        self.pointer_k = nn.Linear(c.d_model, c.d_model)
        self.approach_head = MLP(c.d_model, c.d_ff, c.approach_dim)
        log_parameter_count(self)

    def forward(
        self, objects: Tensor, valid: Tensor, goal: Tensor, context: Tensor | None = None
    ) -> TacticianOutput:
        """objects (B, N, d_obj), valid (B, N) bool (N <= n_max), goal (B, goal_dim), context (B, d_ctx)."""
        self._check_inputs(objects, valid, goal, context)
        batch = objects.shape[0]
        tokens = self.embed_obj(self.norm_obj(objects))  # (B, N, d)
        members = torch.cat([self.no_target.expand(batch, -1, -1), tokens], dim=1)  # (B, 1 + N, d)
        member_valid = torch.cat([valid.new_ones(batch, 1), valid], dim=1)  # (B, 1 + N)
        mask = key_padding_mask(member_valid)  # (B, 1, 1, 1 + N)
        for block in self.blocks:
            members = block(members, attn_mask=mask)
        members = self.norm_set(members)
        query_in = goal if context is None else torch.cat([goal, self.norm_ctx(context)], dim=-1)
        query = self.norm_query(
            self.cross(self.embed_query(query_in).unsqueeze(1), members, mask)
        )  # (B, 1, d)
        scores = self.pointer_q(query) @ self.pointer_k(members).transpose(1, 2)  # (B, 1, 1 + N)
        logits = (scores.squeeze(1) / math.sqrt(self.config.d_model)).masked_fill(
            ~member_valid, float("-inf")
        )
        query = query.squeeze(1)  # (B, d)
        return TacticianOutput(target_logits=logits, approach=self.approach_head(query), query=query)

    def _check_inputs(self, objects: Tensor, valid: Tensor, goal: Tensor, context: Tensor | None) -> None:
        c = self.config
        if objects.dim() != 3 or objects.shape[-1] != c.d_obj or objects.shape[1] > c.n_max:
            raise ValueError(
                f"Tactician: expected objects (B, N <= {c.n_max}, {c.d_obj}), got {tuple(objects.shape)}"
            )
        if valid.dtype != torch.bool or valid.shape != objects.shape[:2]:
            raise ValueError(
                f"Tactician: expected valid bool {tuple(objects.shape[:2])}, "
                f"got {valid.dtype} {tuple(valid.shape)}"
            )
        if goal.shape != (objects.shape[0], c.goal_dim):
            raise ValueError(
                f"Tactician: expected goal {(objects.shape[0], c.goal_dim)}, got {tuple(goal.shape)}"
            )
        if (context is None) != (c.d_ctx == 0) or (context is not None and context.shape[-1] != c.d_ctx):
            got = None if context is None else tuple(context.shape)
            raise ValueError(f"Tactician: expected context (B, {c.d_ctx}) (None when d_ctx is 0), got {got}")

    # ------------------------------------------------------------------------------ targets and loss

    @staticmethod
    def select(out: TacticianOutput, objects: Tensor) -> tuple[Tensor, Tensor]:
        """Greedy choice: slot (B,) long (0 = none) and the chosen object's features (B, d_obj), 0 if none."""
        slot = out.target_logits.argmax(dim=-1)  # (B,)
        padded = F.pad(objects, (0, 0, 1, 0))  # (B, 1 + N, d_obj), row 0 = zeros for "no target"
        features = padded.gather(1, slot.view(-1, 1, 1).expand(-1, 1, objects.shape[-1])).squeeze(1)
        return slot, features

    def loss(
        self,
        out: TacticianOutput,
        target: Tensor,
        approach: Tensor | None = None,
        approach_weight: float = 1.0,
    ) -> Tensor:
        """Cross-entropy of target_logits vs target (B,) long slots (0 = none) + weighted MSE of approach."""
        loss = F.cross_entropy(out.target_logits, target)
        if approach is not None:
            loss = loss + approach_weight * F.mse_loss(out.approach, approach)
        return loss
