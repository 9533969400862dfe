"""The trained policy in the live loop: a policy bundle on disk, and the runner that steps its three models.

    PerceptionStep ──summary (once per completed second)──▶ Strategist.step (KV cache) ──goal, mode──┐
        │                                                                                          │
        ├──objects, mask, glob (every 1/tactician_hz s of obs.t)──▶ Tactician ──TRACK ID, approach─┤
        │                                                                                          ▼
        └──glob, the chosen track's row in THIS frame (zeros when none/gone)──▶ Executor.step ──▶ Decision

The inputs are exactly those training builds (training/tasks.py `strategist_goals`, `tactician_context`,
`ExecutorTask`; training/policy.py's docstring):
  - Strategist: one step per summary; a summary arrives on the first frame of the next second
    (bot/perception/state.py Summarizer), which is the row whose `last_summary` first points at it in
    training. The goal
    is zeros until then.
  - Tactician: on its decision frames, (objects, mask, goal, context = glob) -> argmax slot; the slot's
    TRACK ID is kept, because slots are re-sorted every frame, together with the approach vector.
  - Executor: every frame (glob, goal, target, approach), target = the kept track's object row in this frame,
    zeros when "none" or when the track has left the object set. It was trained on every frame of episodes
    recorded at the profile's fps; when the live loop falls behind (a slow machine: frames dropped), the
    Executor is still stepped once per frame period that passed, the missed frames as copies of this one
    without its click and with dt = one frame (at most MAX_CATCH_UP a frame), so its recurrent state keeps
    the time scale it learned; only the last step's action is used.

Deterministic by default (argmax cells, click when p > 0.5, argmax key and target); `sample=True` draws them
with a seeded generator. Everything runs in float32 on the CPU under torch.inference_mode.

A bundle is what `pilot train policy` writes (training/policy.py; the live runtime never imports training, so
the format constants are repeated here and a test checks they agree):

    <bundle>/bundle.json  {"format": "orbit-pilot-policy", "format_version": 1, "profile", "obs_spec",
                           "modes", "detector": {"path", "copied"}, "models": {name: folder}, ...}
    <bundle>/strategist/, tactician/, executor/   models.io folders (safetensors + config.json)
    <bundle>/detector/                            the detector, when copied

Example:
    bundle = PolicyBundle.load("data/pretrained/arena")
    runner = PolicyRunner(bundle)
    perception = Perception(bundle.profile, bundle.detector(), source.size, source.fps)
    decision = runner.act(perception.step(frame, cursor, click, t)); source.apply(decision.action())
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bot.errors import PilotError, PolicyError
from bot.perception.detector import Detector
from bot.perception.pipeline import PerceptionStep, load_detector
from bot.perception.state import GLOB, OBS_SPEC, Observation
from bot.profile import GameProfile, load_profile
from models.errors import CheckpointError
from models.io import load_model

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "orbit-pilot-policy"  # = training.policy.BUNDLE_FORMAT
BUNDLE_VERSION = 1  # = training.policy.BUNDLE_VERSION
BUNDLE_FILE = "bundle.json"
MODEL_CLASSES = {"strategist": "Strategist", "tactician": "Tactician", "executor": "Executor"}
STAGES = ("strategist", "tactician", "executor")
F_OBJ = len(OBS_SPEC.obj_features)
OBJ_INDEX = {name: i for i, name in enumerate(OBS_SPEC.obj_features)}
# snap_to_target: box sizes around the target within which the aim is its centre. Chosen on eval seeds
# 3000-3005, never the reported 1000-1017 (credits a minute, shipped bundle of obs spec 3): 10 -> 539,
# 20 -> 727, 40 -> 900 (= 80 = 1000: within 40 box sizes is in practice anywhere in view). The spec-2 bundle,
# with a weaker Tactician (target accuracy 0.87 vs 0.92), did best at 20 (always: 420, 20: 500).
SNAP_BOXES = 40.0
F_GLOB = len(OBS_SPEC.glob_features)
F_SUM = len(OBS_SPEC.summary_features)
MAX_CATCH_UP = 8  # Executor steps for one frame at most (~1 ms each): a longer stall is let go


# ------------------------------------------------------------------------------------------------ bundle


def read_bundle_json(path: Path) -> dict[str, Any]:
    """bundle.json checked for format, version and this build's obs_spec; PolicyError naming what is wrong."""
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
    if data.get("format_version") != BUNDLE_VERSION:
        raise PolicyError(
            f"{path}: format_version: expected {BUNDLE_VERSION}, got {data.get('format_version')!r}"
        )
    try:
        OBS_SPEC.check(data.get("obs_spec"), f"{path}: obs_spec")
    except PilotError as exc:
        raise PolicyError(f"{exc}, then re-train the policy (`pilot train policy`)") from None
    return data


