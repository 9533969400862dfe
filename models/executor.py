"""The Executor: a Mamba stack stepped every frame -> mouse position, click and key.

    frame (B, T, d_frame), goal (B, T, goal_dim), target (B, T, d_target), approach (B, T, approach_dim)
        -> normalise, concat, Linear                                        (B, T, d_model)
        -> n_layers x (x + MambaBlock(RMSNorm(x)))    state carried across frames
        -> RMSNorm -> heads: mouse (cell logits + in-cell offsets), click logit, key logits

Training runs forward() over sequences; live use runs reset() once and step() per frame, which carries every
layer's conv and SSM state (constant cost per frame; call it under torch.inference_mode(), and on a CPU
shared with capture and detection use torch.set_num_threads(1): batch-1 ops gain nothing from a second
thread, and waiting for a busy one made step() 20x slower in benchmarks/bench_executor_step.py).
Stepping T frames equals forward() over them (tested through the whole stack and heads), and
forward(..., return_state=True) prefills a state that step() continues.

Mouse head (MouseHead): a joint classification over the cells of an n_x x n_y grid on the game region, with
non-uniform edges fitted to recorded cursor positions, plus a regressed position inside each cell.
  - Classification, not regression: the cursor is multi-modal (this enemy or that box of loot); a regression
    averages the modes onto empty space, a classifier keeps them apart. VPT, Counter-Strike BC and Pixels2Play
    all classify the mouse over non-uniform bins (anchors-and-apis.md).
  - Joint cells rather than separate x and y heads: with two targets at (0.2, 0.8) and (0.8, 0.2), factorised
    heads also put mass on (0.2, 0.2) and (0.8, 0.8); a joint softmax does not.
  - Absolute positions rather than offsets from the selected target: the target may be "none", and the
    position need not depend on a feature layout the perception issue has not fixed yet.
  - Edges: per axis, 90 % equal-mass quantiles of the recorded positions + 10 % uniform, so cells are fine
    where the cursor usually is, every cell keeps a minimum width, and edges are strictly increasing. They are
    buffers, saved with the weights (`Executor.fit_mouse_bins` before training).
  - In-cell offsets (as BeT's bin + residual): a sigmoid fraction per cell and axis, trained with L1 on the
    true cell only, so decoding gives continuous positions, not cell centres.
Conventions: mouse in 0..1 of the game region (x right, y down); cell index = ix * n_y + iy; click_logit > 0
means press; key_logits[..., 0] is "no key", then the profile's keys in order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import check_choice, check_int
from models.kernels import MAMBA_PATHS
from models.layers import Normalizer, log_parameter_count
from models.mamba import MambaBlock, MambaConfig, MambaState

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


@dataclass
class ExecutorAction:
    mouse: Tensor  # (..., 2) in 0..1 of the game region
    click: Tensor  # (...) bool
    key: Tensor  # (...) long, 0 = none


@dataclass
class ExecutorState:
    layers: list[MambaState]  # one per Mamba block
    frames: int = 0  # frames seen since reset


# ---------------------------------------------------------------------------------------------- blocks


class MouseHead(nn.Module):
    """Joint cell logits over a non-uniform n_x x n_y grid + per-cell offsets (module docstring)."""

    def __init__(self, d_model: int, n_x: int, n_y: int) -> None:
        super().__init__()
        self.n_x, self.n_y = n_x, n_y
        self.register_buffer("x_edges", torch.linspace(0.0, 1.0, n_x + 1))
        self.register_buffer("y_edges", torch.linspace(0.0, 1.0, n_y + 1))
        self.logits = nn.Linear(d_model, n_x * n_y)
        self.offsets = nn.Linear(d_model, n_x * n_y * 2)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """h (..., d_model) -> logits (..., n_cells), offsets (..., n_cells, 2)."""
        return self.logits(h), self.offsets(h).unflatten(-1, (self.n_x * self.n_y, 2))

    @torch.no_grad()
    def fit(self, positions: Tensor, uniform_share: float = 0.1) -> None:
        """Fit the edges to recorded positions (M, 2) in 0..1: equal-mass quantiles mixed with uniform."""
        xy = positions.reshape(-1, 2).double().clamp(0.0, 1.0)
        for axis, edges in enumerate((self.x_edges, self.y_edges)):
            levels = torch.linspace(0.0, 1.0, edges.numel(), dtype=torch.float64)
            quantiles = torch.quantile(xy[:, axis], levels)
            quantiles[0], quantiles[-1] = 0.0, 1.0
            edges.copy_((1.0 - uniform_share) * quantiles + uniform_share * levels)

    def cell_of(self, xy: Tensor) -> tuple[Tensor, Tensor]:
        """xy (..., 2) in 0..1 -> cell index (...) long and the position inside the cell (..., 2) in 0..1."""
        xy = xy.clamp(0.0, 1.0)
        ix = torch.bucketize(xy[..., 0].contiguous(), self.x_edges[1:-1], right=True)  # (...)
        iy = torch.bucketize(xy[..., 1].contiguous(), self.y_edges[1:-1], right=True)
        low = torch.stack([self.x_edges[ix], self.y_edges[iy]], dim=-1)  # (..., 2)
        width = torch.stack([self.x_edges[ix + 1], self.y_edges[iy + 1]], dim=-1) - low
        return ix * self.n_y + iy, ((xy - low) / width).clamp(0.0, 1.0)

    def position(self, cell: Tensor, offsets: Tensor) -> Tensor:
        """Continuous position (..., 2) of `cell` (...) given the offsets (..., n_cells, 2)."""
        ix, iy = cell // self.n_y, cell % self.n_y
        fraction = offsets.gather(-2, cell[..., None, None].expand(*cell.shape, 1, 2)).squeeze(-2).sigmoid()
        low = torch.stack([self.x_edges[ix], self.y_edges[iy]], dim=-1)  # (..., 2)
        width = torch.stack([self.x_edges[ix + 1], self.y_edges[iy + 1]], dim=-1) - low
        return low + fraction * width

    def loss(
        self, logits: Tensor, offsets: Tensor, xy: Tensor, label_smoothing: float = 0.0
    ) -> tuple[Tensor, Tensor]:
        """Cell cross-entropy and in-cell L1 for logits (M, n_cells), offsets (M, n_cells, 2), xy (M, 2)."""
        cell, fraction = self.cell_of(xy)  # (M,), (M, 2)
        ce = F.cross_entropy(logits, cell, label_smoothing=label_smoothing)
        predicted = offsets.gather(1, cell.view(-1, 1, 1).expand(-1, 1, 2)).squeeze(1).sigmoid()  # (M, 2)
        return ce, F.l1_loss(predicted, fraction)


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
        self.live_state: ExecutorState | None = None
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
        return ExecutorOutput(logits, offsets, self.click(h).squeeze(-1), self.keys(h))

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
        """Zero state for `batch_size` streams; also held as `live_state` for step() without a state."""
        self.live_state = ExecutorState([layer.mixer.allocate_state(batch_size) for layer in self.layers])
        return self.live_state

    def step(
        self,
        frame: Tensor,
        goal: Tensor,
        target: Tensor,
        approach: Tensor,
        state: ExecutorState | None = None,
    ) -> tuple[ExecutorOutput, ExecutorState]:
        """One frame, inputs (B, ·) -> outputs (B, ·) and the next state; constant cost whatever the history.

        Without `state`, uses and replaces `live_state` (set by reset()).
        """
        held = state is None
        state = self.live_state if held else state
        if state is None:
            raise RuntimeError("Executor.step: call reset(batch_size) first or pass a state")
        h = self._embed(frame, goal, target, approach)  # (B, d_model)
        states = []
        for layer, layer_state in zip(self.layers, state.layers):
            h, new_layer_state = layer.step(h, layer_state)
            states.append(new_layer_state)
        new_state = ExecutorState(states, state.frames + 1)
        if held:
            self.live_state = new_state
        return self._heads(h), new_state

    # ---------------------------------------------------------------------------- decoding and loss

    def fit_mouse_bins(self, positions: Tensor, uniform_share: float = 0.1) -> None:
        """Fit the mouse grid to recorded cursor positions (M, 2) in 0..1 (call before training)."""
        self.mouse.fit(positions, uniform_share)

    @torch.no_grad()
    def decode(
        self, out: ExecutorOutput, sample: bool = False, generator: torch.Generator | None = None
    ) -> ExecutorAction:
        """Outputs -> an action: the most likely (or a sampled) mouse cell, click and key."""
        if sample:
            cell = _sample(out.mouse_logits, generator)
            click = torch.bernoulli(out.click_logit.sigmoid(), generator=generator).bool()
            key = _sample(out.key_logits, generator)
        else:
            cell, click, key = out.mouse_logits.argmax(-1), out.click_logit > 0, out.key_logits.argmax(-1)
        return ExecutorAction(self.mouse.position(cell, out.mouse_offsets), click, key)

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
    ) -> dict[str, Tensor]:
        """Losses over frames where `valid` (B, T): mouse (B, T, 2) in 0..1, click (B, T), key (B, T) long.

        Clicks and key taps are rare events (about 2 % and 0.4 % of Arena frames): unweighted, the heads learn
        "never", and the bot can neither select a target nor fly. `click_pos_weight` (> 0) multiplies the loss
        of the frames that click (BCE pos_weight) and `key_weight` (n_keys,) weighs each key class
        (a weighted mean over the frames, as F.cross_entropy(weight=...), so the loss scale stays put).
        Returns {"loss" (sum), "mouse", "mouse_offset", "click", "key"}.
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
        total = mouse_ce + offset + click_loss + key_loss
        return {
            "loss": total,
            "mouse": mouse_ce,
            "mouse_offset": offset,
            "click": click_loss,
            "key": key_loss,
        }


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
