"""An automatic audio-quality score for generated continuations: lower means better-sounding.

score = log(1 + FD) + 10 * max(0, silent_gen - silent_real) + 10 * max(0, noisy_gen - noisy_real)
  FD     Frechet distance between Gaussian fits of log-mel frames of generated and real audio;
  silent fraction of frames with RMS below -50 dBFS (long silences: the workshop's low temperatures);
  noisy  fraction of frames whose spectral flatness exceeds 0.3 (white noise is about 0.56, tonal
         music well under 0.1).
It only compares audio; it never reads a model, and it is a proxy, not a listening test.
"""

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torchaudio

FRAME_SAMPLES = 1024
HOP_SAMPLES = 256
MEL_BANDS = 64
SILENCE_DBFS = -50.0
FLATNESS_NOISE = 0.3
PENALTY_WEIGHT = 10.0


@dataclass
class QualityScore:
    score: float
    frechet_distance: float
    silent_fraction: float
    noisy_fraction: float
    real_silent_fraction: float
    real_noisy_fraction: float

    def as_dict(self) -> dict:
        return asdict(self)


def log_mel_frames(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(frames, MEL_BANDS) log-mel energies (natural log, floor 1e-6)."""
    transform = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=FRAME_SAMPLES,
                                                     hop_length=HOP_SAMPLES, n_mels=MEL_BANDS, power=2.0)
    mel = transform(torch.as_tensor(audio, dtype=torch.float32))
    return torch.log(mel + 1e-6).T.double().numpy()


def frame_rms_dbfs(audio: np.ndarray) -> np.ndarray:
    frames = _frames(audio)
    return 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-20)


def spectral_flatness(audio: np.ndarray) -> np.ndarray:
    """Per frame: geometric mean / arithmetic mean of the power spectrum (Hann window)."""
    frames = _frames(audio) * np.hanning(FRAME_SAMPLES)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12
    return np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)


def _frames(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float64)
    if audio.shape[0] < FRAME_SAMPLES:
        audio = np.pad(audio, (0, FRAME_SAMPLES - audio.shape[0]))
    count = 1 + (audio.shape[0] - FRAME_SAMPLES) // HOP_SAMPLES
    index = np.arange(FRAME_SAMPLES)[None, :] + HOP_SAMPLES * np.arange(count)[:, None]
    return audio[index]


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) of the rows of a and b."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"too little audio to score: {len(a)} and {len(b)} frames, at least 2 each "
                         f"({FRAME_SAMPLES + HOP_SAMPLES} samples); use longer continuations")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((S_a S_b)^1/2) = sum sqrt(eig(S_a^1/2 S_b S_a^1/2)), a symmetric PSD matrix.
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sum(np.sqrt(np.clip(middle, 0, None)))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def quality_score(generated: list[np.ndarray], real: list[np.ndarray], sample_rate: int) -> QualityScore:
    """Score a set of generated clips against real clips of the same music (lists of mono float arrays)."""
    if not generated or not real:
        raise ValueError("quality_score needs at least one generated and one real clip")
    generated_all, real_all = np.concatenate(generated), np.concatenate(real)
    distance = frechet_distance(np.concatenate([log_mel_frames(g, sample_rate) for g in generated]),
                                np.concatenate([log_mel_frames(r, sample_rate) for r in real]))
    silent = float(np.mean(frame_rms_dbfs(generated_all) < SILENCE_DBFS))
    noisy = float(np.mean(spectral_flatness(generated_all) > FLATNESS_NOISE))
    real_silent = float(np.mean(frame_rms_dbfs(real_all) < SILENCE_DBFS))
    real_noisy = float(np.mean(spectral_flatness(real_all) > FLATNESS_NOISE))
    score = (math.log1p(max(distance, 0.0)) + PENALTY_WEIGHT * max(0.0, silent - real_silent)
             + PENALTY_WEIGHT * max(0.0, noisy - real_noisy))
    return QualityScore(score, distance, silent, noisy, real_silent, real_noisy)
