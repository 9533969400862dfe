"""`StateLabeller`: the expert's answer on states another player steers (DAgger), read from its plan and the
game rather than from its own simulated hand.

The Expert's hand and memory react to its own earlier clicks and taps; on a game the bot steers those never
happened, so its hand's output there is not its answer to the state (docs/notes/play.md, bot/play/dagger.py).
Here each frame's label is what the plan asks for now: aim at the intent's point, click if it wants a click,
tap a key it wants that nobody (bot or label) tapped in the last `repeat_s`; and the memory the tactics read
(last move click, loot clicks, attack press) is written from the actions that did reach the game.
"""

from __future__ import annotations

import math

import numpy as np

from arena import spec
from arena.expert.config import ExpertConfig
from arena.expert.hand import KEY_INDEX
from arena.expert.pilot import Expert
from arena.expert.view import Obj, Scene

KEY_REPEAT_S = 1.0  # the expert's own rule (hand.Keyboard.request): a key is not tapped twice within 1 s


def _under(point: np.ndarray, objects: list[Obj]) -> Obj | None:
    """The object whose box holds screen `point`, if any."""
    for o in objects:
        if bool(np.all(point >= o.box[:2]) and np.all(point <= o.box[2:])):
            return o
    return None


class StateLabeller:
    """`label(info)` before the other player acts, then `observe(action)` with what it did, every frame.

    Example:
        labeller = StateLabeller(ExpertConfig.matching(env.config, skill=0.8)); labeller.reset(seed=5)
        action, labels = labeller.label(info)   # the expert's answer in this state
        labeller.observe(bot_action)            # the action the game received in it
    """

    def __init__(self, cfg: ExpertConfig, repeat_s: float = KEY_REPEAT_S) -> None:
        self.expert, self.repeat_s = Expert(cfg), repeat_s
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        self.expert.reset(seed)
        self.last_tap: dict[str, float] = {}  # key -> last time it was tapped by the player or labelled
        self.scene: Scene | None = None

    def label(self, info: dict) -> tuple[dict, dict]:
        """The action (spec.py layout) the plan asks for in this state; the labels {"mode", "target_id"}."""
        cfg = self.expert.cfg
        scene, mode, target, plan = self.expert.decide(info)
        self.scene = scene
        size = np.array([cfg.width, cfg.height], float)
        cursor = np.asarray(info.get("cursor", size / 2), float)  # px, where the game's pointer is
        mouse = (plan.intent.point if plan.intent is not None else cursor) / size
        key = 0
        for name in plan.keys:
            if scene.time - self.last_tap.get(name, -math.inf) >= self.repeat_s:
                key, self.last_tap[name] = KEY_INDEX[name], scene.time
                break
        action = {
            "mouse": np.clip(mouse, 0.0, 1.0).astype(np.float32),
            "click": int(plan.intent is not None and plan.intent.click),
            "key": key,
        }
        return action, {"mode": mode, "target_id": None if target is None else target.id}

    def observe(self, action: dict) -> None:
        """Remember what reached the game this frame, as the expert remembers its own clicks and taps."""
        scene, mem = self.scene, self.expert.mem
        if scene is None:
            return
        key = int(action.get("key", 0))
        if 0 < key < len(spec.KEYS):
            self.last_tap[spec.KEYS[key]] = scene.time
            if spec.KEYS[key] == "attack":
                mem.attack_for, mem.attack_t = scene.selected, scene.time
        if not int(action.get("click", 0)):
            return
        point = np.asarray(action["mouse"], float) * [self.expert.cfg.width, self.expert.cfg.height]
        if _under(point, scene.npcs) is not None:
            return  # a selection: the game shows it (scene.selected)
        box = _under(point, scene.boxes)
        if box is not None:
            mem.loot_click[box.id] = scene.time
        mem.move_click_t, mem.move_dest = scene.time, scene.to_world(point)
