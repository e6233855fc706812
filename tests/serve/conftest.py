"""A tiny checkpoint, prompt files and a running `study serve` app for the live-server tests."""

import io

import numpy as np
import pytest
import soundfile
import torch

from study.sashimi import build_model
from study.serve.service import Service
from study.serve.settings import ServeSettings
from study.training.checkpoint import model_payload, save_checkpoint

RATE = 16000
DATA = {"name": "folder", "source": "folder", "path": None, "repo_id": None, "filename": None, "sample_rate": RATE,
        "clip_seconds": 1, "split": [0.34, 0.33, 0.33], "sample_len": 4096, "bits": 8, "quantization": "mu-law",
        "normalization": "minmax", "seed": 0, "toy_clips": 1, "toy_clip_seconds": 1, "warnings": []}


def music(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Decaying harmonic notes, a different pitch per channel: (frames, channels) float32."""
    t = np.arange(round(seconds * rate)) / rate
    generator = np.random.default_rng(seed)
    columns = []
    for channel in range(channels):
        f0 = 220 * 2 ** (generator.integers(0, 12) / 12) * (1 + channel / 2)
        note = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 5)) * np.exp(-3 * (t % 0.25))
        columns.append(0.5 * note / np.abs(note).max())
    return np.stack(columns, 1).astype(np.float32)


def audio_file(seconds: float, rate: int = 44100, channels: int = 2, format: str = "WAV", seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, music(seconds, rate, channels, seed), rate, format=format)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A tiny SaShiMi-2 (pool 4 x 4) checkpoint with the data settings `study generate` needs."""
    root = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    model = build_model("sashimi-2", d_model=16, n_layers=1, d_state=16, l_max=4096)
    return save_checkpoint(root / "run" / "checkpoints" / "best.pt",
                           {**model_payload(model), "config": {"data": dict(DATA), "name": "tiny"}})


def make_service(checkpoint, **overrides) -> Service:
    settings = ServeSettings(checkpoint=str(checkpoint), backend="numba", threads=1, chunk_samples=512,
                             **overrides)
    service = Service(settings, checkpoint)
    service.warm()
    return service


@pytest.fixture(scope="module")
def service(checkpoint):
    service = make_service(checkpoint, max_streams=8, max_queue=4)
    yield service
    service.close()
