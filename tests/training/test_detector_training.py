"""`pilot train detector`: the whole pipeline on a tiny real ultralytics run, with the network forbidden.

Dataset export from Arena episodes (split by episode), 1 epoch of yolo11n from its YAML, best.pt + model.onnx
+ config.json, and the held-out evaluation through the deployed Detector. A socket guard makes any attempt to
reach a non-local host fail the test, which proves the offline settings are complete.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest

from bot.errors import DetectorError
from bot.perception.detector import Detector
from bot.profile import load_profile
from bot.recordings.episode import find_episodes
from training.detector import (
    DetectorTrainConfig,
    gt_labels,
    main,
    match_detections,
    split_episodes,
)


@pytest.fixture(scope="module")
def arena_episodes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bot.play.demos import DemosConfig, run

    out = tmp_path_factory.mktemp("demos")
    run(DemosConfig(out=out, episodes=3, seconds=3, width=640, height=360, workers=1))
    return out


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every non-loopback DNS lookup or connection raises (and is recorded)."""
    attempts: list[str] = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def local(host: object) -> bool:
        return str(host) in ("localhost", "127.0.0.1", "::1", "") or str(host).startswith("/")

    def getaddrinfo(host, *args, **kwargs):
        if not local(host):
            attempts.append(f"getaddrinfo {host}")
            raise OSError(f"network disabled in tests: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if not local(host):
            attempts.append(f"connect {address}")
            raise OSError(f"network disabled in tests: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


def test_split_is_by_whole_episode() -> None:
    paths = [Path(f"ep{i}") for i in range(5)]
    train, val = split_episodes(paths, 0.2)
    assert [p.name for p in train] == ["ep0", "ep1", "ep2", "ep3"] and [p.name for p in val] == ["ep4"]
    with pytest.raises(DetectorError, match="at least 2 episodes"):
        split_episodes(paths[:1], 0.2)
    train, val = split_episodes(paths, 0.2, ("ep1", "ep3"))
    assert [p.name for p in val] == ["ep1", "ep3"] and len(train) == 3
    with pytest.raises(DetectorError, match="val-episodes"):
        split_episodes(paths, 0.2, ("ep9",))


def test_gt_labels_drop_slivers_and_unknown_classes() -> None:
    classes = load_profile("arena").class_names
    objects = [{"cls": "bonus_box", "x1": 10, "y1": 10, "x2": 34, "y2": 34},
               {"cls": "npc_scout", "x1": 0, "y1": 5, "x2": 3, "y2": 37}]  # fmt: skip
    cls, xyxy = gt_labels(objects, classes, min_box_px=4)
    assert list(cls) == [classes.index("bonus_box")] and xyxy.shape == (1, 4)
    panel = np.array([[0, 0, 30, 100]], np.float64)  # covers 20 x 20 of the 24 x 24 box: 69 %
    assert len(gt_labels(objects, classes, 4, hidden=panel)[0]) == 0
    assert len(gt_labels(objects, classes, 4, hidden=panel / 2)[0]) == 1  # 5 x 24 covered: 21 %
    with pytest.raises(DetectorError, match="not in the profile"):
        gt_labels([{"cls": "ufo", "x1": 0, "y1": 0, "x2": 9, "y2": 9}], classes, 4)


def test_match_detections_follows_the_validator_rule() -> None:
    gt_cls, gt = np.array([0, 1]), np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    det_cls = np.array([0, 0, 1])
    det = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [21, 21, 31, 31]], np.float32)
    correct = match_detections(gt_cls, gt, det_cls, det)
    assert correct[0].all() and not correct[1].any()  # the duplicate finds its target taken
    assert correct[2, 0] and not correct[2, -1]  # IoU 0.68: right at 0.5, wrong at 0.95


