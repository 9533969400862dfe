"""HUD reader: exact on drawn bars, and close to the Arena's ground truth on recorded (H.264) episodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bot.perception.hud import HudReader, pixel_rect, read_bar
from bot.profile import BarSpec, load_profile
from bot.recordings.episode import find_episodes, open_episode


@pytest.fixture(scope="module")
def arena_episodes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from bot.play.demos import DemosConfig, run

    out = tmp_path_factory.mktemp("demos")
    run(DemosConfig(out=out, episodes=2, seconds=5, width=640, height=360, workers=1))
    return find_episodes(out)


def _bar_frame(bar: BarSpec, fill: float, width: int = 1280, height: int = 720) -> np.ndarray:
    frame = np.full((height, width, 3), (6, 8, 18), np.uint8)
    x1, y1, x2, y2 = pixel_rect(bar.region, width, height)
    frame[y1:y2, x1:x2] = (28, 32, 44)
    frame[y1:y2, x1 : x1 + round((x2 - x1) * fill)] = bar.colour
    return frame


@pytest.mark.parametrize("fill", [0.0, 0.013, 0.25, 0.5, 0.999, 1.0])
def test_drawn_bar_reads_its_fill(fill: float) -> None:
    bar = load_profile("arena").hud.bars["hp"]
    width = pixel_rect(bar.region, 1280, 720)[2] - pixel_rect(bar.region, 1280, 720)[0]
    assert read_bar(_bar_frame(bar, fill), bar) == pytest.approx(fill, abs=0.5 / width + 1e-9)


def test_text_over_a_bar_costs_only_its_columns() -> None:
    bar = load_profile("arena").hud.bars["shield"]
    frame = _bar_frame(bar, 0.8)
    x1, y1, x2, y2 = pixel_rect(bar.region, 1280, 720)
    frame[y1 : y1 + 3, x1 + 10 : x1 + 40] = 255  # a thin line of text across the top rows only
    assert read_bar(frame, bar) == pytest.approx(0.8, abs=0.01)


def test_reader_returns_every_bar_and_the_minimap() -> None:
    profile = load_profile("arena")
    frame = _bar_frame(profile.hud.bars["hp"], 0.5)
    reading = HudReader(profile.hud).read(frame)
    assert set(reading.bars) == {"hp", "shield"}
    assert reading.bars["hp"] == pytest.approx(0.5, abs=0.01)
    assert reading.bars["shield"] == 0.0
    assert reading.minimap is None  # no marker drawn
    x1, y1, x2, y2 = pixel_rect(profile.hud.minimap.region, 1280, 720)
    frame[y1 + 10 : y1 + 14, x1 + 50 : x1 + 54] = 255
    mx, my = HudReader(profile.hud).read(frame).minimap
    assert mx == pytest.approx(52 / (x2 - x1), abs=1e-6) and my == pytest.approx(12 / (y2 - y1), abs=1e-6)


def test_in_process_arena_frames_match_the_ground_truth() -> None:
    from arena.env import ArenaConfig, ArenaEnv

    profile = load_profile("arena")
    reader = HudReader(profile.hud)
    env = ArenaEnv(ArenaConfig(width=640, height=360, episode_seconds=10))
    frame, info = env.reset(seed=3)
    world = env.world.config
    for _ in range(20):
        reading = reader.read(frame)
        assert reading.bars["hp"] == pytest.approx(info["hud"]["hp_frac"], abs=1 / 128)
        assert reading.bars["shield"] == pytest.approx(info["hud"]["shield_frac"], abs=1 / 128)
        px, py = info["player"]["pos"]
        assert reading.minimap == pytest.approx((px / world.world_width, py / world.world_height), abs=0.02)
        frame, _, _, _, info = env.step({"mouse": [0.9, 0.9], "click": 1, "key": 0})
    env.close()


@pytest.mark.parametrize("fill", [0.0, 0.25, 0.6, 1.0])
def test_a_bar_filling_up_reads_its_height_across_a_marker_line_and_an_icon(fill: float) -> None:
    """Naev's bars fill bottom to top, with a marker line across them and an icon over their middle."""
    bar = load_profile("naev").hud.bars["shield"]
    frame = np.full((720, 1280, 3), (17, 17, 17), np.uint8)
    x1, y1, x2, y2 = pixel_rect(bar.region, 1280, 720)
    top = y2 - round((y2 - y1) * fill)
    frame[top:y2, x1:x2] = bar.colour
    frame[(y1 + y2) // 2, x1:x2] = (180, 180, 200)  # the marker line, drawn over the fill
    frame[y2 - 5 : y2 - 2, x1 : x1 + 3] = (240, 240, 240)  # a corner of the icon
    assert read_bar(frame, bar) == pytest.approx(fill, abs=1 / (y2 - y1))
    with pytest.raises(ValueError, match="direction"):
        BarSpec(region=(0.1, 0.1, 0.2, 0.2), colour=(1, 2, 3), direction="down")


def test_recorded_episodes_hud_error(arena_episodes: list[Path]) -> None:
    """Mean absolute error of the bars against steps.hp / steps.shield over every frame of the episodes."""
    reader = HudReader(load_profile("arena").hud)
    errors = []
    for path in arena_episodes:
        episode = open_episode(path)
        steps = episode.steps()
        hp, shield = steps.column("hp").to_numpy(), steps.column("shield").to_numpy()
        for index, frame in episode.frames():
            reading = reader.read(frame)
            errors.append((abs(reading.bars["hp"] - hp[index]), abs(reading.bars["shield"] - shield[index])))
    mae = np.asarray(errors).mean(axis=0)
    assert mae[0] < 0.01 and mae[1] < 0.01, f"HUD MAE hp {mae[0]:.4f} shield {mae[1]:.4f}"
