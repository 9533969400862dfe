"""Episodes played for PPO: the bot's real perception and PolicyRunner, with the Executor's actions sampled
and every input, action, log-probability, reward and segment-start Mamba state kept (`Episode`).

    RLGame ──frame, detections──▶ Perception.step ──▶ RecordingRunner.act ──action──▶ RLGame.step ──reward
                                                       (Strategist, Tactician as PolicyRunner runs them;
                                                        the Executor sampled, recorded)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bot.perception.pipeline import Perception
from bot.perception.state import Observation
from bot.policy.bundle import PolicyBundle
from bot.policy.runner import PolicyRunner, held_mask, snap_to_target, target_row
from models.executor import Executor, ExecutorState
from models.mamba import MambaState
from training.rl.env import RLGame
from training.rl.policy import Dist, log_prob, sample

INPUTS = ("frame", "goal", "target", "approach")


@dataclass
class Episode:
    """One episode's T decisions; arrays over frames, and the Executor state at each segment's start."""

    seed: int
    inputs: dict[str, list] = field(default_factory=lambda: {k: [] for k in (*INPUTS, "time")})
    actions: dict[str, list] = field(default_factory=lambda: {"cell": [], "click": [], "key": [], "held": []})
    logp: list[float] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    states: list[list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=list)  # per segment, per layer
    score: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.logp)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Inputs (T, ·) float32, actions, logp (T,), reward (T,)."""
        out = {k: torch.from_numpy(np.stack(v).astype(np.float32)) for k, v in self.inputs.items()}
        out["cell"] = torch.tensor(self.actions["cell"], dtype=torch.long)
        out["click"] = torch.tensor(self.actions["click"], dtype=torch.float32)
        out["key"] = torch.tensor(self.actions["key"], dtype=torch.long)
        if self.actions["held"]:
            out["held"] = torch.from_numpy(np.stack(self.actions["held"]).astype(np.float32))
        out["logp"] = torch.tensor(self.logp, dtype=torch.float32)
        out["reward"] = torch.tensor(self.reward, dtype=torch.float32)
        return out

    def state_at(self, segment: int) -> ExecutorState:
        """The Executor state recorded before segment `segment`'s first frame, batch of 1."""
        layers = [MambaState(torch.from_numpy(c), torch.from_numpy(s)) for c, s in self.states[segment]]
        return ExecutorState(layers)


class RecordingRunner(PolicyRunner):
    """PolicyRunner whose Executor samples its action and records it (Strategist and Tactician unchanged:
    the deterministic runner's). Lock-step play only: one Executor step per frame."""

    def __init__(self, bundle: PolicyBundle, executor: Executor, segment: int, seconds: float) -> None:
        super().__init__(bundle, sample=False, seed=0)
        self.policy, self.segment, self.seconds = executor, segment, seconds  # policy: never a CUDA graph
        self.episode = Episode(seed=0)

    def begin(self, seed: int, sample_seed: int) -> None:
        """A new episode: reset, and draw this episode's actions from `sample_seed`."""
        self.seed = sample_seed
        self.reset()
        self.episode = Episode(seed=seed)

    def _executor(self, obs: Observation, frames: int) -> tuple[tuple[float, float], bool, int, int]:
        assert frames == 1, f"lock-step play steps the Executor once per frame, got {frames} frames"
        if self.executor_steps % self.segment == 0:
            self.episode.states.append(_copy_state(self._state))
        target = target_row(obs, self.target_id)
        row = {"frame": obs.glob, "goal": self.goal, "target": target, "approach": self.approach}
        x = [torch.from_numpy(np.asarray(row[k], np.float32)).unsqueeze(0) for k in INPUTS]  # (1, ·) each
        out, self._state = self.policy.step(*x, self._state)
        dist = Dist.of(out)
        action = sample(dist, self.generator)
        self._record(row, obs.t, action, float(log_prob(dist, action)[0]))
        mouse = out.mouse_position(action.cell, self.policy.mouse)[0].tolist()
        self.calls["executor"] += 1
        self.executor_steps += 1
        x, y = snap_to_target(tuple(mouse), target, self.snap)
        held = held_mask(action.held.bool()) if action.held is not None else 0
        return (x, y), bool(action.click[0]), int(action.key[0]), held

    def _record(self, row: dict[str, Any], t: float, action: Any, logp: float) -> None:
        ep = self.episode
        for k in INPUTS:
            ep.inputs[k].append(np.array(row[k], np.float32))
        ep.inputs["time"].append(np.float32(t / self.seconds))
        ep.actions["cell"].append(int(action.cell[0]))
        ep.actions["click"].append(float(action.click[0]))
        ep.actions["key"].append(int(action.key[0]))
        if action.held is not None:
            ep.actions["held"].append(action.held[0].numpy().copy())
        ep.logp.append(logp)


def _copy_state(state: ExecutorState) -> list[tuple[np.ndarray, np.ndarray]]:
    """Plain numpy copies (inference-mode tensors cannot enter autograd later)."""
    return [(s.conv.contiguous().numpy().copy(), s.ssm.numpy().copy()) for s in state.layers]


def play_episode(
    game: RLGame, perception: Perception, runner: RecordingRunner, seed: int, sample_seed: int,
    stop: Any = None, tick: Any = None,
) -> Episode | None:  # fmt: skip
    """One lock-step episode of Arena seed `seed`; None when `stop.signum` is set on the way (Ctrl+C).
    `tick(1)` is called after every frame (a progress bar's update)."""
    rng = np.random.default_rng(sample_seed)  # the perception noise
    step = game.reset(seed)
    perception.reset()
    runner.begin(seed, sample_seed)
    cursor, click = (0.5, 0.5), False
    while not step.done:
        if stop is not None and stop.signum is not None:
            return None
        seen = perception.step(step.image, cursor, click, step.t, detections=game.detections(rng))
        action = runner.act(seen).action()
        step = game.step(action)
        runner.episode.reward.append(step.reward)
        cursor, click = (action["mouse"][0], action["mouse"][1]), bool(action["click"])
        if tick is not None:
            tick(1)
    runner.episode.score = dict(step.score)
    return runner.episode
