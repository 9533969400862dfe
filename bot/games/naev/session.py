"""One running Naev: started on a private Xvfb (`headless`) or the user's display, driven into the scenario
with X key events (as a person would: Return, a pilot name, Return, Return, Escape), stopped for sure.

    with NaevSession(NaevScenario(seed=3), NaevConfig(headless=True)) as naev:
        naev.region         # (left, top, width, height) of the game on its display
        naev.probe.latest() # ground truth, for measuring only

Naev answers SIGTERM with a "Quit?" dialog, so it is ended with SIGKILL; its Xvfb is ended after it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bot.games.naev.overlay import NaevFiles, NaevScenario, build_overlay, naev_binary
from bot.games.naev.probe import ProbeError, ProbeReader
from bot.games.processes import PrivateDisplay, ProcessError, start_child, stop_child
from validation import check_bool, check_float, check_int

log = logging.getLogger(__name__)

PILOT_NAME = "orbit"  # the new game's pilot name, typed on the keyboard


class KeyBackend(Protocol):
    def press_key(self, key: str) -> None: ...

    def release_key(self, key: str) -> None: ...


@dataclass
class NaevConfig:
    width: int = 1280  # px, Naev's window (-W); on a private display also the screen
    height: int = 720  # px (-H)
    fps_cap: int = 60  # Naev's frame-rate cap (-F)
    headless: bool = True  # a private Xvfb; False = the display in $DISPLAY
    start_timeout_s: float = 60.0  # s from launch to the first probe line (menus included)
    probe_silence_s: float = 5.0  # s without a probe line that count as a frozen game
    work: Path | None = None  # where the data overlay, home and logs go (default: a temporary folder)

    def __post_init__(self) -> None:
        check_int(self, "width", 320)
        check_int(self, "height", 240)
        check_int(self, "fps_cap", 1, 240)
        check_bool(self, "headless")
        check_float(self, "start_timeout_s", 1.0)
        check_float(self, "probe_silence_s", 0.1)


def _tap(keys: KeyBackend, key: str, hold_s: float = 0.05) -> None:
    keys.press_key(key)
    time.sleep(hold_s)
    keys.release_key(key)
    time.sleep(0.15)


class NaevSession:
    """Naev from launch to the scenario, and back to nothing. Not re-entrant: one start() per session."""

    def __init__(self, scenario: NaevScenario, cfg: NaevConfig | None = None) -> None:
        self.scenario, self.cfg = scenario, cfg or NaevConfig()
        self.display: PrivateDisplay | None = None
        self.proc = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.files: NaevFiles | None = None
        self.probe: ProbeReader | None = None
        self.display_name = ""
        self._outer_display: str | None = None  # $DISPLAY before a private one replaced it

    @property
    def region(self) -> tuple[int, int, int, int]:
        """(left, top, width, height) of the game on its display: the private screen, or Naev's window found
        by its process id on the user's display."""
        if self.cfg.headless or self.proc is None:
            return (0, 0, self.cfg.width, self.cfg.height)
        return window_of_pid(self.proc.pid, self.display_name) or (0, 0, self.cfg.width, self.cfg.height)

    def start(self, keys_factory: Callable[[], KeyBackend] | None = None) -> NaevSession:
        """Launch and reach space; `keys_factory` makes the keyboard that clicks through the menus (default:
        the live bot's X input backend)."""
        naev = naev_binary()
        work = self.cfg.work
        if work is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="orbit-naev-")
            work = Path(self._tmp.name)
        self.files = build_overlay(Path(work) / "run", self.scenario)
        try:
            self._start_display()
            self._launch(naev)
            self.probe = ProbeReader(self.files.probe, self.cfg.probe_silence_s)
            self._enter_space(keys_factory)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_display(self) -> None:
        if self.cfg.headless:
            self.display = PrivateDisplay(self.cfg.width, self.cfg.height).start()
            self.display_name = self.display.name
            self._outer_display = os.environ.get("DISPLAY")
            os.environ["DISPLAY"] = self.display_name  # capture and X input of this process go there too
        else:
            self.display_name = os.environ.get("DISPLAY", "")
            if not self.display_name:
                raise ProcessError("no X display: set DISPLAY, or run headless (a private Xvfb)")

    def _launch(self, naev: str) -> None:
        assert self.files is not None, "NaevSession._launch: build_overlay first"
        home = self.files.home
        env = {
            **os.environ,
            "DISPLAY": self.display_name,
            "HOME": str(home),
            "XDG_RUNTIME_DIR": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "SDL_AUDIODRIVER": "dummy",
        }
        argv = [
            naev,
            "-M",
            "-W",
            str(self.cfg.width),
            "-H",
            str(self.cfg.height),
            "-F",
            str(self.cfg.fps_cap),
        ]
        argv += ["-d", str(home / "conf"), str(self.files.data)]
        self.proc = start_child(argv, env=env, log_file=self.files.log)
        (self.files.work / "naev.pid").write_text(str(self.proc.pid))
        log.info("naev started (pid %d) on %s, log %s", self.proc.pid, self.display_name, self.files.log)

    def _enter_space(self, keys_factory: Callable[[], KeyBackend] | None) -> None:
        """Main menu -> New Game -> name -> Return (normal speed) -> Escape (intro): until the probe
        writes."""
        assert self.probe is not None and self.files is not None
        keys = keys_factory() if keys_factory else _default_keys()
        deadline = time.monotonic() + self.cfg.start_timeout_s
        self._wait_for_menu(deadline)
        _tap(keys, "enter")
        time.sleep(1.0)
        for ch in PILOT_NAME:
            _tap(keys, ch, 0.03)
        for key, pause in (("enter", 1.0), ("enter", 1.5), ("esc", 1.0)):
            _tap(keys, key)
            time.sleep(pause)
        while not self.probe.poll():
            self.check_alive()
            if time.monotonic() > deadline:
                raise ProbeError(
                    f"Naev did not reach the scenario within {self.cfg.start_timeout_s:.0f} s "
                    f"(no probe line in {self.files.probe}; Naev's log: {self.files.log})"
                )
            _tap(keys, "esc")  # a dialog still open (the intro, a message) closes with Escape
            time.sleep(0.5)
        log.info("naev: in space after %.1f s", self.cfg.start_timeout_s - (deadline - time.monotonic()))

    def _wait_for_menu(self, deadline: float) -> None:
        """Naev logs "Reached main menu" once its menu takes input."""
        assert self.files is not None
        while time.monotonic() < deadline:
            self.check_alive()
            log_text = self.files.log.read_text(errors="replace") if self.files.log.exists() else ""
            if "Reached main menu" in log_text:
                time.sleep(0.5)
                return
            time.sleep(0.1)
        raise ProcessError(
            f"Naev showed no main menu within {self.cfg.start_timeout_s:.0f} s (log: {self.files.log})"
        )

    @property
    def pid(self) -> int | None:
        """Naev's process id while it runs."""
        return self.proc.pid if self.proc is not None else None

    def check_alive(self) -> None:
        """ProcessError when Naev has exited (crashed or closed)."""
        if self.proc is not None and self.proc.poll() is not None:
            where = f" (log: {self.files.log})" if self.files else ""
            raise ProcessError(f"Naev exited with code {self.proc.returncode}{where}")

    def stop(self) -> None:
        if self.probe is not None:
            self.probe.close()
        stop_child(self.proc, "naev", term_first=False)
        self.proc = None
        if self.display is not None:
            self.display.stop()
            self.display = None
            _restore_env("DISPLAY", self._outer_display)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> NaevSession:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def window_of_pid(pid: int, display: str) -> tuple[int, int, int, int] | None:
    """(left, top, width, height) of the viewable window whose _NET_WM_PID is `pid` (SDL sets it), or None."""
    from Xlib import X
    from Xlib import display as xdisplay

    dpy = xdisplay.Display(display)
    try:
        root, atom = dpy.screen().root, dpy.intern_atom("_NET_WM_PID")
        stack = list(root.query_tree().children)
        while stack:
            window = stack.pop()
            try:
                stack.extend(window.query_tree().children)
                prop = window.get_full_property(atom, X.AnyPropertyType)
                if (
                    prop is None
                    or int(prop.value[0]) != pid
                    or window.get_attributes().map_state != X.IsViewable
                ):
                    continue
                geometry, origin = window.get_geometry(), root.translate_coords(window, 0, 0)
                return int(origin.x), int(origin.y), int(geometry.width), int(geometry.height)
            except Exception:  # noqa: BLE001 - windows vanish while we walk the tree
                continue
    finally:
        dpy.close()
    return None


def _default_keys() -> KeyBackend:
    """The live bot's own X input backend (pynput through XTest), so menus are reached as a person would."""
    from bot.control.backend import PynputBackend

    return PynputBackend(keys=("enter", "esc", *PILOT_NAME))
