"""The object detector: a YOLO model (ultralytics, trained by training/detector.py) run on game frames.

    frame (H, W, 3) RGB ──letterbox──▶ (1, 3, h, w) float ──ONNX Runtime | PyTorch──▶ (1, 4 + nc, A)
        ──NMS (class-aware)──▶ Detections: xyxy (N, 4) frame px, conf (N,), cls (N,) profile class index

Both runtimes share the pre- and post-processing here. A detector folder (what `pilot train detector`
writes) holds `config.json`, `best.pt` and `model.onnx`; `Detector.load(folder)` prefers the ONNX file.
`ultralytics_offline()` must run before ultralytics is first imported. Input shape, HUD mask and offline
rules: docs/notes/perception.md, section bot/perception/detector.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bot.errors import DetectorError

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
ONNX_NAME = "model.onnx"
PT_NAME = "best.pt"
PAD_VALUE = 114  # ultralytics' letterbox grey
RUNTIMES = ("auto", "onnx", "torch")
DEFAULT_CONFIG_DIR = (
    Path(os.environ.get("PILOT_CACHE", Path.home() / ".cache" / "orbit-pilot")) / "ultralytics"
)
_FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/TTF/DejaVuSans.ttf"),
)


# ------------------------------------------------------------------------------------------------ offline


def _bundled_font() -> Path | None:
    """A TTF shipped by an installed package (matplotlib's DejaVuSans) or the system, found without import."""
    spec = importlib.util.find_spec("matplotlib")
    candidates = list(_FONT_CANDIDATES)
    if spec is not None and spec.submodule_search_locations:
        base = Path(next(iter(spec.submodule_search_locations)))
        candidates.insert(0, base / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf")
    return next((p for p in candidates if p.is_file()), None)


def _install_font(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "Arial.ttf"
    if target.exists():
        return
    font = _bundled_font()
    if font is None:
        log.warning("no TTF found to stand in for Arial.ttf: ultralytics will try (and fail) to download it")
        return
    shutil.copyfile(font, target)


def ultralytics_offline(config_dir: Path | str | None = None) -> Path:
    """Keep ultralytics off the network; call before `import ultralytics`. Returns the config dir.

    `config_dir` defaults to $YOLO_CONFIG_DIR if set, else ~/.cache/orbit-pilot/ultralytics ($PILOT_CACHE).
    Safe to call again; if ultralytics was already imported, the font goes into the folder it actually uses.
    Usage analytics need no switch: ultralytics sends them only when online; YOLO_OFFLINE=1 says it is not.
    """
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    if config_dir is None:
        config_dir = os.environ.get("YOLO_CONFIG_DIR") or DEFAULT_CONFIG_DIR
    config_dir = Path(config_dir).expanduser().resolve()
    _install_font(config_dir / "Ultralytics")
    if "ultralytics" not in sys.modules:
        os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
        # its log handler binds sys.stdout when first imported (and says "Creating new Ultralytics
        # Settings" on a fresh machine): bind it to stderr, so stdout holds only results (`--json`)
        with contextlib.redirect_stdout(sys.stderr):
            import ultralytics.utils  # noqa: F401
    else:
        from ultralytics.utils import USER_CONFIG_DIR

        _install_font(Path(USER_CONFIG_DIR))
        config_dir = Path(USER_CONFIG_DIR).parent
    return config_dir


# ------------------------------------------------------------------------------------------------ results


@dataclass
class Detections:
    """Detections of one frame. Boxes in frame pixels; `cls` indexes the game profile's classes.

    Also what ByteTrack's `update()` reads: `.conf`, `.cls`, `.xywh`, `len()` and boolean-mask indexing.
    """

    xyxy: np.ndarray  # (N, 4) float32 x1, y1, x2, y2 px
    conf: np.ndarray  # (N,) float32
    cls: np.ndarray  # (N,) int64

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index: Any) -> Detections:
        return Detections(self.xyxy[index].reshape(-1, 4), self.conf[index], self.cls[index])

    @property
    def xywh(self) -> np.ndarray:
        """(N, 4) centre x, y, width, height."""
        wh = self.xyxy[:, 2:] - self.xyxy[:, :2]
        return np.concatenate([self.xyxy[:, :2] + wh / 2.0, wh], axis=1)


# ------------------------------------------------------------------------------------------------ config


@dataclass
class DetectorConfig:
    """How to run a trained detector. Fields left at None come from the detector's config.json."""

    weights: Path  # a detector folder, or a .onnx / .pt file (its folder's config.json is read if present)
    runtime: str = "auto"  # "auto" (ONNX when there is a .onnx file), "onnx" or "torch"
    imgsz: int | None = None  # px, long side of the input; None = the training imgsz
    conf: float = 0.1  # minimum confidence kept after NMS
    iou: float = 0.6  # NMS IoU threshold
    max_det: int = 100  # detections kept per frame
    threads: int = 0  # intra-op threads for ORT / torch; 0 = the runtime's default (all cores)

    def __post_init__(self) -> None:
        self.weights = Path(self.weights)
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime: expected one of {RUNTIMES}, got {self.runtime!r}")
        if self.imgsz is not None and (self.imgsz < 32 or self.imgsz % 32):
            raise ValueError(f"imgsz: expected a multiple of 32, got {self.imgsz!r}")
        for name in ("conf", "iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected a number in [0, 1], got {getattr(self, name)!r}")
        if self.max_det < 1:
            raise ValueError(f"max_det: expected >= 1, got {self.max_det!r}")
        if self.threads < 0:
            raise ValueError(f"threads: expected >= 0, got {self.threads!r}")


def input_shape(imgsz: int, frame_w: int, frame_h: int) -> tuple[int, int]:
    """(h, w) detector input for frames of (frame_w, frame_h): long side imgsz, short side rounded up to 32"""
    if frame_w >= frame_h:
        return max(32, math.ceil(imgsz * frame_h / frame_w / 32) * 32), imgsz
    return imgsz, max(32, math.ceil(imgsz * frame_w / frame_h / 32) * 32)


def blank_regions(image: np.ndarray, regions: Sequence[Sequence[float]]) -> np.ndarray:
    """Fill `regions` ((x1, y1, x2, y2) fractions of the image) with black, in place; returns `image`."""
    h, w = image.shape[:2]
    for x1, y1, x2, y2 in regions:
        image[round(y1 * h) : round(y2 * h), round(x1 * w) : round(x2 * w)] = 0
    return image


def resize_for(frame: np.ndarray, shape: tuple[int, int], mask: Sequence[Sequence[float]] = ()) -> np.ndarray:
    """`frame` scaled to fit `shape` (h, w), aspect kept (INTER_AREA down), `mask` regions blanked.

    The one resampling both the dataset export and inference use, so training images and live inputs match.
    """
    h, w = frame.shape[:2]
    gain = min(shape[0] / h, shape[1] / w)
    new_w, new_h = round(w * gain), round(h * gain)
    if (new_w, new_h) != (w, h):
        interp = cv2.INTER_AREA if gain < 1 else cv2.INTER_LINEAR
        frame = cv2.resize(frame, (new_w, new_h), interpolation=interp)
    elif mask:
        frame = frame.copy()  # never blank the caller's frame
    return blank_regions(frame, mask)


def letterbox(
    frame: np.ndarray, shape: tuple[int, int], mask: Sequence[Sequence[float]] = ()
) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize `frame` into `shape` (h, w) keeping its aspect, blank `mask`, pad the rest with grey, centred.

    Returns (image (h, w, 3) uint8, gain, (pad_x, pad_y)); frame px = (input px - pad) / gain.
    """
    h, w = frame.shape[:2]
    frame = resize_for(frame, shape, mask)
    new_h, new_w = frame.shape[:2]
    gain = min(shape[0] / h, shape[1] / w)
    pad_x, pad_y = (shape[1] - new_w) / 2.0, (shape[0] - new_h) / 2.0
    top, left = round(pad_y - 0.1), round(pad_x - 0.1)
    bottom, right = shape[0] - new_h - top, shape[1] - new_w - left
    if top or bottom or left or right:
        frame = cv2.copyMakeBorder(
            frame, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
        )
    return frame, gain, (float(left), float(top))


# ------------------------------------------------------------------------------------------------ NMS


def nms(pred: np.ndarray, conf: float, iou: float, max_det: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class-aware NMS of one image's raw YOLO output (4 + nc, A): centre-xywh boxes then class scores.

    Returns (xyxy (N, 4), conf (N,), cls (N,)) in input pixels, best first. One class per anchor (its best),
    as ultralytics does with multi_label=False.
    """
    scores = pred[4:]
    cls = scores.argmax(0)
    best = scores[cls, np.arange(scores.shape[1])]
    keep = best >= conf
    if not keep.any():
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    boxes, best, cls = pred[:4, keep].T, best[keep], cls[keep]
    xyxy = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2.0, boxes[:, :2] + boxes[:, 2:] / 2.0], axis=1)
    # OpenCV takes (x, y, w, h) boxes; class-aware through the batched variant.
    index = cv2.dnn.NMSBoxesBatched(
        boxes_xywh(xyxy).tolist(), best.tolist(), cls.tolist(), conf, iou, top_k=max_det
    )
    index = np.asarray(index, np.int64).reshape(-1)[:max_det]
    order = index[np.argsort(-best[index], kind="stable")]
    return xyxy[order].astype(np.float32), best[order].astype(np.float32), cls[order].astype(np.int64)


