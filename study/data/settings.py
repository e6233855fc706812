"""The `data` config group as a checked dataclass, and the subset of knobs that names a prepared cache.

Validation happens here once, with messages that say the fix; it never reads audio or the network.
"""

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import MISSING, DictConfig

from study import validation
from study.data import DataError
from study.errors import ConfigError
from study.data.quantize import MAX_BITS, MIN_BITS, NORMALIZATIONS, QUANTIZATIONS, QUANTIZERS

SOURCES = ("hub", "folder", "toy-piano", "toy-trio")
SPLIT_NAMES = ("train", "val", "test")
# Knobs that change the prepared windows; with the source files' hashes they make the fingerprint.
# Changing how any of them is applied must bump prepare.FORMAT_VERSION.
PREPROCESSING_KNOBS = (
    "sample_rate", "clip_seconds", "split", "sample_len", "bits", "quantization", "normalization", "quantizer",
)
TOY_KNOBS = ("seed", "toy_clips", "toy_clip_seconds")


@dataclass
class DataSettings:
    """The `data` config group's schema and defaults; experiments/data/*.yaml set `name`, `source` and
    what differs from these defaults. Every value is checked in `__post_init__` (ConfigError)."""

    name: str = MISSING
    source: str = MISSING            # hub | folder | toy-piano | toy-trio
    path: str | None = None          # folder source only: a directory of wav/flac/ogg/mp3 files
    repo_id: str | None = None       # hub source only: dataset repository
    filename: str | None = None      # hub source only: archive inside the repository
    sample_rate: int = 16000         # Hz after resampling
    clip_seconds: float = 60.0       # audio decoded at a time; windows run on across clips of a file
    split: tuple[float, float, float] = (0.88, 0.06, 0.06)  # train/val/test fractions of the natural-sorted files
    sample_len: int = 131072         # samples per training window (non-overlapping, remainder dropped)
    bits: int = 8                    # tokens in [0, 2^bits); mu = 2^bits - 1
    quantization: str = "mu-law"     # mu-law | linear
    normalization: str = "minmax"    # minmax (per window, to [-1, 1]) | none
    quantizer: str = "official"      # official (state-spaces/s4 token for token) | torchaudio (round to nearest)
    seed: int = 0                    # toy sources only: seed of the generated music
    toy_clips: int = 32              # toy sources only: number of generated clips
    toy_clip_seconds: float = 60.0   # toy sources only: length of each generated clip
    warnings: tuple[str, ...] = ()   # shown wherever results of this data are reported
    stand_in: str | None = None      # embedded set used instead at scale=smoke (data.use_stand_in)
    use_stand_in: bool = False
    stands_in_for: str | None = None  # set by the run when a stand-in replaces the source; never set it

    def __post_init__(self) -> None:
        validation.text("data.name", self.name, "toy-piano")
        validation.choice("data.source", self.source, SOURCES, "hub (or pick a config: data=youtubemix|bigband|folder|toy-piano|toy-trio)")
        for key in ("path", "repo_id", "filename", "stand_in", "stands_in_for"):
            validation.text(f"data.{key}", getattr(self, key), "null", optional=True)
        validation.integer("data.sample_rate", self.sample_rate, 16000, minimum=1000)
        validation.number("data.clip_seconds", self.clip_seconds, 60, above=0)
        validation.integer("data.sample_len", self.sample_len, 131072, minimum=2)
        if self.clip_samples < self.sample_len:
            raise ConfigError(
                f"data.clip_seconds={self.clip_seconds} gives {self.clip_samples} samples per clip at "
                f"{self.sample_rate} Hz, fewer than data.sample_len={self.sample_len}, so no window fits; "
                "raise data.clip_seconds or lower data.sample_len")
        validation.numbers("data.split", self.split, "[0.88,0.06,0.06]", minimum=0, length=3)
        if not math.isclose(sum(self.split), 1.0, abs_tol=1e-6):
            raise validation.refuse("data.split", list(self.split), "three train/val/test fractions summing to 1",
                                    "[0.88,0.06,0.06]")
        self.split = tuple(float(fraction) for fraction in self.split)
        validation.integer("data.bits", self.bits, 8, minimum=MIN_BITS, maximum=MAX_BITS)
        validation.choice("data.quantization", self.quantization, QUANTIZATIONS)
        validation.choice("data.normalization", self.normalization, NORMALIZATIONS)
        validation.choice("data.quantizer", self.quantizer, QUANTIZERS)
        validation.integer("data.seed", self.seed, 0, minimum=0)
        validation.integer("data.toy_clips", self.toy_clips, 32, minimum=1)
        validation.number("data.toy_clip_seconds", self.toy_clip_seconds, 60, above=0)
        if not isinstance(self.warnings, (list, tuple)) or not all(isinstance(w, str) for w in self.warnings):
            raise validation.refuse("data.warnings", self.warnings, "a list of strings", "[]")
        self.warnings = tuple(self.warnings)
        validation.flag("data.use_stand_in", self.use_stand_in)

    @property
    def clip_samples(self) -> int:
        """Samples per clip at the target rate: round(clip_seconds * sample_rate)."""
        return round(self.clip_seconds * self.sample_rate)

    @property
    def is_toy(self) -> bool:
        return self.source.startswith("toy-")

    def fingerprint_knobs(self) -> dict:
        """The knobs hashed into the fingerprint (toy generator knobs only for toy sources); whole
        seconds hash as integers (60.0 as 60), as when the YAML files wrote them."""
        names = PREPROCESSING_KNOBS + (TOY_KNOBS if self.is_toy else ())
        values = asdict(self)
        values["split"] = list(self.split)
        for name in ("clip_seconds", "toy_clip_seconds"):
            if float(values[name]).is_integer():
                values[name] = int(values[name])
        return {name: values[name] for name in names}

    def as_dict(self) -> dict:
        values = asdict(self)
        values["split"] = list(self.split)
        values["warnings"] = list(self.warnings)
        return values

    @classmethod
    def from_config(cls, data_config: DictConfig | dict) -> "DataSettings":
        """Checked settings from the `data` config (a DictConfig or a plain dict; absent keys take the
        defaults above), with the source's own requirements (a folder that exists, a hub archive) checked."""
        settings = validation.build(cls, data_config, "data")
        settings.check_source()
        return settings

    def check_source(self) -> None:
        """DataError when the source cannot be reached as configured (checked before any data work)."""
        if self.source == "folder":
            if not self.path:
                raise DataError("data=folder needs a directory of audio files: add data.path=/path/to/music")
            if not Path(self.path).expanduser().is_dir():
                raise DataError(f"data.path={self.path!r} is not an existing directory; "
                                "point data.path at a folder of wav/flac/ogg/mp3 files")
        if self.source == "hub" and not (self.repo_id and self.filename):
            raise DataError(
                f"data.source=hub needs data.repo_id and data.filename (got {self.repo_id!r}, {self.filename!r}); "
                "use data=youtubemix or data=bigband, or data=folder data.path=... for local files"
            )
