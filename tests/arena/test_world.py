"""Tests of the Arena simulation (arena/world.py, rules.py, npcs.py): controls, combat, pickups, death, safe
zone, NPC AI."""

from __future__ import annotations

import json
import math

import pytest

from arena import spec
from arena.rules import NPC_STATS, PLAYER, WorldConfig
from arena.state import Action
from arena.world import World

AWAY = (1000.0, 1000.0)  # a spot far from the portal at the map centre (2000, 2000)
IDLE = Action()


def empty_world(**overrides) -> World:
    """A world with nobody in it but the player, who is moved AWAY from the safe zone."""
    cfg = WorldConfig(**{"n_scouts": 0, "n_raiders": 0, "n_bosses": 0, "n_boxes": 0, **overrides})
    world = World(cfg, seed=0)
    world.player.x, world.player.y = AWAY
    return world


def click_world(world: World, x: float, y: float) -> Action:
    sx, sy = world.world_to_screen(x, y)
    return Action((sx / world.config.width, sy / world.config.height), True, 0)


def key(name: str) -> Action:
    return Action(key=spec.KEYS.index(name))


def run(world: World, seconds: float, action: Action = IDLE) -> list[str]:
    """Step for `seconds` of game time with the same action; returns all events."""
    events: list[str] = []
    for _ in range(int(round(seconds * world.config.fps))):
        world.step(action)
        events += world.events
    return events


def dist_to_player(world: World, x: float, y: float) -> float:
    return math.hypot(world.player.x - x, world.player.y - y)


# -------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("width", 10),
        ("height", 0),
        ("fps", 0),
        ("zoom", 0.0),
        ("world_width", 10.0),
        ("n_scouts", -1),
        ("n_boxes", 1.5),
        ("safe_zone_radius", 5000.0),
    ],
)
def test_config_errors_name_the_field(field: str, value) -> None:
    with pytest.raises(ValueError, match=rf"WorldConfig\.{field}: expected .*got {value!r}"):
        WorldConfig(**{field: value})


def test_reset_populates_the_map_outside_the_safe_zone() -> None:
    cfg = WorldConfig()
    world = World(cfg, seed=5)
    counts = {cls: sum(n.cls == cls for n in world.npcs) for cls in spec.NPC_CLASSES}
    assert counts == cfg.npc_counts
    assert len(world.boxes) == cfg.n_boxes
    ids = [world.player.id, world.portal.id, *(n.id for n in world.npcs), *(b.id for b in world.boxes)]
    assert len(set(ids)) == len(ids)
    for thing in [*world.npcs, *world.boxes]:
        assert math.hypot(thing.x - world.portal.x, thing.y - world.portal.y) > cfg.safe_zone_radius
    assert (world.player.x, world.player.y) == (world.portal.x, world.portal.y)


def test_same_seed_same_world_different_seed_different_world() -> None:
    def trace(seed: int) -> list[tuple[float, float]]:
        world = World(WorldConfig(), seed=seed)
        run(world, 3.0)
        return [(n.x, n.y) for n in world.npcs]

    assert trace(1) == trace(1)
    assert trace(1) != trace(2)


def test_info_is_plain_json_with_the_spec_keys() -> None:
    world = World(WorldConfig(), seed=3)
    run(world, 1.0)
    info = world.info()
    assert set(info) == {"frame", "time", "cursor", "objects", "player", "score", "events", "hud"}
    assert info["objects"][0]["cls"] == "player"
    assert set(info["objects"][0]) == {"id", "cls", "box", "hp", "hp_max", "aggro", "selected"}
    assert set(info["score"]["kills"]) == set(spec.NPC_CLASSES)
    assert info["frame"] == 30 and info["time"] == pytest.approx(1.0)
    json.loads(json.dumps(info))


# ------------------------------------------------------------------------------------------ controls


def test_click_on_empty_space_flies_there_and_stops() -> None:
    world = empty_world()
    goal = (AWAY[0] + 300.0, AWAY[1] - 200.0)
    world.step(click_world(world, *goal))
    top = 0.0
    for _ in range(int(4.0 * world.config.fps)):
        world.step(IDLE)
        top = max(top, math.hypot(world.player.vx, world.player.vy))
    assert dist_to_player(world, *goal) < 1.0
    assert (world.player.vx, world.player.vy) == (0.0, 0.0)
    assert top == pytest.approx(PLAYER.speed, rel=0.01)


def test_click_on_the_minimap_flies_to_that_map_point() -> None:
    world = empty_world()
    sx, sy = world.world_to_minimap(3000.0, 500.0)
    world.step(Action((sx / world.config.width, sy / world.config.height), True, 0))
    assert world.player.dest == pytest.approx((3000.0, 500.0))


