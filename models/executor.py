"""The Executor: a Mamba stack stepped every frame -> mouse position, click, key and held keys.

    frame, goal, target, approach (B, T, ·) -> normalise, concat, Linear     (B, T, d_model)
        -> n_layers x (x + MambaBlock(RMSNorm(x)))    state carried across frames
        -> RMSNorm -> heads: mouse (models/mouse.py), click logit, key logits [, held-key logits]

forward() runs sequences (training, prefill); live, `state = reset(B)` then `out, state = step(..., state)`
per frame, at constant cost (without autograd on cached `FusedWeights`). click_logit > 0 means press;
key_logits[..., 0] is "no key", then the profile's keys in order; held_logits[..., k] > 0 holds key k down
(Action v2, games flown with keys held together; only when n_held > 0). Design: docs/notes/models.md,
"models/executor.py"; timings: benchmarks/RESULTS.md, "Executor step (issue 3) — session 3".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.kernels import MAMBA_PATHS
from models.layers import Normalizer, log_parameter_count
from models.mamba import (
    InferenceCache,
    MambaBlock,
    MambaConfig,
    MambaState,
    StepWeights,
    fused_step,
    norm_eps,
    rms_scale,
)
from models.mouse import MouseHead, offsets_of
from validation import check_choice, check_int

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------- config


@dataclass
class ExecutorConfig:
    d_frame: int = 32  # per-frame state features
    goal_dim: int = 64  # Strategist goal embedding width
    d_target: int = 16  # features of the Tactician's chosen target (zeros for none)
    approach_dim: int = 2  # Tactician approach vector
    d_model: int = 256  # width of the residual stream
    n_layers: int = 4  # Mamba blocks
    d_state: int = 16  # SSM state per channel
    d_conv: int = 4  # causal conv width, frames
    expand: int = 2  # d_inner = expand * d_model
    n_keys: int = 4  # key classes, 0 = none (Arena: none, attack, repair, boost)
    n_held: int = 0  # held-key bits (Action v2 `held`, bit k = key k), 0 = no held head (the Arena's taps)
    mouse_bins_x: int = 24  # mouse grid columns
    mouse_bins_y: int = 24  # mouse grid rows
    mamba_path: str = "auto"  # "auto" | "kernels" | "reference" (models/kernels.py)
    scan_chunk: int = 0  # reference scan steps per chunk, 0 = auto

    def __post_init__(self) -> None:
        for name in (
            "d_frame",
            "goal_dim",
            "d_target",
            "approach_dim",
            "d_model",
            "n_layers",
            "d_state",
            "d_conv",
        ):
            check_int(self, name, 1)
        check_int(self, "expand", 1)
        check_int(self, "n_keys", 1)
        check_int(self, "n_held", 0)
        check_int(self, "mouse_bins_x", 1)
        check_int(self, "mouse_bins_y", 1)
        check_choice(self, "mamba_path", MAMBA_PATHS)
        check_int(self, "scan_chunk", 0)

    def mamba(self) -> MambaConfig:
        return MambaConfig(
            d_model=self.d_model,
            d_state=self.d_state,
            d_conv=self.d_conv,
            expand=self.expand,
            path=self.mamba_path,
            scan_chunk=self.scan_chunk,
        )


@dataclass
class ExecutorOutput:
    mouse_logits: Tensor  # (B, T, n_cells); (B, n_cells) from step()
    mouse_offsets: Tensor  # (B, T, n_cells, 2) pre-sigmoid fraction inside each cell
    click_logit: Tensor  # (B, T)
    key_logits: Tensor  # (B, T, n_keys)
    held_logits: Tensor | None = None  # (B, T, n_held); None without a held head

    def cell_offsets(self, cell: Tensor) -> Tensor:
        """The pre-sigmoid offsets (..., 2) of one cell per row, cell (...) long."""
        return offsets_of(cell, self.mouse_offsets)

    def mouse_position(self, cell: Tensor, head: MouseHead) -> Tensor:
        """Continuous position (..., 2) of one cell (...) per row, from its offsets."""
        return head.place(cell, self.cell_offsets(cell))


@dataclass
class ExecutorAction:
    mouse: Tensor  # (..., 2) in 0..1 of the game region
    click: Tensor  # (...) bool
    key: Tensor  # (...) long, 0 = none
    held: Tensor | None = None  # (..., n_held) bool: keys to hold down; None without a held head


@dataclass
class ExecutorState:
    layers: list[MambaState]  # one per Mamba block
    frames: int = 0  # frames seen since reset


# ---------------------------------------------------------------------------------------------- blocks


class ResidualMamba(nn.Module):
    """x + MambaBlock(RMSNorm(x)), for sequences (forward) and single frames (step)."""

    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(config.d_model, eps=1e-5)
        self.mixer = MambaBlock(config)

    def forward(self, x: Tensor, state: MambaState | None) -> tuple[Tensor, MambaState]:
        y, new_state = self.mixer(self.norm(x), state, return_state=True)  # (B, T, d_model)
        return x + y, new_state

    def step(self, x: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        y, new_state = self.mixer.step(self.norm(x), state)  # (B, d_model)
        return x + y, new_state


# ------------------------------------------------------------------------------ step without autograd


@dataclass(frozen=True)
class EmbedWeights:
    """The input layer laid out for step(): one normalisation over the concatenated inputs, then an addmm."""

    mean: Tensor  # (d_in,): the Normalizers' means, 0 over goal and approach
    std: Tensor  # (d_in,): their stds, 1 over goal and approach (x - 0) / 1 = x exactly
    w_t: Tensor  # (d_in, d_model) = embed.weight^T, contiguous
    b: Tensor  # (d_model,)

    @staticmethod
    def of(model: Executor) -> EmbedWeights:
        c, like = model.config, model.embed.weight
        zeros = [like.new_zeros(c.goal_dim), like.new_zeros(c.approach_dim)]
        mean = torch.cat([model.norm_frame.mean, zeros[0], model.norm_target.mean, zeros[1]])
        std = torch.cat([model.norm_frame.std, zeros[0] + 1, model.norm_target.std, zeros[1] + 1])
        w_t, b = like.t().contiguous(), model.embed.bias.detach()
        return EmbedWeights(mean.to(like.dtype), std.to(like.dtype), w_t, b)


@dataclass(frozen=True)
class HeadWeights:
    """The heads laid out for step(): norm_f's weight folded into every head, mouse + click + keys (+ held)
    as one."""

    w_t: Tensor  # (d_model, n_cells + 1 + n_keys [+ n_held]): [mouse.logits; click; keys; held]^T, * g
    b: Tensor  # (n_cells + 1 + n_keys [+ n_held],)
    offsets_w: Tensor  # (n_cells, 2, d_model) mouse.offsets weight, scaled by g (read per cell by decode())
    offsets_b: Tensor  # (n_cells, 2)
    cell_low: Tensor  # (n_cells, 2) MouseHead.cell_boxes()
    cell_size: Tensor  # (n_cells, 2)
    n_cells: int
    n_keys: int
    norm_eps: Tensor  # () norm_f's eps

    @staticmethod
    def of(model: Executor) -> HeadWeights:
        heads = [model.mouse.logits, model.click, model.keys] + (
            [model.held] if model.held is not None else []
        )
        g = model.norm_f.weight if model.norm_f.weight is not None else 1.0
        weight = torch.cat([head.weight for head in heads]) * g  # (n_cells + 1 + n_keys, d_model)
        n_cells = model.mouse.logits.out_features
        cell_low, cell_size = model.mouse.cell_boxes()
        return HeadWeights(
            w_t=weight.t().contiguous(),
            b=torch.cat([head.bias for head in heads]),
            offsets_w=(model.mouse.offsets.weight * g).view(n_cells, 2, -1),
            offsets_b=model.mouse.offsets.bias.detach().view(n_cells, 2),
            cell_low=cell_low,
            cell_size=cell_size,
            n_cells=n_cells,
            n_keys=model.keys.out_features,
            norm_eps=norm_eps(model.norm_f, weight),
        )


@dataclass(frozen=True)
class FusedWeights:
    """Everything Executor.step() reads when autograd is off, cached until a parameter or buffer changes."""

    embed: EmbedWeights
    layers: list[StepWeights]  # each with its layer's RMSNorm folded in
    heads: HeadWeights

    @staticmethod
    def of(model: Executor) -> FusedWeights:
        layers = [StepWeights.of(layer.mixer, layer.norm) for layer in model.layers]
        return FusedWeights(EmbedWeights.of(model), layers, HeadWeights.of(model))


class StepOutput(ExecutorOutput):
    """step()'s output without autograd: mouse_offsets is computed when first read, cell_offsets() alone.

    The offsets head is the largest matrix read per frame (2 n_cells x d_model, 1.2 MB at the defaults), and
    decode() needs 2 of its rows; reading `mouse_offsets` computes and keeps the whole (B, n_cells, 2).
    decode() of a StepOutput costs ~25 us instead of ~70 (index_select on cached cell boxes).
    """

    def __init__(
        self,
        mouse_logits: Tensor,
        click_logit: Tensor,
        key_logits: Tensor,
        held_logits: Tensor | None,
        features: Tensor,
        heads: HeadWeights,
    ) -> None:
        self.mouse_logits, self.click_logit, self.key_logits = mouse_logits, click_logit, key_logits
        self.held_logits = held_logits
        self._features, self._heads = features, heads  # normalised hidden state (B, d_model), HeadWeights
        self._offsets: Tensor | None = None

    @property
    def mouse_offsets(self) -> Tensor:
        if self._offsets is None:
            w = self._heads
            with torch.no_grad():
                flat = F.linear(self._features, w.offsets_w.flatten(0, 1), w.offsets_b.flatten())
            self._offsets = flat.unflatten(-1, (-1, 2))  # (B, n_cells, 2)
        return self._offsets

    @mouse_offsets.setter
    def mouse_offsets(self, value: Tensor) -> None:
        self._offsets = value

    def cell_offsets(self, cell: Tensor) -> Tensor:
        if self._offsets is not None:
            return super().cell_offsets(cell)
        w = self._heads
        with torch.no_grad():  # (B, 2, d_model) @ (B, d_model, 1) + (B, 2, 1)
            rows = torch.baddbmm(
                w.offsets_b.index_select(0, cell).unsqueeze(-1),
                w.offsets_w.index_select(0, cell),
                self._features.unsqueeze(-1),
            )
        return rows.squeeze(-1)  # (B, 2)

    def mouse_position(self, cell: Tensor, head: MouseHead) -> Tensor:
        """head.place() with the cell boxes cached beside the weights: (B,) -> (B, 2)."""
        w, fraction = self._heads, self.cell_offsets(cell).sigmoid()
        return torch.addcmul(w.cell_low.index_select(0, cell), fraction, w.cell_size.index_select(0, cell))


# --------------------------------------------------------------------------------------------- model


class Executor(nn.Module):
    """Recurrent per-frame policy: forward() over sequences (training), reset()/step() per frame (live)."""

    def __init__(self, config: ExecutorConfig) -> None:
        super().__init__()
        self.config = c = config
        self.norm_frame = Normalizer(c.d_frame)
        self.norm_target = Normalizer(c.d_target)
        self.embed = nn.Linear(c.d_frame + c.goal_dim + c.d_target + c.approach_dim, c.d_model)
        self.layers = nn.ModuleList(ResidualMamba(c.mamba()) for _ in range(c.n_layers))
        self.norm_f = nn.RMSNorm(c.d_model, eps=1e-5)
        self.mouse = MouseHead(c.d_model, c.mouse_bins_x, c.mouse_bins_y)
        self.click = nn.Linear(c.d_model, 1)
        self.keys = nn.Linear(c.d_model, c.n_keys)
        self.held = nn.Linear(c.d_model, c.n_held) if c.n_held else None
        self._step_cache = InferenceCache()  # step()'s FusedWeights
        log_parameter_count(self)

    def _embed(self, frame: Tensor, goal: Tensor, target: Tensor, approach: Tensor) -> Tensor:
        parts = [self.norm_frame(frame), goal, self.norm_target(target), approach]
        c = self.config
        widths = (c.d_frame, c.goal_dim, c.d_target, c.approach_dim)
        for name, part, width in zip(("frame", "goal", "target", "approach"), parts, widths):
            if part.shape[-1] != width or part.shape[:-1] != frame.shape[:-1]:
                raise ValueError(
                    f"Executor: expected {name} {(*frame.shape[:-1], width)}, got {tuple(part.shape)}"
                )
        return self.embed(torch.cat(parts, dim=-1))  # (..., d_model)

    def _heads(self, h: Tensor) -> ExecutorOutput:
        h = self.norm_f(h)
        logits, offsets = self.mouse(h)
        held = self.held(h) if self.held is not None else None
        return ExecutorOutput(logits, offsets, self.click(h).squeeze(-1), self.keys(h), held)

    def forward(
        self,
        frame: Tensor,
        goal: Tensor,
        target: Tensor,
        approach: Tensor,
        state: ExecutorState | None = None,
        return_state: bool = False,
    ) -> ExecutorOutput | tuple[ExecutorOutput, ExecutorState]:
        """Training / prefill over T frames.

        frame (B, T, d_frame), goal (B, T, goal_dim), target (B, T, d_target), approach (B, T, approach_dim)
        -> ExecutorOutput with mouse_logits (B, T, n_cells), mouse_offsets (B, T, n_cells, 2),
        click_logit (B, T), key_logits (B, T, n_keys) [, the ExecutorState after the last frame].
        `state` continues from an earlier call or from step() (reference path only).
        """
        h = self._embed(frame, goal, target, approach)  # (B, T, d_model)
        states = []
        for index, layer in enumerate(self.layers):
            h, layer_state = layer(h, None if state is None else state.layers[index])
            states.append(layer_state)
        out = self._heads(h)
        if not return_state:
            return out
        return out, ExecutorState(states, (0 if state is None else state.frames) + frame.shape[1])

    # ------------------------------------------------------------------------------------- live use

    def reset(self, batch_size: int = 1) -> ExecutorState:
        """Zero state for `batch_size` streams, to pass to the first step()."""
        return ExecutorState([layer.mixer.allocate_state(batch_size) for layer in self.layers])

    def step(
        self,
        frame: Tensor,
        goal: Tensor,
        target: Tensor,
        approach: Tensor,
        state: ExecutorState,
    ) -> tuple[ExecutorOutput, ExecutorState]:
        """One frame, inputs (B, ·) -> outputs (B, ·) and the next state; constant cost whatever the history.

        `state` comes from reset() or the previous step() and is never modified. Without autograd the output
        is a StepOutput. Live: call under torch.inference_mode(), and on a CPU shared with capture and
        detection with torch.set_num_threads(1) (docs/notes/models.md).
        """
        if state is None:
            raise RuntimeError("Executor.step: expected the state from reset(batch_size) or step(), got None")
        if self._can_step_fused(frame):
            out, states = self._step_fused(frame, goal, target, approach, state)
        else:
            h = self._embed(frame, goal, target, approach)  # (B, d_model)
            states = []
            for layer, layer_state in zip(self.layers, state.layers):
                h, new_layer_state = layer.step(h, layer_state)
                states.append(new_layer_state)
            out = self._heads(h)
        return out, ExecutorState(states, state.frames + 1)

    def _can_step_fused(self, frame: Tensor) -> bool:
        return frame.dtype == self.embed.weight.dtype and self.layers[0].mixer.can_step_fused(frame)

    def _step_fused(
        self, frame: Tensor, goal: Tensor, target: Tensor, approach: Tensor, state: ExecutorState
    ) -> tuple[StepOutput, list[MambaState]]:
        """step() without autograd: the same arithmetic on cached, re-laid-out weights (FusedWeights)."""
        w = self._step_cache.get((self,), lambda: FusedWeights.of(self))
        h = self._embed_fused(w.embed, frame, goal, target, approach)  # (B, d_model)
        states = []
        for layer_weights, layer_state in zip(w.layers, state.layers):
            h, new_layer_state = fused_step(layer_weights, h, layer_state, residual=True)
            states.append(new_layer_state)
        features = h * rms_scale(h, w.heads.norm_eps)  # norm_f less its weight, which is folded into w.heads
        logits = torch.addmm(w.heads.b, features, w.heads.w_t)  # (B, n_cells + 1 + n_keys [+ n_held])
        n, k = w.heads.n_cells, w.heads.n_keys
        held = logits[:, n + 1 + k :] if self.held is not None else None
        keys = logits[:, n + 1 : n + 1 + k]
        out = StepOutput(logits[:, :n], logits[:, n], keys, held, features, w.heads)
        return out, states

    def _embed_fused(
        self, w: EmbedWeights, frame: Tensor, goal: Tensor, target: Tensor, approach: Tensor
    ) -> Tensor:
        """_embed() of (B, ·) inputs as one cat, one normalisation and one addmm -> (B, d_model)."""
        c, parts = self.config, (frame, goal, target, approach)
        widths = (c.d_frame, c.goal_dim, c.d_target, c.approach_dim)
        if any(p.shape != (frame.shape[0], width) for p, width in zip(parts, widths)):
            self._embed(*parts)  # raises the ValueError naming the input
            raise ValueError(
                f"Executor.step: expected inputs of shape (B, ·), got frame {tuple(frame.shape)}"
            )
        x = torch.cat(parts, dim=-1)  # (B, d_in)
        return torch.addmm(w.b, x.sub_(w.mean).div_(w.std), w.w_t)  # goal, approach: (x - 0) / 1, exact

    # ---------------------------------------------------------------------------- decoding and loss

    def fit_mouse_bins(self, positions: Tensor, uniform_share: float = 0.1) -> None:
        """Fit the mouse grid to recorded cursor positions (M, 2) in 0..1 (call before training)."""
        self.mouse.fit(positions, uniform_share)

    @torch.no_grad()
    def decode(
        self,
        out: ExecutorOutput,
        sample: bool = False,
        generator: torch.Generator | None = None,
        held_threshold: Tensor | None = None,
    ) -> ExecutorAction:
        """Outputs -> an action: the most likely (or a sampled) mouse cell, click, key and held keys.
        `held_threshold` (n_held,) holds key k when its logit exceeds entry k (default 0: probability 0.5);
        a bundle stores thresholds calibrated per key (training/calibrate.py)."""
        held = None
        if sample:
            cell = _sample(out.mouse_logits, generator)
            click = torch.bernoulli(out.click_logit.sigmoid(), generator=generator).bool()
            key = _sample(out.key_logits, generator)
            if out.held_logits is not None:
                held = torch.bernoulli(out.held_logits.sigmoid(), generator=generator).bool()
        else:
            cell, click, key = out.mouse_logits.argmax(-1), out.click_logit > 0, out.key_logits.argmax(-1)
            if out.held_logits is not None:
                held = out.held_logits > (0.0 if held_threshold is None else held_threshold)
        return ExecutorAction(out.mouse_position(cell, self.mouse), click, key, held)

    def loss(
        self,
        out: ExecutorOutput,
        mouse: Tensor,
        click: Tensor,
        key: Tensor,
        valid: Tensor | None = None,
        label_smoothing: float = 0.0,
        click_pos_weight: float = 1.0,
        key_weight: Tensor | None = None,
        held: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Losses over frames where `valid` (B, T): mouse (B, T, 2) in 0..1, click (B, T), key (B, T) long,
        held (B, T) the Action v2 bitmask (bit k = key k held; needed when the model has a held head).

        Clicks and key taps are rare events (about 2 % and 0.4 % of Arena frames): unweighted, the heads learn
        "never", and the bot can neither select a target nor fly. `click_pos_weight` (> 0) multiplies the loss
        of the frames that click (BCE pos_weight) and `key_weight` (n_keys,) weighs each key class
        (a weighted mean over the frames, as F.cross_entropy(weight=...), so the loss scale stays put).
        Returns {"loss" (sum), "mouse", "mouse_offset", "click", "key"[, "held"]}; "held" is the mean BCE
        over frames and key bits (keys are held for long stretches: no weighting).
        """
        keep = torch.ones_like(key, dtype=torch.bool) if valid is None else valid  # (B, T)
        mouse_ce, offset = self.mouse.loss(
            out.mouse_logits[keep], out.mouse_offsets[keep], mouse[keep], label_smoothing
        )
        logit = out.click_logit[keep]
        pos_weight = torch.as_tensor(click_pos_weight, dtype=logit.dtype, device=logit.device)
        click_loss = F.binary_cross_entropy_with_logits(
            logit, click[keep].to(logit.dtype), pos_weight=pos_weight
        )
        key_loss = _weighted_key_loss(out.key_logits[keep], key[keep], key_weight, label_smoothing)
        parts = {"mouse": mouse_ce, "mouse_offset": offset, "click": click_loss, "key": key_loss}
        if out.held_logits is not None:
            if held is None:
                raise ValueError("Executor.loss: the model has a held head (n_held > 0) but no held targets")
            logits = out.held_logits[keep]  # (M, n_held)
            bits = held_bits(held[keep], logits.shape[-1])
            parts["held"] = F.binary_cross_entropy_with_logits(logits, bits)
        return {"loss": sum(parts.values()), **parts}


def held_bits(mask: Tensor, n_bits: int) -> Tensor:
    """Action v2 bitmasks (...) int -> (..., n_bits) float 0/1 (bit k = key k held)."""
    bits = torch.arange(n_bits, device=mask.device)
    return ((mask.long().unsqueeze(-1) >> bits) & 1).float()


def _weighted_key_loss(logits: Tensor, key: Tensor, weight: Tensor | None, label_smoothing: float) -> Tensor:
    """Cross-entropy of logits (M, K) against key (M,), each frame weighted by its class's weight."""
    per_frame = F.cross_entropy(logits, key, reduction="none", label_smoothing=label_smoothing)  # (M,)
    if weight is None:
        return per_frame.mean()
    w = weight.to(per_frame.device, per_frame.dtype)[key]  # (M,)
    return (per_frame * w).sum() / w.sum().clamp_min(1e-12)


def _sample(logits: Tensor, generator: torch.Generator | None) -> Tensor:
    """One categorical sample per row of logits (..., K) -> (...) long."""
    probs = logits.softmax(-1).reshape(-1, logits.shape[-1])
    return torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])
