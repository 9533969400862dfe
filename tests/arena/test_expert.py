"""Tests of the scripted expert: decisions on hand-made `info`, the human-like hand, play in ArenaEnv."""

from __future__ import annotations

import numpy as np
import pytest

from arena import spec
from arena.baselines import RandomPolicy, RandomPolicyConfig
from arena.expert import Cursor, Expert, ExpertConfig, Intent, Keyboard
from arena.rollout import play_episode

W, H = spec.DEFAULT_WIDTH, spec.DEFAULT_HEIGHT
CX, CY = W / 2, H / 2


# ---------------------------------------------------------------------------------------- helpers


def obj(
    obj_id: int, cls: str, x: float, y: float, size: float = 40.0, hp: float = 100.0, aggro=False, sel=False
):
    box = [x - size / 2, y - size / 2, x + size / 2, y + size / 2]
    hp_max = 100.0 if cls in spec.NPC_CLASSES else 0.0
    return {
        "id": obj_id,
        "cls": cls,
        "box": box,
        "hp": hp if hp_max else 0.0,
        "hp_max": hp_max,
        "aggro": aggro,
        "selected": sel,
    }


def make_info(objects=(), hp=1.0, shield=1.0, t=0.0, selected=None, attacking=False, pos=(2000.0, 2000.0)):
    """A minimal but complete spec.py info dict with the player's ship at the screen centre."""
    return {
        "frame": int(round(t * 30)),
        "time": t,
        "cursor": [CX, CY],
        "objects": [obj(0, "player", CX, CY), *objects],
        "player": {
            "hp": hp * 1000,
            "hp_max": 1000.0,
            "shield": shield * 500,
            "shield_max": 500.0,
            "pos": list(pos),
            "vel": [0.0, 0.0],
            "selected": selected,
            "attacking": attacking,
            "cooldowns": {"repair": 0.0, "boost": 0.0},
            "in_safe_zone": False,
        },
        "score": {"credits": 0, "kills": {}, "boxes": 0, "deaths": 0},
        "events": [],
        "hud": {"hp_frac": hp, "shield_frac": shield, "credits": 0},
    }


def run_frames(expert: Expert, info_at, seconds: float, fps: float = 30.0):
    """Feed `info_at(t)` for `seconds`; returns the list of (t, action, labels)."""
    out = []
    for i in range(int(seconds * fps)):
        t = i / fps
        action, labels = expert.act(info_at(t))
        out.append((t, action, labels))
    return out


def mode_after(objects, seconds=0.5, **kw) -> str:
    expert = Expert(ExpertConfig(seed=1))
    return run_frames(expert, lambda t: make_info(objects, t=t, **kw), seconds)[-1][2]["mode"]


# ---------------------------------------------------------------------------------------- modes


def test_low_hp_flees():
    assert mode_after([obj(5, "npc_scout", CX + 200, CY)], hp=0.2) == "FLEE"


def test_boss_visible_is_cautious():
    assert mode_after([obj(7, "npc_boss", CX + 500, CY, size=90)]) == "CAUTIOUS"


def test_objects_mostly_under_the_hud_are_out_of_view():
    x1, y1, x2, y2 = spec.HUD_MINIMAP
    under = (W * (x1 + x2) / 2, H * (y1 + y2) / 2)  # a boss sitting under the minimap, as the bot sees it
    assert mode_after([obj(7, "npc_boss", *under, size=90)]) == "EXPLORE"
    old_expert = Expert(ExpertConfig(seed=1, hud_hides=False))  # the expert that saw through the panels
    info = lambda t: make_info([obj(7, "npc_boss", *under, size=90)], t=t)  # noqa: E731
    assert run_frames(old_expert, info, 0.5)[-1][2]["mode"] == "CAUTIOUS"
    # a third of it under the panel (left of the minimap): still in view
    left_edge = W * x1
    assert mode_after([obj(7, "npc_boss", left_edge - 15, H * (y1 + y2) / 2, size=90)]) == "CAUTIOUS"
    # a box under the status panel is not looted
    sx1, sy1, sx2, sy2 = spec.HUD_PANEL
    assert mode_after([obj(9, "bonus_box", W * (sx1 + sx2) / 2, H * (sy1 + sy2) / 2, size=20)]) == "EXPLORE"


def test_boss_attacking_flees():
    assert mode_after([obj(7, "npc_boss", CX + 300, CY, size=90, aggro=True)]) == "FLEE"