def test_click_on_npc_selects_it_and_attack_toggles() -> None:
    world = empty_world()
    scout = world.spawn_npc("npc_scout", AWAY[0] + 200.0, AWAY[1])
    world.step(click_world(world, scout.x + 5.0, scout.y - 5.0))
    assert world.player.selected == scout.id and world.events == ["select"]
    assert world.player.dest is None  # selecting does not move the ship
    world.step(key("attack"))
    assert world.player.attack_on and world.events[0] == "attack_on"
    world.step(key("attack"))
    assert not world.player.attack_on and world.events[0] == "attack_off"


def test_attack_without_selection_does_nothing() -> None:
    world = empty_world()
    world.step(key("attack"))
    assert not world.player.attack_on and world.events == []


def test_attack_kills_npc_and_credits_rise() -> None:
    world = empty_world()
    scout = world.spawn_npc("npc_scout", AWAY[0] + 200.0, AWAY[1])
    world.step(click_world(world, scout.x, scout.y))
    world.step(key("attack"))
    rewards = []
    for _ in range(10 * world.config.fps):
        rewards.append(world.step(IDLE))
        if "kill:npc_scout" in world.events:
            break
    assert world.score.kills["npc_scout"] == 1
    assert world.score.credits == NPC_STATS["npc_scout"].credits == rewards[-1]
    assert world.player.selected is None and not world.player.attack_on
    shots = math.ceil(NPC_STATS["npc_scout"].hp / PLAYER.laser_damage)
    assert len(rewards) + 1 == pytest.approx(1 + (shots - 1) * PLAYER.fire_interval * world.config.fps, abs=2)


def test_attack_pauses_out_of_range() -> None:
    world = empty_world()
    scout = world.spawn_npc("npc_scout", AWAY[0] + PLAYER.laser_range + 150.0, AWAY[1])
    world.step(click_world(world, scout.x, scout.y))
    world.step(key("attack"))
    events = run(world, 2.0)
    assert world.player.attack_on and not world.player.attacking
    assert scout.hp == NPC_STATS["npc_scout"].hp and "hit_npc" not in events


def test_box_pickup_credits_and_respawns_elsewhere() -> None:
    world = empty_world(n_boxes=1)
    box = world.boxes[0]
    box.x, box.y = AWAY[0] + 100.0, AWAY[1]
    world.step(click_world(world, box.x + 20.0, box.y))
    events = run(world, 2.0)
    assert events.count("box") == 1 and world.score.boxes == 1 and world.score.credits == box.credits
    new = world.boxes[0]
    assert len(world.boxes) == 1 and new.id != box.id and dist_to_player(world, new.x, new.y) > 700.0


# -------------------------------------------------------------------------------------------- combat


def test_shield_absorbs_first_then_regenerates() -> None:
    world = empty_world()
    raider = world.spawn_npc("npc_raider", AWAY[0] + 250.0, AWAY[1])
    for _ in range(60):
        world.step(IDLE)
        if "hit_player" in world.events:
            break
    assert world.player.hp == PLAYER.hp
    assert world.player.shield == PLAYER.shield - NPC_STATS["npc_raider"].damage
    world.npcs.remove(raider)
    run(world, PLAYER.shield_delay - 0.5)
    assert world.player.shield == PLAYER.shield - NPC_STATS["npc_raider"].damage
    run(world, 2.0)
    assert world.player.shield == PLAYER.shield


def test_raider_attacks_on_sight_scout_only_fights_back() -> None:
    world = empty_world()
    raider = world.spawn_npc("npc_raider", AWAY[0] + 300.0, AWAY[1])
    scout = world.spawn_npc("npc_scout", AWAY[0] - 250.0, AWAY[1])
    events = run(world, 3.0)
    assert raider.aggro and not scout.aggro
    assert events.count("hit_player") >= 3
    world.npcs.remove(raider)
    world.step(click_world(world, scout.x, scout.y))
    world.step(key("attack"))
    run(world, 0.2)
    assert scout.aggro
    hp_before = world.player.shield + world.player.hp
    run(world, 2.0)
    assert world.player.shield + world.player.hp < hp_before


def test_raider_chases_and_gives_up_beyond_its_leash() -> None:
    world = empty_world()
    raider = world.spawn_npc("npc_raider", AWAY[0] + 300.0, AWAY[1])
    run(world, 1.0)
    assert raider.aggro
    world.step(click_world(world, AWAY[0] - 600.0, AWAY[1]))  # flee west, the raider follows
    run(world, 1.0)
    assert raider.x < AWAY[0] + 300.0 - 100.0
    world.player.x -= NPC_STATS["npc_raider"].leash + 200.0  # out of reach
    world.player.dest = None
    world.step(IDLE)
    assert not raider.aggro