def boxes_xywh(xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) x1, y1, x2, y2 -> left, top, width, height."""
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)


# ------------------------------------------------------------------------------------------------ runtimes


class _OnnxRuntime:
    """ONNX Runtime session; batch size taken from the model (dynamic exports accept any)."""

    name = "onnx"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own (non-Python) exception types for bad files
            raise DetectorError(f"{path}: cannot load ONNX model ({exc})") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.fixed_hw = tuple(inp.shape[2:]) if all(isinstance(v, int) for v in inp.shape[2:]) else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.fixed_batch is not None and batch.shape[0] != self.fixed_batch:
            outs = [self.session.run(None, {self.input_name: batch[i : i + 1]})[0] for i in range(len(batch))]
            return np.concatenate(outs)
        return self.session.run(None, {self.input_name: batch})[0]


class _TorchRuntime:
    """The ultralytics PyTorch model, fused, fp32, eval mode, on the CPU."""

    name = "torch"

    def __init__(self, path: Path, threads: int) -> None:
        ultralytics_offline()
        import torch
        from ultralytics.nn.tasks import load_checkpoint

        if threads:
            torch.set_num_threads(threads)
        try:
            model, _ = load_checkpoint(str(path), device=torch.device("cpu"), fuse=False)
        except Exception as exc:  # torch.load / unpickling errors come in many types
            raise DetectorError(f"{path}: cannot load PyTorch weights ({exc})") from None
        if hasattr(model, "fuse"):  # conv+bn folding; verbose=False keeps its summary off stdout (--json)
            model = model.fuse(verbose=False)
        self.model = model.eval()
        self.torch = torch
        self.fixed_hw = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            out = self.model(self.torch.from_numpy(batch))
        out = out[0] if isinstance(out, (list, tuple)) else out  # eval mode returns (y, raw maps)
        return out.numpy()


# ------------------------------------------------------------------------------------------------ detector


def read_detector_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DetectorError(
            f"{path}: missing (a detector folder is what `pilot train detector` writes)"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DetectorError(f"{path}: unreadable ({exc})") from None
    for key in ("classes", "imgsz"):
        if key not in data:
            raise DetectorError(f"{path}: missing field {key!r}")
    return data


def _resolve_weights(cfg: DetectorConfig) -> tuple[Path, Path]:
    """(weights file, folder holding config.json) for the config's path and runtime."""
    path = cfg.weights
    if path.is_dir():
        onnx, pt = path / ONNX_NAME, path / PT_NAME
        if cfg.runtime in ("auto", "onnx") and onnx.exists():
            return onnx, path
        if cfg.runtime in ("auto", "torch") and pt.exists():
            return pt, path
        raise DetectorError(
            f"{path}: no {ONNX_NAME if cfg.runtime == 'onnx' else PT_NAME} for runtime {cfg.runtime}"
        )
    if not path.is_file():
        raise DetectorError(f"{path}: no such detector weights")
    if path.suffix not in (".onnx", ".pt"):
        raise DetectorError(f"{path}: expected a .onnx or .pt file or a detector folder")
    wanted = {"onnx": ".onnx", "torch": ".pt"}.get(cfg.runtime)
    if wanted and path.suffix != wanted:
        raise DetectorError(f"{path}: runtime {cfg.runtime!r} needs a {wanted} file")
    return path, path.parent