def _load_models(folder: Path, path: Path, models: Any) -> dict[str, nn.Module]:
    """The three models named in bundle.json's "models" ({name: folder relative to the bundle})."""
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
        try:
            model = load_model(where, cls)
        except CheckpointError as exc:
            raise PolicyError(str(exc)) from None
        loaded[name] = model.float().eval()
    return loaded


def _check_fit(path: Path, models: dict[str, nn.Module], profile: GameProfile, modes: list[str]) -> None:
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
    for name, (got, want) in expected.items():
        if got != want:
            raise PolicyError(f"{path}: {name}: expected {want}, got {got}")


@dataclass
class PolicyBundle:
    """A loaded policy bundle: game profile, mode set, the three models (eval mode) and the detector."""

    folder: Path
    profile: GameProfile
    modes: list[str]
    strategist: Any  # models.strategist.Strategist
    tactician: Any  # models.tactician.Tactician
    executor: Any  # models.executor.Executor
    detector_path: Path | None  # <folder>/detector when copied, else the recorded path
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
        models = _load_models(folder, path, data.get("models"))
        _check_fit(path, models, profile, modes)
        bundle = cls(
            folder, profile, list(modes), *(models[n] for n in STAGES), _detector_path(folder, data), data
        )
        log.info(
            "policy bundle %s: profile %s, modes %s, detector %s",
            folder,
            profile.name,
            modes,
            bundle.detector_path,
        )
        return bundle

    def detector(self, runtime: str = "auto", threads: int = 0) -> Detector:
        """The bundle's detector with the profile's thresholds (bot.perception.pipeline.load_detector)."""
        if self.detector_path is None:
            raise PolicyError(f"{self.folder / BUNDLE_FILE}: detector: none recorded in this bundle")
        if not self.detector_path.exists():
            raise PolicyError(f"{self.detector_path}: missing (detector of {self.folder / BUNDLE_FILE})")
        return load_detector(self.detector_path, self.profile, runtime, threads)


def _detector_path(folder: Path, data: dict[str, Any]) -> Path | None:
    detector = data.get("detector") or {}
    if not isinstance(detector, dict):
        raise PolicyError(f"{folder / BUNDLE_FILE}: detector: expected {{path, copied}}, got {detector!r}")
    path = detector.get("path")
    if not path:
        return None
    return folder / path  # a copied detector's path is relative to the bundle; a referenced one absolute


# ------------------------------------------------------------------------------------------------ runner


@dataclass
class Decision:
    """What the policy decided on one frame, and why."""

    mouse: tuple[float, float]  # fractions of the game region, 0..1
    click: bool
    key: int  # index into profile.keys, 0 = none
    mode: str  # the Strategist's current mode ("" before the first completed second)
    mode_probs: np.ndarray  # (n_modes,) float32 (uniform before the first second)
    target_id: int  # chosen track id, 0 = none
    approach: np.ndarray  # (2,)
    ms: dict[str, float]  # milliseconds spent this call per stage: strategist, tactician, executor

    def action(self) -> dict:
        """The Arena action dict (arena/spec.py): {"mouse": [x, y], "click": 0|1, "key": k}."""
        x, y = (min(1.0, max(0.0, float(v))) for v in self.mouse)
        return {"mouse": [x, y], "click": int(bool(self.click)), "key": int(self.key)}


