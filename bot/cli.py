"""`pilot`: the one command line of Orbit Pilot. Each subcommand's code is imported only when it runs, so
`pilot --help` stays instant and the live runtime never imports training code it does not use.

    pilot demo                   the bot plays the Arena with the shipped policy (the main job)
    pilot run --policy DIR       play a game live through the screen, mouse and keyboard
    pilot eval --policy DIR      measure a policy on the Arena against the expert and a random policy
    pilot record --game arena    record human play into episodes
    pilot shadow --policy DIR    record a person while the bot predicts beside them, learns and is measured
    pilot <command> --help       the options of one command
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from bot.errors import PilotError
from bot.logs import setup_logging

# name -> (module:function taking argv and returning an exit code, one-line help).
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "bot.play.demo:main",
        "the bot plays the Arena with the shipped policy (window + eval + overlay video)",
    ),
    "arena": ("arena.window:main", "open the Arena in a window and play it with mouse and keyboard"),
    "demos": (
        "bot.play.demos:main",
        "write expert demonstration episodes (video + steps + labels) of the Arena or Naev",
    ),
    "run": (
        "bot.play.run:main",
        "play a game live through the screen, mouse and keyboard with a policy bundle",
    ),
    "eval": (
        "bot.play.evaluate:main",
        "measure a policy bundle on the Arena against the expert and random play (Naev: the scripted pilot)",
    ),
    "dagger": (
        "bot.play.dagger:main",
        "record the bot's own play labelled with the expert's actions (DAgger training episodes)",
    ),
    "export": (
        "bot.policy.onnx_export:main",
        "write a copy of a policy bundle with ONNX models, run by ONNX Runtime (--int8: int8 weights)",
    ),
    "record": ("bot.recordings.record:main", "record human play (screen + mouse + keyboard) into episodes"),
    "shadow": (
        "bot.play.shadow:main",
        "record a person playing while a policy predicts beside them (no input), learns and is measured",
    ),
    "episodes": ("bot.recordings.episodes:main", "list / show / check recorded episodes"),
    "train": ("training.entry:main", "train the detector, a policy model, or the whole policy bundle"),
    "perceive": (
        "bot.recordings.perceive:main",
        "run detector + tracker + HUD + state encoder over recorded episodes",
    ),
    "label": ("vlm_labeling.run:main", "label episodes with a vision-language model (OpenAI-compatible API)"),
    "autolabel": (
        "vlm_labeling.autolabel.cli:main",
        "detector labels without ground truth: proposals, tracks, clusters named once, boxes, YOLO dataset",
    ),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: pilot <command> [options]   (pilot <command> --help for its options)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def resolve(spec: str) -> Callable[..., int]:
    module_name, func_name = spec.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"pilot: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    setup_logging()
    spec = COMMANDS[command][0]
    func = resolve(spec)
    try:
        return int(func(rest) or 0)
    except PilotError as exc:
        print(f"pilot {command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pilot {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
