"""PolicyRunner: steps a policy bundle's Strategist, Tactician and Executor on each PerceptionStep and
returns a Decision (mouse, click, key, held keys, and why). Pure computation: it sends no input.

    PerceptionStep ──summary (once per completed second)──▶ Strategist.step (KV cache) ──goal, mode──┐
        ├──objects, mask, glob (every 1/tactician_hz s of obs.t)──▶ Tactician ──track id, approach─┤
        └──glob, the chosen track's row in this frame (zeros when none/gone)──▶ Executor.step ──▶ Decision

Each model gets exactly the inputs training builds (training/tasks.py); why, and how a loop that falls
behind is caught up: docs/notes/play.md.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bot.perception.pipeline import PerceptionStep
from bot.perception.state import GLOB, OBS_SPEC, Observation
from bot.policy.bundle import F_OBJ, STAGES, PolicyBundle
from models.graphs import graphed

OBJ_INDEX = {name: i for i, name in enumerate(OBS_SPEC.obj_features)}
MAX_CATCH_UP = 8  # Executor steps for one frame at most (~1 ms each): a longer stall is let go


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
    held: int = 0  # Action v2 bitmask of the keys to hold (bit k = profile.keys[k]); 0 without a held head
    # (w, h) region fractions of the enemy or loot whose box holds the mouse point: what a click there hits
    # (the hand may click once the cursor is on it); (0, 0) = the point is a place
    click_size: tuple[float, float] = (0.0, 0.0)

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


def aimed_size(mouse: tuple[float, float], target: np.ndarray) -> tuple[float, float]:
    """(w, h) of the chosen target if it is an enemy or loot and its box holds `mouse`, else (0, 0)."""
    clicked_on = target[OBJ_INDEX["is_enemy"]] > 0 or target[OBJ_INDEX["is_loot"]] > 0
    cx, cy, w, h = (float(target[OBJ_INDEX[name]]) for name in ("x", "y", "w", "h"))
    inside = abs(mouse[0] - cx) <= w / 2 and abs(mouse[1] - cy) <= h / 2
    return (w, h) if clicked_on and inside else (0.0, 0.0)


def held_mask(held: torch.Tensor | None) -> int:
    """The Action v2 bitmask of one row of decoded held keys (1, n_held) bool; 0 without a held head."""
    if held is None:
        return 0
    return sum(1 << k for k, on in enumerate(held[0].tolist()) if on)


def _row(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(0)  # (1, ...)


def held_logit_thresholds(probabilities: list[float]) -> torch.Tensor | None:
    """A bundle's held-key probability thresholds as logits (None: the default, 0.5 each)."""
    if not probabilities:
        return None
    p = torch.tensor(probabilities, dtype=torch.float32)
    return torch.log(p) - torch.log1p(-p)


class PolicyRunner:
    """Steps the bundle's Strategist, Tactician and Executor on a stream of PerceptionSteps (see above).

    Deterministic by default (argmax cells, click when p > 0.5, argmax key and target); `sample=True` draws
    them with a generator seeded by `seed`. float32 on the CPU under torch.inference_mode.
    `calls` counts the calls of each model since `reset()`, for decision rates; `executor_steps` counts the
    Executor's steps, missed frames included.
    """

    def __init__(
        self,
        bundle: PolicyBundle,
        tactician_hz: float | None = None,
        sample: bool = False,
        seed: int = 0,
        snap: float | None = None,
    ) -> None:
        """`tactician_hz` and `snap` (box sizes, 0 = off) override the bundle's inference settings."""
        tactician_hz = bundle.inference.tactician_hz if tactician_hz is None else tactician_hz
        snap = bundle.inference.snap_boxes if snap is None else snap
        if not (isinstance(tactician_hz, int | float) and tactician_hz > 0 and math.isfinite(tactician_hz)):
            raise ValueError(f"tactician_hz: expected a number > 0, got {tactician_hz!r}")
        if not (isinstance(snap, int | float) and snap >= 0):
            raise ValueError(f"snap: expected a number >= 0, got {snap!r}")
        # on a CUDA machine the Executor and Tactician run as captured CUDA graphs (models/graphs.py); CPU
        # tensors in and out either way, and without CUDA the models are used as they are
        bundle = dataclasses.replace(
            bundle, **graphed({name: getattr(bundle, name) for name in STAGES}, "cuda")
        )
        self.bundle, self.sample, self.seed, self.snap = bundle, sample, seed, float(snap)
        self.period = 1.0 / float(tactician_hz)
        self.frame_period = 1.0 / float(bundle.profile.fps)  # the Executor's step in training
        self.generator = torch.Generator().manual_seed(seed)
        self.held_threshold = held_logit_thresholds(bundle.inference.held_thresholds)
        self.held_logits: torch.Tensor | None = None  # the last step's (1, n_held), for calibration
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
        mouse, click, key, held = self._executor(step.obs, self._frames_since_last(step.obs.t))
        ms["executor"] = (time.perf_counter() - mark) * 1000.0
        size = aimed_size(mouse, target_row(step.obs, self.target_id))
        return Decision(
            mouse, click, key, self.mode, self.mode_probs.copy(), self.target_id, self.approach.copy(), ms,
            held, size,
        )  # fmt: skip

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

    def _executor(self, obs: Observation, frames: int) -> tuple[tuple[float, float], bool, int, int]:
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
        action = executor.decode(out, self.sample, self.generator, self.held_threshold)
        self.held_logits = out.held_logits
        self.calls["executor"] += 1
        self.executor_steps += frames
        x, y = snap_to_target(tuple(action.mouse[0].tolist()), target, self.snap)
        click = bool(action.click[0]) and self.bundle.profile.clicks  # a game without mouse buttons: never
        return (x, y), click, int(action.key[0]), held_mask(action.held)


__all__ = ["Decision", "PolicyRunner", "aimed_size", "snap_to_target", "target_row"]
