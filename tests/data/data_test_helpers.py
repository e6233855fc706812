"""Helpers for the data tests: small data configs and WAV writers (imported by the test modules)."""

from pathlib import Path

import numpy as np
import soundfile
from omegaconf import OmegaConf

from study.data.settings import DataSettings

CONFIG_DIR = Path(__file__).resolve().parents[2] / "experiments" / "data"
SMALL = {"sample_len": 4096, "split": [0.6, 0.2, 0.2]}


def data_config(name: str, **overrides):
    """experiments/data/<name>.yaml over the DataSettings defaults, as composed for a run, as a plain
    (unchecked) DictConfig with `overrides` applied: the code under test does the checking."""
    composed = OmegaConf.merge(OmegaConf.structured(DataSettings), OmegaConf.load(CONFIG_DIR / f"{name}.yaml"))
    config = OmegaConf.create(OmegaConf.to_container(composed))
    for key, value in overrides.items():
        config[key] = value
    return config


def small_toy(name: str = "toy-piano", **overrides):
    """A toy set of 5 clips of 2 s in windows of 4096 samples: prepared in well under a second."""
    return data_config(name, **{**SMALL, "toy_clips": 5, "toy_clip_seconds": 2.0, **overrides})


def sine(seconds: float, sample_rate: int, frequencies=(440.0,), amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    wave = sum(np.sin(2 * np.pi * f * t) for f in frequencies) / len(frequencies)
    return (amplitude * wave).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = 16000, subtype: str = "PCM_16", **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), audio, sample_rate, subtype=subtype, **kwargs)
    return path


def paths_config(root: Path):
    """The `paths` config group pointed at a temporary folder."""
    return OmegaConf.create({"data_cache": str(root / "cache"), "downloads": str(root / "downloads")})
