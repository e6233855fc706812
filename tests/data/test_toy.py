"""Embedded toy music: deterministic, long enough for the 88/6/6 split, musical and learnable."""

import numpy as np
import soundfile
import torch

from data_test_helpers import data_config, paths_config
from study.data.quantize import tokenize
from study.data.settings import DataSettings
from study.data.sources import resolve_source
from study.data.splits import split_counts
from study.data.toy import TOY_SAMPLE_RATE, generate_clip, toy_folder


def test_clips_are_a_pure_function_of_style_seed_and_index():
    first = generate_clip("piano", 3, 1, 4.0)
    assert np.array_equal(first, generate_clip("piano", 3, 1, 4.0))
    assert not np.allclose(first, generate_clip("piano", 3, 2, 4.0))
    assert not np.allclose(first, generate_clip("piano", 4, 1, 4.0))
    assert not np.allclose(generate_clip("trio", 3, 1, 4.0), first)
    assert first.dtype == np.float32 and first.shape == (4 * TOY_SAMPLE_RATE,)
    assert 0.85 < np.abs(first).max() <= 0.9 + 1e-6


def test_default_toy_sets_hold_at_least_24_one_minute_clips_with_val_and_test(tmp_path):
    for name in ("toy-piano", "toy-trio"):
        settings = DataSettings.from_config(data_config(name))
        source = resolve_source(settings, paths_config(tmp_path))
        assert len(source.files) >= 24
        for path in (source.files[0], source.files[-1]):
            info = soundfile.info(str(path))
            assert (info.samplerate, info.channels, info.frames) == (16000, 1, 60 * 16000)
        assert min(split_counts(len(source.files), settings.split)) >= 1


def test_toy_folder_is_written_once_and_reused(tmp_path):
    folder = toy_folder(tmp_path, "trio", 2, 1.0, 0)
    stamp = [(p.name, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())]
    assert [name for name, _ in stamp] == ["clip-000.wav", "clip-001.wav"]
    assert toy_folder(tmp_path, "trio", 2, 1.0, 0) == folder
    assert [(p.name, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())] == stamp
    assert toy_folder(tmp_path, "trio", 2, 1.0, 1) != folder


def tokens_of(style: str, index: int, seconds: float = 20.0) -> np.ndarray:
    audio = generate_clip(style, 0, index, seconds)
    windows = torch.from_numpy(audio[: len(audio) // 4096 * 4096].reshape(-1, 4096))
    return tokenize(windows, 8, "mu-law", "minmax", quantizer="official").numpy().astype(np.int64)


def order2_bits_per_sample(train: np.ndarray, test: np.ndarray, alpha: float = 0.01) -> float:
    """Cross-entropy on `test` of a count model p(x_t | x_{t-2}, x_{t-1}) fitted on `train` (add-alpha)."""
    def contexts(tokens):
        return ((tokens[:, :-2] * 256 + tokens[:, 1:-1]) * 256 + tokens[:, 2:]).ravel(), \
               (tokens[:, :-2] * 256 + tokens[:, 1:-1]).ravel()
    train_triples, train_pairs = contexts(train)
    test_triples, test_pairs = contexts(test)
    triple_counts = np.bincount(train_triples, minlength=1 << 24)
    pair_counts = np.bincount(train_pairs, minlength=1 << 16)
    probability = (triple_counts[test_triples] + alpha) / (pair_counts[test_pairs] + 256 * alpha)
    return float(-np.log2(probability).mean())


def test_toy_music_is_learnable_by_an_order_two_predictor():
    # 8-bit tokens cost 8 bits/sample uncompressed; white noise stays near that, music must not
    noise = np.random.default_rng(0).uniform(-1, 1, (2, 80 * 4096)).astype(np.float32)
    noise_tokens = tokenize(torch.from_numpy(noise.reshape(-1, 4096)), 8, "mu-law", "minmax", quantizer="official").numpy().astype(np.int64)
    noise_bits = order2_bits_per_sample(noise_tokens[:80], noise_tokens[80:])
    assert noise_bits > 7.0
    for style in ("piano", "trio"):
        train = np.concatenate([tokens_of(style, index) for index in range(4)])
        bits = order2_bits_per_sample(train, tokens_of(style, 9))
        assert bits < 5.5, (style, bits)


def test_toy_music_is_tonal_not_noise():
    # spectral flatness (geometric / arithmetic mean of the power spectrum): ~0.56 for white noise,
    # near 0 for a sum of harmonic partials
    def flatness(audio):
        frames = audio[: len(audio) // 2048 * 2048].reshape(-1, 2048) * np.hanning(2048)
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12
        return float(np.mean(np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1)))
    assert flatness(np.random.default_rng(0).standard_normal(80000)) > 0.4
    for style in ("piano", "trio"):
        assert flatness(generate_clip(style, 0, 0, 10.0)) < 0.05, style
