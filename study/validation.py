"""Type and range checks for settings dataclasses, called from their `__post_init__`.

Each failure is a ConfigError naming the key, the bad value, what is allowed and an example fix;
nothing here reads files, devices or the network.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeVar


from study.errors import ConfigError

T = TypeVar("T")


def refuse(key: str, value, allowed: str, example) -> ConfigError:
    """The error for `key=value`: 'model.d_model=0 is not allowed (an integer >= 1); e.g. model.d_model=64'."""
    return ConfigError(f"{key}={value!r} is not allowed ({allowed}); e.g. {key}={example}")


def _bounds(minimum, maximum, above, below) -> str:
    parts = []
    if minimum is not None:
        parts.append(f">= {minimum}")
    if above is not None:
        parts.append(f"> {above}")
    if maximum is not None:
        parts.append(f"<= {maximum}")
    if below is not None:
        parts.append(f"< {below}")
    return " and ".join(parts)


def integer(key: str, value, example, minimum: int | None = None, maximum: int | None = None,
            optional: bool = False) -> None:
    """`value` is an int (not a bool) within [minimum, maximum]; None allowed when `optional`."""
    if value is None and optional:
        return
    bounds = _bounds(minimum, maximum, None, None)
    allowed = "an integer" + (f" {bounds}" if bounds else "") + (" or null" if optional else "")
    if isinstance(value, bool) or not isinstance(value, int):
        raise refuse(key, value, allowed, example)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise refuse(key, value, allowed, example)


def number(key: str, value, example, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, below: float | None = None, optional: bool = False) -> None:
    """`value` is a finite int or float within the bounds (`above`/`below` exclusive); None when `optional`."""
    if value is None and optional:
        return
    bounds = _bounds(minimum, maximum, above, below)
    allowed = "a finite number" + (f" {bounds}" if bounds else "") + (" or null" if optional else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise refuse(key, value, allowed, example)
    if ((minimum is not None and value < minimum) or (maximum is not None and value > maximum)
            or (above is not None and value <= above) or (below is not None and value >= below)):
        raise refuse(key, value, allowed, example)


def choice(key: str, value, choices: Iterable, example=None) -> None:
    """`value` is one of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        raise refuse(key, value, "one of " + ", ".join(str(c) for c in choices),
                     choices[0] if example is None else example)


def flag(key: str, value, example: bool = False) -> None:
    """`value` is true or false."""
    if not isinstance(value, bool):
        raise refuse(key, value, "true or false", str(example).lower())


def text(key: str, value, example, optional: bool = False) -> None:
    """`value` is a string; None allowed when `optional`."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise refuse(key, value, "a string" + (" or null" if optional else ""), example)


def integers(key: str, value, example, minimum: int | None = None, length: int | None = None) -> None:
    """`value` is a non-empty list of ints, each >= minimum (and exactly `length` long if given)."""
    allowed = ("a list of " + (f"{length} " if length else "") + "integers"
               + (f" >= {minimum}" if minimum is not None else ""))
    if (not isinstance(value, (list, tuple)) or not value or (length is not None and len(value) != length)
            or any(isinstance(item, bool) or not isinstance(item, int) for item in value)
            or (minimum is not None and any(item < minimum for item in value))):
        raise refuse(key, list(value) if isinstance(value, (list, tuple)) else value, allowed, example)


def numbers(key: str, value, example, minimum: float | None = None, below: float | None = None,
            length: int | None = None) -> None:
    """`value` is a list of finite numbers within [minimum, below) (exactly `length` long if given)."""
    allowed = ("a list of " + (f"{length} " if length else "") + "finite numbers"
               + (f" {_bounds(minimum, None, None, below)}" if minimum is not None or below is not None else ""))
    if (not isinstance(value, (list, tuple)) or (length is not None and len(value) != length)
            or any(isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item)
                   or (minimum is not None and item < minimum) or (below is not None and item >= below)
                   for item in value)):
        raise refuse(key, list(value) if isinstance(value, (list, tuple)) else value, allowed, example)


def omegaconf_error(error: Exception, prefix: str) -> ConfigError:
    """A ConfigError from OmegaConf's type or key error, naming the dotted key (under `prefix`)."""
    lines = str(error).strip().splitlines()
    detail = lines[0] if lines else type(error).__name__
    key = getattr(error, "full_key", None) or ""
    dotted = ".".join(part for part in (prefix, str(key)) if part)
    where = f" {dotted}" if dotted else ""
    return ConfigError(f"bad config value{where}: {detail}")


def build(settings_type: type[T], values, prefix: str) -> T:
    """A `settings_type` dataclass from a mapping merged onto its schema (types checked, absent keys
    defaulted), then constructed so its `__post_init__` checks ranges. Every failure is a ConfigError.
    (OmegaConf is imported here, not at the top, so the dataclasses work where it is not installed.)"""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.merge(OmegaConf.structured(settings_type), values)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise omegaconf_error(error, prefix) from error
