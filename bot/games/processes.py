"""Child processes that end with us: a private Xvfb display, and games started under it.

Every process started here dies with the process that started it, whatever way that one ends: a normal end or
an error (the context managers), Ctrl+C (KeyboardInterrupt runs them too), and SIGKILL (the kernel sends the
child SIGKILL when its parent dies: prctl PR_SET_PDEATHSIG). Children get their own session, so a Ctrl+C in
the terminal reaches only us, and we end them in order.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from bot.errors import PilotError

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ProcessError(PilotError):
    """A child process (Xvfb, a game) is missing, did not start, or ended on its own."""


def die_with_parent() -> None:
    """SIGKILL this process when its parent (the thread that started it) dies: run in a child between fork
    and exec, or first thing in a worker process."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def start_child(
    argv: Sequence[str], env: dict[str, str] | None = None, log_file: Path | None = None
) -> subprocess.Popen:
    """Start `argv` in its own session, tied to our life (PDEATHSIG), its output to `log_file` or nowhere.

    Call it from the main thread or a thread that outlives the child: PDEATHSIG fires when the starting
    THREAD ends."""
    out: IO | int = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # no threads start between fork and exec
        )
    except FileNotFoundError:
        raise ProcessError(f"{argv[0]}: not found") from None
    finally:
        if log_file:
            out.close()  # type: ignore[union-attr]


def stop_child(
    proc: subprocess.Popen | None, name: str, term_first: bool = True, wait_s: float = 5.0
) -> None:
    """End `proc` and reap it: SIGTERM then SIGKILL after `wait_s`, or SIGKILL at once (`term_first=False`,
    for programs that answer SIGTERM with a dialog, as Naev does)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM if term_first else signal.SIGKILL)
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        log.warning("%s (pid %d) ignored SIGTERM for %.0f s: killing it", name, proc.pid, wait_s)
        proc.kill()
        proc.wait(timeout=wait_s)
    except ProcessLookupError:
        pass


class PrivateDisplay:
    """A private Xvfb server (`width`x`height`x24) on a free display number chosen by Xvfb itself.

    Example:
        with PrivateDisplay(1280, 720) as display:   # display.name == ":93"
            start_child(["naev"], env={**os.environ, "DISPLAY": display.name})
    """

    def __init__(self, width: int, height: int, start_timeout_s: float = 10.0) -> None:
        if shutil.which("Xvfb") is None:
            raise ProcessError(
                "Xvfb is not installed: `sudo apt-get install xvfb` (or scripts/bootstrap.sh --dev)"
            )
        self.width, self.height, self.start_timeout_s = width, height, start_timeout_s
        self.proc: subprocess.Popen | None = None
        self.name = ""

    def start(self) -> PrivateDisplay:
        read_fd, write_fd = os.pipe()
        argv = ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{self.width}x{self.height}x24"]
        argv += ["-nolisten", "tcp", "-noreset"]
        try:
            self.proc = subprocess.Popen(
                argv,
                pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            os.close(write_fd)
        self.name = ":" + self._read_display_number(read_fd)
        log.info(
            "private display %s (%dx%d) started (pid %d)", self.name, self.width, self.height, self.proc.pid
        )
        return self

    def _read_display_number(self, read_fd: int) -> str:
        """Xvfb writes its display number to the pipe once it accepts connections."""
        deadline = time.monotonic() + self.start_timeout_s
        data = b""
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            os.set_blocking(read_fd, False)
            while not data.endswith(b"\n"):
                if self.proc is not None and self.proc.poll() is not None:
                    raise ProcessError(f"Xvfb exited with code {self.proc.returncode} before it was ready")
                if time.monotonic() > deadline:
                    self.stop()
                    raise ProcessError(f"Xvfb did not become ready within {self.start_timeout_s:.0f} s")
                try:
                    data += pipe.read(16) or b""
                except BlockingIOError:
                    time.sleep(0.02)
        return data.decode().strip()

    def stop(self) -> None:
        stop_child(self.proc, f"Xvfb {self.name}")
        self.proc = None

    def __enter__(self) -> PrivateDisplay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system, s) that process `pid` has used so far; 0.0 when it is gone or None."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
