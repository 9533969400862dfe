"""The live PolicyRunner (bot/policy/runner.py): it feeds each model exactly what training builds
(training/tasks.py) from the same perceived episode, at the Tactician rate and aim snap it is given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bot.perception.pipeline import PerceptionStep
from bot.perception.state import GLOB, OBS_SPEC, Observation
from bot.policy.bundle import PolicyBundle
from bot.policy.runner import MAX_CATCH_UP, Decision, PolicyRunner
from bot.recordings.episode import find_episodes
from bot.recordings.perceived import load_perception
from models.tactician import TacticianOutput

F_OBJ, F_GLOB, N_MAX = len(OBS_SPEC.obj_features), len(OBS_SPEC.glob_features), OBS_SPEC.n_max


# ------------------------------------------------------------------------------------------------ runner

RUNNER_SEED = 1  # random tiny models whose Tactician picks objects on the `perceived` episode, so the target
# features' path is compared too (with seed 0 it always answered "none" there)


@pytest.mark.parametrize("seed", [RUNNER_SEED])
def test_runner_reproduces_the_offline_pipeline(
    perceived: Path, tmp_path: Path, tiny_bundle, seed: int
) -> None:
    """Live stepping over a perceived episode = training's strategist_goals + tactician_context + forward."""
    from training.datasets import load_episode
    from training.labels import FileLabels
    from training.tasks import strategist_goals, tactician_context

    bundle = PolicyBundle.load(tiny_bundle(tmp_path / "bundle", seed=RUNNER_SEED))
    path = find_episodes(perceived)[0]
    ep = load_episode(path, FileLabels("expert"))
    ep.extra = {"goal": strategist_goals(bundle.strategist, ep)}
    tactician_context(bundle.tactician, ep, hz=10.0)
    with torch.no_grad():
        inputs = [torch.from_numpy(a).unsqueeze(0) for a in (ep.glob, ep.extra["goal"], ep.extra["target"],
                                                             ep.extra["approach"])]  # fmt: skip
        offline = bundle.executor.decode(bundle.executor(*inputs))

    runner = PolicyRunner(bundle, tactician_hz=10.0, snap=0.0)  # the models alone, no aim refinement
    seen = {"goal": [], "target": [], "approach": []}
    step_executor = bundle.executor.step

    def spy(frame, goal, target, approach, state=None):
        for name, value in (("goal", goal), ("target", target), ("approach", approach)):
            seen[name].append(value[0].numpy().copy())
        return step_executor(frame, goal, target, approach, state)

    bundle.executor.step = spy
    decisions = [runner.act(step) for step in load_perception(path).replay()]
    for name in seen:
        np.testing.assert_allclose(np.stack(seen[name]), ep.extra[name], atol=1e-5, err_msg=name)
    mouse = np.array([d.mouse for d in decisions])
    np.testing.assert_allclose(mouse, offline.mouse[0].numpy(), atol=1e-5)
    np.testing.assert_array_equal([d.click for d in decisions], offline.click[0].numpy())
    np.testing.assert_array_equal([d.key for d in decisions], offline.key[0].numpy())
    assert any(d.target_id > 0 for d in decisions), "the random Tactician should pick some object"


def test_rates_and_modes(perceived: Path, bundle_dir: Path) -> None:
    bundle = PolicyBundle.load(bundle_dir)
    p = load_perception(find_episodes(perceived)[0])
    runner = PolicyRunner(bundle, tactician_hz=10.0)
    steps = list(p.replay())
    decisions = [runner.act(step) for step in steps]
    first = next(i for i, s in enumerate(steps) if s.summary is not None)
    assert all(d.mode == "" for d in decisions[:first]) and decisions[first].mode in bundle.modes
    np.testing.assert_allclose(decisions[0].mode_probs, np.full(len(bundle.modes), 1 / len(bundle.modes)))
    assert runner.calls["strategist"] == sum(s.summary is not None for s in steps) == len(p["summary"]) - 1
    assert runner.calls["tactician"] == len(range(0, len(steps), 3))  # 30 fps, 10 Hz: every 3rd frame
    assert runner.calls["executor"] == len(steps)
    idle = [d.ms["strategist"] for d, s in zip(decisions, steps) if s.summary is None]
    assert idle == [0.0] * len(idle)  # a stage that did not run reports 0 ms
    runner.reset()
    assert runner.calls == {"strategist": 0, "tactician": 0, "executor": 0} and runner.mode == ""
    again = [runner.act(step) for step in steps]
    assert [d.mouse for d in again] == [d.mouse for d in decisions]


