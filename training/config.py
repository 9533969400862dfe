"""TrainConfig: the hyper-parameters and run settings of the shared training loop, validated on construction.

Saved as the "train" section of every checkpoint's config.json. A bad field raises TrainConfigError
("TrainConfig.lr: expected a finite number in (0.0, inf], got 0.0"). Presets (`--preset gpu`): settings files
in training/configs/ that the entry points apply over --config and under flags (pop_preset, preset_values).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.errors import TrainConfigError
from validation import ConfigError, check_bool, check_choice, check_float, check_int, fail


@dataclass
class TrainConfig:
    """Hyper-parameters and run settings of the shared training loop (saved in every config.json)."""

    out_dir: Path = Path("data/checkpoints/run")  # folder of last/, best/ and tb/ (TensorBoard)
    lr: float = 3e-4  # peak learning rate, reached at the end of warm-up
    weight_decay: float = 0.05  # AdamW decoupled decay of matmul weights (see param_groups)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW moment decays
    eps: float = 1e-8  # AdamW denominator epsilon
    warmup_steps: int = 100  # optimizer steps of linear warm-up from lr / warmup_steps to lr
    min_lr_ratio: float = 0.1  # cosine floor, as a fraction of lr (nanoGPT uses about 0.1)
    epochs: int = 10  # passes over the training set (ignored when max_steps > 0)
    max_steps: int = 0  # optimizer steps of the run; 0 = epochs x steps per epoch
    batch_size: int = 32  # samples per micro-batch per process
    grad_accum: int = 1  # micro-batches per step; global batch = batch_size x grad_accum x processes
    eval_batch_size: int = 0  # samples per validation batch; 0 = batch_size
    clip_norm: float = 1.0  # max global L2 norm of the gradient; 0 = no clipping
    ema_decay: float = 0.999  # EMA decay per optimizer step (warmed up, see EMA); 0 = no EMA
    max_consecutive_nonfinite: int = 10  # stop with an error after this many skipped steps in a row
    seed: int = 0  # seeds model init, data order and every RNG
    device: str = "auto"  # "auto" (CUDA if visible), "cpu" or "cuda"
    bf16: str = "auto"  # bf16 autocast: "auto" (on CUDA with bf16 support), "on" or "off"
    compile: bool = False  # torch.compile the training forward
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower; exact resume on CUDA)
    eval_every: int = 1  # epochs between validations (and the run's end)
    save_every: int = 0  # optimizer steps between extra saves of last/; 0 = at validations and the end only
    log_every: int = 10  # optimizer steps between train/* and perf/* scalars
    resume: str = ""  # "" = new run, "auto" = continue out_dir/last if present, or a checkpoint folder
    best_metric: str = "loss"  # validation metric (a key of Task.evaluate) that selects best/
    best_mode: str = "min"  # "min" or "max": which direction of best_metric is better
    num_workers: int = 0  # DataLoader worker processes
    progress: bool = True  # tqdm progress bar (rank 0)
    tensorboard: bool = True  # TensorBoard scalars in out_dir/tb (rank 0)
    ddp_find_unused: bool = False  # DDP find_unused_parameters, for models whose loss skips some heads

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        try:
            self._validate()
        except ConfigError as exc:  # the training package's own error type, with validation's message
            raise TrainConfigError(str(exc)) from None

    def _validate(self) -> None:
        for name in ("lr", "eps"):
            check_float(self, name, 0.0, low_open=True)
        for name in ("weight_decay", "clip_norm"):
            check_float(self, name, 0.0)
        check_float(self, "min_lr_ratio", 0.0, 1.0)
        check_float(self, "ema_decay", 0.0, 1.0)
        if self.ema_decay == 1.0:  # check_float's bounds are closed; 1.0 would never move the average
            raise fail(self, "ema_decay", "a finite number in [0.0, 1.0)", self.ema_decay)
        self._validate_betas()
        for name in (
            "epochs",
            "batch_size",
            "grad_accum",
            "max_consecutive_nonfinite",
            "eval_every",
            "log_every",
        ):
            check_int(self, name, 1)
        for name in ("warmup_steps", "max_steps", "eval_batch_size", "save_every", "seed", "num_workers"):
            check_int(self, name, 0)
        check_choice(self, "device", ("auto", "cpu", "cuda"))
        check_choice(self, "bf16", ("auto", "on", "off"))
        check_choice(self, "best_mode", ("min", "max"))
        for name in ("compile", "deterministic", "progress", "tensorboard", "ddp_find_unused"):
            check_bool(self, name)
        if not isinstance(self.best_metric, str) or not self.best_metric:
            raise fail(self, "best_metric", "a metric name returned by Task.evaluate", self.best_metric)
        if not isinstance(self.resume, str):
            raise fail(self, "resume", "'', 'auto' or a checkpoint folder", self.resume)

    def _validate_betas(self) -> None:
        betas = self.betas
        if not (
            isinstance(betas, tuple | list)
            and len(betas) == 2
            and all(isinstance(b, int | float) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
        ):
            raise fail(self, "betas", "two numbers in [0, 1)", betas)
        self.betas = (float(betas[0]), float(betas[1]))

    def to_json(self) -> dict[str, Any]:
        """The resolved config as JSON-ready values (Path -> str, tuple -> list)."""
        return {
            k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()
        }


def config_error(name: str, expected: str, value: object) -> TrainConfigError:
    """The error for TrainConfig field `name` found unusable during a run (e.g. best_metric, resume)."""
    return TrainConfigError(str(fail("TrainConfig", name, expected, value)))


# ------------------------------------------------------------------------------------------------ presets

PRESETS_DIR = Path(__file__).resolve().parent / "configs"  # `--preset NAME` reads PRESETS_DIR / NAME.yaml


def pop_preset(argv: list[str]) -> tuple[list[str], str | None]:
    """`argv` without `--preset NAME` (or `--preset=NAME`), and NAME (None when absent)."""
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            return argv[:i] + argv[i + 2 :], argv[i + 1]
        if arg.startswith("--preset="):
            return argv[:i] + argv[i + 1 :], arg.split("=", 1)[1]
    return argv, None


def preset_values(name: str, section: str | None, argv: list[str]) -> dict[str, Any]:
    """The settings of preset `name` for one entry point (its `section`, e.g. "executor"; the whole file for
    `pilot train policy`), less those `argv` sets by flag, so flags still win. ConfigFileError if unknown."""
    from training.cli import ConfigFileError, load_config_file  # tyro: only for the entry points

    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
        raise ConfigFileError(f"--preset {name}: no such preset (expected one of {known})")
    values = load_config_file(path)
    values = values.get(section, {}) if section is not None else values
    flags = {arg.split("=", 1)[0].replace("_", "-") for arg in argv if arg.startswith("--")}
    return _unflagged(values, flags, "--")


def _unflagged(values: dict[str, Any], flags: set[str], prefix: str) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in values.items():
        flag = prefix + str(key).replace("_", "-")
        if isinstance(value, dict):
            kept[key] = _unflagged(value, flags, flag + ".")
        elif flag not in flags and f"{prefix}no-{str(key).replace('_', '-')}" not in flags:
            kept[key] = value
    return kept
