"""Policy bundles on disk: the format (its one home; `pilot train policy` writes it through
`write_bundle_json`), the inference settings saved beside the weights, and `PolicyBundle.load`, which checks
bundle.json and that the three models fit each other, the observation spec and the game profile.

    <bundle>/bundle.json  {"format": "orbit-pilot-policy", "format_version": 2, "profile", "obs_spec",
                           "modes", "detector": {"path", "copied"}, "models": {name: folder},
                           "inference": {"tactician_hz", "snap_boxes"[, "held_thresholds"]}, "metrics",
                           "data", "versions" [, "calibration": `pilot train calibrate`'s fit]
                           [, "runtime": "onnx", "export": {...}] (`pilot export`: bot/policy/onnx_export.py)}
    <bundle>/strategist/, tactician/, executor/   models.io folders: config.json + safetensors (or model.onnx)
    <bundle>/detector/                            the detector, when copied
"""

from __future__ import annotations

import json
import logging
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bot.errors import PilotError, PolicyError
from bot.perception.detector import Detector
from bot.perception.pipeline import load_detector
from bot.perception.state import OBS_SPEC
from bot.policy.onnx_models import OnnxExecutor, OnnxStrategist, OnnxTactician, load_onnx_model
from bot.profile import GameProfile, load_profile
from models.errors import CheckpointError
from models.executor import Executor
from models.io import load_model
from models.strategist import Strategist
from models.tactician import Tactician
from validation import ConfigError, check_float, fail

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "orbit-pilot-policy"
BUNDLE_VERSION = 2  # 2: bundle.json holds the "inference" settings
BUNDLE_FILE = "bundle.json"
MODEL_CLASSES = {"strategist": "Strategist", "tactician": "Tactician", "executor": "Executor"}
STAGES = ("strategist", "tactician", "executor")
RUNTIMES = ("torch", "onnx")  # bundle.json "runtime": absent = torch; "onnx" = written by `pilot export`
F_OBJ = len(OBS_SPEC.obj_features)
F_GLOB = len(OBS_SPEC.glob_features)
F_SUM = len(OBS_SPEC.summary_features)
# The aim snap `pilot train policy` writes: chosen on eval seeds 3000-3005, never the reported ones
# (benchmarks/RESULTS.md, "Screen cues, more data: training and the live bot"; docs/notes/play.md)
SNAP_BOXES = 40.0


@dataclass
class InferenceSettings:
    """How the live loop steps a bundle's models: saved in bundle.json ("inference") beside the weights."""

    tactician_hz: float  # Tactician decisions per second of game time: the rate the Executor trained under
    snap_boxes: float  # aim at a chosen enemy's or loot's centre within this many box sizes of it (0 = off)
    # hold key bit k when its probability exceeds entry k; [] = 0.5 each. Absent in bundles written before
    # it; `pilot train calibrate` fits them on held-out episodes (training/calibrate.py)
    held_thresholds: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_float(self, "tactician_hz", 0.0, low_open=True)
        check_float(self, "snap_boxes", 0.0)
        values = self.held_thresholds
        expected = "a list of probabilities in (0, 1), one per held key"
        if not isinstance(values, list | tuple):
            raise fail(self, "held_thresholds", expected, values)
        for p in values:
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 < p < 1.0:
                raise fail(self, "held_thresholds", expected, values)
        self.held_thresholds = [float(p) for p in values]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, section: Any, where: str) -> InferenceSettings:
        """The settings in bundle.json's "inference" object; PolicyError naming `where` and the field."""
        names = [f.name for f in fields(cls)]
        if not isinstance(section, dict):
            raise PolicyError(f"{where}: expected an object {{{', '.join(names)}}}, got {section!r}")
        if unknown := sorted(set(section) - set(names)):
            raise PolicyError(f"{where}: expected the fields {names}, got unknown {unknown}")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        if missing := [name for name in required if name not in section]:
            raise PolicyError(f"{where}.{missing[0]}: missing")
        try:
            return cls(**section)
        except ConfigError as exc:
            raise PolicyError(f"{where}: {exc}") from None