def test_several_aggressive_raiders_at_medium_hp_are_cautious():
    raiders = [obj(i, "npc_raider", CX + 150 * i, CY - 100, aggro=True) for i in (1, 2)]
    assert mode_after(raiders, hp=0.5) == "CAUTIOUS"
    assert mode_after(raiders, hp=0.95) == "FIGHT"


def test_box_only_loots():
    assert mode_after([obj(9, "bonus_box", CX - 200, CY + 50, size=20)]) == "LOOT"


def test_npc_fights():
    assert mode_after([obj(5, "npc_scout", CX + 200, CY)]) == "FIGHT"


def test_nothing_explores():
    assert mode_after([]) == "EXPLORE"


def test_flee_lasts_until_hp_recovers_hysteresis():
    expert = Expert(ExpertConfig(seed=0, flee_hp=0.3, recover_hp=0.75, flee_dwell_s=1.0))
    scout = [obj(5, "npc_scout", CX + 200, CY)]
    # hp drops to 0.2 then climbs linearly back to 1.0 over 8 s
    hp_at = lambda t: 0.2 if t < 1.0 else min(1.0, 0.2 + 0.1 * (t - 1.0))  # noqa: E731
    frames = run_frames(expert, lambda t: make_info(scout, hp=hp_at(t), t=t), 9.0)
    for t, _, labels in frames:
        hp = hp_at(t)
        if hp < 0.74:  # still below the recovery threshold: must still be fleeing though hp > flee_hp
            assert labels["mode"] == "FLEE", (t, hp)
    assert frames[-1][2]["mode"] == "FIGHT"


def test_mode_minimum_dwell_stops_flicker():
    expert = Expert(ExpertConfig(seed=0, mode_dwell_s=1.5))
    box, scout = obj(9, "bonus_box", CX - 100, CY, size=20), obj(5, "npc_scout", CX + 300, CY)
    # the box blinks in and out every 0.2 s: the mode must not follow it frame by frame
    frames = run_frames(expert, lambda t: make_info([scout] + ([box] if int(t / 0.2) % 2 else []), t=t), 4.0)
    modes = [labels["mode"] for _, _, labels in frames]
    switches = sum(a != b for a, b in zip(modes, modes[1:]))
    assert switches <= 3


def test_target_is_kept_with_hysteresis():
    expert = Expert(ExpertConfig(seed=0, skill=1.0))
    a, b = obj(5, "npc_scout", CX + 200, CY), obj(6, "npc_scout", CX + 230, CY + 10)
    frames = run_frames(expert, lambda t: make_info([a, b], t=t), 3.0)
    ids = {labels["target_id"] for _, _, labels in frames[5:]}
    assert len(ids) == 1 and ids <= {5, 6}


# ---------------------------------------------------------------------------------------- the hand


def test_click_only_after_cursor_arrived_on_target():
    expert = Expert(ExpertConfig(seed=3))
    # a scout moving across the screen: every click must land inside its box at that moment
    scout_x = lambda t: CX + 350 - 60 * t  # noqa: E731
    frames = run_frames(expert, lambda t: make_info([obj(5, "npc_scout", scout_x(t), CY - 120)], t=t), 2.0)
    clicks = [(t, a) for t, a, _ in frames if a["click"]]
    assert clicks, "the expert never clicked its target"
    for t, a in clicks:
        x, y = a["mouse"][0] * W, a["mouse"][1] * H
        assert abs(x - scout_x(t)) <= 20 and abs(y - (CY - 120)) <= 20, (t, x, y)
    # the first click comes after a reaction delay and a finished movement, not at once
    assert clicks[0][0] >= 0.2


def test_cursor_path_finishes_and_is_smooth():
    cfg = ExpertConfig(seed=0, jitter_px=0.0)
    cursor = Cursor(cfg, np.random.default_rng(0))
    goal = Intent(("select", 1), np.array([1000.0, 200.0]), radius=15.0, click=True)
    positions = [cursor.update(i / 30, goal) for i in range(60)]
    assert cursor.arrived(59 / 30, goal)
    np.testing.assert_allclose(positions[-1], [1000.0, 200.0], atol=1e-6)
    steps = np.linalg.norm(np.diff(np.array(positions), axis=0), axis=1)
    assert steps.max() < 200.0  # no teleport
    assert steps[:3].sum() == 0.0  # reaction delay: the hand does not move at once