def _observation(ids: list[int], t: float) -> Observation:
    """Objects with track ids `ids` in slots 0..; feature 0 (x) = track id / 100, so a row names its track."""
    objects = np.zeros((N_MAX, F_OBJ), np.float32)
    mask, track = np.zeros(N_MAX, bool), np.zeros(N_MAX, np.int64)
    for slot, tid in enumerate(ids):
        objects[slot, 0], objects[slot, 1], mask[slot], track[slot] = tid / 100, slot, True, tid
    return Observation(objects, mask, track, np.where(mask, 1, -1), np.zeros(F_GLOB, np.float32), t)


class PickLargestX(torch.nn.Module):
    """A Tactician stand-in that picks the object with the largest feature 0."""

    config = type("C", (), {"approach_dim": 2})()

    def forward(self, objects, valid, goal, context):
        logits = torch.full((1, 1 + N_MAX), float("-inf"))
        logits[0, 0] = 0.0
        logits[0, 1:][valid[0]] = objects[0, valid[0], 0] * 100
        return TacticianOutput(logits, torch.tensor([[0.25, -0.5]]), torch.zeros(1, 4))


def test_target_follows_the_track_id_when_slots_reorder(bundle_dir: Path) -> None:
    bundle = PolicyBundle.load(bundle_dir)
    bundle.tactician = PickLargestX()
    targets = []
    step_executor = bundle.executor.step

    def spy(frame, goal, target, approach, state=None):
        targets.append(target[0].numpy().copy())
        return step_executor(frame, goal, target, approach, state)

    bundle.executor.step = spy
    runner = PolicyRunner(bundle, tactician_hz=1.0)  # one decision at t = 0, then held for 1 s
    frames = [[9, 3, 5], [3, 5, 9], [5, 3], [9, 5]]  # track 9 moves slots, leaves, comes back
    decisions = [
        runner.act(PerceptionStep(_observation(ids, i / 30), None, None, None, None))
        for i, ids in enumerate(frames)
    ]  # type: ignore[arg-type]
    assert runner.calls["tactician"] == 1
    assert [d.target_id for d in decisions] == [9, 9, 9, 9]
    assert [float(t[0]) for t in targets] == pytest.approx([0.09, 0.09, 0.0, 0.09])  # track 9's row, or zeros
    assert [float(t[1]) for t in targets] == [0.0, 2.0, 0.0, 0.0]  # its slot in that frame
    np.testing.assert_allclose(decisions[-1].approach, [0.25, -0.5])


def test_tactician_grid_skips_missed_points(bundle_dir: Path) -> None:
    runner = PolicyRunner(PolicyBundle.load(bundle_dir), tactician_hz=10.0)
    due = [runner._tactician_due(t) for t in (5.0, 5.05, 5.1, 5.12, 5.35, 5.38, 5.4)]
    assert due == [True, False, True, False, True, False, True]


def test_a_loop_that_falls_behind_still_steps_the_executor_once_a_frame(bundle_dir: Path) -> None:
    bundle = PolicyBundle.load(bundle_dir)
    seen: list[np.ndarray] = []
    step_executor = bundle.executor.step

    def spy(frame, goal, target, approach, state=None):
        seen.append(frame[0].numpy().copy())
        return step_executor(frame, goal, target, approach, state)

    bundle.executor.step = spy
    runner = PolicyRunner(bundle)
    fps = bundle.profile.fps  # 30: the rate of the episodes the Executor learned from
    observations = []
    for frame in (0, 1, 4, 5, 105):  # full rate, 2 frames dropped, full rate, a 3.3 s stall
        obs = _observation([7], frame / fps)
        obs.glob[GLOB["dt"]], obs.glob[GLOB["click"]], obs.glob[GLOB["hp"]] = 0.1, 1.0, frame / 1000
        observations.append(obs)
        runner.act(PerceptionStep(obs, None, None, None, None))  # type: ignore[arg-type]
    assert runner.calls["executor"] == 5 and runner.executor_steps == 1 + 1 + 3 + 1 + MAX_CATCH_UP
    assert len(seen) == runner.executor_steps
    # on time: the observation as perceived; late: the missed frames are this one without its click, then
    # this one, all with dt of one frame, as every frame in training
    np.testing.assert_array_equal(seen[1], observations[1].glob)
    missed, current = seen[2:4], seen[4]
    assert [m[GLOB["click"]] for m in missed] == [0.0, 0.0] and current[GLOB["click"]] == 1.0
    assert all(g[GLOB["dt"]] == pytest.approx(1 / fps) for g in [*missed, current])
    assert all(g[GLOB["hp"]] == pytest.approx(0.004) for g in [*missed, current])
    assert observations[2].glob[GLOB["dt"]] == pytest.approx(0.1), "the Observation itself is not changed"
    runner.reset()
    assert runner.executor_steps == 0


