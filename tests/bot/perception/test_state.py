"""State encoder (bot/perception/state.py): layout, masks, ordering, normalisation, the player's place, the
spec; and the per-second summary (bot/perception/summary.py)."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

import bot.perception.state as state
from bot.errors import PerceptionError
from bot.perception.hud import HudReading
from bot.perception.state import CLOSE_DIST, GLOB, N_MAX, OBJ, OBS_SPEC, StateEncoder
from bot.perception.summary import Summarizer, summarize
from bot.perception.tracker import Tracks
from bot.profile import DEFAULT_THREAT, load_profile

PROFILE = load_profile("arena")
CLS = {name: i for i, name in enumerate(PROFILE.class_names)}


def make_tracks(rows: list[tuple[int, str, tuple[float, float, float, float]]], scale: float = 1.0) -> Tracks:
    """Tracks from (id, class name, xyxy at 1280x720) rows, boxes multiplied by `scale`."""
    n = len(rows)
    return Tracks(
        id=np.array([r[0] for r in rows], np.int64),
        xyxy=np.array([r[2] for r in rows], np.float32).reshape(-1, 4) * scale,
        conf=np.full(n, 0.9, np.float32),
        cls=np.array([CLS[r[1]] for r in rows], np.int64),
        visible=np.ones(n, bool),
        age_s=np.full(n, 2.0, np.float32),
        lost_s=np.zeros(n, np.float32),
        velocity=np.tile(np.array([[64.0, -36.0]], np.float32) * scale, (n, 1)),
    )


SCENE = [
    (1, "player", (614, 334, 666, 386)),
    (7, "npc_scout", (100, 100, 132, 132)),
    (3, "bonus_box", (620, 200, 644, 224)),
    (9, "portal", (1000, 500, 1128, 628)),
    (4, "npc_raider", (700, 380, 748, 428)),
]
HUD = HudReading({"hp": 0.8, "shield": 0.5}, (0.25, 0.75))


def encode(rows=SCENE, scale: float = 1.0, t: float = 0.0, encoder: StateEncoder | None = None):
    encoder = encoder or StateEncoder(PROFILE, (int(1280 * scale), int(720 * scale)))
    return encoder.encode(make_tracks(rows, scale), HUD, (0.5, 0.5), True, t)


def test_shapes_and_padding() -> None:
    obs = encode()
    assert obs.objects.shape == (N_MAX, len(OBS_SPEC.obj_features)) and obs.objects.dtype == np.float32
    assert obs.glob.shape == (len(OBS_SPEC.glob_features),)
    assert obs.mask.sum() == 4  # the player is not an object
    assert not obs.objects[~obs.mask].any()
    assert (obs.track_id[~obs.mask] == 0).all() and (obs.cls[~obs.mask] == -1).all()
    assert obs.spec == "orbit-obs/3"


def test_player_goes_to_the_globals_never_to_the_objects() -> None:
    obs = encode()
    assert 1 not in obs.track_id[obs.mask]
    assert obs.glob[GLOB["player_x"]] == pytest.approx(0.5) and obs.glob[GLOB["player_y"]] == pytest.approx(
        0.5
    )
    assert obs.glob[GLOB["player_visible"]] == 1.0
    assert obs.glob[GLOB["player_vx"]] == pytest.approx(64 / 1280)
    without = encode([r for r in SCENE if r[1] != "player"])
    assert without.glob[GLOB["player_visible"]] == 0.0
    assert without.glob[GLOB["player_x"]] == pytest.approx(PROFILE.player.anchor[0])


def test_objects_sorted_by_distance_to_the_player_then_id() -> None:
    obs = encode()
    dist = obs.objects[obs.mask, OBJ["dist_player"]]
    assert (np.diff(dist) >= 0).all()
    assert list(obs.track_id[obs.mask]) == [4, 3, 9, 7]
    twins = encode([(1, "player", (614, 334, 666, 386)), (6, "bonus_box", (700, 350, 720, 370)),
                    (5, "bonus_box", (700, 350, 720, 370))])  # fmt: skip
    assert list(twins.track_id[twins.mask]) == [5, 6]
    assert twins.slot_of(6) == 1 and twins.slot_of(99) is None


def test_roles_one_hot_and_counts() -> None:
    obs = encode()
    roles = obs.objects[obs.mask][:, OBJ["is_enemy"] : OBJ["is_neutral"] + 1]
    assert (roles.sum(axis=1) == 1).all()
    slot = obs.slot_of(9)
    assert obs.objects[slot, OBJ["is_portal"]] == 1.0
    assert obs.glob[GLOB["n_enemy"]] == pytest.approx(0.2) and obs.glob[GLOB["n_loot"]] == pytest.approx(0.1)
    assert obs.glob[GLOB["near_enemy"]] == pytest.approx(obs.objects[obs.slot_of(4), OBJ["dist_player"]])
    assert encode([SCENE[0]]).glob[GLOB["near_loot"]] == 1.0


def test_features_are_resolution_independent() -> None:
    big, small = encode(scale=1.0), encode(scale=0.5)
    np.testing.assert_allclose(big.objects, small.objects, atol=1e-6)
    np.testing.assert_allclose(big.glob, small.glob, atol=1e-6)


def test_cap_at_n_max_keeps_the_nearest_and_flags_truncation() -> None:
    rows = [SCENE[0]] + [
        (10 + i, "npc_scout", (640 + 10 * i, 360, 650 + 10 * i, 370)) for i in range(N_MAX + 5)
    ]
    obs = encode(rows)
    assert obs.mask.all()
    assert list(obs.track_id) == list(range(10, 10 + N_MAX))
    assert obs.glob[GLOB["truncated"]] == 1.0
    assert encode().glob[GLOB["truncated"]] == 0.0


def test_cursor_features() -> None:
    obs = encode([SCENE[0], (5, "bonus_box", (630, 350, 650, 370))])
    assert obs.objects[0, OBJ["under_cursor"]] == 1.0
    assert obs.objects[0, OBJ["dx_cursor"]] == pytest.approx(0.0)
    assert obs.glob[GLOB["cursor_x"]] == 0.5 and obs.glob[GLOB["click"]] == 1.0
    assert tuple(obs.glob[[GLOB["map_x"], GLOB["map_y"], GLOB["map_valid"]]]) == (0.25, 0.75, 1.0)


def test_hp_rate_and_dt_use_timestamps() -> None:
    encoder = StateEncoder(PROFILE, (1280, 720))
    tracks = make_tracks(SCENE)
    first = encoder.encode(tracks, HudReading({"hp": 1.0, "shield": 1.0}), (0.5, 0.5), False, 10.0)
    second = encoder.encode(tracks, HudReading({"hp": 0.9, "shield": 1.0}), (0.5, 0.5), False, 10.5)
    assert first.glob[GLOB["dt"]] == 0.0 and first.glob[GLOB["hp_rate"]] == 0.0
    assert second.glob[GLOB["dt"]] == pytest.approx(0.5)
    assert second.glob[GLOB["hp_rate"]] == pytest.approx(-0.2)


def test_summary_one_row_per_second() -> None:
    encoder = StateEncoder(PROFILE, (1280, 720))
    observations = [encode(t=i / 10, encoder=encoder) for i in range(25)]  # 2.5 s at 10 Hz
    summary, ends = summarize(observations)
    assert summary.shape == (3, len(OBS_SPEC.summary_features))
    assert list(ends) == [9, 19, 24]
    s = {name: i for i, name in enumerate(OBS_SPEC.summary_features)}
    assert summary[0, s["hp_mean"]] == pytest.approx(0.8)
    assert summary[0, s["clicks"]] == pytest.approx(1.0)  # 10 clicks/s -> clipped 1
    assert summary[0, s["new_tracks"]] == pytest.approx(0.4) and summary[1, s["new_tracks"]] == 0.0
    live = Summarizer()
    emitted = [v for v in (live.add(o) for o in observations) if v is not None]
    np.testing.assert_array_equal(np.stack(emitted), summary[:2])


def test_every_feature_index_is_documented_beside_its_name() -> None:
    source = inspect.getsource(state)  # each feature: `"name",  # index meaning` in its tuple
    for names in (OBS_SPEC.obj_features, OBS_SPEC.glob_features, OBS_SPEC.summary_features):
        for index, name in enumerate(names):
            assert re.search(rf'^\s+"{name}",\s+#\s+{index}\s+\S', source, re.M), (
                f"feature {index} {name} not documented"
            )


def test_spec_check_refuses_other_versions() -> None:
    OBS_SPEC.check(OBS_SPEC.to_dict(), "x")
    with pytest.raises(PerceptionError, match="orbit-obs/0"):
        OBS_SPEC.check({**OBS_SPEC.to_dict(), "version": 0}, "x")
    with pytest.raises(PerceptionError, match="different layout"):
        OBS_SPEC.check({**OBS_SPEC.to_dict(), "n_max": 8}, "x")


def summary_of(rows, hp: list[float], threat=PROFILE.class_threats, cues=None) -> np.ndarray:
    """The one summary of a second of 10 observations of `rows` with these hp values (t = 0.0 .. 0.9);
    `cues`: per observation, a (len(rows), 3) array of screen cues (bot/perception/cues.py) or None."""
    encoder, live = StateEncoder(PROFILE, (1280, 720)), Summarizer(threat)
    for i, value in enumerate(hp):
        hud = HudReading({"hp": value, "shield": 1.0})
        live.add(
            encoder.encode(
                make_tracks(rows), hud, (0.5, 0.5), False, i / 10, None if cues is None else cues[i]
            )
        )
    return live.flush()


S = {name: i for i, name in enumerate(OBS_SPEC.summary_features)}


def test_summary_threat_follows_the_profile_classes() -> None:
    boss = [SCENE[0], (5, "npc_boss", (700, 340, 800, 420))]
    scouts = [SCENE[0], SCENE[1], (8, "npc_scout", (200, 100, 232, 132))]
    with_boss, with_scouts = summary_of(boss, [1.0] * 10), summary_of(scouts, [1.0] * 10)
    assert with_boss[S["threat_max"]] == pytest.approx(1.0)
    assert with_boss[S["top_frames"]] == 1.0 and with_boss[S["top_last"]] == 1.0
    assert with_boss[S["top_near_min"]] < CLOSE_DIST
    assert with_boss[S["strong_close_last"]] == pytest.approx(0.2)  # one strong enemy close / 5
    assert with_scouts[S["threat_max"]] == pytest.approx(0.2)
    assert with_scouts[S["threat_sum_mean"]] == pytest.approx(0.4 / 3)
    assert with_scouts[S["top_frames"]] == 0.0 and with_scouts[S["top_near_min"]] == 1.0
    assert with_scouts[S["strong_mean"]] == 0.0
    # without profile threats every enemy weighs the role default and no class is "the strongest"
    default = summary_of(boss, [1.0] * 10, threat=None)
    assert (
        default[S["threat_max"]] == pytest.approx(DEFAULT_THREAT["enemy"]) and default[S["top_frames"]] == 0
    )


def test_summary_being_hit_features() -> None:
    falling = summary_of(SCENE, [1.0 - 0.05 * i for i in range(10)])
    steady = summary_of(SCENE, [0.8] * 10)
    assert falling[S["hp_hit_frames"]] == pytest.approx(0.9)  # every frame after the first
    assert falling[S["hp_rate_min"]] == pytest.approx(-0.5, abs=1e-5)
    assert falling[S["hp_rate_last"]] == pytest.approx(-0.5, abs=1e-5)
    assert steady[S["hp_hit_frames"]] == 0.0 and steady[S["hp_rate_min"]] == 0.0
    assert falling[S["shield_hit_frames"]] == 0.0
    assert falling[S["close_last"]] == pytest.approx(0.2)  # the raider is close, the scout is not
    assert falling[S["n_enemy_last"]] == pytest.approx(0.2)


def test_summary_cue_features() -> None:
    rows = [SCENE[0], SCENE[1], (5, "npc_boss", (700, 340, 800, 420))]  # player, scout, boss
    calm = np.zeros((3, 3), np.float32)
    boss_hunts = np.array([[0, 0, 0], [1, 0, 0], [1, 0, 0]], np.float32)  # scout and boss attack the player
    boss_fought = np.array([[0, 0, 0], [0, 0, 0], [1, 0, 1]], np.float32)  # the player attacks the angry boss
    hunted = summary_of(rows, [1.0] * 10, cues=[calm] * 5 + [boss_hunts] * 5)
    assert hunted[S["aggro_mean"]] == pytest.approx(0.2) and hunted[S["aggro_last"]] == pytest.approx(0.4)
    assert hunted[S["aggro_threat_max"]] == 1.0 and hunted[S["aggro_threat_last"]] == 1.0
    assert hunted[S["top_aggro_last"]] == 1.0 and hunted[S["top_marked_last"]] == 0.0
    assert hunted[S["hunted_last"]] == 1.0 and hunted[S["hunted_frames"]] == pytest.approx(0.5)
    assert hunted[S["attack_frames"]] == 0.0 and hunted[S["marked_last"]] == 0.0
    fought = summary_of(rows, [1.0] * 10, cues=[boss_fought] * 10)
    assert fought[S["top_aggro_last"]] == 1.0 and fought[S["top_marked_last"]] == 1.0
    assert fought[S["hunted_last"]] == 0.0 and fought[S["hunted_frames"]] == 0.0
    assert fought[S["attack_frames"]] == 1.0 and fought[S["marked_last"]] == 1.0
    plain = summary_of(rows, [1.0] * 10)
    assert not plain[S["aggro_mean"] : S["near_enemy_last"]].any()
    assert plain[S["near_enemy_last"]] == pytest.approx(plain[S["near_enemy_min"]])


def test_summarizer_refuses_bad_threats() -> None:
    with pytest.raises(ValueError, match="class_threat"):
        Summarizer([0.5, 1.5])
