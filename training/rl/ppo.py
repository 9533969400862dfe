"""GAE and the PPO update over recurrent segments, with a KL penalty to the cloned policy.

episodes ──policy forward from zero state (no grad)──▶ old values ──GAE──▶ advantages, returns
         ──cloned Executor forward──▶ reference distributions
         ──cut into segments of `segment` frames, each with the Mamba state recorded at its start──▶ Batch
Batch ──epochs x shuffled minibatches──▶ clipped surrogate + value MSE + kl_coef KL(pi || clone)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from models.executor import Executor, ExecutorState
from models.mamba import MambaState
from training.rl.config import RLConfig
from training.rl.policy import Actions, ActorCritic, Dist, entropy, kl, log_prob, trunk
from training.rl.rollout import INPUTS, Episode

log = logging.getLogger(__name__)


class NonFiniteBatch(ValueError):
    """A reward, value or advantage of the iteration is NaN or infinite: its update is skipped."""


def gae(rewards: Tensor, values: Tensor, gamma: float, lam: float) -> Tensor:
    """Advantages (T,) of one episode that ends after its last frame (the value beyond it is 0)."""
    adv = torch.zeros_like(rewards)
    running, next_value = 0.0, 0.0
    for t in range(len(rewards) - 1, -1, -1):
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        adv[t], next_value = running, values[t]
    return adv


@dataclass
class Batch:
    """Every segment of an iteration: tensors (S, L, ·), valid (S, L), and per layer the start states."""

    data: dict[str, Tensor]
    states: list[tuple[Tensor, Tensor]]  # per layer: conv (S, d_inner, d_conv), ssm (S, d_inner, d_state)

    def __len__(self) -> int:
        return self.data["valid"].shape[0]

    def take(self, index: Tensor) -> tuple[dict[str, Tensor], ExecutorState]:
        data = {k: v[index] for k, v in self.data.items()}
        return data, ExecutorState([MambaState(c[index], s[index]) for c, s in self.states])


def actions_of(data: dict[str, Tensor]) -> Actions:
    return Actions(data["cell"], data["click"], data["key"], data.get("held"))


@torch.no_grad()
def episode_targets(
    model: ActorCritic, reference: Executor, ep: dict[str, Tensor], cfg: RLConfig
) -> dict[str, Tensor]:
    """Old values, advantages, returns and the reference distribution of one episode's frames (T, ·)."""
    inputs = {k: ep[k].unsqueeze(0) for k in (*INPUTS, "time")}  # (1, T, ·)
    _, values = model.evaluate(inputs, None)
    values = values[0]  # (T,)
    ref = Dist.of(reference._heads(trunk(reference, inputs, None)))
    adv = gae(ep["reward"], values, cfg.gamma, cfg.gae_lambda)
    out = {"value": values, "adv": adv, "ret": adv + values}
    out |= {"ref_mouse": ref.mouse[0], "ref_click": ref.click[0], "ref_key": ref.key[0]}
    if ref.held is not None:
        out["ref_held"] = ref.held[0]
    return out


def _segments(x: Tensor, length: int) -> Tensor:
    """(T, ·) -> (ceil(T / length), length, ·), zero-padded at the end."""
    n = math.ceil(x.shape[0] / length)
    pad = torch.zeros((n * length - x.shape[0], *x.shape[1:]), dtype=x.dtype)
    return torch.cat([x, pad]).view(n, length, *x.shape[1:])


def build_batch(model: ActorCritic, reference: Executor, episodes: list[Episode], cfg: RLConfig) -> Batch:
    """The iteration's Batch; NonFiniteBatch when a reward, value or advantage is not finite."""
    parts: dict[str, list[Tensor]] = {}
    states: list[list[tuple[Tensor, Tensor]]] = []
    for episode in episodes:
        ep = episode.tensors()
        ep |= episode_targets(model, reference, ep, cfg)
        for name in ("reward", "value", "adv"):
            if not torch.isfinite(ep[name]).all():
                raise NonFiniteBatch(f"non-finite {name} in episode seed {episode.seed}")
        ep["valid"] = torch.ones(len(episode), dtype=torch.bool)
        for k, v in ep.items():
            parts.setdefault(k, []).append(_segments(v, cfg.segment))
        states += [[(torch.from_numpy(c), torch.from_numpy(s)) for c, s in seg] for seg in episode.states]
    data = {k: torch.cat(v) for k, v in parts.items()}
    valid = data["valid"]
    adv = data["adv"][valid]
    data["adv"] = (data["adv"] - adv.mean()) / (adv.std() + 1e-8)
    per_layer = [
        (torch.cat([s[i][0] for s in states]), torch.cat([s[i][1] for s in states]))
        for i in range(len(states[0]))
    ]
    return Batch(data, per_layer)


def _masked_mean(x: Tensor, valid: Tensor) -> Tensor:
    return (x * valid).sum() / valid.sum().clamp_min(1)


def minibatch_loss(
    model: ActorCritic, data: dict[str, Tensor], state: ExecutorState, cfg: RLConfig, kl_coef: float,
    policy_on: bool,
) -> tuple[Tensor, dict[str, float]]:  # fmt: skip
    """The loss of one minibatch of segments and its parts (floats) for the logs."""
    valid = data["valid"].float()  # (B, L)
    dist, values = model.evaluate({k: data[k] for k in (*INPUTS, "time")}, state)
    value_loss = 0.5 * _masked_mean((values - data["ret"]) ** 2, valid)
    logp = log_prob(dist, actions_of(data))
    ratio = (logp - data["logp"]).exp()
    surrogate = torch.min(ratio * data["adv"], ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * data["adv"])
    policy_loss = -_masked_mean(surrogate, valid)
    ref = Dist(data["ref_mouse"], data["ref_click"], data["ref_key"], data.get("ref_held"))
    kl_ref = _masked_mean(kl(dist, ref), valid)
    ent = _masked_mean(entropy(dist), valid)
    loss = value_loss
    if policy_on:
        loss = loss + policy_loss + kl_coef * kl_ref - cfg.ent_coef * ent
    with torch.no_grad():
        stats = {
            "value_loss": value_loss.item(), "policy_loss": policy_loss.item(), "kl_ref": kl_ref.item(),
            "entropy": ent.item(), "approx_kl": _masked_mean(data["logp"] - logp, valid).item(),
            "clip_frac": _masked_mean(((ratio - 1).abs() > cfg.clip).float(), valid).item(),
        }  # fmt: skip
    return loss, stats


def ppo_update(
    model: ActorCritic, optimizer: torch.optim.Optimizer, batch: Batch, cfg: RLConfig, kl_coef: float,
    policy_on: bool, generator: torch.Generator,
) -> dict[str, float]:  # fmt: skip
    """`cfg.epochs` passes of shuffled minibatches; non-finite losses or gradients skip their step."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    totals: dict[str, float] = {}
    steps = skipped = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(batch), generator=generator)
        for index in order.split(cfg.minibatch):
            loss, stats = minibatch_loss(model, *batch.take(index), cfg, kl_coef, policy_on)
            optimizer.zero_grad(set_to_none=True)
            if torch.isfinite(loss):
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            if not torch.isfinite(loss) or not torch.isfinite(norm):
                skipped += 1
                optimizer.zero_grad(set_to_none=True)
                continue
            optimizer.step()
            steps += 1
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + v
    means = {k: v / max(steps, 1) for k, v in totals.items()}
    return {**means, "steps": float(steps), "skipped_steps": float(skipped)}
