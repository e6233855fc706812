"""`key=value` arguments for commands whose settings are a dataclass (generate, bench, serve, ...).

One parser for all of them: OmegaConf merges the tokens onto the dataclass schema (types checked there),
then the dataclass is built, so its `__post_init__` range checks run. Every failure is a ConfigError.
"""

from __future__ import annotations

from typing import TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from study.errors import ConfigError

T = TypeVar("T")


def parse_key_values(settings_type: type[T], argv: list[str], command: str, example: str = "") -> T:
    """A `settings_type` instance from `key=value` tokens; unknown keys, wrong types and missing
    required values raise ConfigError naming the key and the keys that exist."""
    schema = OmegaConf.structured(settings_type)
    known = ", ".join(str(key) for key in schema.keys())
    hint = f"; e.g. {example}" if example else ""
    for token in argv:
        key, equals, _ = token.partition("=")
        if not equals or not key:
            raise ConfigError(f"study {command}: argument {token!r} is not key=value{hint} (keys: {known})")
    try:
        merged = OmegaConf.merge(schema, OmegaConf.from_dotlist(list(argv)))
        missing = [str(key) for key in merged.keys() if OmegaConf.is_missing(merged, key)]
        if missing:
            raise ConfigError(f"study {command}: {', '.join(f'{key}=...' for key in missing)} is required{hint}")
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        detail = str(error).strip().splitlines()[0]
        key = getattr(error, "full_key", None)
        where = f" {key}" if key else ""
        raise ConfigError(f"study {command}: bad argument{where}: {detail} (keys: {known})") from error