def target_row(obs: Observation, track_id: int) -> np.ndarray:
    """(F_OBJ,) the object row of `track_id` in this frame; zeros for 0 (none) or a track no longer there."""
    slot = obs.slot_of(track_id) if track_id > 0 else None
    return obs.objects[slot].astype(np.float32) if slot is not None else np.zeros(F_OBJ, np.float32)


def snap_to_target(mouse: tuple[float, float], target: np.ndarray, boxes: float) -> tuple[float, float]:
    """Aim at the chosen target's centre when the Executor's point is within `boxes` box sizes of it.

    Why: the Executor's mouse head is a grid of cells (+ an in-cell offset) over the whole frame, whose error
    (~30 px at 640 px, measured) exceeds a 16 px NPC; the Tactician already said WHICH object, so a point
    aimed roughly its way is refined to its centre. 0 turns it off; points far from the target are kept
    (flying elsewhere, fleeing). Only enemies and loot, the objects a click acts on: snapped to the portal the
    player starts on, every click landed on the ship itself and the bot never left it.
    """
    clicked_on = target[OBJ_INDEX["is_enemy"]] > 0 or target[OBJ_INDEX["is_loot"]] > 0
    if boxes <= 0 or not clicked_on:  # a portal or neutral object is a place: the Executor's aim stands
        return float(mouse[0]), float(mouse[1])
    cx, cy, w, h = (float(target[OBJ_INDEX[name]]) for name in ("x", "y", "w", "h"))
    if abs(mouse[0] - cx) <= boxes * max(w, 1e-3) and abs(mouse[1] - cy) <= boxes * max(h, 1e-3):
        return cx, cy
    return float(mouse[0]), float(mouse[1])


