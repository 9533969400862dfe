"""Enemy screen cues (bot/perception/cues.py) read from real Arena frames agree with the game's own state."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from arena.env import ArenaConfig, ArenaEnv
from arena.expert import Expert, ExpertConfig
from arena.rollout import play_episode
from bot.perception.cues import CUE_NAMES, CueReader
from bot.perception.hud import HudReading
from bot.perception.state import GLOB, OBJ, StateEncoder
from bot.perception.tracker import Tracks
from bot.play.overlay import perceived_objects
from bot.profile import load_profile, profile_from_dict

PROFILE = load_profile("arena")
CLS = {name: i for i, name in enumerate(PROFILE.class_names)}


def tracks_of(objects: list[dict], grow: float = 1.0) -> Tracks:
    """Tracks at the game's boxes, each scaled by `grow` about its centre (a detector's looser boxes)."""
    boxes = np.array([o["box"] for o in objects], np.float32).reshape(-1, 4)
    centre, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2 * grow
    n = len(objects)
    return Tracks(
        id=np.arange(1, n + 1),
        xyxy=np.concatenate([centre - half, centre + half], axis=1),
        conf=np.ones(n, np.float32),
        cls=np.array([CLS[o["cls"]] for o in objects], np.int64),
        visible=np.ones(n, bool),
        age_s=np.zeros(n, np.float32),
        lost_s=np.zeros(n, np.float32),
        velocity=np.zeros((n, 2), np.float32),
    )


def expert_frames(width: int, height: int, zoom: float, seed: int, seconds: float, every: int = 6):
    """(frame, info) every `every` frames of the Arena expert playing."""
    env = ArenaEnv(ArenaConfig(width=width, height=height, zoom=zoom))
    expert = Expert(ExpertConfig.matching(env.config, skill=0.7))
    seen = []

    def keep(i, frame, action, labels, info):
        if i % every == 0:
            seen.append((frame.copy(), info))

    play_episode(env, expert, seed=seed, seconds=seconds, on_step=keep)
    env.close()
    return seen


def agreement(seen, grow: float) -> dict[str, tuple[float, int]]:
    """Per cue: (share of enemies where cue >= 0.5 matches the game's state, positives)."""
    reader, hits, positives = CueReader(PROFILE), {n: [] for n in CUE_NAMES}, dict.fromkeys(CUE_NAMES, 0)
    for frame, info in seen:
        npcs = [o for o in info["objects"] if o["cls"].startswith("npc")]
        if not npcs:
            continue
        cues = reader.read(frame, tracks_of(npcs, grow))
        attack_on = info["player"]["attack_on"]
        for obj, cue in zip(npcs, cues):
            truth = (obj["aggro"], obj["selected"] and not attack_on, obj["selected"] and attack_on)
            for name, value, want in zip(CUE_NAMES, cue, truth):
                hits[name].append((value >= 0.5) == want)
                positives[name] += want
    return {name: (float(np.mean(hits[name])), positives[name]) for name in CUE_NAMES}


@pytest.mark.parametrize(("width", "height", "zoom", "grow"), [(640, 360, 0.5, 1.0), (1280, 720, 1.0, 1.2)])
def test_cues_match_the_game_state(width: int, height: int, zoom: float, grow: float) -> None:
    seen = expert_frames(width, height, zoom, seed=4, seconds=90, every=3)
    for name, (share, positives) in agreement(seen, grow).items():
        assert positives >= 5, f"{name}: too few positive examples ({positives}) to test"
        assert share >= 0.93, f"{name}: cue agrees with the game on {share:.3f} of enemies"


def test_only_enemies_get_cues_and_none_without_a_profile_section() -> None:
    frame = np.full((360, 640, 3), (255, 90, 80), np.uint8)  # everything is "aggressive" red
    objects = [
        {"cls": "npc_scout", "box": (100, 100, 120, 120)},
        {"cls": "bonus_box", "box": (300, 100, 320, 120)},
        {"cls": "player", "box": (310, 170, 330, 190)},
    ]
    cues = CueReader(PROFILE).read(frame, tracks_of(objects))
    assert cues.shape == (3, 3) and cues.dtype == np.float32
    assert cues[0, 0] == 1.0 and not cues[1:].any()
    data = {"name": "plain", "classes": [{"name": "npc_scout", "role": "enemy"}], "keys": [{"name": "none"}]}
    assert not CueReader(profile_from_dict(data)).read(frame, tracks_of(objects[:1])).any()


def test_cues_reach_the_observation_and_its_globals() -> None:
    objects = [
        {"cls": "npc_raider", "box": (100, 100, 124, 124)},
        {"cls": "npc_scout", "box": (400, 90, 416, 106)},
    ]
    cues = np.array([[1.0, 0.0, 0.8], [0.0, 0.3, 0.0]], np.float32)
    encoder = StateEncoder(PROFILE, (640, 360))
    obs = encoder.encode(
        tracks_of(objects), HudReading({"hp": 1.0, "shield": 1.0}), (0.5, 0.5), False, 0.0, cues
    )
    by_id = {int(i): obs.objects[k] for k, i in enumerate(obs.track_id) if obs.mask[k]}
    assert by_id[1][OBJ["cue_aggressive"]] == 1.0 and by_id[1][OBJ["cue_attacking"]] == pytest.approx(0.8)
    assert by_id[2][OBJ["cue_selected"]] == pytest.approx(0.3)
    assert obs.glob[GLOB["attack_on"]] == pytest.approx(0.8)
    assert obs.glob[GLOB["target_marked"]] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="cues: expected shape"):
        encoder.encode(tracks_of(objects), HudReading({}), (0.5, 0.5), False, 0.1, cues[:1])


def test_overlay_objects_name_the_cues_that_are_on() -> None:
    objects = [
        {"cls": "npc_raider", "box": (100, 100, 124, 124)},
        {"cls": "npc_scout", "box": (400, 90, 416, 106)},
    ]
    step = SimpleNamespace(
        tracks=tracks_of(objects), cues=np.array([[0.9, 0.0, 0.7], [0.1, 0.2, 0.0]], np.float32)
    )
    drawn = perceived_objects(step, PROFILE.class_names)
    assert [o["cues"] for o in drawn] == [["aggressive", "attacking"], []]
    assert drawn[0]["cls"] == "npc_raider" and drawn[0]["box"] == [100.0, 100.0, 124.0, 124.0]
    step.cues = None  # a step perceived without cues still draws
    assert [o["cues"] for o in perceived_objects(step, PROFILE.class_names)] == [[], []]


def test_profile_cues_are_checked() -> None:
    data = {"name": "g", "classes": [{"name": "npc", "role": "enemy"}], "keys": [{"name": "none"}]}
    cues = {
        "aggressive": [255, 0, 0],
        "neutral": [200, 200, 200],
        "selected": [255, 255, 0],
        "attacking": [255, 0, 0],
    }
    assert profile_from_dict({**data, "cues": cues}).cues.ring_scale == 1.3
    with pytest.raises(ValueError, match=r"cues\.aggressive: expected an RGB triple"):
        profile_from_dict({**data, "cues": {**cues, "aggressive": [300, 0, 0]}})
    with pytest.raises(ValueError, match=r"cues: unknown field\(s\) \['ring'\]"):
        profile_from_dict({**data, "cues": {**cues, "ring": 2}})