def test_cursor_retargets_smoothly_and_still_finishes():
    cursor = Cursor(ExpertConfig(seed=0, jitter_px=0.0), np.random.default_rng(0))
    positions = []
    for i in range(90):
        t = i / 30
        target = np.array([900.0 + 80 * min(t, 1.5), 300.0])  # moves for 1.5 s, then stops
        positions.append(cursor.update(t, Intent(("select", 1), target, radius=12.0)))
    steps = np.linalg.norm(np.diff(np.array(positions), axis=0), axis=1)
    assert steps.max() < 200.0
    accel = np.linalg.norm(np.diff(np.array(positions), n=2, axis=0), axis=1)
    assert accel.max() < 60.0  # re-plans keep the velocity: no jerky restarts
    assert cursor.arrived(89 / 30, Intent(("select", 1), np.array([1020.0, 300.0]), radius=12.0))


def test_keys_are_spaced_like_a_person():
    kb = Keyboard(ExpertConfig(seed=0), np.random.default_rng(0))
    taps = []
    for i in range(60):
        t = i / 30
        for key in ("attack", "repair", "boost"):
            kb.request(key, t)
        if kb.pop(t):
            taps.append(t)
    assert len([t for t in taps if t < 1.2]) == 3  # each wanted key once, none repeated within a second
    assert min(np.diff(taps)) >= 0.15 and taps[0] > 0.05


# ---------------------------------------------------------------------------------------- contract


def test_actions_and_labels_are_well_formed():
    expert = Expert(ExpertConfig(seed=2))
    objs = [obj(5, "npc_scout", CX + 200, CY), obj(9, "bonus_box", CX - 250, CY + 40, size=20)]
    for _, action, labels in run_frames(expert, lambda t: make_info(objs, t=t, hp=0.9), 3.0):
        assert set(action) == {"mouse", "click", "key"}
        assert action["mouse"].dtype == np.float32 and action["mouse"].shape == (2,)
        assert np.all((action["mouse"] >= 0) & (action["mouse"] <= 1))
        assert action["click"] in (0, 1) and 0 <= action["key"] < len(spec.KEYS)
        assert labels["mode"] in spec.MODES
        assert labels["target_id"] in (None, 5, 9)


def test_selected_target_in_range_gets_the_attack_key():
    expert = Expert(ExpertConfig(seed=0))
    scout = obj(5, "npc_scout", CX + 150, CY, sel=True)
    frames = run_frames(expert, lambda t: make_info([scout], t=t, selected=5), 1.5)
    assert any(a["key"] == spec.KEYS.index("attack") for _, a, _ in frames)


@pytest.mark.parametrize(
    ("field", "value"),
    [("skill", 1.5), ("recover_hp", 0.1), ("jitter_px", -1.0), ("width", 0), ("cautious_raiders", 0)],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"ExpertConfig.{field}"):
        ExpertConfig(**{field: value})


def test_random_policy_interface_and_rates():
    policy = RandomPolicy(RandomPolicyConfig(seed=0))
    actions = [policy.act(make_info(t=i / 30)) for i in range(300)]
    assert all(labels == {"mode": None, "target_id": None} for _, labels in actions)
    clicks = sum(a["click"] for a, _ in actions)
    assert 3 <= clicks <= 40  # ~1.5 / s over 10 s
    with pytest.raises(ValueError, match="RandomPolicyConfig.hold_s"):
        RandomPolicyConfig(hold_s=0)


def test_clipped_box_centre_is_rebuilt_from_the_class_size():
    expert = Expert(ExpertConfig(seed=0))
    expert.act(make_info([obj(5, "npc_raider", CX + 100, CY, size=48)], t=0.0))  # seen whole once
    # another raider half off the right edge: its clipped box is 24 px wide, its centre is at the edge
    expert.act(make_info([obj(6, "npc_raider", W, CY, size=48)], t=1 / 30))
    seen = expert.last_seen[6][1]
    np.testing.assert_allclose(seen.world[0] - 2000.0, W - CX, atol=1e-6)


# ---------------------------------------------------------------------------------------- in the Arena


def _sim_env(**overrides):
    """The Arena without drawing (the expert reads `info` only), by default at the small 640x360 view."""
    env_module = pytest.importorskip("arena.env")
    cfg = {"render": False, "width": 640, "height": 360, "zoom": 0.5, **overrides}
    return env_module.ArenaEnv(env_module.ArenaConfig(**cfg))