def test_config_refuses_pretrained_weights(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model YAML"):
        DetectorTrainConfig(data=tmp_path, out=tmp_path, model="yolo11n.pt")


def test_tiny_training_run_offline(arena_episodes: Path, tmp_path: Path, no_network: list[str]) -> None:
    out = tmp_path / "detector"
    argv = ["--data", str(arena_episodes), "--out", str(out), "--epochs", "1", "--imgsz", "160"]
    argv += ["--batch", "8", "--every", "6", "--val-fraction", "0.3", "--eval", str(arena_episodes)]
    argv += ["--eval-every", "15", "--config-dir", str(tmp_path / "yolo_config")]
    assert main(argv) == 0
    assert not no_network, f"ultralytics tried to reach the network: {no_network}"
    config = json.loads((out / "config.json").read_text())
    assert config["classes"] == load_profile("arena").class_names
    assert config["imgsz"] == 160 and config["input_shape"] == [96, 160]
    panels = load_profile("arena").hud.panels
    assert config["mask"] == [list(r) for r in panels.values()]  # the HUD is blanked in training images
    image = cv2.imread(str(next((out / "dataset" / "images" / "train").glob("*.png"))))
    assert image.shape == (90, 160, 3)
    x1, y1, x2, y2 = panels["minimap"]
    assert not image[round(y1 * 90) : round(y2 * 90), round(x1 * 160) : round(x2 * 160)].any()
    names = sorted(p.name for p in find_episodes(arena_episodes))
    assert config["dataset"]["train_episodes"] == names[:2] and config["dataset"]["val_episodes"] == names[2:]
    assert config["dataset"]["train_images"] == 2 * 15 and config["dataset"]["val_images"] == 15
    assert 0.0 <= config["heldout"]["mAP50"] <= 1.0 and config["heldout"]["frames"] == 3 * 6
    assert (out / "best.pt").exists() and (out / "model.onnx").exists()
    labels = sorted((out / "dataset" / "labels" / "train").glob("*.txt"))
    assert len(labels) == 30 and any(label.read_text() for label in labels)
    detector = Detector.load(out)
    assert detector.runtime.name == "onnx" and detector.shape_for(640, 360) == (96, 160)
    assert len(detector.detect_batch([np.zeros((360, 640, 3), np.uint8)] * 2)) == 2


def test_user_dataset_yaml_with_unknown_classes_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data.yaml"
    data.write_text("path: .\ntrain: images\nval: images\nnames:\n  0: player\n  1: ufo\n")
    with pytest.raises(DetectorError, match=r"\['ufo'\] are not in profile 'arena'"):
        main(["--data", str(data), "--out", str(tmp_path / "out")])


@pytest.mark.slow
def test_detector_learns_the_arena(tmp_path: Path) -> None:
    """Two and a half minutes of CPU training already finds Arena objects on a seed it never saw."""
    from bot.play.demos import DemosConfig, run

    # 10 s episodes: the expert leaves the portal's safe zone after a few seconds, then NPCs and boxes show up
    run(DemosConfig(out=tmp_path / "train", episodes=3, seconds=10, width=640, height=360, workers=2))
    run(
        DemosConfig(
            out=tmp_path / "heldout", episodes=1, seconds=10, seed=500, width=640, height=360, workers=1
        )
    )
    out = tmp_path / "detector"
    argv = ["--data", str(tmp_path / "train"), "--out", str(out), "--eval", str(tmp_path / "heldout")]
    argv += ["--epochs", "8", "--every", "4", "--batch", "8", "--val-fraction", "0.3", "--eval-every", "3"]
    argv += ["--no-onnx"]
    argv += ["--config-dir", str(tmp_path / "yolo_config")]
    assert main(argv) == 0
    heldout = json.loads((out / "config.json").read_text())["heldout"]
    # 150 images and 8 epochs learn the ship and the portal well, small loot not yet: the long run in
    # data/detectors/arena (see training/detector.py) is what reaches mAP50 0.95 on unseen seeds
    # mAP50 0.33 in a fresh bootstrap of 2026-12-08, the same with the code of 07df88e (> 0.4 before):
    # deterministic here, so a package below the pins moved it; the ship is what must be learned
    assert heldout["AP50_per_class"]["player"] > 0.8 and heldout["mAP50"] > 0.25, heldout