class Detector:
    """Runs a trained detector on RGB frames. `detect(frame)` for one frame, `detect_batch(frames)` for many.

    `class_map` maps the model's class indices to the game profile's (by name), so a detector trained on a
    dataset whose class order differs from the profile still reports profile indices.
    """

    def __init__(self, cfg: DetectorConfig, profile_classes: list[str] | None = None) -> None:
        self.cfg = cfg
        weights, folder = _resolve_weights(cfg)
        meta = read_detector_config(folder) if (folder / CONFIG_NAME).exists() else {}
        self.meta = meta
        self.model_classes: list[str] = list(meta.get("classes") or _classes_from_weights(weights))
        self.imgsz = int(cfg.imgsz or meta.get("imgsz") or 320)
        # regions (frame fractions) blanked before the network, as they were in its training images
        self.mask: tuple[tuple[float, ...], ...] = tuple(tuple(r) for r in meta.get("mask", ()))
        self.runtime = (
            _OnnxRuntime(weights, cfg.threads)
            if weights.suffix == ".onnx"
            else _TorchRuntime(weights, cfg.threads)
        )
        self.weights = weights
        self.class_map = _class_map(self.model_classes, profile_classes, weights)
        self._shapes: dict[tuple[int, int], tuple[int, int]] = {}
        log.info(
            "detector %s: runtime %s, imgsz %d, %d classes",
            weights,
            self.runtime.name,
            self.imgsz,
            len(self.model_classes),
        )

    @classmethod
    def load(
        cls, weights: Path | str, profile_classes: list[str] | None = None, **overrides: Any
    ) -> Detector:
        return cls(DetectorConfig(weights=Path(weights), **overrides), profile_classes)

    @property
    def id(self) -> str:
        """What produced a set of detections: file name, runtime, input size, training run id."""
        run = self.meta.get("run_id", self.weights.stem)
        return f"{run}:{self.weights.name}:{self.runtime.name}:{self.imgsz}"

    def shape_for(self, frame_w: int, frame_h: int) -> tuple[int, int]:
        """(h, w) of the model input for frames of this size (the ONNX file's, when its shape is fixed)."""
        key = (frame_w, frame_h)
        if key not in self._shapes:
            trained = self.meta.get("frame_size")
            if trained and list(trained) != [frame_w, frame_h]:
                # sprites keep their pixel size, so another resolution shows the network other object sizes
                log.warning(
                    "detector trained on %s frames, given %dx%d: expect lower accuracy", trained, *key
                )
            fixed = self.runtime.fixed_hw
            self._shapes[key] = tuple(fixed) if fixed else input_shape(self.imgsz, frame_w, frame_h)
        return self._shapes[key]

    def preprocess(
        self, frames: list[np.ndarray]
    ) -> tuple[np.ndarray, list[tuple[float, tuple[float, float]]]]:
        """(B, 3, h, w) float32 0..1 RGB and the (gain, pad) of each frame."""
        h, w = frames[0].shape[:2]
        shape = self.shape_for(w, h)
        batch = np.empty((len(frames), 3, *shape), np.float32)
        geometry = []
        for i, frame in enumerate(frames):
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(f"frame: expected RGB uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
            image, gain, pad = letterbox(frame, shape, self.mask)
            batch[i] = image.transpose(2, 0, 1)
            geometry.append((gain, pad))
        batch *= 1.0 / 255.0
        return batch, geometry

    def postprocess(self, raw: np.ndarray, geometry: list, sizes: list[tuple[int, int]]) -> list[Detections]:
        out = []
        for pred, (gain, (pad_x, pad_y)), (w, h) in zip(raw, geometry, sizes):
            xyxy, conf, cls = nms(pred, self.cfg.conf, self.cfg.iou, self.cfg.max_det)
            xyxy -= np.array([pad_x, pad_y, pad_x, pad_y], np.float32)
            xyxy /= gain
            np.clip(xyxy, 0, [w, h, w, h], out=xyxy)
            out.append(Detections(xyxy, conf, self.class_map[cls]))
        return out

    def detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        """Detections for each RGB frame (all of the same size)."""
        if not frames:
            return []
        batch, geometry = self.preprocess(frames)
        raw = self.runtime(batch)
        return self.postprocess(raw, geometry, [(f.shape[1], f.shape[0]) for f in frames])

    def detect(self, frame: np.ndarray) -> Detections:
        return self.detect_batch([frame])[0]


def _classes_from_weights(weights: Path) -> list[str]:
    """Class names stored inside a weights file (ultralytics writes them into both .pt and .onnx)."""
    if weights.suffix == ".onnx":
        import ast

        import onnx

        meta = {p.key: p.value for p in onnx.load(str(weights), load_external_data=False).metadata_props}
        names = ast.literal_eval(meta.get("names", "{}"))
    else:
        ultralytics_offline()
        import torch

        ckpt = torch.load(str(weights), map_location="cpu", weights_only=False)
        names = getattr(ckpt.get("ema") or ckpt.get("model"), "names", {})
    if not names:
        raise DetectorError(f"{weights}: no class names inside and no {CONFIG_NAME} beside it")
    return [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)


def _class_map(model_classes: list[str], profile_classes: list[str] | None, weights: Path) -> np.ndarray:
    """Model class index -> profile class index (identity without a profile)."""
    if profile_classes is None:
        return np.arange(len(model_classes), dtype=np.int64)
    unknown = [name for name in model_classes if name not in profile_classes]
    if unknown:
        raise DetectorError(
            f"{weights}: detector classes {unknown} are not in the game profile's classes {profile_classes}"
        )
    return np.array([profile_classes.index(name) for name in model_classes], dtype=np.int64)
