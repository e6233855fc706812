"""Settings of `study serve` (the server, fixed at start-up) and of one listening request, with their ranges.

Every range lives here once; a value outside it is refused with the field and the allowed range named.
It never touches files or the engine.
"""

import ipaddress
import math
from dataclasses import dataclass
from typing import Optional

from study.errors import ConfigError

MEBIBYTE = 1 << 20


@dataclass
class ServeSettings:
    """Every key of `study serve key=value ...`."""
    checkpoint: str = "???"              # best.pt / last.pt written by `study train`, or study:NAME (its best trial)
    host: str = "127.0.0.1"              # a non-loopback address needs token=
    port: int = 8000
    token: Optional[str] = None          # bearer token for the API and the stream (required off loopback)
    max_streams: int = 16                # streams stepped together in one engine batch (variations count)
    max_queue: int = 8                   # requests waiting for a slot; more get a "busy" answer (503)
    max_seconds: float = 60.0            # longest continuation a request may ask for
    max_prompt_seconds: float = 16.0     # longest prompt excerpt
    max_variations: int = 4              # continuations per request
    max_upload_mib: float = 32.0         # upload size limit
    max_upload_seconds: float = 600.0    # upload duration limit (the whole file)
    chunk_samples: int = 2048            # samples per engine step (rounded up to whole pooling periods)
    client_buffer_seconds: float = 8.0   # audio generated ahead of what a listener has received
    keep_jobs: int = 32                  # finished jobs kept for download
    backend: str = "auto"                # auto | numba | graph | step
    device: str = "auto"                 # auto | cpu | cuda
    threads: int = 0                     # numba threads; 0: one per core
    precision: str = "auto"              # numba linear weights: auto (w8a8; fp32 greedy) | fp32 | bf16 | int8 | w8a8
    runs: str = "runs"                   # where checkpoint=study:NAME is looked up

    def __post_init__(self):
        positive = {"max_streams": self.max_streams, "max_variations": self.max_variations,
                    "chunk_samples": self.chunk_samples, "keep_jobs": self.keep_jobs, "max_seconds": self.max_seconds,
                    "max_prompt_seconds": self.max_prompt_seconds, "max_upload_mib": self.max_upload_mib,
                    "max_upload_seconds": self.max_upload_seconds, "client_buffer_seconds": self.client_buffer_seconds}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"study serve: {name}={value} must be > 0")
        if self.max_queue < 0 or self.threads < 0:
            raise ConfigError(f"study serve: max_queue={self.max_queue} and threads={self.threads} must be >= 0")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"study serve: port={self.port} must be in [0, 65535] (0: any free port)")
        if not is_loopback(self.host) and not self.token:
            raise ConfigError(f"study serve: host={self.host} is reachable from other machines; set token=SECRET "
                              "(clients then send 'Authorization: Bearer SECRET') or bind host=127.0.0.1")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mib * MEBIBYTE)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SettingsError(ValueError):
    """A request setting outside its range: answered 422 with `field`, `value` and `allowed`."""

    def __init__(self, field: str, value, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}={value!r} is outside the allowed range {allowed}")

    def detail(self) -> dict:
        return {"field": self.field, "value": self.value, "allowed": self.allowed, "message": str(self)}


@dataclass(frozen=True)
class StreamSettings:
    """One request: what to continue and how (the keys of `study generate` that a listener chooses)."""
    prompt_seconds: Optional[float] = None   # default: the whole prompt, at most 8 s
    prompt_start_seconds: float = 0.0
    seconds: float = 8.0
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0

    @classmethod
    def checked(cls, limits: ServeSettings, **values) -> "StreamSettings":
        """StreamSettings from request values (None: default), each checked against its range."""
        given = {key: value for key, value in values.items() if value is not None and value != ""}
        unknown = set(given) - set(cls.__dataclass_fields__)
        if unknown:
            raise SettingsError(sorted(unknown)[0], given[sorted(unknown)[0]], f"one of {list(cls.__dataclass_fields__)}")
        ranges = allowed_ranges(limits)
        checked = {}
        for name, value in given.items():
            kind, low, high, low_open = ranges[name]
            try:
                number = kind(value)
                if kind is int and float(value) != number:
                    raise ValueError
            except (TypeError, ValueError):
                raise SettingsError(name, value, describe_range(ranges[name])) from None
            if isinstance(number, float) and not math.isfinite(number):
                raise SettingsError(name, value, describe_range(ranges[name]))
            if number < low or (low_open and number == low) or number > high:
                raise SettingsError(name, value, describe_range(ranges[name]))
            checked[name] = number
        return cls(**checked)


def allowed_ranges(limits: ServeSettings) -> dict:
    """field -> (type, low, high, low excluded)."""
    return {
        "prompt_seconds": (float, 0.0, limits.max_prompt_seconds, True),
        "prompt_start_seconds": (float, 0.0, limits.max_upload_seconds, False),
        "seconds": (float, 0.0, limits.max_seconds, True),
        "n": (int, 1, min(limits.max_variations, limits.max_streams), False),
        "temperature": (float, 0.0, 10.0, False),
        "top_p": (float, 0.0, 1.0, True),
        "top_k": (int, 0, 1 << 16, False),
        "seed": (int, 0, (1 << 63) - 1, False),
    }


def describe_range(entry: tuple) -> str:
    kind, low, high, low_open = entry
    name = "integer" if kind is int else "number"
    return f"{name} in {'(' if low_open else '['}{low:g}, {high:g}]"