def test_death_respawns_at_portal_with_penalty() -> None:
    world = empty_world()
    world.score.credits = 1000
    world.player.hp, world.player.shield = 1.0, 0.0
    world.player.selected = world.spawn_npc("npc_raider", AWAY[0] + 200.0, AWAY[1]).id
    rewards = [world.step(IDLE) for _ in range(60)]
    assert world.score.deaths == 1 and world.score.credits == 900 and -100 in rewards
    p = world.player
    assert (p.x, p.y) == (world.portal.x, world.portal.y)
    assert p.hp == PLAYER.hp and p.shield == PLAYER.shield and p.selected is None


def test_safe_zone_npcs_stay_out_hold_fire_and_regen_is_faster() -> None:
    world = empty_world()
    portal = world.portal
    world.player.x, world.player.y = portal.x + portal.safe_radius - 60.0, portal.y
    world.player.hp = 500.0
    raider = world.spawn_npc("npc_raider", portal.x + portal.safe_radius + 80.0, portal.y)
    limit = portal.safe_radius + raider.stats.radius - 1e-6
    events = []
    for _ in range(2 * world.config.fps):
        world.step(IDLE)
        events += world.events
        assert math.hypot(raider.x - portal.x, raider.y - portal.y) >= limit
    assert "hit_player" not in events and not raider.aggro
    assert world.player.hp == pytest.approx(500.0 + 2.0 * PLAYER.safe_hp_regen)
    assert world.info()["player"]["in_safe_zone"]


def test_player_cannot_fire_from_the_safe_zone() -> None:
    world = empty_world()
    portal = world.portal
    world.player.x, world.player.y = portal.x + portal.safe_radius - 40.0, portal.y
    scout = world.spawn_npc("npc_scout", portal.x + portal.safe_radius + 100.0, portal.y)
    world.step(click_world(world, scout.x, scout.y))
    world.step(key("attack"))
    run(world, 1.0)
    assert world.player.attack_on and not world.player.attacking and scout.hp == scout.stats.hp


# ----------------------------------------------------------------------------------------- abilities


def test_repair_heals_over_time_then_cools_down() -> None:
    world = empty_world()
    world.player.hp = 200.0
    world.step(key("repair"))
    assert world.events == ["repair"]
    run(world, PLAYER.repair_seconds + 1.0)
    regen = PLAYER.hp_regen * (PLAYER.repair_seconds + 1.0)  # undamaged for long: the slow regen runs too
    assert world.player.hp == pytest.approx(
        200.0 + PLAYER.repair_rate * PLAYER.repair_seconds + regen, abs=1.0
    )
    world.step(key("repair"))
    assert world.events == []  # still cooling down
    cooldown = world.info()["player"]["cooldowns"]["repair"]
    assert 0.0 < cooldown < PLAYER.repair_cooldown
    run(world, cooldown + 0.1)
    assert world.info()["player"]["cooldowns"]["repair"] == 0.0
    world.step(key("repair"))
    assert world.events == ["repair"]


def test_boost_speeds_up_for_a_while_then_cools_down() -> None:
    world = empty_world()
    world.step(key("boost"))
    world.player.dest = (AWAY[0] + 2800.0, AWAY[1])  # farther than a click on screen reaches
    run(world, 1.5)
    assert world.player.vx == pytest.approx(PLAYER.speed * PLAYER.boost_factor)
    run(world, PLAYER.boost_seconds)
    assert world.player.vx == pytest.approx(PLAYER.speed)
    world.step(key("boost"))
    assert "boost" not in world.events and world.player.boost_cd > 0.0


# ---------------------------------------------------------------------------------------- population


def test_dead_npcs_are_replaced_out_of_sight() -> None:
    world = World(WorldConfig(n_scouts=3, n_raiders=0, n_bosses=0, n_boxes=0), seed=0)
    victim = world.npcs[0]
    victim.hp = 0.0
    world.step(IDLE)
    assert len(world.npcs) == 2 and world.score.kills["npc_scout"] == 1
    run(world, NPC_STATS["npc_scout"].respawn_s + 0.1)
    assert len(world.npcs) == 3
    newcomer = world.npcs[-1]
    assert newcomer.id > victim.id and dist_to_player(world, newcomer.x, newcomer.y) > 700.0


def test_objects_on_screen_have_clipped_boxes() -> None:
    world = empty_world()
    edge = world.spawn_npc("npc_boss", AWAY[0] + world.config.width / 2.0, AWAY[1])  # half off the right edge
    world.spawn_npc("npc_scout", AWAY[0] + 2000.0, AWAY[1])  # off screen
    world.step(IDLE)
    objs = world.info()["objects"]
    assert [o["cls"] for o in objs] == ["player", "npc_boss"]
    x1, y1, x2, y2 = objs[1]["box"]
    assert x2 == world.config.width and x1 == pytest.approx(world.config.width - edge.stats.radius, abs=1.0)
    assert objs[1]["hp"] == objs[1]["hp_max"] == NPC_STATS["npc_boss"].hp
