"""Console entry points of the training package (filled in by the training issue)."""

import sys


def _not_yet(name: str) -> int:
    print(f"{name}: not yet implemented (see the training issue)", file=sys.stderr)
    return 2


def train_strategist() -> int:
    sys.exit(_not_yet("train_strategist"))


def train_tactician() -> int:
    sys.exit(_not_yet("train_tactician"))


def train_executor() -> int:
    sys.exit(_not_yet("train_executor"))


def train_detector() -> int:
    sys.exit(_not_yet("train_detector"))


def finetune_vlm() -> int:
    sys.exit(_not_yet("finetune_vlm"))
