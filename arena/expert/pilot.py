"""Expert: the scripted pilot's frame loop, `act(info) -> (action, labels)`: see, decide, plan, then move
the hand; it also keeps a selected NPC in mind for a moment after it leaves the screen."""

from __future__ import annotations

import numpy as np

from arena import spec
from arena.expert.config import ExpertConfig
from arena.expert.decisions import ModeSelector, TargetSelector
from arena.expert.hand import KEY_INDEX, Cursor, Intent, Keyboard
from arena.expert.tactics import TACTICS, Context, Memory, Plan
from arena.expert.view import Obj, Scene, Tracker, on_object, perceive

# s that a selected NPC which left the screen is still believed where it was heading (object permanence,
# as a tracker such as ByteTrack keeps a lost track for about a second)
GHOST_S = 1.5


def _ghost(obj: Obj, age: float, scene: Scene) -> Obj:
    """`obj` as last seen `age` s ago, moved on at its velocity, marked as a ghost."""
    world = obj.world + obj.vel * age
    center = scene.to_screen(world)
    half = 0.5 * (obj.box[2:] - obj.box[:2])
    box = np.concatenate([center - half, center + half])
    dist = float(np.linalg.norm(world - scene.pos))
    return Obj(obj.id, obj.cls, box, center, world, obj.hp_frac, obj.aggro, dist, obj.vel.copy(), ghost=True)


class Expert:
    """The scripted expert: `act(info) -> (action, labels)` every frame, after `reset(seed)` per episode.

    Example:
        env = ArenaEnv(ArenaConfig(width=640, height=360, zoom=0.5))
        expert = Expert(ExpertConfig.matching(env.config, skill=0.7))  # same frame size, zoom and map
        frame, info = env.reset(seed=3); expert.reset(seed=3)
        action, labels = expert.act(info); frame, reward, terminated, truncated, info = env.step(action)
    """

    def __init__(self, cfg: ExpertConfig | None = None):
        self.cfg = cfg or ExpertConfig()
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Forget everything; `seed` (default cfg.seed) fixes every random choice of the episode."""
        self.rng = np.random.default_rng(self.cfg.seed if seed is None else seed)
        self.cursor = Cursor(self.cfg, self.rng)
        self.keyboard = Keyboard(self.cfg, self.rng)
        self.modes = ModeSelector(self.cfg)
        self.targets = TargetSelector(self.cfg, self.rng)
        self.mem = Memory()
        self.tracker = Tracker(self.cfg)
        self.last_seen: dict[int, tuple[float, Obj]] = {}
        self.next_click_t = 0.0

    def act(self, info: dict) -> tuple[dict, dict]:
        """One frame: the action (spec.py layout) and the labels {"mode", "target_id"}."""
        scene, mode, target, plan = self.decide(info)
        self.keyboard.retain(plan.keys)
        for key in plan.keys:
            self.keyboard.request(key, scene.time)
        pos = self.cursor.update(scene.time, plan.intent)
        click = self._click(scene, plan.intent)
        action = {
            "mouse": np.clip(pos / [self.cfg.width, self.cfg.height], 0.0, 1.0).astype(np.float32),
            "click": int(click),
            "key": self.keyboard.pop(scene.time),
        }
        if action["key"] == KEY_INDEX["attack"]:
            self.mem.attack_for, self.mem.attack_t = scene.selected, scene.time
        return action, {"mode": mode, "target_id": None if target is None else target.id}

    def decide(self, info: dict) -> tuple[Scene, str, Obj | None, Plan]:
        """See and decide, without the hand: the Scene, mode, target and Plan of this frame."""
        scene = perceive(info, self.cfg, self.tracker)
        self._remember(scene)
        mode = self.modes.update(scene)
        target = self.targets.update(mode, scene)
        return scene, mode, target, TACTICS[mode](Context(self.cfg, self.rng, self.mem, scene), target)

    def _remember(self, scene: Scene) -> None:
        """Update the memory; put the selected NPC back in the scene if it left the screen a moment ago."""
        for npc in scene.npcs:
            self.last_seen[npc.id] = (scene.time, npc)
        if scene.selected is not None and scene.find(scene.selected) is None:
            seen = self.last_seen.get(scene.selected)
            if seen is not None and scene.time - seen[0] < GHOST_S:
                scene.npcs.append(_ghost(seen[1], scene.time - seen[0], scene))
        if scene.portals:
            self.mem.home = scene.portals[0].world
        for boss in scene.bosses:
            self.mem.bosses_seen[boss.id] = (scene.time, boss.world)
        if len(self.tracker.last) > 512:  # ids are never reused: forget objects gone for a while
            self.tracker.prune(scene.time)
            known = self.tracker.last
            self.last_seen = {k: v for k, v in self.last_seen.items() if k in known}
            self.targets.bias = {k: v for k, v in self.targets.bias.items() if k in known}
            self.mem.loot_click = {k: v for k, v in self.mem.loot_click.items() if k in known}

    def _click(self, scene: Scene, intent: Intent | None) -> bool:
        """Click only when asked, after the cursor has arrived, and not faster than a person can."""
        if intent is None or not intent.click or scene.time < self.next_click_t:
            return False
        if not self.cursor.arrived(scene.time, intent):
            return False
        kind = intent.key[0]
        if kind in ("move", "loot") and on_object(self.cursor.pos, scene, pad=2.0, classes=spec.NPC_CLASSES):
            return False  # an NPC slid under the cursor: this click would select it instead of flying
        gap = self.cfg.click_gap_s * self.cfg.clumsiness * float(self.rng.uniform(1.0, 1.5))
        self.next_click_t = scene.time + gap
        if kind in ("move", "loot"):
            self.mem.move_click_t, self.mem.move_dest = scene.time, scene.to_world(self.cursor.pos)
        if kind == "loot":
            self.mem.loot_click[intent.key[1]] = scene.time
        return True
