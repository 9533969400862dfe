"""Detector wrapper: offline setup, letterbox geometry, NMS, ONNX vs PyTorch parity, class mapping, errors.

These use an untrained yolo11n built from its YAML (no download, no training): the wrapper's mechanics do not
depend on the weights. Detection quality is measured in tests/training/test_detector_training.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.errors import DetectorError
from bot.perception.detector import (
    Detections,
    Detector,
    DetectorConfig,
    input_shape,
    letterbox,
    nms,
    resize_for,
    ultralytics_offline,
)
from bot.profile import load_profile

CLASSES = load_profile("arena").class_names


def test_offline_environment(tmp_path: Path) -> None:
    config_dir = ultralytics_offline(tmp_path / "cfg")
    assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["YOLO_AUTOINSTALL"] == "0"
    if "ultralytics" in sys.modules:  # the font must be where ultralytics looks, whichever folder that is
        from ultralytics.utils import USER_CONFIG_DIR

        assert (Path(USER_CONFIG_DIR) / "Arial.ttf").stat().st_size > 10_000
    else:
        assert (config_dir / "Ultralytics" / "Arial.ttf").stat().st_size > 10_000


def test_ultralytics_logs_go_to_stderr_so_stdout_holds_only_results(tmp_path: Path) -> None:
    """A fresh machine: ultralytics announces its new settings file on import; `pilot eval --json` printed
    that before its JSON."""
    code = (
        "from bot.perception.detector import ultralytics_offline; ultralytics_offline();"
        "from ultralytics.utils import LOGGER; LOGGER.info('hello from ultralytics')"
    )
    env = {k: v for k, v in os.environ.items() if k != "YOLO_CONFIG_DIR"} | {"PILOT_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout == ""
    assert "Creating new Ultralytics Settings" in out.stderr and "hello from ultralytics" in out.stderr


@pytest.mark.parametrize(
    ("imgsz", "w", "h", "shape"),
    [(320, 1280, 720, (192, 320)), (320, 640, 360, (192, 320)), (640, 1920, 1080, (384, 640)),
     (320, 720, 1280, (320, 192)), (320, 500, 500, (320, 320))],
)  # fmt: skip
def test_input_shape_follows_the_frame_aspect(imgsz: int, w: int, h: int, shape: tuple[int, int]) -> None:
    assert input_shape(imgsz, w, h) == shape


def test_letterbox_maps_back_to_frame_pixels() -> None:
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[200:300, 400:600] = 255
    image, gain, (pad_x, pad_y) = letterbox(frame, (192, 320))
    assert image.shape == (192, 320, 3) and gain == 0.25 and (pad_x, pad_y) == (0.0, 6.0)
    assert (image[:6] == 114).all() and (image[-6:] == 114).all()
    ys, xs = np.nonzero(image[..., 0] > 128)
    x1, y1 = (xs.min() - pad_x) / gain, (ys.min() - pad_y) / gain
    x2, y2 = (xs.max() + 1 - pad_x) / gain, (ys.max() + 1 - pad_y) / gain
    assert (x1, y1, x2, y2) == (400, 200, 600, 300)


def test_mask_blanks_hud_regions_without_touching_the_frame() -> None:
    frame = np.full((360, 640, 3), 200, np.uint8)
    image, _, (_, pad_y) = letterbox(frame, (192, 320), mask=[(0.0, 0.0, 0.5, 0.25)])
    top = int(pad_y)
    assert not image[top : top + 45, :160].any() and (image[top + 45 :, 160:][:-6] == 200).all()
    same = resize_for(frame, (360, 640), mask=[(0.5, 0.5, 1.0, 1.0)])
    assert not same[180:, 320:].any() and (frame == 200).all()  # a copy was blanked, not the caller's frame


def test_nms_is_class_aware_and_sorted() -> None:
    # raw layout (4 + nc, anchors): cx, cy, w, h, then one score row per class
    boxes = np.array([[50, 50, 20, 20], [51, 50, 20, 20], [50, 50, 20, 20], [150, 50, 20, 20]], np.float32)
    scores = np.zeros((3, 4), np.float32)
    scores[0, 0], scores[0, 1], scores[1, 2], scores[2, 3] = 0.9, 0.8, 0.7, 0.05
    xyxy, conf, cls = nms(np.concatenate([boxes.T, scores]), conf=0.1, iou=0.5, max_det=10)
    assert list(cls) == [0, 1] and list(conf) == pytest.approx(
        [0.9, 0.7]
    )  # the overlapping class-0 box is gone
    np.testing.assert_allclose(xyxy[0], [40, 40, 60, 60])


def test_detections_index_like_bytetrack_expects() -> None:
    dets = Detections(np.array([[0, 0, 10, 20], [5, 5, 7, 9]], np.float32), np.array([0.9, 0.2], np.float32),
                      np.array([1, 4]))  # fmt: skip
    np.testing.assert_allclose(dets.xywh[0], [5, 10, 10, 20])
    high = dets[dets.conf > 0.5]
    assert len(high) == 1 and high.cls[0] == 1
    assert len(Detections.empty()) == 0


def test_onnx_and_torch_agree(raw_detector: Path) -> None:
    onnx = Detector.load(raw_detector, CLASSES, runtime="onnx", conf=0.005)
    torch_ = Detector.load(raw_detector, CLASSES, runtime="torch", conf=0.005)
    assert onnx.runtime.name == "onnx" and torch_.runtime.name == "torch"
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (360, 640, 3), dtype=np.uint8) for _ in range(3)]
    batch, _ = onnx.preprocess(frames)
    assert batch.shape == (3, 3, 96, 160)
    np.testing.assert_allclose(onnx.runtime(batch), torch_.runtime(batch), atol=2e-3)
    one = onnx.detect(frames[0])
    many = onnx.detect_batch(frames)
    np.testing.assert_allclose(one.xyxy, many[0].xyxy, atol=1e-3)
    assert len(torch_.detect(frames[0])) == len(one)
    assert (one.xyxy[:, 2] <= 640).all() and (one.xyxy[:, 3] <= 360).all()


def test_auto_prefers_onnx_and_reports_an_id(raw_detector: Path) -> None:
    detector = Detector.load(raw_detector)
    assert detector.runtime.name == "onnx" and detector.imgsz == 160
    assert detector.id == "untrained:model.onnx:onnx:160"
    assert detector.shape_for(1280, 720) == (96, 160)


def test_classes_are_mapped_to_the_profile_by_name(raw_detector: Path) -> None:
    reordered = list(reversed(CLASSES)) + ["extra"]
    detector = Detector.load(raw_detector, reordered)
    assert list(detector.class_map) == [reordered.index(name) for name in CLASSES]
    with pytest.raises(DetectorError, match="not in the game profile"):
        Detector.load(raw_detector, CLASSES[:3])


def test_class_names_from_the_weights_without_config(raw_detector: Path, tmp_path: Path) -> None:
    for name in ("model.onnx", "best.pt"):
        (tmp_path / name).write_bytes((raw_detector / name).read_bytes())
        assert Detector.load(tmp_path / name).model_classes == CLASSES


def test_bad_inputs_raise_clear_errors(raw_detector: Path, tmp_path: Path) -> None:
    with pytest.raises(DetectorError, match="no such detector weights"):
        Detector.load(tmp_path / "missing.onnx")
    with pytest.raises(DetectorError, match="needs a .pt file"):
        Detector.load(raw_detector / "model.onnx", runtime="torch")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    (tmp_path / "config.json").write_text(json.dumps({"classes": CLASSES, "imgsz": 160}))
    with pytest.raises(DetectorError, match="cannot load ONNX model"):
        Detector.load(broken)
    with pytest.raises(ValueError, match="runtime"):
        DetectorConfig(weights=broken, runtime="tensorrt")
    detector = Detector.load(raw_detector)
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(np.zeros((10, 10), np.uint8))
