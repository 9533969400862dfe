"""Helpers for tests that start the project's programs as subprocesses (on pytest's pythonpath)."""

from __future__ import annotations

import queue
import subprocess
import threading
import time

import pytest


class StderrLines:
    """Every stderr line of a subprocess, read by a thread: waiting for one never blocks on the pipe, and
    `text` holds all of it for failure messages."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.lines = proc, []
        self._queue: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            self._queue.put(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, prefix: str, timeout: float = 90.0) -> str:
        """The next line starting with `prefix`, stripped; kills the process and fails the test when it ends
        (and its stderr is read to the end) or `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1.0)
            except queue.Empty:
                if self.proc.poll() is not None and not self._reader.is_alive():
                    break
                continue
            if line.startswith(prefix):
                return line.strip()
        self.proc.kill()
        pytest.fail(f"never saw {prefix!r}; stderr so far: {self.text[-3000:]}")
