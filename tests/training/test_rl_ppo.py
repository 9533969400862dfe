"""training/rl: the action distribution, GAE, recurrent re-evaluation from stored Mamba states, the KL to
the cloned policy, the noise model and the non-finite guard, on tiny random bundles (make_tiny_bundle)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Categorical, kl_divergence

from bot.perception.pipeline import Perception
from bot.policy.bundle import PolicyBundle
from training.rl.config import NoiseConfig, RLConfig
from training.rl.env import ArenaGame, arena_reward
from training.rl.noise import PerceptionNoise
from training.rl.policy import ActorCritic, Dist, entropy, kl, log_prob, sample
from training.rl.ppo import NonFiniteBatch, actions_of, build_batch, gae, minibatch_loss
from training.rl.rollout import INPUTS, RecordingRunner, play_episode


def random_dist(shape: tuple[int, ...], n_cells: int = 16, n_keys: int = 4, n_held: int = 3) -> Dist:
    g = torch.Generator().manual_seed(1)
    return Dist(
        torch.randn(*shape, n_cells, generator=g).log_softmax(-1),
        torch.randn(*shape, generator=g) * 2,
        torch.randn(*shape, n_keys, generator=g).log_softmax(-1),
        torch.randn(*shape, n_held, generator=g),
    )


def test_log_prob_of_sampled_actions_is_what_torch_distributions_give() -> None:
    dist = random_dist((64,))
    actions = sample(dist, torch.Generator().manual_seed(0))
    expected = (
        Categorical(logits=dist.mouse).log_prob(actions.cell)
        + Bernoulli(logits=dist.click).log_prob(actions.click)
        + Categorical(logits=dist.key).log_prob(actions.key)
        + Bernoulli(logits=dist.held).log_prob(actions.held).sum(-1)
    )
    torch.testing.assert_close(log_prob(dist, actions), expected)
    assert actions.click.unique().tolist() == [0.0, 1.0]  # both outcomes drawn: the click term is exercised


def test_entropy_and_kl_are_what_torch_distributions_give() -> None:
    p, q = random_dist((8,)), random_dist((8,))
    q = Dist(q.mouse.roll(1, -1), -q.click, q.key.roll(1, -1), q.held.flip(-1))
    cat = lambda x: Categorical(logits=x)  # noqa: E731
    bern = lambda x: Bernoulli(logits=x)  # noqa: E731
    want_h = (
        cat(p.mouse).entropy()
        + bern(p.click).entropy()
        + cat(p.key).entropy()
        + bern(p.held).entropy().sum(-1)
    )
    torch.testing.assert_close(entropy(p), want_h)
    want_kl = (
        kl_divergence(cat(p.mouse), cat(q.mouse)) + kl_divergence(bern(p.click), bern(q.click))
        + kl_divergence(cat(p.key), cat(q.key)) + kl_divergence(bern(p.held), bern(q.held)).sum(-1)
    )  # fmt: skip
    torch.testing.assert_close(kl(p, q), want_kl)
    assert (kl(p, q) > 1e-3).all()
    torch.testing.assert_close(kl(p, p), torch.zeros(8), atol=1e-6, rtol=0)


def test_gae_on_a_hand_computed_case() -> None:
    rewards, values = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.5, 0.2, 1.0])
    # gamma 0.9, lambda 0.8; the episode ends after the last frame (value beyond it 0):
    # d2 = 2 - 1 = 1.0                    A2 = 1.0
    # d1 = 0 + 0.9 * 1.0 - 0.2 = 0.7      A1 = 0.7 + 0.72 * 1.0 = 1.42
    # d0 = 1 + 0.9 * 0.2 - 0.5 = 0.68     A0 = 0.68 + 0.72 * 1.42 = 1.7024
    torch.testing.assert_close(gae(rewards, values, 0.9, 0.8), torch.tensor([1.7024, 1.42, 1.0]))


def test_arena_reward_is_credits_less_the_death_weight() -> None:
    before, after = {"credits": 100, "deaths": 0}, {"credits": 290, "deaths": 1}  # +200 kill, -10 % death
    assert arena_reward(before, after, death_penalty=300.0, scale=0.01) == pytest.approx(-1.1)


# ------------------------------------------------------------------------------------------ rollouts


def rollout(folder: Path, train: str = "heads", seconds: float = 2.0, segment: int = 16):
    """The tiny bundle in `folder`, its ActorCritic, a frozen clone and one played episode."""
    cfg = RLConfig(policy=folder, out=folder / "out", train=train, seconds=seconds, segment=segment,
                   width=320, height=180, episodes=1)  # fmt: skip
    bundle = PolicyBundle.load(folder)
    reference = copy.deepcopy(bundle.executor).requires_grad_(False)
    model = ActorCritic(bundle.executor, train, 16)
    game = ArenaGame(bundle.profile, (320, 180), seconds, cfg.noise, (cfg.death_penalty, cfg.reward_scale))
    perception = Perception(bundle.profile, None, (320, 180), game.fps)  # type: ignore[arg-type]
    runner = RecordingRunner(bundle, model.executor, segment, seconds)
    episode = play_episode(game, perception, runner, 20_000, 7)
    game.close()
    return cfg, model, reference, episode


@pytest.mark.parametrize("train", ["heads", "executor"])
def test_reevaluating_segments_from_stored_states_gives_the_rollout_log_probs(
    tmp_path: Path, tiny_bundle, train: str
) -> None:
    cfg, model, reference, episode = rollout(tiny_bundle(tmp_path), train)
    assert len(episode) == 60 and len(episode.states) == 4  # 2 s at 30 fps, segments of 16
    batch = build_batch(model, reference, [episode], cfg)
    with torch.no_grad():
        data, state = batch.take(torch.arange(len(batch)))
        dist, _ = model.evaluate({k: data[k] for k in (*INPUTS, "time")}, state)
        logp = log_prob(dist, actions_of(data))
        valid = data["valid"]
        torch.testing.assert_close(logp[valid], data["logp"][valid], atol=2e-5, rtol=0)  # ratio == 1
        # without the stored states the later segments would be scored from a blank memory, differently
        blank, _ = model.evaluate({k: data[k] for k in (*INPUTS, "time")}, None)
        drift = (log_prob(blank, actions_of(data)) - data["logp"])[1:][valid[1:]].abs().max()
    assert drift > 1e-4


def test_kl_to_the_frozen_clone_is_zero_and_the_ratio_one_before_any_update(
    tmp_path: Path, tiny_bundle
) -> None:
    cfg, model, reference, episode = rollout(tiny_bundle(tmp_path), "executor")
    batch = build_batch(model, reference, [episode], cfg)
    with torch.no_grad():
        _, stats = minibatch_loss(model, *batch.take(torch.arange(len(batch))), cfg, 1.0, True)
    assert abs(stats["kl_ref"]) < 1e-6
    assert abs(stats["approx_kl"]) < 1e-5 and stats["clip_frac"] == 0.0
    with torch.no_grad():  # and the KL does see a change of the policy
        model.executor.keys.bias.add_(torch.tensor([2.0, -1.0, 0.0, 0.5]))
        _, moved = minibatch_loss(model, *batch.take(torch.arange(len(batch))), cfg, 1.0, True)
    assert moved["kl_ref"] > 1e-3


def test_a_non_finite_reward_makes_the_batch_refused(tmp_path: Path, tiny_bundle) -> None:
    cfg, model, reference, episode = rollout(tiny_bundle(tmp_path))
    episode.reward[10] = float("nan")
    with pytest.raises(NonFiniteBatch, match="non-finite reward"):
        build_batch(model, reference, [episode], cfg)


def test_heads_train_only_the_output_layers_and_executor_all_but_the_offsets(
    tmp_path: Path, tiny_bundle
) -> None:
    bundle = PolicyBundle.load(tiny_bundle(tmp_path))
    heads = {n for n, _ in ActorCritic(copy.deepcopy(bundle.executor), "heads", 8).policy_parameters()}
    assert heads == {
        f"executor.{m}.{p}" for m in ("mouse.logits", "click", "keys") for p in ("weight", "bias")
    }
    whole = {n for n, _ in ActorCritic(copy.deepcopy(bundle.executor), "executor", 8).policy_parameters()}
    assert heads < whole and not any("offsets" in n for n in whole) and any("layers.0" in n for n in whole)


# ------------------------------------------------------------------------------------------ noise


def test_noise_off_gives_the_truth_and_the_defaults_drop_and_add_boxes() -> None:
    boxes = np.array([[10, 10, 30, 30], [100, 50, 140, 90]] * 200, np.float32)
    cls = np.array([1, 4] * 200, np.int64)
    truth = PerceptionNoise(NoiseConfig.off(), 6, (320, 180))(boxes, cls, np.random.default_rng(0))
    np.testing.assert_array_equal(truth.xyxy, boxes)
    np.testing.assert_array_equal(truth.cls, cls)
    noisy = PerceptionNoise(NoiseConfig(miss_rate=0.5, false_per_frame=5.0), 6, (320, 180))
    out = noisy(boxes, cls, np.random.default_rng(0))
    assert 150 < len(out) < 260  # ~200 kept of 400, plus ~5 spurious
    assert (out.conf >= 0.1).all() and (out.conf <= 1.0).all()
    again = noisy(boxes, cls, np.random.default_rng(0))
    np.testing.assert_array_equal(out.xyxy, again.xyxy)  # fixed by the generator


def test_after_an_update_rollouts_act_with_the_new_weights(tmp_path: Path, tiny_bundle) -> None:
    """The Executor's fused step caches re-laid-out weights; after AdamW steps it must see the new ones."""
    from training.rl.ppo import ppo_update
    from training.rl.run import build_optimizer

    cfg, model, reference, episode = rollout(tiny_bundle(tmp_path), "executor")
    cfg.lr, cfg.epochs = 1e-2, 2
    optimizer = build_optimizer(model, cfg)
    stats = ppo_update(model, optimizer, build_batch(model, reference, [episode], cfg), cfg, 0.1, True,
                       torch.Generator().manual_seed(0))  # fmt: skip
    assert stats["steps"] > 0
    bundle = PolicyBundle.load(tiny_bundle(tmp_path / "again"))
    game = ArenaGame(
        bundle.profile, (320, 180), cfg.seconds, cfg.noise, (cfg.death_penalty, cfg.reward_scale)
    )
    perception = Perception(bundle.profile, None, (320, 180), game.fps)  # type: ignore[arg-type]
    runner = RecordingRunner(bundle, model.executor, cfg.segment, cfg.seconds)
    fresh = play_episode(game, perception, runner, 20_001, 8)
    batch = build_batch(model, reference, [fresh], cfg)
    with torch.no_grad():
        _, after = minibatch_loss(model, *batch.take(torch.arange(len(batch))), cfg, 1.0, True)
    assert abs(after["approx_kl"]) < 1e-5 and after["clip_frac"] == 0.0  # ratio 1 under the new weights
    assert after["kl_ref"] > 1e-4  # and they are not the clone's
