"""The Naev adapter without Naev running: the scenario and its Lua, the probe's lines and boxes, the scripted
pilot's decisions, the held-key Action of the profile, and the error when Naev is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.games import adapter_for
from bot.games.naev import overlay
from bot.games.naev.overlay import NaevScenario, event_source
from bot.games.naev.pilot import FACE, FIRE, LEFT, RIGHT, TARGET, THRUST, NaevPilot, NaevPilotConfig
from bot.games.naev.probe import ProbeError, ProbeReader, parse_line
from bot.games.processes import ProcessError
from bot.profile import load_profile
from validation import ConfigError


def pilot(pid: int, x: float, y: float, **kw) -> dict:
    base = dict(id=pid, ship="Hyena", x=x, y=y, vx=0.0, vy=0.0, dir=0.0, armour=100.0, shield=100.0)
    return base | dict(disabled=False, hostile=pid != 1, player=pid == 1) | kw


def line(seq: int, pilots: list[dict], t_ms: int = 0, target: int = -1, kills: int = 0) -> str:
    return json.dumps(
        dict(seq=seq, frames=seq, t_ms=t_ms or seq * 20, kills=kills, deaths=0, dealt=0.0, taken=0.0,
             energy=100.0, target=target, pilots=pilots)
    )  # fmt: skip


def test_the_scenario_is_chosen_by_its_seed_and_validated() -> None:
    a, b = NaevScenario(seed=3).spawns(), NaevScenario(seed=3).spawns()
    assert a == b and a != NaevScenario(seed=4).spawns()
    assert all(350 <= (s["dx"] ** 2 + s["dy"] ** 2) ** 0.5 <= 600.5 for s in a)
    with pytest.raises(ConfigError, match=r"NaevScenario\.hostiles: expected"):
        NaevScenario(hostiles=0)
    with pytest.raises(ConfigError, match=r"NaevScenario\.hostile_ships: expected"):
        NaevScenario(hostile_ships=())


def test_the_event_carries_the_scenario_as_a_lua_table(tmp_path: Path) -> None:
    source = event_source(NaevScenario(seed=1, hostiles=3), tmp_path / "probe.jsonl")
    assert '<event name="orbit_pilot">' in source and "@CONFIG@" not in source
    assert f'probe="{tmp_path / "probe.jsonl"}"' in source and "hostiles=3" in source
    assert source.count('ship="Hyena"') == 64


def test_a_missing_naev_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overlay, "NAEV_BINARIES", ("/nonexistent/naev",))
    with pytest.raises(ProcessError, match=r"apt-get install naev"):
        overlay.naev_binary()


def test_the_reader_follows_the_file_and_reports_silence_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "probe.jsonl"
    reader = ProbeReader(path, silence_s=0.2)
    assert reader.poll() == []
    with open(path, "w") as f:
        f.write(
            line(1, [pilot(1, 0, 0)]) + "\n" + line(2, [pilot(1, 5, 0)])[:30]
        )  # the second is half written
    assert [p.seq for p in reader.poll()] == [1]
    with open(path, "a") as f:
        f.write(line(2, [pilot(1, 5, 0)])[30:] + "\n")
    assert [p.seq for p in reader.poll()] == [2] and reader.latest().player["x"] == 5
    import time

    time.sleep(0.3)
    with pytest.raises(ProbeError, match=r"went silent for 0\.\d s \(last: line 2\)"):
        reader.latest()
    with pytest.raises(ProbeError, match="not a probe frame"):
        parse_line('{"seq": 1}', 0.0)


def test_screen_boxes_put_the_player_at_the_centre_and_others_by_their_offset() -> None:
    from bot.games.naev.episode import gt_objects

    frame = parse_line(
        line(1, [pilot(1, 100, 100, ship="Lancelot"), pilot(7, 300, 50), pilot(8, 5000, 0)]), 0.0
    )
    objects = {o["id"]: o for o in gt_objects(frame, (1280, 720))}
    assert set(objects) == {1, 7}, "a pilot far off screen has no box"
    me, hostile = objects[1], objects[7]
    assert me["cls"] == "player" and hostile["cls"] == "hostile"
    assert abs((me["x1"] + me["x2"]) / 2 - 640) < 6 and abs((me["y1"] + me["y2"]) / 2 - 360) < 6
    # 200 right and 50 down (the world's y points up); a Hyena is ~30 px across
    assert (
        abs((hostile["x1"] + hostile["x2"]) / 2 - 840) < 6
        and abs((hostile["y1"] + hostile["y2"]) / 2 - 410) < 6
    )
    assert 15 < hostile["x2"] - hostile["x1"] < 45


def decide(p: NaevPilot, pilots: list[dict], target: int = -1, now: float = 10.0):
    p.observe(parse_line(line(len(p.history) + 1, pilots, target=target), arrived=0.0))
    return p.decide(now)


def test_the_pilot_targets_faces_closes_in_and_fires() -> None:
    p = NaevPilot(NaevPilotConfig(reaction_s=0.0, jitter_s=0.0))
    far_left = [pilot(1, 0, 0, dir=0.0), pilot(5, -900, 0)]
    d = decide(p, far_left)
    assert d.mode == "FIGHT" and d.target_id == 5 and d.taps == (TARGET,)
    assert LEFT in d.held or RIGHT in d.held, "not yet targeted: it turns towards the hostile itself"
    d = decide(p, [pilot(1, 0, 0, dir=180.0), pilot(5, -900, 0)], target=5)
    assert d.held == {FACE, THRUST}, "targeted, nose on, far: face and thrust, out of range so no fire"
    d = decide(p, [pilot(1, 0, 0, dir=180.0), pilot(5, -300, 0)], target=5)
    assert d.held == {FACE, FIRE}, "close and on the nose: fire"


def test_the_pilot_breaks_off_on_a_low_shield_until_it_recovers() -> None:
    p = NaevPilot(NaevPilotConfig(reaction_s=0.0, jitter_s=0.0, flee_shield=20, resume_shield=60))
    d = decide(p, [pilot(1, 0, 0, dir=0.0, shield=10.0), pilot(5, 300, 0)], target=5)
    assert d.mode == "FLEE" and THRUST in d.held and FIRE not in d.held
    assert decide(p, [pilot(1, 0, 0, shield=40.0), pilot(5, 300, 0)], target=5).mode == "FLEE"
    assert decide(p, [pilot(1, 0, 0, shield=70.0), pilot(5, 300, 0)], target=5).mode == "FIGHT"


def test_the_pilot_reacts_to_what_it_saw_a_reaction_time_ago() -> None:
    p = NaevPilot(NaevPilotConfig(reaction_s=0.5, jitter_s=0.0))
    p.observe(parse_line(line(1, [pilot(1, 0, 0)]), arrived=0.0))  # nothing hostile yet
    p.observe(parse_line(line(2, [pilot(1, 0, 0), pilot(5, 300, 0)]), arrived=1.0))
    assert p.decide(now=1.2).mode == "EXPLORE", "the hostile appeared 0.2 s ago: not seen yet"
    assert p.decide(now=1.6).mode == "FIGHT"


def test_the_profile_maps_held_keys_to_the_action_and_back() -> None:
    profile = load_profile("naev")
    mask = profile.held_mask({"w", "space"})
    assert mask == (1 << profile.key_names.index("thrust")) | (1 << profile.key_names.index("fire"))
    assert profile.held_keys(mask) == {"w", "space"}
    assert [k.name for k in profile.keys if k.hold] == ["thrust", "left", "right", "fire", "face"]


def test_games_without_an_adapter_are_refused_by_name() -> None:
    assert adapter_for("naev").PILOTS == ("scripted", "random")
    with pytest.raises(ValueError, match=r"game 'darkorbit': no adapter \(the project drives: naev\)"):
        adapter_for("darkorbit")
