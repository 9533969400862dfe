"""The Arena's scripted expert as a person at the desk, for tests: it plays an Arena window through X input
(pynput's XTest controller: the pointer, the left button, the keys) and never calls the game itself, so a
recorder sees what it would see of a person. Its mode and target labels go to a JSON-lines file with unix
times ({"t", "mode", "target_id", "click"}), as a person labelling their own play would write them.

    python tests/support/arena_person.py --seconds 60 --labels labels.jsonl [--width 640 --height 360]

"arena person ready" goes to stderr once the first frame is shown; SIGTERM / SIGINT end it; a summary
JSON line (frames, clicks and keys sent, modes) goes to stdout at the end.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from arena.env import ArenaConfig, ArenaEnv
from arena.expert import Expert, ExpertConfig
from arena.spec import KEY_BINDINGS, KEYS
from arena.window import InputQueue, WindowConfig, _open_display


def _controllers():
    from pynput import keyboard, mouse

    keys = {name: getattr(keyboard.Key, name, name) for name in KEY_BINDINGS.values()}  # "space" -> Key.space
    return mouse.Controller(), mouse.Button.left, keyboard.Controller(), keys


def play(args: argparse.Namespace) -> dict:
    import pygame

    cfg = WindowConfig(width=args.width, height=args.height, seed=args.seed, x=0, y=0)
    screen = _open_display(cfg)
    env = ArenaEnv(
        ArenaConfig(width=cfg.width, height=cfg.height, fps=cfg.fps, episode_seconds=1e9, render=False)
    )
    _, info = env.reset(seed=args.seed)
    expert = Expert(ExpertConfig.matching(env.config, skill=args.skill, seed=args.seed))
    queue, clock = InputQueue(cfg.width, cfg.height), pygame.time.Clock()
    pointer, left, keyboard, keys = _controllers()
    stop = [False]
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.__setitem__(0, True))
    sent: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    start = None
    with open(args.labels, "w") as labels:
        while not stop[0] and (start is None or time.monotonic() - start < args.seconds):
            for event in pygame.event.get():  # what reached the game through X, as for a person
                stop[0] |= event.type == pygame.QUIT
                queue.push(event)
            _, _, _, _, info = env.step(queue.next_action())
            screen.blit(env.render_surface(), (0, 0))
            pygame.display.flip()
            if start is None:
                start = time.monotonic()
                print("arena person ready", file=sys.stderr, flush=True)
            action, label = expert.act(info)
            pointer.position = (int(action["mouse"][0] * cfg.width), int(action["mouse"][1] * cfg.height))
            if action["click"]:
                pointer.click(left)
                sent["clicks"] += 1
            if action["key"]:
                keyboard.tap(keys[KEY_BINDINGS[KEYS[action["key"]]]])
                sent["keys"] += 1
            record = {"t": time.time(), "mode": label["mode"], "target_id": label["target_id"],
                      "click": bool(action["click"])}  # fmt: skip
            labels.write(json.dumps(record) + "\n")
            labels.flush()
            modes[label["mode"]] += 1
            sent["frames"] += 1
            clock.tick(cfg.fps)
    pygame.display.quit()
    return {**sent, "modes": dict(modes), "score": info["score"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skill", type=float, default=1.0)
    print(json.dumps(play(parser.parse_args()), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
