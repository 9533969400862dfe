"""Game profiles: the shipped ones load and agree with the Arena; bad files fail naming the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from arena import spec
from bot.errors import ProfileError
from bot.profile import GAMES_DIR, ROLES, load_profile


def test_shipped_profiles_load() -> None:
    names = sorted(p.stem for p in GAMES_DIR.glob("*.yaml"))
    assert names == ["arena", "darkorbit", "naev"]
    for name in names:
        profile = load_profile(name)
        assert profile.name == name
        assert profile.keys[0].name == "none"
        assert all(c.role in ROLES for c in profile.classes)
        if name != "naev":  # Naev's bars fill bottom to top: its HUD reader comes with its policy
            assert set(profile.hud.bars) >= {"hp", "shield"}


def test_arena_profile_matches_the_arena_spec() -> None:
    from arena import render

    profile = load_profile("arena")
    assert profile.class_names == list(spec.CLASSES)
    assert profile.key_names == list(spec.KEYS)
    assert [k.key for k in profile.keys[1:]] == [spec.KEY_BINDINGS[k] for k in spec.KEYS[1:]]
    assert list(profile.modes) == list(spec.MODES)
    assert profile.fps == spec.DEFAULT_FPS
    assert profile.window.size == (spec.DEFAULT_WIDTH, spec.DEFAULT_HEIGHT)
    assert profile.hud.bars["hp"].region == spec.HUD_HP_BAR
    assert profile.hud.bars["shield"].region == spec.HUD_SHIELD_BAR
    assert profile.hud.bars["hp"].colour == render.HP_FILL
    assert profile.hud.bars["shield"].colour == render.SHIELD_FILL
    assert profile.hud.minimap is not None and profile.hud.minimap.region == spec.HUD_MINIMAP


@pytest.mark.parametrize("name", ["arena", "darkorbit"])
def test_the_player_is_never_an_enemy(name: str) -> None:
    profile = load_profile(name)
    players = profile.class_ids("player")
    assert players, "every shipped profile names the player's ship"
    assert not set(players) & set(profile.class_ids("enemy"))


def test_darkorbit_profile_has_the_usual_dataset_classes() -> None:
    names = load_profile("darkorbit").class_names
    for expected in ("player_ship", "bonus_box", "portal", "npc_streuner", "npc_lordakia", "cargo_box"):
        assert expected in names


def _write(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load((GAMES_DIR / "arena.yaml").read_text())
    mutate(data)
    path = tmp_path / "game.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["classes"][3].update(role="foe"), "classes[3].role: expected one of"),
        (lambda d: d["keys"].pop(0), "keys: expected a list starting with 'none'"),
        (lambda d: d["hud"]["bars"]["hp"].update(region=[0.5, 0.1, 0.2, 0.2]), "hud.bars.hp.region"),
        (lambda d: d["hud"]["bars"]["hp"].update(colour=[300, 0, 0]), "hud.bars.hp.colour"),
        (lambda d: d["tracker"].update(track_low_thresh=0.9), "tracker.track_low_thresh"),
        (lambda d: d["detector"].update(imgsz=300), "detector.imgsz: expected a multiple of 32"),
        (lambda d: d["classes"].append({"name": "player", "role": "enemy"}), "duplicated: ['player']"),
        (lambda d: d.update(colour="red"), "unknown field(s) ['colour']"),
        (lambda d: d["window"].update(titel="x"), "window: unknown field(s) ['titel']"),
        (lambda d: d.update(version=9), "version: this build reads profile version 1"),
        (lambda d: d["keys"][1].update(hold="yes"), "keys[1].hold: expected true or false"),
        (lambda d: d["keys"][0].update(hold=True), "keys[0].hold: expected true or false (never for 'none')"),
        (lambda d: d.update(score={"kill": "many"}), "score: expected {event: points} with numbers"),
        (lambda d: d.update(clicks="no"), "clicks: expected true or false, got 'no'"),
    ],
)
def test_bad_profiles_name_file_and_field(tmp_path: Path, mutate, message: str) -> None:
    path = _write(tmp_path, mutate)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_and_unparsable_profiles(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="no such profile.*arena"):
        load_profile("no_such_game")
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: [unclosed")
    with pytest.raises(ProfileError, match="unreadable YAML"):
        load_profile(bad)


def test_role_and_key_helpers() -> None:
    profile = load_profile("arena")
    assert profile.role_of(0) == "player"
    assert profile.class_ids("loot") == [spec.CLASSES.index("bonus_box")]
    assert profile.key_index("attack") == 1
    with pytest.raises(ValueError, match="roles"):
        profile.class_ids("friend")
