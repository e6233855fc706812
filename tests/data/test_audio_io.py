"""Decoding any file to mono float32 at the target rate: formats, channels, rates, bad files."""

import numpy as np
import pytest
import soundfile
import soxr
import torch

from data_test_helpers import data_config, sine, write_wav
from study.data.audio_io import UnusableAudioError, iter_clips, load_audio, load_tokens
from study.data.quantize import tokenize

FREQUENCIES = (440.0, 1000.0)


def analytic(samples: int, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(samples) / sample_rate
    return amplitude * sum(np.sin(2 * np.pi * f * t) for f in FREQUENCIES) / len(FREQUENCIES)


@pytest.mark.parametrize("subtype, tolerance", [("PCM_U8", 1 / 128), ("PCM_16", 1e-4), ("PCM_24", 1e-6),
                                                ("PCM_32", 1e-6), ("FLOAT", 1e-7)])
def test_sample_formats_decode_to_the_written_signal(tmp_path, subtype, tolerance):
    path = write_wav(tmp_path / "a.wav", sine(1.0, 16000, FREQUENCIES), 16000, subtype)
    audio = load_audio(path, 16000)
    assert audio.dtype == torch.float32 and audio.shape == (16000,)
    assert np.abs(audio.numpy() - analytic(16000, 16000)).max() <= tolerance + 1e-7


def test_channels_are_averaged(tmp_path):
    mono = sine(0.5, 16000, FREQUENCIES)
    stereo = write_wav(tmp_path / "stereo.wav", np.stack([mono, 0.5 * mono], axis=1), subtype="FLOAT")
    six = write_wav(tmp_path / "six.wav", np.stack([mono * (k + 1) / 6 for k in range(6)], axis=1), subtype="FLOAT")
    assert np.allclose(load_audio(stereo, 16000).numpy(), 0.75 * mono, atol=1e-6)
    assert np.allclose(load_audio(six, 16000).numpy(), mono * 3.5 / 6, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_keeps_the_tones(tmp_path, rate):
    path = write_wav(tmp_path / "a.wav", sine(2.0, rate, FREQUENCIES), rate, "FLOAT")
    audio = load_audio(path, 16000).numpy()
    assert abs(len(audio) - 32000) <= 1
    expected = analytic(len(audio), 16000)
    interior = slice(200, -200)  # the band-limited filter's start-up and tail at the file edges
    assert np.abs(audio - expected)[interior].max() < 2e-3
    spectrum = np.abs(np.fft.rfft(audio))
    peaks = sorted(np.argsort(spectrum)[-2:] * 16000 / len(audio))
    assert peaks == pytest.approx(list(FREQUENCIES), abs=1.0)


def test_downsampling_removes_content_above_the_new_nyquist(tmp_path):
    t = np.arange(48000) / 48000
    path = write_wav(tmp_path / "a.wav", (0.4 * np.sin(2 * np.pi * 11000 * t)).astype(np.float32), 48000, "FLOAT")
    audio = load_audio(path, 16000).numpy()  # 11 kHz is above 8 kHz: must vanish, not alias to 5 kHz
    assert np.abs(audio[200:-200]).max() < 1e-3


def test_streamed_resampling_equals_one_shot_soxr(tmp_path):
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, 44100 * 3).astype(np.float32)
    path = write_wav(tmp_path / "a.wav", audio, 44100, "FLOAT")
    assert np.allclose(load_audio(path, 16000).numpy(), soxr.resample(audio, 44100, 16000), atol=1e-6)


@pytest.mark.parametrize("fmt, subtype", [("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")])
def test_compressed_formats_decode(tmp_path, fmt, subtype):
    path = tmp_path / f"a.{fmt.lower()}"
    soundfile.write(str(path), sine(2.0, 44100, FREQUENCIES), 44100, format=fmt, subtype=subtype)
    audio = load_audio(path, 16000).numpy()
    assert abs(len(audio) - 32000) < 1200
    n = min(len(audio), 32000)
    correlation = np.corrcoef(audio[1000:n - 1000], analytic(n, 16000)[1000:n - 1000])[0, 1]
    assert correlation > 0.95


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file: 0 bytes"),
    (b"this is a text file, not audio\n" * 10, "cannot decode"),
    (bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), "cannot decode"),
])
def test_undecodable_files_raise_unusable_with_reason(tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(UnusableAudioError, match=reason):
        load_audio(path, 16000)


def test_zero_length_and_non_finite_audio_are_unusable(tmp_path):
    empty = write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32))
    with pytest.raises(UnusableAudioError, match="empty audio"):
        load_audio(empty, 16000)
    for bad in (np.nan, np.inf, -np.inf):
        audio = sine(1.0, 16000)
        audio[1234] = bad
        path = write_wav(tmp_path / "bad.wav", audio, subtype="FLOAT")
        with pytest.raises(UnusableAudioError, match="non-finite samples .* at 0.077 s"):
            load_audio(path, 16000)
    with pytest.raises(UnusableAudioError, match="not a file"):
        load_audio(tmp_path / "missing.wav", 16000)


def test_clips_cut_the_resampled_audio_in_order(tmp_path):
    path = write_wav(tmp_path / "a.wav", sine(5.0, 48000), 48000, "FLOAT")
    clips = list(iter_clips(path, 16000, 32000))
    assert [len(c) for c in clips] == [32000, 32000, 16000]
    assert np.array_equal(np.concatenate(clips), load_audio(path, 16000).numpy())


def test_load_tokens_tokenises_blocks_like_training_windows(tmp_path):
    path = write_wav(tmp_path / "a.wav", sine(1.0, 44100), 44100)
    config = data_config("folder", sample_len=4096)
    audio = load_audio(path, 16000)
    tokens = load_tokens(path, config)
    assert tokens.shape == audio.shape and tokens.dtype == torch.int64
    assert torch.equal(tokens[:4096], tokenize(audio[:4096], 8, "mu-law", "minmax", quantizer="official"))
    assert torch.equal(tokens[12288:], tokenize(audio[12288:], 8, "mu-law", "minmax", quantizer="official"))
