"""The background trainer of `pilot shadow`: rounds of `pilot perceive` + `pilot episodes label` on each
finished chunk of the recording, then `pilot train policy --init <newest version>` on all of them, each a
child process at a lower priority; a finished round becomes the next version, <checkpoints>/vNNN.

    trainer = BackgroundTrainer(TrainerSettings(...), recordings, checkpoints, base_bundle, detector)
    trainer.start(); ...; trainer.stop()   # ends the running child (and its children) with the command
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from bot.play.agreement import PersonLabels
from bot.recordings.episode import EpisodeMeta, find_episodes, open_episode, write_labels

log = logging.getLogger(__name__)

# Training windows and batches that a first chunk of >= 15 s already fills (the defaults need minutes of play:
# 16 Strategist windows of 60 s); flags in `extra` come later and win
ROUND_FLAGS = (
    "--strategist.history", "10", "--strategist.stride", "5", "--strategist.train.batch-size", "2",
    "--tactician.train.batch-size", "32", "--executor.train.batch-size", "4",
)  # fmt: skip
STOP_GRACE_S = 10.0  # s a child has to end after SIGTERM before SIGKILL
MODELS = ("strategist", "tactician", "executor")
# labels/person.parquet, what each round trains on: labels/heuristic.parquet (bot/recordings/labels.py: from
# the person's clicks), with the modes of the person's own label file when there is one
PERSON = "person"


@dataclass
class TrainerSettings:
    """What each round runs; `extra` is appended to the `pilot train policy` flags (shlex syntax)."""

    game: str  # the bundle's game profile
    steps: int  # optimizer steps per model per round
    tactician_hz: float  # the base bundle's: the Executor is trained to the rate it is run at
    nice: int  # added to the children's niceness (lower priority than capture and prediction)
    extra: str = ""  # more `pilot train policy` flags


def version_name(number: int) -> str:
    return f"v{number:03d}"


def newest_version(checkpoints: Path) -> Path | None:
    """The newest finished version folder (vNNN) under `checkpoints`, None before the first."""
    found = (
        sorted(p for p in checkpoints.glob("v[0-9][0-9][0-9]") if p.is_dir()) if checkpoints.is_dir() else []
    )
    return found[-1] if found else None


class BackgroundTrainer:
    """A thread that runs the rounds as child processes, one at a time, until `stop()`."""

    def __init__(
        self,
        settings: TrainerSettings,
        recordings: Path,
        checkpoints: Path,
        base: Path,
        detector: Path,
        labels: PersonLabels | None = None,
        starts: dict[Path, float] | None = None,
    ) -> None:
        """`labels`: the person's mode labels, if any; `starts`: each episode's t = 0 as unix time (s)."""
        self.settings, self.recordings, self.checkpoints = settings, recordings, checkpoints
        self.base, self.detector = base.resolve(), detector.resolve()
        self.labels, self.starts = labels, starts if starts is not None else {}
        self.prepared: set[Path] = set()
        self.failed: set[Path] = set()
        self.rounds, self.failed_rounds = 0, 0
        self._stop = threading.Event()
        self._child: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="shadow-trainer", daemon=True)
        self.logs = checkpoints / "logs"

    def start(self) -> BackgroundTrainer:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the running child (SIGTERM to its group, SIGKILL after STOP_GRACE_S), then the thread."""
        self._stop.set()
        with self._lock:
            child = self._child
        if child is not None:
            _end(child)
        self._thread.join(timeout=STOP_GRACE_S + 5)

    # ---------------------------------------------------------------------------------- rounds

    def _run(self) -> None:
        while not self._stop.is_set():
            fresh = [p for p in self._finished() if self._prepare(p)]
            if fresh and not self._stop.is_set():
                self._round()
            else:
                self._stop.wait(1.0)

    def _finished(self) -> list[Path]:
        """Chunks the recorder has closed (meta.json complete) and that are not prepared yet."""
        found = []
        for path in find_episodes(self.recordings) if self.recordings.is_dir() else []:
            if path in self.prepared or path in self.failed:
                continue
            with contextlib.suppress(Exception):  # being written or deleted right now: next time
                if EpisodeMeta.from_json(path / "meta.json").complete:
                    found.append(path)
        return found

    def _prepare(self, episode: Path) -> bool:
        """Perceive and label one chunk; False (and never again) when that fails."""
        cmd = ["perceive", "--episodes", str(episode), "--detector", str(self.detector), "--threads", "1"]
        ok = self._call(cmd, f"perceive-{episode.name}") == 0
        ok = ok and self._call(["episodes", "label", str(episode)], f"label-{episode.name}") == 0
        if ok:
            ok = self._write_person_labels(episode)
        if self._stop.is_set():
            return False
        (self.prepared if ok else self.failed).add(episode)
        if not ok:
            log.warning("shadow trainer: %s left out of training (see %s)", episode.name, self.logs)
        return ok

    def _write_person_labels(self, episode: Path) -> bool:
        starts = {path.resolve(): t for path, t in list(self.starts.items())}
        start = starts.get(episode.resolve())
        if self.labels is not None and start is None:
            log.warning("shadow trainer: %s: its start time is unknown, no labels", episode.name)
            return False
        rows = person_rows(episode, self.labels, start or 0.0)
        if not rows:
            log.warning("shadow trainer: %s: no frame has a label of the person's", episode.name)
            return False
        write_labels(episode, PERSON, rows, target_ids="track")
        return True

    def _round(self) -> None:
        """Fine-tune the newest version (the base bundle at first) on every prepared chunk."""
        number = self.rounds + self.failed_rounds + 1
        start = newest_version(self.checkpoints) or self.base
        partial = self.checkpoints / f".{version_name(number)}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        code = self._call(self._train_command(start, partial), f"train-{version_name(number)}")
        if code != 0 or self._stop.is_set():
            self.failed_rounds += not self._stop.is_set()  # cut short by stop(): not a failure
            shutil.rmtree(partial, ignore_errors=True)
            return
        partial.rename(self.checkpoints / version_name(number))  # only finished bundles get a version name
        self.rounds += 1
        log.info("shadow trainer: %s ready (from %s, %d chunks)", version_name(number), start.name,
                 len(self.prepared))  # fmt: skip

    def _train_command(self, start: Path, out: Path) -> list[str]:
        s = self.settings
        cmd = ["train", "policy", "--init", str(start), "--out", str(out), "--profile", s.game]
        cmd += ["--data.data", str(self.recordings), "--data.labels", PERSON, "--data.val-fraction", "0"]
        cmd += ["--detector", str(self.detector), "--no-copy-detector", "--threads", "1"]
        cmd += ["--executor.tactician-hz", str(s.tactician_hz), *ROUND_FLAGS]
        for model in MODELS:
            cmd += [f"--{model}.train.max-steps", str(s.steps), f"--{model}.train.warmup-steps", "0"]
            cmd += [f"--{model}.train.no-tensorboard", f"--{model}.train.no-progress"]
            cmd += [f"--{model}.train.eval-every", "1000000"]  # no validation set: save at the end only
        return cmd + shlex.split(s.extra)

    # ---------------------------------------------------------------------------------- children

    def _call(self, args: list[str], name: str) -> int:
        """`pilot <args>` as a child process at lower priority, its output in <logs>/<name>.log; the exit
        code (-1 when stopped)."""
        if self._stop.is_set():
            return -1
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        with open(self.logs / f"{name}.log", "w") as out, self._lock:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", *args], stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip
        child = self._child
        with contextlib.suppress(OSError):  # not preexec_fn: unsafe with the capture threads running
            os.setpriority(
                os.PRIO_PROCESS, child.pid, os.getpriority(os.PRIO_PROCESS, 0) + self.settings.nice
            )
        while child.poll() is None and not self._stop.wait(0.2):
            pass
        if child.poll() is None:
            _end(child)
        with self._lock:
            self._child = None
        if child.returncode != 0 and not self._stop.is_set():
            log.warning("shadow trainer: `pilot %s` exited %s (%s)", args[0], child.returncode, out.name)
        return -1 if self._stop.is_set() else child.returncode


def _end(child: subprocess.Popen) -> None:
    """SIGTERM to the child's process group, SIGKILL after STOP_GRACE_S; waits for it."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, sig)
        try:
            child.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def person_rows(episode: Path, labels: PersonLabels | None, start: float) -> list[dict]:
    """labels/heuristic.parquet's rows of `episode`, each with the person's mode at its frame's time
    (`start` + steps.t, unix s) instead when `labels` is given; frames the person left unlabelled are left
    out."""
    data = open_episode(episode)
    rows = data.labels("heuristic").to_pylist()
    if labels is None:
        return rows
    labels.refresh()
    times = data.steps().column("t").to_numpy()
    out = []
    for row in rows:
        mode = labels.mode_at(start + float(times[row["frame"]]))
        if mode is not None:
            out.append({**row, "mode": mode, "confidence": None, "rationale": f"person; {row['rationale']}"})
    return out
