"""Shared pytest fixtures: a private Xvfb display, offline settings for ultralytics, quiet SDL audio, tiny
perceived Arena episodes, an untrained detector (raw_detector), the Arena detector and policy bundle.

Tiny perceived episodes: perception runs its real chain (tracker, HUD reader, state encoder, summariser)
through `perceive_episode`, with an oracle detector that returns the Arena's ground-truth boxes: no detector
weights to build, and the tracks then follow the objects, which is what the dataset code has to handle
(track ids != Arena ids).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bot.perception.detector import Detections
from bot.profile import load_profile
from bot.recordings.episode import find_episodes, open_episode
from bot.recordings.perceive import PerceiveConfig, perceive_episode

os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")


def _free_display_number() -> int:
    for number in range(90, 200):
        if not Path(f"/tmp/.X{number}-lock").exists() and not Path(f"/tmp/.X11-unix/X{number}").exists():
            return number
    raise RuntimeError("no free X display number between :90 and :199")


@pytest.fixture
def xvfb(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Start a private Xvfb (1280x720x24) for one test; yields its DISPLAY string and sets $DISPLAY."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (scripts/bootstrap.sh --dev installs it)")
    number = _free_display_number()
    display = f":{number}"
    proc = subprocess.Popen(
        ["Xvfb", display, "-screen", "0", "1280x720x24", "-nolisten", "tcp", "-noreset"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10.0
    while not Path(f"/tmp/.X11-unix/X{number}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"Xvfb {display} did not start")
        time.sleep(0.02)
    monkeypatch.setenv("DISPLAY", display)
    try:
        yield display
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


class OracleDetector:
    """Returns each frame's gt_objects as detections, in frame order (perceive_episode calls it in order)."""

    id = "oracle:test"
    weights = Path("oracle")
    imgsz = 0
    runtime = SimpleNamespace(name="oracle")
    cfg = SimpleNamespace(conf=0.25, iou=0.7)

    def __init__(self, episode_dir: Path, class_names: list[str]) -> None:
        gt = open_episode(episode_dir).steps().column("gt_objects").to_pylist()
        index = {name: i for i, name in enumerate(class_names)}
        self.frames = [
            Detections(
                np.array([[o["x1"], o["y1"], o["x2"], o["y2"]] for o in objs], np.float32).reshape(-1, 4),
                np.full(len(objs), 0.9, np.float32),
                np.array([index[o["cls"]] for o in objs], np.int64),
            )
            for objs in gt
        ]
        self.next = 0

    def detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        out = self.frames[self.next : self.next + len(frames)]
        self.next += len(frames)
        return out


def make_perceived(out: Path, episodes: int, seconds: float, seed: int) -> Path:
    from bot.play.demos import DemosConfig, run

    run(DemosConfig(out=out, episodes=episodes, seconds=seconds, seed=seed, width=320, height=180, zoom=0.25,
                    workers=1))  # fmt: skip
    profile = load_profile("arena")
    for path in find_episodes(out):
        detector = OracleDetector(path, profile.class_names)
        perceive_episode(path, detector, profile, PerceiveConfig(episodes=path, detector=Path("oracle")))  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="session")
def perceived_factory() -> Callable[[Path, int, float, int], Path]:
    """`make_perceived(out, episodes, seconds, seed)`: expert demos at 320x180 perceived with the oracle."""
    return make_perceived


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def arena_detector() -> Path:
    """The trained Arena detector: the shipped bundle's copy, else a local `pilot train detector` run."""
    for folder in (REPO / "data/pretrained/arena/detector", REPO / "data/detectors/arena"):
        if (folder / "model.onnx").exists():
            return folder
    pytest.skip("no trained Arena detector (data/pretrained/arena/detector or data/detectors/arena)")