def _row(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(0)  # (1, ...)


class PolicyRunner:
    """Steps the bundle's Strategist, Tactician and Executor on a stream of PerceptionSteps (see above).

    `calls` counts the calls of each model since `reset()`, for decision rates; `executor_steps` counts the
    Executor's steps, missed frames included.
    """

    def __init__(
        self,
        bundle: PolicyBundle,
        tactician_hz: float = 10.0,
        sample: bool = False,
        seed: int = 0,
        snap: float = SNAP_BOXES,
    ) -> None:
        if not (isinstance(tactician_hz, int | float) and tactician_hz > 0 and math.isfinite(tactician_hz)):
            raise ValueError(f"tactician_hz: expected a number > 0, got {tactician_hz!r}")
        if not (isinstance(snap, int | float) and snap >= 0):
            raise ValueError(f"snap: expected a number >= 0, got {snap!r}")
        self.bundle, self.sample, self.seed, self.snap = bundle, sample, seed, float(snap)
        self.period = 1.0 / float(tactician_hz)
        self.frame_period = 1.0 / float(bundle.profile.fps)  # the Executor's step in training
        self.generator = torch.Generator().manual_seed(seed)
        self.reset()

    def reset(self) -> None:
        """New episode: empty KV cache and Mamba state, no goal, no target."""
        b = self.bundle
        self._cache = b.strategist.reset(1)  # held here, so runners sharing a bundle do not mix streams
        self._state = b.executor.reset(1)
        self.generator.manual_seed(self.seed)
        self.goal = np.zeros(b.strategist.config.goal_dim, np.float32)
        self.mode = ""
        self.mode_probs = np.full(len(b.modes), 1.0 / len(b.modes), np.float32)
        self.target_id = 0
        self.approach = np.zeros(b.tactician.config.approach_dim, np.float32)
        self.calls = dict.fromkeys(STAGES, 0)
        self._t0: float | None = None  # time of the first Tactician decision (the decision grid's origin)
        self._next_decision = 0  # index on that grid of the next decision
        self._last_t: float | None = None  # obs.t of the previous frame
        self.executor_steps = 0

    @torch.inference_mode()  # no autograd bookkeeping at all: 15-20 % faster than no_grad here
    def act(self, step: PerceptionStep) -> Decision:
        """One frame: Strategist on a completed second, Tactician when due, Executor always."""
        ms = dict.fromkeys(STAGES, 0.0)
        if step.summary is not None:
            ms["strategist"] = self._timed(self._strategist, step.summary)
        if self._tactician_due(step.obs.t):
            ms["tactician"] = self._timed(self._tactician, step.obs)
        mark = time.perf_counter()
        mouse, click, key = self._executor(step.obs, self._frames_since_last(step.obs.t))
        ms["executor"] = (time.perf_counter() - mark) * 1000.0
        return Decision(
            mouse, click, key, self.mode, self.mode_probs.copy(), self.target_id, self.approach.copy(), ms
        )

    @staticmethod
    def _timed(stage: Any, arg: Any) -> float:
        mark = time.perf_counter()
        stage(arg)
        return (time.perf_counter() - mark) * 1000.0

    def _strategist(self, summary: np.ndarray) -> None:
        out, self._cache = self.bundle.strategist.step(_row(summary), self._cache)
        probs = out.mode_logits[0].float().softmax(-1)
        self.goal = out.goal[0].float().numpy().copy()
        self.mode_probs = probs.numpy().astype(np.float32)
        self.mode = self.bundle.modes[int(probs.argmax())]
        self.calls["strategist"] += 1

    def _tactician_due(self, t: float) -> bool:
        """True on a grid of 1/tactician_hz s of observation time starting at the first frame."""
        if self._t0 is None:
            self._t0 = t
        due = t >= self._t0 + self._next_decision * self.period - 1e-6
        if due:  # the next grid point after t (late frames skip missed points rather than catching up)
            self._next_decision = math.floor((t - self._t0) / self.period + 1e-6) + 1
        return due

    def _tactician(self, obs: Observation) -> None:
        out = self.bundle.tactician(
            _row(obs.objects),
            torch.from_numpy(obs.mask.astype(bool)).unsqueeze(0),
            _row(self.goal),
            _row(obs.glob),
        )
        logits = out.target_logits[0].float()  # (1 + N,), -inf on padded slots
        if self.sample:
            slot = int(torch.multinomial(logits.softmax(-1), 1, generator=self.generator))
        else:
            slot = int(logits.argmax())
        self.target_id = int(obs.track_id[slot - 1]) if slot > 0 else 0
        self.approach = out.approach[0].float().numpy().copy()
        self.calls["tactician"] += 1

    def _frames_since_last(self, t: float) -> int:
        """Frame periods of the profile's fps from the previous frame to this one: 1 at the full rate."""
        last, self._last_t = self._last_t, t
        if last is None:
            return 1
        return max(1, min(MAX_CATCH_UP, round((t - last) / self.frame_period)))

    def _executor(self, obs: Observation, frames: int) -> tuple[tuple[float, float], bool, int]:
        executor = self.bundle.executor
        target = target_row(obs, self.target_id)
        glob, goal, target_in, approach = _row(obs.glob), _row(self.goal), _row(target), _row(self.approach)
        if frames > 1:  # the loop fell behind: first the missed frames, each as in training
            glob = glob.clone()  # _row shares memory with the Observation
            glob[0, GLOB["dt"]] = self.frame_period
            missed = glob.clone()
            missed[0, GLOB["click"]] = 0.0  # the hand's click since the last frame belongs to one frame
            for _ in range(frames - 1):
                _, self._state = executor.step(missed, goal, target_in, approach, self._state)
        out, self._state = executor.step(glob, goal, target_in, approach, self._state)
        action = executor.decode(out, sample=self.sample, generator=self.generator)
        self.calls["executor"] += 1
        self.executor_steps += frames
        x, y = snap_to_target(tuple(action.mouse[0].tolist()), target, self.snap)
        return (x, y), bool(action.click[0]), int(action.key[0])


__all__ = [
    "BUNDLE_FILE",
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "Decision",
    "PolicyBundle",
    "PolicyRunner",
    "read_bundle_json",
    "target_row",
]
