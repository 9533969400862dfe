"""The Strategist: a causal Pre-LN Transformer over per-second state summaries -> mode logits + goal.

    summaries (B, T, d_in) -> normalise -> Linear -> n_layers x PreLNBlock (causal SDPA, RoPE) -> LN
        -> goal = LN(Linear(h))            (B, T, goal_dim)   read by the Tactician and the Executor
        -> mode_logits = Linear(goal)      (B, T, n_modes)    order of MODES; the goal is the mode bottleneck

forward() over right-padded windows (training); live at 1 Hz, `cache = reset(B)` then
`out, cache = step(x, cache)` with a sliding-window KV cache. Why causal, RoPE, the window and the padding:
docs/notes/models.md, "models/strategist.py".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.errors import ConfigError
from models.layers import Normalizer, PreLNBlock, apply_rope, log_parameter_count, rope_tables
from validation import check_bool, check_divisible, check_float, check_int

log = logging.getLogger(__name__)

MODES = ("FIGHT", "LOOT", "FLEE", "EXPLORE", "CAUTIOUS")
IGNORE_INDEX = -100  # mode label of padded or unlabelled steps


# --------------------------------------------------------------------------------------------------- config


@dataclass
class StrategistConfig:
    d_in: int = 64  # features of one per-second state summary
    d_model: int = 256  # width of the residual stream
    n_heads: int = 4  # attention heads; head_dim = d_model / n_heads (flash needs <= 256)
    n_layers: int = 4
    d_ff: int = 1024  # hidden width of the MLP
    dropout: float = 0.1  # on attention weights, MLP hidden and residual branches
    max_len: int = 120  # attention window per layer, steps (seconds at 1 Hz); see receptive_field
    n_modes: int = 5  # size of the mode set (MODES)
    goal_dim: int = 64  # goal embedding width (32-64 intended)
    rope_base: float = 10000.0  # RoPE wavelength base
    use_rope: bool = True  # False only to compare with nn.TransformerEncoderLayer, which has no positions
    label_smoothing: float = 0.1  # default of Strategist.loss

    @property
    def receptive_field(self) -> int:
        """Steps one output can depend on: each layer looks max_len - 1 steps further back."""
        return self.n_layers * (self.max_len - 1) + 1

    def __post_init__(self) -> None:
        for name in ("d_in", "d_model", "n_heads", "n_layers", "d_ff", "max_len", "goal_dim"):
            check_int(self, name, 1)
        check_int(self, "n_modes", 2)
        check_divisible(self, "d_model", "n_heads")
        check_float(self, "dropout", 0.0, 1.0)
        check_float(self, "rope_base", 1.0, low_open=True)
        check_bool(self, "use_rope")
        check_float(self, "label_smoothing", 0.0, 1.0)
        if self.use_rope and (self.d_model // self.n_heads) % 2:
            head_dim = self.d_model // self.n_heads
            raise ConfigError(
                f"StrategistConfig.d_model: expected an even d_model / n_heads for RoPE, got {head_dim}"
            )


@dataclass
class StrategistOutput:
    mode_logits: Tensor  # (B, T, n_modes); (B, n_modes) from step()
    goal: Tensor  # (B, T, goal_dim); (B, goal_dim) from step()


@dataclass
class StrategistCache:
    """Per layer, the keys (un-rotated) and values of the last <= max_len steps: each (B, H, n, head_dim)."""

    keys: list[Tensor]
    values: list[Tensor]

    @property
    def length(self) -> int:
        return self.keys[0].shape[2]


# --------------------------------------------------------------------------------------------- model


def window_mask(length: int, window: int, device: torch.device) -> Tensor:
    """Bool (T, T) mask, True where step i may attend to step j: j <= i and i - j < window."""
    offset = torch.arange(length, device=device).unsqueeze(1) - torch.arange(length, device=device)  # (T, T)
    return (offset >= 0) & (offset < window)


def check_right_padded(valid: Tensor) -> None:
    """valid (B, T) bool must be True...True False...False in every row (right padding needs no mask)."""
    if valid.dtype != torch.bool or valid.dim() != 2:
        raise ValueError(
            f"Strategist: expected valid as a (B, T) bool tensor, got {valid.dtype} {tuple(valid.shape)}"
        )
    if bool((valid[:, 1:] & ~valid[:, :-1]).any()):
        raise ValueError(
            "Strategist: expected right-padded `valid` (True...True False...False per row), got a gap"
        )


class Strategist(nn.Module):
    """Causal Pre-LN Transformer: forward() over windows for training, reset()/step() at 1 Hz live."""

    def __init__(self, config: StrategistConfig) -> None:
        super().__init__()
        self.config = c = config
        self.norm_in = Normalizer(c.d_in)
        self.embed = nn.Linear(c.d_in, c.d_model)
        self.blocks = nn.ModuleList(
            PreLNBlock(c.d_model, c.n_heads, c.d_ff, c.dropout) for _ in range(c.n_layers)
        )
        self.norm = nn.LayerNorm(c.d_model)
        self.goal_head = nn.Linear(c.d_model, c.goal_dim)
        self.goal_norm = nn.LayerNorm(c.goal_dim, elementwise_affine=False)
        self.mode_head = nn.Linear(c.goal_dim, c.n_modes)
        self._logged_paths: set[str] = set()
        log_parameter_count(self)

    @property
    def head_dim(self) -> int:
        return self.config.d_model // self.config.n_heads

    def _heads(self, h: Tensor) -> StrategistOutput:
        goal = self.goal_norm(self.goal_head(self.norm(h)))  # (..., goal_dim)
        return StrategistOutput(mode_logits=self.mode_head(goal), goal=goal)

    def forward(self, x: Tensor, valid: Tensor | None = None) -> StrategistOutput:
        """x (B, T, d_in), right-padded per `valid` (B, T) bool -> mode_logits (B, T, M), goal (B, T, G)."""
        c = self.config
        length = x.shape[1]
        h = self.embed(self.norm_in(x))  # (B, T, d_model)
        rope = rope_tables(length, self.head_dim, c.rope_base, x.device) if c.use_rope else None
        causal = length <= c.max_len
        mask = None if causal else window_mask(length, c.max_len, x.device)  # (T, T)
        self._log_path_once(
            "is_causal, no mask: flash-eligible" if causal else "band mask (T > max_len): no flash"
        )
        for block in self.blocks:
            h = block(h, attn_mask=mask, is_causal=causal, rope=rope)
        out = self._heads(h)
        if valid is not None:
            check_right_padded(valid)
            keep = valid.unsqueeze(-1)  # (B, T, 1)
            out = StrategistOutput(out.mode_logits.masked_fill(~keep, 0.0), out.goal.masked_fill(~keep, 0.0))
        return out

    def _log_path_once(self, path: str) -> None:
        if path not in self._logged_paths:
            self._logged_paths.add(path)
            log.info("Strategist attention: F.scaled_dot_product_attention, %s", path)

    # ------------------------------------------------------------------------------------- live use

    def reset(self, batch_size: int = 1) -> StrategistCache:
        """An empty cache for `batch_size` streams, to pass to the first step()."""
        p = next(self.parameters())
        empty = p.new_zeros(batch_size, self.config.n_heads, 0, self.head_dim)  # (B, H, 0, Dh)
        return StrategistCache([empty] * self.config.n_layers, [empty] * self.config.n_layers)

    def step(self, x: Tensor, cache: StrategistCache) -> tuple[StrategistOutput, StrategistCache]:
        """One new summary x (B, d_in) -> mode_logits (B, n_modes), goal (B, goal_dim), and the next cache.

        `cache` comes from reset() or the previous step() and is never modified. Cost is bounded by max_len
        whatever the history length.
        """
        if cache is None:
            raise RuntimeError(
                "Strategist.step: expected the cache from reset(batch_size) or step(), got None"
            )
        h = self.embed(self.norm_in(x)).unsqueeze(1)  # (B, 1, d_model)
        keys, values = [], []
        for block, k_past, v_past in zip(self.blocks, cache.keys, cache.values):
            h, k_all, v_all = self._block_step(block, h, k_past, v_past)
            keys.append(k_all)
            values.append(v_all)
        out = self._heads(h.squeeze(1))
        return out, StrategistCache(keys, values)

    def _block_step(self, block: PreLNBlock, h: Tensor, k_past: Tensor, v_past: Tensor) -> tuple[Tensor, ...]:
        """h (B, 1, d_model) through one block, attending to the cached window; returns h and the new k, v."""
        c = self.config
        q, k, v = block.attn.split_heads(block.ln1(h))  # (B, H, 1, Dh) each
        k_all = torch.cat([k_past.to(k.dtype), k], dim=2)[:, :, -c.max_len :]  # (B, H, n, Dh), n <= max_len
        v_all = torch.cat([v_past.to(v.dtype), v], dim=2)[
            :, :, -c.max_len :
        ]  # (dtype: autocast may change it)
        k_rot = k_all
        if c.use_rope:
            cos, sin = rope_tables(k_all.shape[2], self.head_dim, c.rope_base, h.device)  # (n, Dh/2)
            q, k_rot = apply_rope(q, cos[-1:], sin[-1:]), apply_rope(k_all, cos, sin)
        h = h + block.drop1(block.attn.attend(q, k_rot, v_all, attn_mask=None, is_causal=False))
        return block.feed_forward(h), k_all, v_all

    # ----------------------------------------------------------------------------------------- loss

    def loss(self, out: StrategistOutput, modes: Tensor, label_smoothing: float | None = None) -> Tensor:
        """Mean cross-entropy of mode_logits (B, T, n_modes) vs modes (B, T) long; IGNORE_INDEX skipped."""
        smoothing = self.config.label_smoothing if label_smoothing is None else label_smoothing
        logits = out.mode_logits.reshape(-1, self.config.n_modes)  # (B*T, n_modes)
        return F.cross_entropy(
            logits, modes.reshape(-1), ignore_index=IGNORE_INDEX, label_smoothing=smoothing
        )
