"""Frame sources: mss capture under a private Xvfb (window by title, region, pacing), the in-process Arena."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from bot.errors import CaptureError
from bot.perception.capture import ArenaSource, FrameSource, MssConfig, MssSource, find_window
from bot.profile import load_profile

WINDOW_RGB = (200, 40, 90)


@pytest.fixture
def x_window(xvfb: str) -> Iterator[tuple[int, int, int, int]]:
    """A plain X window titled "Orbit Test Window" at (100, 50), 320x200, filled with WINDOW_RGB."""
    from Xlib import X, display

    dpy = display.Display(xvfb)
    screen = dpy.screen()
    pixel = (WINDOW_RGB[0] << 16) | (WINDOW_RGB[1] << 8) | WINDOW_RGB[2]  # 24-bit TrueColor
    window = screen.root.create_window(
        100, 50, 320, 200, 0, screen.root_depth, X.InputOutput, X.CopyFromParent, background_pixel=pixel
    )
    window.set_wm_name("Orbit Test Window")
    window.map()
    dpy.sync()
    try:
        yield (100, 50, 320, 200)
    finally:
        window.destroy()
        dpy.close()


def _wait_for_colour(source: MssSource, colour: tuple[int, int, int]) -> np.ndarray:
    """The server paints a newly mapped window asynchronously: grab until it shows (bounded)."""
    for _ in range(100):
        image = source.grab()
        if (image[100, 200] == colour).all():  # inside the window in every view the tests take
            return image
        time.sleep(0.02)
    return image


@pytest.mark.display
def test_window_found_by_title_and_captured(x_window: tuple[int, int, int, int]) -> None:
    assert find_window("Orbit Test") == x_window
    with MssSource(MssConfig(title="Orbit Test", fps=30)) as source:
        assert source.size == (320, 200)
        image = _wait_for_colour(source, WINDOW_RGB)
        assert image.shape == (200, 320, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
        assert (image == WINDOW_RGB).all(), "the whole capture is the window, in RGB order"
        frame = source.read()
        assert frame.index == 0 and frame.dropped == 0 and frame.t >= 0.0


@pytest.mark.display
@pytest.mark.parametrize(("region", "shape"), [(None, (720, 1280, 3)), ((0, 0, 640, 360), (360, 640, 3))])
def test_monitor_and_region_capture(x_window, region, shape) -> None:
    with MssSource(MssConfig(region=region)) as source:
        assert source.size == (shape[1], shape[0])
        image = _wait_for_colour(source, WINDOW_RGB)
        assert image.shape == shape
        assert (image[5, 5] == 0).all() and (image[100, 200] == WINDOW_RGB).all()  # root is black
        assert source.read().image.shape == shape


@pytest.mark.display
def test_pacing_counts_dropped_frames(xvfb: str) -> None:
    with MssSource(MssConfig(region=(0, 0, 64, 64), fps=100)) as source:
        first = source.read()
        time.sleep(0.1)  # a consumer 10 frame slots late
        late = source.read()
        assert late.dropped >= 9 and source.dropped == late.dropped
        assert late.index == first.index + 1 and late.t >= 0.1


@pytest.mark.display
def test_capture_errors(xvfb: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CaptureError, match="no window whose title contains 'Nope'"):
        MssSource(MssConfig(title="Nope"))
    with pytest.raises(CaptureError, match="not inside the screen"):
        MssSource(MssConfig(region=(1000, 600, 640, 360)))
    with pytest.raises(CaptureError, match="monitor 5"):
        MssSource(MssConfig(monitor=5))
    monkeypatch.setenv("DISPLAY", ":199")
    with pytest.raises(CaptureError, match="cannot"):
        MssSource(MssConfig())


def test_config_from_profile() -> None:
    profile = load_profile("arena")
    cfg = MssConfig.from_profile(profile, fps=20)
    assert cfg.title == profile.window.title and cfg.fps == 20
    with pytest.raises(ValueError, match="fps"):
        MssConfig(fps=0)
    with pytest.raises(ValueError, match="region"):
        MssConfig(region=(0, 0, 0, 10))


def test_arena_source_in_process() -> None:
    from arena.env import ArenaConfig

    source: FrameSource = ArenaSource(ArenaConfig(width=320, height=180, fps=30), seed=5, seconds=0.2)
    assert source.size == (320, 180) and source.fps == 30
    first = source.read()
    assert first.image.shape == (180, 320, 3) and first.t == 0.0 and first.index == 0
    assert source.info["frame"] == 0
    source.apply({"mouse": [0.9, 0.1], "click": 1, "key": 0})
    second = source.read()
    assert second.t == pytest.approx(1 / 30) and source.cursor == (0.9, 0.1)
    assert source.info["cursor"] == pytest.approx([0.9 * 320, 0.1 * 180], abs=1.0)
    frames = [second]
    while (frame := source.read()) is not None:
        frames.append(frame)
    assert len(frames) + 1 == 6  # 0.2 s at 30 fps, the reset frame included
    source.close()


def test_arena_source_is_deterministic() -> None:
    from arena.env import ArenaConfig

    runs = []
    for _ in range(2):
        source = ArenaSource(ArenaConfig(width=320, height=180), seed=11, seconds=0.1)
        runs.append([f.image for f in iter(source.read, None)])
    assert all((a == b).all() for a, b in zip(*runs))
