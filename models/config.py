"""The JSON round trip of the model configs (each model's typed `@dataclass` config lives beside it and
validates itself through the `validation` package)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from models.errors import ConfigError

C = TypeVar("C")


def config_to_dict(config: object) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (fields are plain scalars)."""
    return dataclasses.asdict(config)  # type: ignore[call-overload]


def config_from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Build `cls` from `data`; unknown keys are an error naming the key, missing keys take their defaults."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(known)}")
    return cls(**dict(data))
