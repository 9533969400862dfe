"""The policy PPO trains: the Executor's factored action distribution and an ActorCritic (Executor + value).

action = mouse cell ~ Categorical(n_cells) x click ~ Bernoulli x key ~ Categorical(n_keys)
         [x held bits ~ Bernoulli(n_held)]; the in-cell offset stays the Executor's mean (no log-prob)
value  = MLP(LayerNorm(trunk features, detached), fraction of the episode gone)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.executor import Executor, ExecutorOutput, ExecutorState

HEADS = ("mouse.logits.", "click.", "keys.", "held.")  # the "heads" choice: the Executor's output layers
NEVER = ("mouse.offsets.",)  # the in-cell offset is not sampled, so no policy gradient reaches it


@dataclass
class Dist:
    """The action distribution of B x T frames (or any leading shape)."""

    mouse: Tensor  # (..., n_cells) log-probabilities
    click: Tensor  # (...) logit of pressing
    key: Tensor  # (..., n_keys) log-probabilities
    held: Tensor | None = None  # (..., n_held) logits of holding each key

    @staticmethod
    def of(out: ExecutorOutput) -> Dist:
        held = out.held_logits.float() if out.held_logits is not None else None
        return Dist(
            out.mouse_logits.float().log_softmax(-1), out.click_logit.float(),
            out.key_logits.float().log_softmax(-1), held,
        )  # fmt: skip

    def detach(self) -> Dist:
        held = self.held.detach() if self.held is not None else None
        return Dist(self.mouse.detach(), self.click.detach(), self.key.detach(), held)


@dataclass
class Actions:
    """Sampled actions of B x T frames."""

    cell: Tensor  # (...) long
    click: Tensor  # (...) float 0/1
    key: Tensor  # (...) long
    held: Tensor | None = None  # (..., n_held) float 0/1


def sample(dist: Dist, generator: torch.Generator | None = None) -> Actions:
    """One action per row of `dist` (leading shape (B,))."""
    cell = torch.multinomial(dist.mouse.exp(), 1, generator=generator).squeeze(-1)
    click = torch.bernoulli(dist.click.sigmoid(), generator=generator)
    key = torch.multinomial(dist.key.exp(), 1, generator=generator).squeeze(-1)
    held = torch.bernoulli(dist.held.sigmoid(), generator=generator) if dist.held is not None else None
    return Actions(cell, click, key, held)


def _bernoulli_log_prob(logit: Tensor, value: Tensor) -> Tensor:
    return -F.binary_cross_entropy_with_logits(logit, value, reduction="none")


def log_prob(dist: Dist, actions: Actions) -> Tensor:
    """log pi(action) (...) summed over the factors."""
    out = dist.mouse.gather(-1, actions.cell.unsqueeze(-1)).squeeze(-1)
    out = out + _bernoulli_log_prob(dist.click, actions.click)
    out = out + dist.key.gather(-1, actions.key.unsqueeze(-1)).squeeze(-1)
    if dist.held is not None and actions.held is not None:
        out = out + _bernoulli_log_prob(dist.held, actions.held).sum(-1)
    return out


def _bernoulli_entropy(logit: Tensor) -> Tensor:
    p = logit.sigmoid()
    return F.binary_cross_entropy_with_logits(logit, p, reduction="none")


def entropy(dist: Dist) -> Tensor:
    """Entropy (...) of the factored distribution."""
    out = -(dist.mouse.exp() * dist.mouse).sum(-1) + _bernoulli_entropy(dist.click)
    out = out - (dist.key.exp() * dist.key).sum(-1)
    if dist.held is not None:
        out = out + _bernoulli_entropy(dist.held).sum(-1)
    return out


def _bernoulli_kl(p_logit: Tensor, q_logit: Tensor) -> Tensor:
    p = p_logit.sigmoid()
    return p * (F.logsigmoid(p_logit) - F.logsigmoid(q_logit)) + (1 - p) * (
        F.logsigmoid(-p_logit) - F.logsigmoid(-q_logit)
    )


def kl(p: Dist, q: Dist) -> Tensor:
    """KL(p || q) (...) of two factored distributions: the sum of the factors' KLs."""
    out = (p.mouse.exp() * (p.mouse - q.mouse)).sum(-1) + _bernoulli_kl(p.click, q.click)
    out = out + (p.key.exp() * (p.key - q.key)).sum(-1)
    if p.held is not None and q.held is not None:
        out = out + _bernoulli_kl(p.held, q.held).sum(-1)
    return out


# ------------------------------------------------------------------------------------------------ model


def trunk(executor: Executor, inputs: dict[str, Tensor], state: ExecutorState | None) -> Tensor:
    """The Executor up to its heads: (B, T, ·) inputs from `state` -> features (B, T, d_model)."""
    h = executor._embed(inputs["frame"], inputs["goal"], inputs["target"], inputs["approach"])
    for index, layer in enumerate(executor.layers):
        h, _ = layer(h, None if state is None else state.layers[index])
    return h


class ActorCritic(nn.Module):
    """The bundle's Executor (the actor, trained in part or whole) and a value head (the critic)."""

    def __init__(self, executor: Executor, train: str, hidden: int) -> None:
        super().__init__()
        self.executor, self.train_what = executor, train
        d = executor.config.d_model
        self.value = nn.Sequential(
            nn.Linear(d + 1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1)
        )
        self.value_norm = nn.LayerNorm(d)
        for name, param in self.executor.named_parameters():
            param.requires_grad_(self.trains(name))

    def trains(self, name: str) -> bool:
        """Whether Executor parameter `name` trains under this model's choice ("heads" | "executor")."""
        if name.startswith(NEVER):
            return False
        return self.train_what == "executor" or name.startswith(HEADS)

    def policy_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"executor.{n}", p) for n, p in self.executor.named_parameters() if p.requires_grad]

    def value_parameters(self) -> list[tuple[str, nn.Parameter]]:
        named = [
            *self.value.named_parameters(prefix="value"),
            *self.value_norm.named_parameters("value_norm"),
        ]
        return list(named)

    def evaluate(self, inputs: dict[str, Tensor], state: ExecutorState | None) -> tuple[Dist, Tensor]:
        """(B, T, ·) inputs (with "time" (B, T)) from `state` -> the action distribution and values (B, T)."""
        grad = self.train_what == "executor" and torch.is_grad_enabled()
        with torch.set_grad_enabled(grad):
            h = trunk(self.executor, inputs, state)  # (B, T, d_model)
        dist = Dist.of(self.executor._heads(h))
        critic_in = torch.cat([self.value_norm(h.detach()), inputs["time"].unsqueeze(-1)], dim=-1)
        return dist, self.value(critic_in).squeeze(-1)  # (B, T)