# Version-1 bundles have no "inference" section: they are run as `pilot run`, `pilot eval` and `pilot dagger`
# always ran them before format 2, at their default Tactician rate (10 Hz, also the rate every training
# config defaults to) and aim snap (40 box sizes).
V1_INFERENCE = InferenceSettings(tactician_hz=10.0, snap_boxes=40.0)
READABLE_VERSIONS = (1, BUNDLE_VERSION)


def read_bundle_json(path: Path) -> dict[str, Any]:
    """bundle.json checked for format, version, this build's obs_spec and the inference settings; PolicyError
    naming what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(
            f"{path}: missing (not a policy bundle; `pilot train policy --out` writes one)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != BUNDLE_FORMAT:
        raise PolicyError(f"{path}: format: expected {BUNDLE_FORMAT!r}, got {data.get('format')!r}")
    if data.get("format_version") not in READABLE_VERSIONS:
        raise PolicyError(
            f"{path}: format_version: expected {BUNDLE_VERSION} (or 1), got {data.get('format_version')!r}"
        )
    try:
        OBS_SPEC.check(data.get("obs_spec"), f"{path}: obs_spec")
    except PilotError as exc:
        raise PolicyError(f"{exc}, then re-train the policy (`pilot train policy`)") from None
    bundle_inference(data, path)
    return data


def bundle_inference(data: dict[str, Any], path: Path) -> InferenceSettings:
    """The inference settings of a bundle.json read from `path` (V1_INFERENCE for a version-1 bundle)."""
    if data.get("format_version") == 1:
        if "inference" in data:
            raise PolicyError(
                f"{path}: inference: a format_version 1 bundle has none, got {data['inference']!r}"
            )
        return replace(V1_INFERENCE)  # a copy: changing one bundle's settings leaves the constant alone
    if "inference" not in data:
        raise PolicyError(f"{path}: inference: missing (format_version {BUNDLE_VERSION} saves it)")
    return InferenceSettings.from_json(data["inference"], f"{path}: inference")


def write_bundle_json(folder: Path, content: dict[str, Any], inference: InferenceSettings) -> Path:
    """Write <folder>/bundle.json atomically in this build's format: `content` (profile, obs_spec, modes,
    detector, models, metrics, ...) with the format, its version and `inference`; returns its path."""
    data = {**content, "format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION}
    data["inference"] = inference.to_dict()
    path, tmp = folder / BUNDLE_FILE, folder / (BUNDLE_FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def _load_models(folder: Path, path: Path, models: Any, runtime: Any = "torch") -> dict[str, Any]:
    """The three models named in bundle.json's "models" ({name: folder relative to the bundle}): torch
    modules, or for an exported bundle ("runtime": "onnx", `pilot export`) their ONNX Runtime stand-ins."""
    if runtime not in RUNTIMES:
        raise PolicyError(f"{path}: runtime: expected one of {list(RUNTIMES)}, got {runtime!r}")
    if not isinstance(models, dict):
        raise PolicyError(f"{path}: models: expected an object {{name: folder}}, got {models!r}")
    loaded = {}
    for name, cls in MODEL_CLASSES.items():
        sub = models.get(name)
        if not isinstance(sub, str) or not sub:
            raise PolicyError(f"{path}: models.{name}: expected a folder name, got {sub!r}")
        where = folder / sub
        if not where.is_dir():
            raise PolicyError(f"{where}: missing (models.{name} of {path})")
        if runtime == "onnx":
            loaded[name] = load_onnx_model(where, cls)
            continue
        try:
            model = load_model(where, cls)
        except CheckpointError as exc:
            raise PolicyError(str(exc)) from None
        loaded[name] = model.float().eval()
    return loaded


def _check_fit(
    path: Path, models: dict[str, Strategist | Tactician | Executor], profile: GameProfile, modes: list[str]
) -> None:
    """The three configs fit each other, the observation spec and the profile."""
    s, t, e = (models[name].config for name in STAGES)
    expected = {
        "strategist.d_in": (s.d_in, F_SUM),
        "strategist.n_modes": (s.n_modes, len(modes)),
        "tactician.d_obj": (t.d_obj, F_OBJ),
        "tactician.n_max": (t.n_max, OBS_SPEC.n_max),
        "tactician.d_ctx": (t.d_ctx, F_GLOB),
        "tactician.goal_dim": (t.goal_dim, s.goal_dim),
        "executor.d_frame": (e.d_frame, F_GLOB),
        "executor.d_target": (e.d_target, F_OBJ),
        "executor.goal_dim": (e.goal_dim, s.goal_dim),
        "executor.approach_dim": (e.approach_dim, t.approach_dim),
        "executor.n_keys": (e.n_keys, len(profile.keys)),
    }
    if e.n_held:  # a held head is optional (demonstrations that only tap train none), but sized by the keys
        expected["executor.n_held"] = (e.n_held, len(profile.keys))
    for name, (got, want) in expected.items():
        if got != want:
            raise PolicyError(f"{path}: {name}: expected {want}, got {got}")


@dataclass
class PolicyBundle:
    """A loaded policy bundle: game profile, mode set, the three models (eval mode), the detector's path and
    the inference settings."""

    folder: Path
    profile: GameProfile
    modes: list[str]
    strategist: Strategist | OnnxStrategist  # the Onnx* stand-ins in an exported bundle ("runtime": "onnx")
    tactician: Tactician | OnnxTactician
    executor: Executor | OnnxExecutor
    detector_path: Path | None  # <folder>/detector when copied, else the recorded path
    inference: InferenceSettings  # how the live loop steps the models (V1_INFERENCE for a version-1 bundle)
    meta: dict[str, Any] = field(default_factory=dict)  # bundle.json as read

    @classmethod
    def load(cls, folder: Path | str) -> PolicyBundle:
        """Read and validate `folder`; every problem is a PolicyError naming the file or field."""
        folder = Path(folder)
        path = folder / BUNDLE_FILE
        if not folder.is_dir():
            raise PolicyError(f"{folder}: no such policy bundle folder")
        data = read_bundle_json(path)
        try:
            profile = load_profile(data.get("profile") or "")
        except PilotError as exc:
            raise PolicyError(f"{path}: profile: {exc}") from None
        modes = data.get("modes")
        if not isinstance(modes, list) or not modes or not all(isinstance(m, str) for m in modes):
            raise PolicyError(f"{path}: modes: expected a list of mode names, got {modes!r}")
        models = _load_models(folder, path, data.get("models"), data.get("runtime", "torch"))
        _check_fit(path, models, profile, modes)
        inference = bundle_inference(data, path)
        strategist, tactician, executor = (models[n] for n in STAGES)
        n_held = executor.config.n_held
        if inference.held_thresholds and len(inference.held_thresholds) != n_held:
            raise PolicyError(
                f"{path}: inference.held_thresholds: expected {n_held} (the Executor's held keys), "
                f"got {len(inference.held_thresholds)}"
            )
        detector = _detector_path(folder, data)
        bundle = cls(folder, profile, list(modes), strategist, tactician, executor, detector, inference, data)
        log.info(
            "policy bundle %s: profile %s, modes %s, detector %s, inference %s",
            folder,
            profile.name,
            modes,
            bundle.detector_path,
            inference,
        )
        return bundle

    def detector(self, runtime: str = "auto", threads: int = 0) -> Detector:
        """The bundle's detector with the profile's thresholds (bot.perception.pipeline.load_detector)."""
        if self.detector_path is None:
            raise PolicyError(f"{self.folder / BUNDLE_FILE}: detector: none recorded in this bundle")
        if not self.detector_path.exists():
            raise PolicyError(f"{self.detector_path}: missing (detector of {self.folder / BUNDLE_FILE})")
        return load_detector(self.detector_path, self.profile, runtime, threads)


def load_bundle_for(folder: Path, game: str) -> PolicyBundle:
    """The bundle in `folder`; PolicyError (a PilotError) when it is made for another game."""
    bundle = PolicyBundle.load(folder)
    if bundle.profile.name != game:
        raise PolicyError(
            f"{folder}: a bundle for {bundle.profile.name!r} cannot play {game!r} "
            f"(train one on {game} recordings)"
        )
    return bundle


def _detector_path(folder: Path, data: dict[str, Any]) -> Path | None:
    detector = data.get("detector") or {}
    if not isinstance(detector, dict):
        raise PolicyError(f"{folder / BUNDLE_FILE}: detector: expected {{path, copied}}, got {detector!r}")
    path = detector.get("path")
    if not path:
        return None
    return folder / path  # a copied detector's path is relative to the bundle; a referenced one absolute
