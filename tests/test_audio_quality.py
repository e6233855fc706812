"""The quality score: Frechet distance against its closed form, and the ordering real < corrupted."""

import numpy as np
import pytest

from analysis.audio_quality import frechet_distance, quality_score
from study.data.toy import generate_clip

RATE = 16000


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal([0.0, 1.0, 2.0], [1.0, 2.0, 0.5], size=(200000, 3))
    b = rng.normal([1.0, 1.0, 0.0], [2.0, 1.0, 0.5], size=(200000, 3))
    expected = (1 + 0 + 4) + ((1 - 2) ** 2 + (2 - 1) ** 2 + 0)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def music():
    clips = [generate_clip("piano", seed=0, clip_index=i, seconds=4.0) for i in range(4)]
    return [np.asarray(c, dtype=np.float64) for c in clips]


def test_score_orders_real_music_before_noise_and_silence(music):
    reference, held_out = music[:2], music[2:]
    rng = np.random.default_rng(1)
    real = quality_score(held_out, reference, RATE)
    noise = quality_score([0.3 * rng.standard_normal(len(c)) for c in held_out], reference, RATE)
    silence = quality_score([np.zeros(len(c)) for c in held_out], reference, RATE)
    half_silent = quality_score([np.concatenate([c[: len(c) // 2], np.zeros(len(c) - len(c) // 2)])
                                 for c in held_out], reference, RATE)
    noisy_music = quality_score([c + 0.3 * rng.standard_normal(len(c)) for c in held_out], reference, RATE)
    assert real.score < noise.score and real.score < silence.score
    assert real.score < half_silent.score < silence.score
    assert real.score < noisy_music.score
    assert noise.noisy_fraction > 0.9 and real.noisy_fraction < 0.1
    assert silence.silent_fraction == 1.0 and real.silent_fraction < 0.1
