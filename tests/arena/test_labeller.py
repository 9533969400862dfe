"""Tests of StateLabeller: the expert's answer on states another player steers (the DAgger labels)."""

from __future__ import annotations

import numpy as np
import pytest

from arena import spec
from arena.baselines import RandomPolicy, RandomPolicyConfig
from arena.expert import ExpertConfig
from arena.expert.labeller import StateLabeller
from arena.rollout import play_episode
from tests.arena.test_expert import CX, CY, H, W, make_info, obj

ATTACK = spec.KEYS.index("attack")
NOTHING = {"mouse": np.array([0.5, 0.5], np.float32), "click": 0, "key": 0}


class LabelsPlayed:
    """A player that does exactly what the labels say (cursor on the aim point, click when one is wanted)."""

    def __init__(self, cfg: ExpertConfig) -> None:
        self.labeller = StateLabeller(cfg)

    def reset(self, seed: int) -> None:
        self.labeller.reset(seed)

    def act(self, info: dict) -> tuple[dict, dict]:
        action, labels = self.labeller.label(info)
        self.labeller.observe(action)
        return action, labels


def _sim_env():
    env_module = pytest.importorskip("arena.env")
    return env_module.ArenaEnv(env_module.ArenaConfig(render=False, width=640, height=360, zoom=0.5))


def test_attack_is_asked_at_once_when_the_game_shows_it_off_and_not_when_on():
    scout = obj(5, "npc_scout", CX + 150, CY, sel=True)
    labeller = StateLabeller(ExpertConfig(seed=0))
    off = [labeller.label(make_info([scout], t=i / 30, selected=5))[0]["key"] for i in range(3)]
    assert off[0] == ATTACK  # no reaction delay: the answer to this state is "attack now"
    assert off[1:] == [0, 0]  # and not again within the expert's 1 s repeat
    on = make_info([scout], t=2.0, selected=5)
    on["player"]["attack_on"] = True
    assert labeller.label(on)[0]["key"] == 0


def _attack_off(t: float) -> dict:
    """A selected scout in range, the HUD showing the attack toggle off."""
    info = make_info([obj(5, "npc_scout", CX + 150, CY, sel=True)], t=t, selected=5)
    info["player"]["attack_on"] = False
    return info


def test_a_key_the_player_tapped_is_not_asked_again_at_once():
    labeller = StateLabeller(ExpertConfig(seed=0))
    labeller.label(_attack_off(0.0))
    labeller.observe({"mouse": [0.5, 0.5], "click": 0, "key": ATTACK})
    assert labeller.label(_attack_off(0.5))[0]["key"] == 0
    assert labeller.label(_attack_off(1.2))[0]["key"] == ATTACK  # the tap did not switch it on: again


def test_selecting_an_enemy_labels_a_click_on_it():
    scout = obj(5, "npc_scout", CX + 150, CY)
    action, labels = StateLabeller(ExpertConfig(seed=0)).label(make_info([scout], t=0.0))
    assert labels == {"mode": "FIGHT", "target_id": 5}
    assert action["click"] == 1
    x, y = action["mouse"] * [W, H]
    assert abs(x - (CX + 150)) < 20 and abs(y - CY) < 20


def test_move_memory_comes_from_the_clicks_that_reached_the_game():
    labeller = StateLabeller(ExpertConfig(seed=0))
    labeller.label(make_info([], t=0.0))
    labeller.observe({"mouse": [0.75, 0.5], "click": 1, "key": 0})  # a click on empty space: a move order
    mem = labeller.expert.mem
    assert mem.move_click_t == 0.0
    np.testing.assert_allclose(mem.move_dest, labeller.scene.to_world(np.array([0.75 * W, 0.5 * H])))
    box = obj(9, "bonus_box", CX - 100, CY, size=20)
    labeller.label(make_info([box], t=0.1))
    labeller.observe({"mouse": [(CX - 100) / W, CY / H], "click": 1, "key": 0})
    assert mem.loot_click == {9: 0.1}


def test_labels_on_a_player_that_does_nothing_keep_asking():
    """Nothing reached the game, so the state still needs the click: the labels keep asking for it (the
    expert's memory is written only by the clicks that reached the game)."""
    env = _sim_env()
    labeller = StateLabeller(ExpertConfig.matching(env.config, seed=1))
    _, info = env.reset(seed=1)
    asked = 0
    for _ in range(300):
        asked += labeller.label(info)[0]["click"]
        labeller.observe(NOTHING)
        _, _, _, _, info = env.step(NOTHING)
    assert asked >= 250, asked
    assert labeller.expert.mem.move_dest is None


def test_playing_the_labels_plays_like_the_expert():
    """The labels are sound answers to the state: a player that follows them (no hand in between) scores
    like the expert and far above random."""
    env = _sim_env()
    labels = LabelsPlayed(ExpertConfig.matching(env.config))
    rand = RandomPolicy(RandomPolicyConfig())
    ours = [play_episode(env, labels, seed, 60.0)["score"] for seed in range(3)]
    theirs = [play_episode(env, rand, seed, 60.0)["score"] for seed in range(3)]
    assert np.mean([s["credits"] for s in ours]) > max(5 * np.mean([s["credits"] for s in theirs]), 600.0)
    assert all(sum(s["kills"].values()) >= 1 for s in ours), ours
    assert sum(s["deaths"] for s in ours) <= 1, ours
