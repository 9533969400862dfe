"""The Naev scenario and the files that run it, built in a private folder; the system package is never
touched.

    <work>/dat/       links to every entry of Naev's data folder, except our own start.xml and events/
                      (links to the stock events + orbit_pilot.lua: the scenario and the ground-truth probe)
    <work>/home/      HOME, XDG_RUNTIME_DIR and `-d` folder: conf.lua (fixed zoom, no welcome dialog),
    saves, logs
    <work>/probe.jsonl  what the probe writes, one JSON line per update (bot/games/naev/probe.py reads it)

Naev 0.8.2 has no plug-in system: its `[DATA]` argument replaces the data folder, so we lay a folder of links.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bot.games.processes import ProcessError
from validation import check_float, check_int, fail

NAEV_DATA = Path("/usr/share/naev/dat")  # Debian's naev-data
NAEV_BINARIES = ("/usr/games/naev", "naev")
EVENT_NAME = "orbit_pilot"
TEMPLATE = Path(__file__).with_name("data") / f"{EVENT_NAME}.lua"
INSTALL_HINT = (
    "Naev is not installed: `sudo apt-get install naev` (Debian/Ubuntu; scripts/bootstrap.sh --dev does it)"
)


@dataclass
class NaevScenario:
    """A combat scenario: the player's ship near a planet in Hakoi, hostile pilots spawned around it."""

    seed: int = 0  # chooses the spawn positions and ships (Naev's own AI is not seeded)
    hostiles: int = 2  # hostile pilots alive at once (each kill is replaced after respawn_s)
    hostile_ships: tuple[str, ...] = ("Hyena",)  # Naev ship names the hostiles are drawn from
    spawn_min: float = 350.0  # world units (= px at zoom 1) from the player, nearest spawn
    spawn_max: float = 600.0  # farthest spawn
    respawn_s: float = 3.0  # s between a kill and its replacement
    hostile_weapon: tuple[str, int] = (
        "Laser Cannon MK1",
        1,
    )  # each hostile's guns (their stock ones removed)
    hostile_shield: float = 0.0  # % shield a hostile spawns with (0: a fight lasts seconds, not minutes)
    player_ship: str = "Lancelot"
    player_outfits: tuple[tuple[str, int], ...] = (("Laser Cannon MK2", 3),)
    ai: str = "baddie_norun"  # Naev AI of the hostiles: attacks, never flees
    faction: str = "Pirate"
    probe_ms: int = 20  # the probe writes at most every probe_ms of real time (and at most once a frame)
    death_armour: float = 5.0  # % armour under which the player counts a death and is restored
    system: str = "Hakoi"
    start_xy: tuple[float, float] = (-8000.0, -17000.0)

    def __post_init__(self) -> None:
        check_int(self, "seed", 0)
        check_int(self, "hostiles", 1, 16)
        check_int(self, "probe_ms", 1, 1000)
        check_float(self, "spawn_min", 0.0, low_open=True)
        check_float(self, "spawn_max", self.spawn_min)
        check_float(self, "respawn_s", 0.0)
        check_float(self, "death_armour", 0.0, 100.0)
        check_float(self, "hostile_shield", 0.0, 100.0)
        if not self.hostile_ships or not all(isinstance(s, str) and s for s in self.hostile_ships):
            raise fail(self, "hostile_ships", "a non-empty tuple of Naev ship names", self.hostile_ships)

    def spawns(self, count: int = 64) -> list[dict[str, float | str]]:
        """The first `count` spawns (ship, offset from the player) in order; the scenario cycles through
        them."""
        rng = np.random.default_rng(self.seed)
        angle = rng.uniform(0.0, 2.0 * np.pi, count)
        radius = rng.uniform(self.spawn_min, self.spawn_max, count)
        ships = rng.integers(0, len(self.hostile_ships), count)
        return [
            {
                "ship": self.hostile_ships[s],
                "dx": round(float(r * np.cos(a)), 1),
                "dy": round(float(r * np.sin(a)), 1),
            }
            for a, r, s in zip(angle, radius, ships, strict=True)
        ]


@dataclass
class NaevFiles:
    """Where one run's files are."""

    work: Path
    data: Path = field(init=False)
    home: Path = field(init=False)
    probe: Path = field(init=False)
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.data, self.home = self.work / "dat", self.work / "home"
        self.probe, self.log = self.work / "probe.jsonl", self.work / "naev.log"


def naev_binary() -> str:
    """The naev program, or ProcessError naming the install command."""
    for name in NAEV_BINARIES:
        found = shutil.which(name)
        if found:
            return found
    raise ProcessError(INSTALL_HINT)


def check_installed() -> None:
    naev_binary()
    if not (NAEV_DATA / "start.xml").is_file():
        raise ProcessError(f"{NAEV_DATA}: Naev's data is missing ({INSTALL_HINT})")


def _lua(value: object) -> str:
    """A Python value as a Lua literal (dicts -> tables with keys, lists/tuples -> arrays)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_lua(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "{" + ", ".join(_lua(v) for v in value) + "}"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid Lua string literal for these names and paths
    return repr(value)


def event_source(scenario: NaevScenario, probe: Path) -> str:
    config = {
        "probe": str(probe),
        "probe_ms": scenario.probe_ms,
        "ai": scenario.ai,
        "faction": scenario.faction,
        "hostiles": scenario.hostiles,
        "respawn_ms": int(scenario.respawn_s * 1000),
        "death_armour": scenario.death_armour,
        "outfits": [list(o) for o in scenario.player_outfits],
        "hostile_weapon": list(scenario.hostile_weapon),
        "hostile_shield": scenario.hostile_shield,
        "spawns": scenario.spawns(),
    }
    return TEMPLATE.read_text(encoding="utf-8").replace("@CONFIG@", _lua(config))


def start_xml(scenario: NaevScenario) -> str:
    x, y = scenario.start_xy
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Start>
 <name>Orbit Pilot</name>
 <player>
  <ship name="Orbit Pilot">{scenario.player_ship}</ship>
  <credits>1</credits>
  <system>
   <name>{scenario.system}</name>
   <x>{x}</x>
   <y>{y}</y>
  </system>
  <event>{EVENT_NAME}</event>
 </player>
 <date>
  <scu>603</scu>
  <stp>3726</stp>
  <stu>2871</stu>
 </date>
</Start>
"""


# Fixed zoom (the probe's world -> screen mapping assumes zoom 1) and no welcome dialog on first start.
CONF_LUA = 'lastversion = "0.8.2+dev"\nzoom_manual = true\nzoom_far = 1.0\nzoom_near = 1.0\n'


def build_overlay(work: Path, scenario: NaevScenario) -> NaevFiles:
    """Lay the data folder, home and probe path for one run under `work` (emptied first)."""
    check_installed()
    files = NaevFiles(Path(work))
    if files.work.exists():
        shutil.rmtree(files.work)
    (files.data / "events").mkdir(parents=True)
    (files.home / "conf").mkdir(parents=True)
    for entry in sorted(NAEV_DATA.iterdir()):
        if entry.name not in ("start.xml", "events"):
            (files.data / entry.name).symlink_to(entry)
    for entry in sorted((NAEV_DATA / "events").iterdir()):
        (files.data / "events" / entry.name).symlink_to(entry)
    (files.data / "start.xml").write_text(start_xml(scenario), encoding="utf-8")
    (files.data / "events" / f"{EVENT_NAME}.lua").write_text(
        event_source(scenario, files.probe), encoding="utf-8"
    )
    (files.home / "conf" / "conf.lua").write_text(CONF_LUA, encoding="utf-8")
    return files
