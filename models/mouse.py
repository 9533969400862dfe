"""The Executor's mouse head: joint cell logits over a non-uniform grid on the game region, plus a regressed
position inside each cell (positions in 0..1, x right, y down; cell index = ix * n_y + iy).

Why a classifier, why joint cells, why these edges: docs/notes/models.md, "models/mouse.py".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def offsets_of(cell: Tensor, offsets: Tensor) -> Tensor:
    """The offsets (..., 2) of `cell` (...) long, picked from offsets (..., n_cells, 2)."""
    return offsets.gather(-2, cell[..., None, None].expand(*cell.shape, 1, 2)).squeeze(-2)


class MouseHead(nn.Module):
    """Joint cell logits over a non-uniform n_x x n_y grid + per-cell offsets (docs/notes/models.md)."""

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
        return self.place(cell, offsets_of(cell, offsets))

    def cell_boxes(self) -> tuple[Tensor, Tensor]:
        """Lower corner and size (n_cells, 2) of every cell, cell = ix * n_y + iy (the values of place())."""
        low = torch.cartesian_prod(self.x_edges[:-1], self.y_edges[:-1])
        return low, torch.cartesian_prod(self.x_edges.diff(), self.y_edges.diff())

    def place(self, cell: Tensor, cell_offsets: Tensor) -> Tensor:
        """Continuous position (..., 2) of `cell` (...) given its own pre-sigmoid offsets (..., 2)."""
        ix, iy = cell // self.n_y, cell % self.n_y
        fraction = cell_offsets.sigmoid()
        low = torch.stack([self.x_edges[ix], self.y_edges[iy]], dim=-1)  # (..., 2)
        width = torch.stack([self.x_edges[ix + 1], self.y_edges[iy + 1]], dim=-1) - low
        return low + fraction * width

    def loss(
        self, logits: Tensor, offsets: Tensor, xy: Tensor, label_smoothing: float = 0.0
    ) -> tuple[Tensor, Tensor]:
        """Cell cross-entropy and in-cell L1 for logits (M, n_cells), offsets (M, n_cells, 2), xy (M, 2)."""
        cell, fraction = self.cell_of(xy)  # (M,), (M, 2)
        ce = F.cross_entropy(logits, cell, label_smoothing=label_smoothing)
        predicted = offsets_of(cell, offsets).sigmoid()  # (M, 2)
        return ce, F.l1_loss(predicted, fraction)
