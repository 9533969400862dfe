"""The one config validator: typed field checks that raise ConfigError naming the owner, field and value.

Every config dataclass of the project (models, training, arena, bot) calls these from `__post_init__`, so a
bad
value fails at construction with "StrategistConfig.d_model: expected an int >= 1, got 0". A leaf package: it
imports nothing of ours, so arena and models may use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


class ConfigError(ValueError):
    """A config field has the wrong type or value; the message names Owner.field, what was expected and
    got."""


def fail(owner: object, name: str, expected: str, value: object) -> ConfigError:
    """The error for field `name` of `owner` (a config instance, or a class name as a string)."""
    owner_name = owner if isinstance(owner, str) else type(owner).__name__
    return ConfigError(f"{owner_name}.{name}: expected {expected}, got {value!r}")


def check_int(owner: object, name: str, minimum: int | None = None, maximum: int | None = None) -> None:
    """Field `name` of `owner` must be an int (not a bool) within [minimum, maximum]."""
    value = getattr(owner, name)
    bounds = [f">= {minimum}" if minimum is not None else "", f"<= {maximum}" if maximum is not None else ""]
    expected = "an int " + " and ".join(b for b in bounds if b) if any(bounds) else "an int"
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(owner, name, expected.strip(), value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise fail(owner, name, expected.strip(), value)


def check_float(
    owner: object, name: str, low: float | None = None, high: float | None = None, low_open: bool = False
) -> None:
    """Field `name` must be a finite real number in [low, high] (or (low, high] with `low_open`)."""
    value = getattr(owner, name)
    left = "(" if low_open else "["
    low_text, high_text = ("-inf" if low is None else low), ("inf" if high is None else high)
    expected = f"a finite number in {left}{low_text}, {high_text}]"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise fail(owner, name, expected, value)
    if low is not None and (value <= low if low_open else value < low):
        raise fail(owner, name, expected, value)
    if high is not None and value > high:
        raise fail(owner, name, expected, value)
    setattr(owner, name, float(value))


def check_choice(owner: object, name: str, choices: Iterable[object]) -> None:
    """Field `name` must be one of `choices`."""
    options = tuple(choices)
    value = getattr(owner, name)
    if value not in options:
        raise fail(owner, name, "one of " + ", ".join(repr(o) for o in options), value)


def check_bool(owner: object, name: str) -> None:
    value = getattr(owner, name)
    if not isinstance(value, bool):
        raise fail(owner, name, "a bool", value)


def check_divisible(owner: object, name: str, divisor_name: str) -> None:
    """Field `name` must be a multiple of field `divisor_name` (e.g. d_model of n_heads)."""
    value, divisor = getattr(owner, name), getattr(owner, divisor_name)
    if value % divisor != 0:
        raise fail(owner, name, f"a multiple of {divisor_name}={divisor}", value)