@pytest.fixture(scope="session")
def raw_detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A detector folder like `pilot train detector` writes, holding an untrained yolo11n built from its
    YAML (no download, no training), exported to ONNX at 96x160: for plumbing that needs no weights."""
    return make_untrained_detector(tmp_path_factory.mktemp("untrained_detector"), "arena")


def make_untrained_detector(folder: Path, game: str) -> Path:
    """An untrained detector for the classes of `game`'s profile, laid out as `pilot train detector` does."""
    import json

    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    from bot.perception.detector import ultralytics_offline

    ultralytics_offline(folder / "yolo_config")
    classes = load_profile(game).class_names
    torch.manual_seed(0)
    model = DetectionModel("yolo11n.yaml", nc=len(classes), verbose=False)
    model.names = dict(enumerate(classes))
    torch.save({"model": model, "train_args": {"imgsz": 160}}, folder / "best.pt")
    onnx = YOLO(str(folder / "best.pt")).export(format="onnx", imgsz=[96, 160], dynamic=True, device="cpu")
    Path(onnx).rename(folder / "model.onnx")
    config = {"classes": classes, "imgsz": 160, "input_shape": [96, 160], "run_id": "untrained"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="session")
def arena_policy() -> Path:
    """The shipped Arena policy bundle (data/pretrained/arena)."""
    folder = REPO / "data/pretrained/arena"
    if not (folder / "bundle.json").exists():
        pytest.skip("no shipped policy bundle at data/pretrained/arena")
    return folder


@pytest.fixture(scope="session")
def perceived(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 perceived expert episodes of 6 s (seeds 0..2) at 320x180."""
    return make_perceived(tmp_path_factory.mktemp("perceived"), episodes=3, seconds=6, seed=0)


def make_tiny_bundle(folder: Path, detector: Path | None = None, seed: int = 0, game: str = "arena") -> Path:
    """A policy bundle of tiny random models in `folder`, laid out as `pilot train policy` writes it;
    `detector` (a detector folder) is copied into it when given."""
    import json

    import torch

    from bot.perception.state import OBS_SPEC
    from bot.policy.bundle import BUNDLE_FILE, BUNDLE_FORMAT, BUNDLE_VERSION
    from models.executor import Executor, ExecutorConfig
    from models.io import save_model
    from models.strategist import MODES, Strategist, StrategistConfig
    from models.tactician import Tactician, TacticianConfig

    f_obj, f_glob = len(OBS_SPEC.obj_features), len(OBS_SPEC.glob_features)
    profile = load_profile(game)
    f_sum, n_keys = len(OBS_SPEC.summary_features), len(profile.keys)
    n_held = n_keys if any(k.hold for k in profile.keys) else 0  # Naev: a held head, as training makes it
    torch.manual_seed(seed)
    small = dict(d_model=16, n_heads=2, n_layers=1, d_ff=32, dropout=0.0)
    strategist = StrategistConfig(d_in=f_sum, goal_dim=8, n_modes=len(MODES), **small)
    tactician = TacticianConfig(d_obj=f_obj, n_max=OBS_SPEC.n_max, goal_dim=8, d_ctx=f_glob, **small)
    executor = ExecutorConfig(
        d_frame=f_glob, goal_dim=8, d_target=f_obj, d_model=16, n_layers=1, n_keys=n_keys,
        n_held=n_held, mouse_bins_x=4, mouse_bins_y=4,
    )  # fmt: skip
    models = {
        "strategist": Strategist(strategist),
        "tactician": Tactician(tactician),
        "executor": Executor(executor),
    }
    for name, model in models.items():
        save_model(folder / name, model)
    record: dict = {"path": None, "copied": False}
    if detector is not None:
        ignore = shutil.ignore_patterns("dataset", "train", "runs")
        shutil.copytree(detector, folder / "detector", ignore=ignore)
        record = {"path": "detector", "copied": True}
    bundle = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "profile": game,
        "obs_spec": OBS_SPEC.to_dict(),
        "modes": list(MODES),
        "detector": record,
        "models": {name: name for name in models},
        "metrics": {},
        "data": {},
        "versions": {},
        "inference": {"tactician_hz": 10.0, "snap_boxes": 40.0},  # the shipped bundle's
    }
    (folder / BUNDLE_FILE).write_text(json.dumps(bundle, indent=2))
    return folder


@pytest.fixture(scope="session")
def untrained_detector() -> Callable[[Path, str], Path]:
    """`make_untrained_detector(folder, game)`: an untrained detector for that game's classes."""
    return make_untrained_detector


@pytest.fixture(scope="session")
def tiny_bundle() -> Callable[..., Path]:
    """`make_tiny_bundle(folder, detector=None, seed=0)`: a bundle of tiny random models (no training)."""
    return make_tiny_bundle
