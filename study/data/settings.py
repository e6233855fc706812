"""The `data` config group as a checked dataclass, and the subset of knobs that names a prepared cache.

Validation happens here once, with messages that say the fix; it never reads audio or the network.
"""

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from study.data import DataError
from study.data.quantize import MAX_BITS, MIN_BITS, NORMALIZATIONS, QUANTIZATIONS, QUANTIZERS

SOURCES = ("hub", "folder", "toy-piano", "toy-trio")
SPLIT_NAMES = ("train", "val", "test")
# Knobs that change the prepared windows; with the source files' hashes they make the fingerprint.
# Changing how any of them is applied must bump prepare.FORMAT_VERSION.
PREPROCESSING_KNOBS = (
    "sample_rate", "clip_seconds", "split", "sample_len", "bits", "quantization", "normalization", "quantizer",
)
TOY_KNOBS = ("seed", "toy_clips", "toy_clip_seconds")


@dataclass(frozen=True)
class DataSettings:
    """Every key of experiments/data/*.yaml; see those files for meanings and defaults."""

    name: str
    source: str
    path: str | None
    repo_id: str | None
    filename: str | None
    sample_rate: int
    clip_seconds: float
    split: tuple[float, float, float]
    sample_len: int
    bits: int
    quantization: str
    normalization: str
    quantizer: str
    seed: int
    toy_clips: int
    toy_clip_seconds: float
    warnings: tuple[str, ...] = field(default=())

    @property
    def clip_samples(self) -> int:
        """Samples per clip at the target rate: round(clip_seconds * sample_rate)."""
        return round(self.clip_seconds * self.sample_rate)

    @property
    def is_toy(self) -> bool:
        return self.source.startswith("toy-")

    def fingerprint_knobs(self) -> dict:
        """The knobs hashed into the fingerprint (toy generator knobs only for toy sources)."""
        names = PREPROCESSING_KNOBS + (TOY_KNOBS if self.is_toy else ())
        values = asdict(self)
        return {name: list(values[name]) if name == "split" else values[name] for name in names}

    def as_dict(self) -> dict:
        values = asdict(self)
        values["split"] = list(self.split)
        values["warnings"] = list(self.warnings)
        return values

    @classmethod
    def from_config(cls, data_config: DictConfig | dict) -> "DataSettings":
        """Checked settings from the `data` config (a DictConfig or a plain dict)."""
        if isinstance(data_config, DictConfig):
            data_config = OmegaConf.to_container(data_config, resolve=True)
        values = dict(data_config)
        missing = [name for name in cls.__dataclass_fields__ if name not in values and name != "warnings"]
        if missing:
            raise DataError(
                f"the data config lacks {missing}; every experiments/data/*.yaml has these keys, "
                "copy them from experiments/data/folder.yaml"
            )
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        known["warnings"] = tuple(str(text) for text in (known.get("warnings") or ()))
        settings = cls(**known)
        return settings._checked()

    def _checked(self) -> "DataSettings":
        def fail(key: str, why: str, fix: str) -> DataError:
            return DataError(f"data.{key}={getattr(self, key)!r} {why}; {fix}")

        if self.source not in SOURCES:
            raise fail("source", f"is not one of {SOURCES}", "pick a config with data=youtubemix|bigband|folder|toy-piano|toy-trio")
        if not _is_int(self.sample_rate) or self.sample_rate < 1000:
            raise fail("sample_rate", "is not an integer rate >= 1000 Hz", "set data.sample_rate=16000")
        if not _is_number(self.clip_seconds) or self.clip_seconds <= 0:
            raise fail("clip_seconds", "is not a positive number of seconds", "set data.clip_seconds=60")
        if not _is_int(self.sample_len) or self.sample_len < 2:
            raise fail("sample_len", "is not an integer >= 2", "set data.sample_len=131072")
        if self.clip_samples < self.sample_len:
            raise DataError(
                f"data.clip_seconds={self.clip_seconds} gives {self.clip_samples} samples per clip at "
                f"{self.sample_rate} Hz, fewer than data.sample_len={self.sample_len}, so no window fits; "
                "raise data.clip_seconds or lower data.sample_len"
            )
        split = tuple(self.split) if isinstance(self.split, (list, tuple)) else None
        if (split is None or len(split) != 3 or not all(_is_number(x) and x >= 0 for x in split)
                or not math.isclose(sum(split), 1.0, abs_tol=1e-6)):
            raise fail("split", "is not three non-negative train/val/test fractions summing to 1",
                       "set data.split=[0.88,0.06,0.06]")
        if not _is_int(self.bits) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise fail("bits", f"is not an integer in [{MIN_BITS}, {MAX_BITS}]", "set data.bits=8")
        if self.quantization not in QUANTIZATIONS:
            raise fail("quantization", f"is not one of {QUANTIZATIONS}", "set data.quantization=mu-law")
        if self.normalization not in NORMALIZATIONS:
            raise fail("normalization", f"is not one of {NORMALIZATIONS}", "set data.normalization=minmax")
        if self.quantizer not in QUANTIZERS:
            raise fail("quantizer", f"is not one of {QUANTIZERS}", "set data.quantizer=official")
        if not _is_int(self.seed) or self.seed < 0:
            raise fail("seed", "is not a non-negative integer", "set data.seed=0")
        if self.is_toy:
            if not _is_int(self.toy_clips) or self.toy_clips < 1:
                raise fail("toy_clips", "is not a positive integer", "set data.toy_clips=32")
            if not _is_number(self.toy_clip_seconds) or self.toy_clip_seconds <= 0:
                raise fail("toy_clip_seconds", "is not a positive number", "set data.toy_clip_seconds=60")
        if self.source == "folder":
            if not self.path:
                raise DataError("data=folder needs a directory of audio files: add data.path=/path/to/music")
            if not Path(self.path).expanduser().is_dir():
                raise fail("path", "is not an existing directory", "point data.path at a folder of wav/flac/ogg/mp3 files")
        if self.source == "hub" and not (self.repo_id and self.filename):
            raise DataError(
                f"data.source=hub needs data.repo_id and data.filename (got {self.repo_id!r}, {self.filename!r}); "
                "use data=youtubemix or data=bigband, or data=folder data.path=... for local files"
            )
        return DataSettings(**{**asdict(self), "split": tuple(float(x) for x in split)})


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