def test_decision_action_and_sampling(perceived: Path, bundle_dir: Path) -> None:
    bundle = PolicyBundle.load(bundle_dir)
    steps = list(load_perception(find_episodes(perceived)[1]).replay())[:60]
    runs = []
    for _ in range(2):
        runner = PolicyRunner(bundle, sample=True, seed=3)
        runs.append([runner.act(step).action() for step in steps])
    assert runs[0] == runs[1]  # seeded
    action = runs[0][0]
    assert set(action) == {"mouse", "click", "key"} and action["click"] in (0, 1)
    assert all(0.0 <= v <= 1.0 for a in runs[0] for v in a["mouse"])
    assert 0 <= action["key"] < len(bundle.profile.keys)
    d = Decision((1.2, -0.1), True, 2, "", np.zeros(5), 0, np.zeros(2), {})
    assert d.action() == {"mouse": [1.0, 0.0], "click": 1, "key": 2}


def test_bad_tactician_hz(bundle_dir: Path) -> None:
    with pytest.raises(ValueError, match="tactician_hz: expected a number > 0"):
        PolicyRunner(PolicyBundle.load(bundle_dir), tactician_hz=0)


def test_runners_sharing_a_bundle_keep_their_own_state(perceived: Path, bundle_dir: Path) -> None:
    bundle = PolicyBundle.load(bundle_dir)
    a_steps, b_steps = (list(load_perception(p).replay())[:45] for p in find_episodes(perceived)[:2])
    alone = []
    for steps in (a_steps, b_steps):
        runner = PolicyRunner(bundle)
        alone.append([runner.act(s).mouse for s in steps])
    a, b = PolicyRunner(bundle), PolicyRunner(bundle)
    mixed = [(a.act(sa).mouse, b.act(sb).mouse) for sa, sb in zip(a_steps, b_steps)]
    assert [m[0] for m in mixed] == alone[0] and [m[1] for m in mixed] == alone[1]


def test_snap_aims_at_a_chosen_enemy_or_loot_only_when_the_point_is_near_it() -> None:
    from bot.policy.runner import OBJ_INDEX, aimed_size, snap_to_target

    def target(role: str) -> np.ndarray:
        row = np.zeros(F_OBJ, np.float32)
        for name, value in {"x": 0.5, "y": 0.4, "w": 0.02, "h": 0.03, role: 1.0}.items():
            row[OBJ_INDEX[name]] = value
        return row

    enemy = target("is_enemy")
    assert snap_to_target((0.52, 0.43), enemy, 2.0) == pytest.approx((0.5, 0.4))
    assert snap_to_target((0.52, 0.43), target("is_loot"), 2.0) == pytest.approx((0.5, 0.4))
    assert snap_to_target((0.6, 0.4), enemy, 2.0) == pytest.approx((0.6, 0.4))  # aims elsewhere: kept
    assert snap_to_target((0.52, 0.43), enemy, 0.0) == pytest.approx((0.52, 0.43))  # off
    assert snap_to_target((0.52, 0.43), np.zeros(F_OBJ, np.float32), 2.0) == pytest.approx((0.52, 0.43))
    # a portal (or neutral object) is a place, not something to click on: the player starts on the portal,
    # and snapping there put every click on the ship itself
    assert snap_to_target((0.52, 0.43), target("is_portal"), 2.0) == pytest.approx((0.52, 0.43))
    assert snap_to_target((0.52, 0.43), target("is_neutral"), 2.0) == pytest.approx((0.52, 0.43))
    # what a click at the point hits, for the hand (it may click once the cursor is on it)
    assert aimed_size((0.505, 0.41), enemy) == pytest.approx((0.02, 0.03))
    assert aimed_size((0.5, 0.4), target("is_loot")) == pytest.approx((0.02, 0.03))
    assert aimed_size((0.52, 0.4), enemy) == (0.0, 0.0)  # off its box: a place
    assert aimed_size((0.5, 0.4), target("is_portal")) == (0.0, 0.0)
    assert aimed_size((0.5, 0.4), np.zeros(F_OBJ, np.float32)) == (0.0, 0.0)


def test_a_game_without_mouse_buttons_never_gets_a_click(
    perceived: Path, tiny_bundle, tmp_path: Path
) -> None:
    """Naev's profile says `clicks: false` (a click hails the targeted ship and pauses the game): however sure
    the Executor's click head is, the runner clicks there and only there."""
    clicked = {}
    for game in ("arena", "naev"):
        bundle = PolicyBundle.load(tiny_bundle(tmp_path / game, game=game))
        with torch.no_grad():
            bundle.executor.click.bias.fill_(50.0)  # p(click) ~ 1 on every frame
        runner = PolicyRunner(bundle)
        episode = load_perception(find_episodes(perceived)[0])
        clicked[game] = sum(runner.act(step).click for step in episode.replay())
    assert clicked["arena"] > 100 and clicked["naev"] == 0, clicked
