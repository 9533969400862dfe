"""RLConfig and NoiseConfig: every setting of `pilot train rl`, typed, defaulted and validated on
construction with the flag's name ("--lr: expected > 0, got -1")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from validation import ConfigError

# Seeds below this are taken: demos 0.., eval 1000.., held-out 2000.., tuning 3000.., DAgger 5000..
FIRST_TRAINING_SEED = 10_000


def _flag(prefix: str, name: str) -> str:
    return f"--{prefix}{name.replace('_', '-')}"


def _check(owner: object, name: str, ok: bool, expected: str, prefix: str = "") -> None:
    """ConfigError "--flag: expected X, got V" unless `ok`."""
    if not ok:
        raise ConfigError(f"{_flag(prefix, name)}: expected {expected}, got {getattr(owner, name)!r}")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(owner: object, names: tuple[str, ...], prefix: str = "") -> None:
    for name in names:
        value = getattr(owner, name)
        _check(owner, name, _number(value) and value > 0, "> 0", prefix)


def _unit(owner: object, names: tuple[str, ...], prefix: str = "") -> None:
    for name in names:
        value = getattr(owner, name)
        _check(owner, name, _number(value) and 0 <= value <= 1, "a number in [0, 1]", prefix)


def _non_negative(owner: object, names: tuple[str, ...], prefix: str = "") -> None:
    for name in names:
        value = getattr(owner, name)
        _check(owner, name, _number(value) and value >= 0, ">= 0", prefix)


@dataclass
class NoiseConfig:
    """Perception noise on ground-truth boxes; defaults measured on the shipped Arena detector
    (benchmarks/bench_rl_noise.py, docs/notes/training.md)."""

    miss_rate: float = 0.025  # probability that a visible object is not detected in a frame
    jitter: float = 0.06  # std of box centre and log-size error, fraction of the box's size
    false_per_frame: float = 0.2  # mean spurious detections per frame (Poisson)
    class_flip: float = 0.002  # probability that a detection carries another class
    conf_mean: float = 0.84  # mean confidence of a true detection
    conf_std: float = 0.15  # its std (clipped to [0.1, 1])
    false_conf_max: float = 0.55  # spurious detections' confidence, uniform in [0.1, this]

    def __post_init__(self) -> None:
        _unit(self, ("miss_rate", "class_flip", "conf_mean", "false_conf_max"), "noise.")
        _non_negative(self, ("jitter", "false_per_frame", "conf_std"), "noise.")
        _check(self, "false_conf_max", self.false_conf_max >= 0.1, ">= 0.1", "noise.")

    @classmethod
    def off(cls) -> NoiseConfig:
        """Perfect perception: the ground truth as detections."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.9, 0.0, 0.1)


@dataclass
class RLConfig:
    """Fine-tune a policy bundle's Executor in the Arena with PPO; writes a complete bundle to --out."""

    policy: Path = Path("data/pretrained/arena")  # the cloned policy bundle (the KL reference)
    out: Path = Path("data/policies/arena-rl")  # the new bundle; a rerun with the same --out resumes
    train: Literal["heads", "executor"] = "heads"  # what trains: the Executor's output heads, or all of it
    iterations: int = 60  # PPO iterations (rollout + update)
    episodes: int = 2  # episodes played per iteration
    seconds: float = 60.0  # game seconds per episode
    segment: int = 64  # frames per recurrent segment (truncated back-propagation length)
    minibatch: int = 8  # segments per minibatch
    epochs: int = 4  # passes over an iteration's segments
    lr: float = 3e-4  # AdamW learning rate of the policy parameters
    value_lr: float = 1e-3  # AdamW learning rate of the value head
    gamma: float = 0.995  # discount per frame (horizon ~200 frames = 6.7 s at 30 fps)
    gae_lambda: float = 0.95  # GAE lambda
    clip: float = 0.2  # PPO ratio clip
    ent_coef: float = 0.0  # entropy bonus weight
    max_grad_norm: float = 0.5  # global gradient norm clip
    kl_coef: float = 0.2  # initial weight of KL(policy || cloned policy) per frame
    kl_decay: float = 0.95  # the KL weight is multiplied by this after each PPO iteration
    kl_min: float = 0.0  # floor of the KL weight
    critic_warmup: int = 3  # first iterations train only the value head (the policy stays the clone's)
    value_hidden: int = 128  # width of the value head's hidden layer
    death_penalty: float = 300.0  # credits subtracted per death (the game itself also takes 10 % of credits)
    reward_scale: float = 0.01  # reward = scale * (credits gained - death_penalty * deaths)
    seed: int = 0  # seed of action sampling, noise and minibatch order
    seed_base: int = 20_000  # first training episode's Arena seed; disjoint from eval seeds (1000..)
    width: int = 0  # px, frame width; 0 = the bundle's (its detector's frame size, else the profile's)
    height: int = 0  # px, frame height; 0 = the bundle's
    threads: int = 1  # torch threads
    max_skipped: int = 3  # consecutive skipped updates (non-finite reward/advantage) before the run stops
    tensorboard: bool = True  # TensorBoard scalars in OUT/runs/rl/tb
    progress: bool = True  # progress bar with the running score
    noise: NoiseConfig = field(default_factory=NoiseConfig)

    def __post_init__(self) -> None:
        self.policy, self.out = Path(self.policy), Path(self.out)
        _check(self, "out", self.out.resolve() != self.policy.resolve(), "a folder other than --policy")
        for name in ("iterations", "episodes", "segment", "minibatch", "epochs", "value_hidden"):
            value = getattr(self, name)
            _check(self, name, isinstance(value, int) and not isinstance(value, bool) and value >= 1, ">= 1")
        for name in ("critic_warmup", "max_skipped", "threads", "width", "height", "seed"):
            value = getattr(self, name)
            _check(self, name, isinstance(value, int) and not isinstance(value, bool) and value >= 0, ">= 0")
        _check(self, "seed_base", self.seed_base >= FIRST_TRAINING_SEED, f">= {FIRST_TRAINING_SEED}")
        _positive(self, ("seconds", "lr", "value_lr", "clip", "max_grad_norm", "reward_scale"))
        _unit(self, ("gamma", "gae_lambda", "kl_decay"))
        _non_negative(self, ("ent_coef", "kl_coef", "kl_min", "death_penalty"))
        _check(self, "width", (self.width == 0) == (self.height == 0), "--width and --height both set or 0")
        _check(self, "width", self.width % 2 == 0 and self.height % 2 == 0, "even numbers")

    def next_kl(self, kl: float, iteration: int) -> float:
        """The KL weight after iteration `iteration` (0-based) ends: decayed, except in the critic warm-up."""
        return kl if iteration < self.critic_warmup else max(self.kl_min, kl * self.kl_decay)

    def episode_seeds(self, iteration: int) -> list[int]:
        """The Arena seeds of one iteration's episodes."""
        first = self.seed_base + iteration * self.episodes
        return list(range(first, first + self.episodes))