def test_expert_clearly_beats_random():
    env = _sim_env()
    expert, rand = Expert(ExpertConfig.matching(env.config)), RandomPolicy(RandomPolicyConfig())
    ours = [play_episode(env, expert, seed, 60.0)["score"] for seed in range(5)]
    theirs = [play_episode(env, rand, seed, 60.0)["score"] for seed in range(5)]
    ours_credits = float(np.mean([s["credits"] for s in ours]))
    theirs_credits = float(np.mean([s["credits"] for s in theirs]))
    assert ours_credits > max(5 * theirs_credits, 600.0), (ours, theirs)
    assert all(sum(s["kills"].values()) >= 1 for s in ours)
    assert sum(s["deaths"] for s in ours) <= 1


def test_all_five_modes_occur_in_a_few_minutes_of_play():
    env = _sim_env()
    expert = Expert(ExpertConfig.matching(env.config))
    counts = {m: 0 for m in spec.MODES}
    for seed in range(3):
        for mode, n in play_episode(env, expert, seed, 120.0)["mode_counts"].items():
            counts[mode] += n
    assert all(n > 0 for n in counts.values()), counts


def test_same_seed_same_play_different_seed_different_play():
    env = _sim_env()

    def trace(seed: int):
        out = []
        play_episode(
            env, Expert(ExpertConfig.matching(env.config)), seed, 20.0, on_step=lambda *a: out.append(a)
        )
        return [
            (act["mouse"].tobytes(), act["click"], act["key"], lab["mode"], lab["target_id"])
            for *_, act, lab, _ in out
        ]

    assert trace(4) == trace(4)
    assert trace(4) != trace(5)


def test_play_episode_calls_on_step_with_frames_and_summarises():
    env = _sim_env(render=True, width=320, height=180, zoom=0.25)
    calls = []
    summary = play_episode(
        env, Expert(ExpertConfig.matching(env.config)), 1, 2.0, on_step=lambda *a: calls.append(a)
    )
    assert summary["frames"] == len(calls) == 60
    assert [c[0] for c in calls] == list(range(60))
    frame, action, labels, info = calls[-1][1:]
    assert frame.shape == (180, 320, 3) and set(action) == {"mouse", "click", "key"}
    # Each call carries the frame the action was chosen from: the last one is frame 59, not its result.
    assert labels["mode"] in spec.MODES and info["frame"] == 59 and calls[0][4]["frame"] == 0
    assert sum(summary["mode_counts"].values()) == 60
    assert set(summary["score"]) == {"credits", "kills", "boxes", "deaths"}


def test_expert_plays_at_the_default_view():
    env = _sim_env(width=spec.DEFAULT_WIDTH, height=spec.DEFAULT_HEIGHT, zoom=1.0)
    score = play_episode(env, Expert(ExpertConfig.matching(env.config)), 2, 60.0)["score"]
    assert sum(score["kills"].values()) >= 1 and score["deaths"] == 0


def test_skilled_expert_kites_a_boss_to_death():
    env = _sim_env(n_scouts=0, n_raiders=0, n_bosses=1, n_boxes=0)
    expert = Expert(ExpertConfig.matching(env.config, skill=0.9))
    env.reset(seed=3)
    expert.reset(3)
    boss, player = env.world.npcs[0], env.world.player
    player.x, player.y = min(boss.x + 550.0, 3900.0), boss.y + 100.0  # set-up: start beside a boss
    info, killed = env.world.info(), False
    for _ in range(60 * 30):
        info = env.step(expert.act(info)[0])[4]
        killed = killed or "kill:npc_boss" in info["events"]
    assert killed and info["score"]["deaths"] == 0


@pytest.mark.slow
def test_expert_long_play_statistics():
    env = _sim_env()
    expert, rand = Expert(ExpertConfig.matching(env.config)), RandomPolicy(RandomPolicyConfig())
    ours = [play_episode(env, expert, seed, 180.0)["score"] for seed in range(10)]
    theirs = [play_episode(env, rand, seed, 180.0)["score"] for seed in range(10)]
    assert np.mean([s["credits"] for s in ours]) > 10 * max(np.mean([s["credits"] for s in theirs]), 100.0)
    assert sum(s["deaths"] for s in ours) <= 2
    assert all(s["boxes"] >= 1 for s in ours)
