"""The optimizer side of the loop: AdamW parameter groups, the warm-up + cosine LR schedule, EMA weights."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from training.config import TrainConfig

# Parameters of these modules are never decayed: decay would pull norm gains and embedding rows towards 0.
NO_DECAY_MODULES: tuple[type[nn.Module], ...] = (
    nn.Embedding,
    nn.EmbeddingBag,
    nn.LayerNorm,
    nn.RMSNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*
)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay for matmul weights; none for biases, norms, embeddings and `_no_weight_decay`.

    Every parameter with fewer than 2 dims (biases, norm gains, Mamba's D), every parameter of a
    NO_DECAY_MODULES module (embeddings, norms) and every parameter carrying `_no_weight_decay = True`
    (Mamba's A_log and D, as mamba-ssm marks them) goes to the no-decay group. Groups carry `param_names`,
    which the checkpoint uses to name optimizer tensors.
    """
    exempt = {id(p) for m in model.modules() if isinstance(m, NO_DECAY_MODULES) for p in m.parameters(False)}
    decay: tuple[list[str], list[nn.Parameter]] = ([], [])
    no_decay: tuple[list[str], list[nn.Parameter]] = ([], [])
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim < 2 or id(param) in exempt or getattr(param, "_no_weight_decay", False)
        names, params = no_decay if skip else decay
        names.append(name)
        params.append(param)
    groups = [(decay, weight_decay), (no_decay, 0.0)]
    return [{"params": p, "param_names": n, "weight_decay": wd} for (n, p), wd in groups if p]


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over `param_groups`; the fused CUDA kernel on CUDA (as nanoGPT)."""
    fused = device.type == "cuda" or None
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused
    )


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warm-up, cosine decay, then the floor.

    step < warmup:             lr * (step + 1) / warmup
    warmup <= step < total:    floor + (lr - floor) * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2
    step >= total:             floor = lr * min_lr_ratio
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    floor = cfg.lr * cfg.min_lr_ratio
    if step >= total_steps:
        return floor
    progress = (step - cfg.warmup_steps) / (total_steps - cfg.warmup_steps)
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - floor)


class EMA:
    """Exponential moving average of a model's parameters (buffers are copied, not averaged).

    The decay warms up as min(decay, (1 + t) / (10 + t)) after t updates (the num_updates rule of
    TensorFlow's ExponentialMovingAverage): early on the average follows the fast-moving weights instead of
    staying near the random initialisation, which matters for short runs and small datasets.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, updates: int) -> float:
        return min(self.decay, (1.0 + updates) / (10.0 + updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1.0 - self.decay_at(self.updates)
        ema_params = list(self.module.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], weight)  # as timm
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)
        self.updates += 1
