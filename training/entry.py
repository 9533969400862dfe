"""Training command lines: `train_strategist`, `train_tactician`, `train_executor`, `pilot train <model>`.

Settings: defaults < `--config FILE.yaml|json` (nested like the flags) < `--preset NAME` (speed settings in
training/configs/NAME.yaml, e.g. `gpu`) < flags. Checkpoints land in `--train.out-dir` (last/, best/).
Examples (after `pilot demos` and `pilot perceive`):

    train_strategist --data.data data/recordings/arena --data.val-data data/recordings/arena-heldout
    train_strategist --config strategist.yaml --train.epochs 40 --model.label-smoothing 0.05
    train_tactician --data.data data/recordings/arena --strategist data/checkpoints/strategist/best
    train_executor --data.data data/recordings/arena --train.resume auto
    train_executor --data.data data/recordings/arena --preset gpu      # CUDA, bigger batches, bf16, compile
    pilot train policy --data.data data/recordings/arena --out data/policies/arena
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TypeVar

from bot.logs import setup_logging
from training.cli import ConfigFileError, apply_overrides, parse
from training.config import pop_preset, preset_values
from training.errors import DatasetError
from training.runs import (
    ExecutorRun,
    StrategistRun,
    TacticianRun,
    run_executor,
    run_strategist,
    run_tactician,
)

log = logging.getLogger(__name__)

C = TypeVar("C")


def parse_run(cls: type[C], argv: list[str] | None, prog: str, section: str | None) -> C:
    """`cls` from defaults < --config < --preset (its `section`; all of it for policy) < flags."""
    argv, preset = pop_preset(list(sys.argv[1:] if argv is None else argv))
    cfg = parse(cls, argv, prog, f"{(cls.__doc__ or '').strip()}\n\n{__doc__}")
    if preset is None:
        return cfg
    return apply_overrides(cfg, preset_values(preset, section, argv), f"--preset {preset}")


def _main(cls: type[C], run: Any, argv: list[str] | None, prog: str, section: str | None) -> int:
    setup_logging()
    try:
        cfg = parse_run(cls, argv, prog, section)
    except ConfigFileError as exc:
        log.error("%s", exc)
        return 2
    if getattr(cfg, "threads", 0) > 0:
        import torch

        torch.set_num_threads(cfg.threads)
    try:
        return run(cfg)
    except (DatasetError, FileNotFoundError) as exc:
        log.error("%s", str(exc).splitlines()[0])
        return 1
    except Exception as exc:
        from models.errors import ConfigError, ModelsError

        if isinstance(exc, ModelsError | ConfigError):
            log.error("%s", str(exc).splitlines()[0])
            return 1
        raise


def strategist_main(argv: list[str] | None = None) -> int:
    """`train_strategist` / `pilot train strategist`."""
    return _main(StrategistRun, run_strategist, argv, "train_strategist", "strategist")


def tactician_main(argv: list[str] | None = None) -> int:
    """`train_tactician` / `pilot train tactician`."""
    return _main(TacticianRun, run_tactician, argv, "train_tactician", "tactician")


def executor_main(argv: list[str] | None = None) -> int:
    """`train_executor` / `pilot train executor`."""
    return _main(ExecutorRun, run_executor, argv, "train_executor", "executor")


def policy_main(argv: list[str] | None = None) -> int:
    """`pilot train policy`: the three models in order, then a policy bundle (training/policy.py)."""
    from training.policy import PolicyRun, run_policy

    return _main(PolicyRun, run_policy, argv, "pilot train policy", None)


def rl_main(argv: list[str] | None = None) -> int:
    """`pilot train rl`: PPO fine-tuning of a bundle in the Arena (training/rl/run.py)."""
    from training.rl.run import main as rl

    return rl(argv)


def calibrate_main(argv: list[str] | None = None) -> int:
    """`pilot train calibrate`: a bundle's held-key thresholds fitted on held-out episodes (calibrate.py)."""
    from training.calibrate import main as calibrate

    return calibrate(argv)


def detector_main(argv: list[str] | None = None) -> int:
    from training.detector import main as detector

    return detector(argv)


COMMANDS = {
    "strategist": strategist_main,
    "tactician": tactician_main,
    "executor": executor_main,
    "policy": policy_main,
    "detector": detector_main,
    "rl": rl_main,
    "calibrate": calibrate_main,
}
USAGE = "usage: pilot train {" + ",".join(COMMANDS) + "} [--help] [flags]"


def main(argv: list[str] | None = None) -> int:
    """`pilot train <model or step> ...` (one of COMMANDS): run that entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(f"{USAGE}\n\n{__doc__}")
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        sys.stderr.write(f"pilot train: unknown model {argv[0]!r}; {USAGE}\n")
        return 2
    return COMMANDS[argv[0]](argv[1:])


# ---------------------------------------------------------------------------------------- console scripts


def train_strategist() -> int:
    sys.exit(strategist_main())


def train_tactician() -> int:
    sys.exit(tactician_main())


def train_executor() -> int:
    sys.exit(executor_main())


def train_detector() -> int:
    sys.exit(detector_main())


def finetune_vlm() -> int:
    from training.finetune import main as finetune

    sys.exit(finetune())
