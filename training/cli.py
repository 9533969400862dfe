"""The command-line parsing every training entry point shares: defaults < `--config FILE.yaml|json` < flags.

A config file is nested like the flags (`{train: {lr: 1e-3}, model: {n_layers: 2}}`); a bad one (missing,
unparsable, unknown key, bad value) is a ConfigFileError, which the entry points report in one line.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, TypeVar

import tyro

C = TypeVar("C")


class ConfigFileError(ValueError):
    """A --config file is missing, unparsable or holds an unknown key or a bad value."""


def load_config_file(path: Path) -> dict[str, Any]:
    """A YAML or JSON mapping; ConfigFileError naming the file otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"--config {path}: unreadable ({exc.strerror or exc})") from None
    try:
        if Path(path).suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigFileError(
            f"--config {path}: not valid {Path(path).suffix[1:] or 'YAML'} ({first})"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"--config {path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def apply_overrides(instance: C, values: dict[str, Any], where: str, prefix: str = "") -> C:
    """A copy of the dataclass `instance` with `values` (nested dicts for nested configs) replaced."""
    fields = {f.name: f for f in dataclasses.fields(instance)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            raise ConfigFileError(
                f"{where}: unknown key {prefix + str(key)!r} (expected one of {sorted(fields)})"
            )
        current = getattr(instance, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[name] = apply_overrides(current, value, where, f"{prefix}{name}.")
        else:
            changes[name] = value
    try:
        return dataclasses.replace(instance, **changes)  # type: ignore[type-var]
    except (ValueError, TypeError) as exc:
        raise ConfigFileError(f"{where}: {str(exc).splitlines()[0]}") from None


def config_path(argv: list[str]) -> Path | None:
    """The file named by `--config FILE` or `--config=FILE` in `argv`, if any."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
    return None


def parse(cls: type[C], argv: list[str] | None, prog: str, description: str | None = None) -> C:
    """`cls` from defaults < --config file < flags (tyro rejects unknown flags); `description` heads --help
    (None: the class docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    default = cls()
    path = config_path(argv)
    if path is not None and "--help" not in argv and "-h" not in argv:
        default = apply_overrides(default, load_config_file(path), f"--config {path}")
    return tyro.cli(cls, args=argv, default=default, prog=prog, description=description)
