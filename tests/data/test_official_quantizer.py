"""The official quantizer: tokens at the boundaries worked out by hand, and a table of (input, token)
pairs from an independent float32 / float64 numpy evaluation of the official formulas.

Formulas (state-spaces/s4 src/dataloaders/audio.py): y = -1 + 2 (x - min) / (max - min + 1e-6);
mu-law c = sign(y) ln(1 + mu |y + 1e-8|) / ln(1 + mu), t = (c + 1) / 2; linear t = (x - min) / (max - min + 1e-6);
k = trunc(t (2^b - 0.01) + 0.005); decode y' = k / 2^(b-1) - 1, mu-law x' = sign(y') ((1+mu)^|y'| - 1) / mu.
"""

import numpy as np
import pytest
import torch

from study.data.quantize import decode, encode, normalize_window, tokenize

OFFICIAL = "official"


def numpy_official(window: np.ndarray, bits: int, quantization: str, dtype) -> np.ndarray:
    """The official formulas in numpy, in `dtype` (float32 as the official code runs, or float64)."""
    x = window.astype(dtype)
    levels, mu = 2**bits, dtype(2**bits - 1)
    low, span = x.min(), x.max() - x.min()
    if quantization == "linear":
        t = (x - low) / (span + dtype(1e-6))
    else:
        y = dtype(-1) + dtype(2) * (x - low) / (span + dtype(1e-6))
        c = np.sign(y) * (np.log1p(mu * np.abs(y + dtype(1e-8))) / np.log1p(mu))
        t = (c + dtype(1)) / dtype(2)
    return np.trunc(t * dtype(levels - 0.01) + dtype(0.005)).astype(np.int64)


def official_tokens(values, bits=8, quantization="mu-law") -> list[int]:
    window = torch.tensor(values, dtype=torch.float32)
    return tokenize(window, bits, quantization, "minmax", quantizer=OFFICIAL).tolist()


def test_full_scale_extremes_and_the_middle():
    # window [-1, 0, 1]: span 2, y = [-1, -1 + 2/(2 + 1e-6), 1 - 1e-6 approx]; the middle sample y ~ -5e-7 < 0,
    # c = -ln(1 + 255 * 5e-7) / ln 256 ~ -2.3e-5, t ~ 0.4999885, k = trunc(127.992 + 0.005) = 127
    # top: t = 1 - 1e-7 approx -> trunc(255.99 - 2.6e-5 + 0.005) = 255; bottom: t = 0 -> trunc(0.005) = 0
    assert official_tokens([-1.0, 0.0, 1.0]) == [0, 127, 255]
    # linear: t = 1 / (2 + 1e-6) = 0.49999975, t * 255.99 + 0.005 = 127.99994 -> 127
    assert official_tokens([-1.0, 0.0, 1.0], quantization="linear") == [0, 127, 255]


def test_constant_and_silent_windows_become_token_zero():
    # span 0: y = -1 + 2 * 0 / 1e-6 = -1 for every sample, |y + 1e-8| rounds to 1 in float32, c = -1, t = 0
    assert official_tokens([0.0] * 8) == [0] * 8
    assert official_tokens([0.3] * 5) == [0] * 5
    assert official_tokens([0.3] * 5, quantization="linear") == [0] * 5
    # the torchaudio quantizer puts a constant window on silence instead
    flat = torch.full((5,), 0.3)
    assert tokenize(flat, 8, "mu-law", "minmax", quantizer="torchaudio").tolist() == [128] * 5


def test_the_span_guard_keeps_tiny_windows_from_reaching_full_scale():
    # span 1e-6 (equal to the guard): the top sample maps to y = -1 + 2 * 1e-6 / 2e-6 = 0, not +1
    assert official_tokens([0.0, 1e-6])[1] == 128
    # span 1e-9 << 1e-6: everything stays near -1 -> token 0 (the torchaudio minmax would spread it to 255)
    assert official_tokens([0.0, 1e-9]) == [0, 0]
    assert tokenize(torch.tensor([0.0, 1e-3]), 8, "mu-law", "minmax", quantizer="torchaudio").tolist() == [0, 255]


def test_the_sign_guard_only_shifts_the_magnitude():
    # y exactly 0 (no min-max step): sign(0) = 0, so c = 0 whatever |0 + 1e-8| is: t = 1/2, k = trunc(127.995 + .005) = 128
    assert encode(torch.zeros(3), 8, "mu-law", quantizer=OFFICIAL).tolist() == [128, 128, 128]
    # y = -1e-8: |y + 1e-8| = 0 and sign(y) = -1, so c = -0 and the token is still 128
    assert encode(torch.tensor([-1e-8]), 8, "mu-law", quantizer=OFFICIAL).tolist() == [128]
    # y = +-1: c = +-1 -> t = 1 (k = 255) and t = 0 (k = 0)
    assert encode(torch.tensor([-1.0, 1.0]), 8, "mu-law", quantizer=OFFICIAL).tolist() == [0, 255]


def test_quantize_boundaries_of_the_epsilon_rule():
    # k = trunc(t * 255.99 + 0.005): level k starts at t = (k - 0.005) / 255.99
    for k in (1, 17, 128, 200, 255):
        edge = (k - 0.005) / 255.99
        below, above = np.float32(edge - 2e-6), np.float32(edge + 2e-6)
        tokens = encode(torch.tensor([2 * below - 1, 2 * above - 1]), 8, "linear", quantizer=OFFICIAL).tolist()
        assert tokens == [k - 1, k], k


RECORDED = [  # (window, bits, quantization, official tokens), worked out once with numpy_official in float64
    # the exact centre 0.0 of [-0.5, 0.5] lands at y = -1e-6 (the span guard), just below 0: token 127, not 128
    ([-0.5, -0.25, 0.0, 0.125, 0.5], 8, "mu-law", [0, 15, 127, 224, 255]),
    ([0.01, -0.02, 0.03, 0.0, -0.01], 8, "mu-law", [219, 0, 255, 36, 11]),
    ([-0.9, 0.1, 0.2, 0.7], 8, "linear", [0, 159, 175, 255]),
    ([0.0, 0.5, 1.0, 0.25], 4, "mu-law", [0, 7, 15, 1]),
    # 0.25 of the span: t = 0.25 / (1 + 1e-6), t * 4095.99 + 0.005 = 1024.002 -> 1024
    ([0.0, 0.5, 1.0, 0.25], 12, "linear", [0, 2047, 4095, 1024]),
]


@pytest.mark.parametrize("window, bits, quantization, expected", RECORDED)
def test_recorded_table_of_official_tokens(window, bits, quantization, expected):
    assert numpy_official(np.array(window), bits, quantization, np.float64).tolist() == expected
    assert official_tokens(window, bits, quantization) == expected


@pytest.mark.parametrize("quantization", ["mu-law", "linear"])
@pytest.mark.parametrize("bits", [2, 8, 12, 16])
def test_matches_a_float32_numpy_evaluation_token_for_token(bits, quantization):
    rng = np.random.default_rng(bits)
    windows = [rng.normal(0, 0.1, 4096), rng.uniform(-1, 1, 4096), rng.normal(0, 1e-4, 4096)]
    for window in windows:
        window = window.astype(np.float32)
        ours = tokenize(torch.from_numpy(window), bits, quantization, "minmax", quantizer=OFFICIAL).numpy()
        expected32 = numpy_official(window, bits, quantization, np.float32)
        expected64 = numpy_official(window, bits, quantization, np.float64)
        assert np.mean(ours == expected32) > 0.9999  # numpy's and torch's log1p may differ in the last ulp
        if bits <= 12:  # at 16 bits a float32 ulp of t spans more than one level where mu-law is steep
            assert np.all(np.abs(ours - expected64) <= 1)
            assert np.mean(ours == expected64) > 0.999


@pytest.mark.parametrize("bits", [8, 12])
def test_decode_is_the_official_dequantize_and_inverse_mu_law(bits):
    tokens = torch.arange(2**bits)
    half, mu = 2 ** (bits - 1), 2**bits - 1
    y = tokens.double().numpy() / half - 1
    expected_linear = y
    expected_mu = np.sign(y) * ((1.0 + mu) ** np.abs(y) - 1) / mu
    assert np.allclose(decode(tokens, bits, "linear", quantizer=OFFICIAL).numpy(), expected_linear, atol=1e-6)
    assert np.allclose(decode(tokens, bits, "mu-law", quantizer=OFFICIAL).numpy(), expected_mu, atol=1e-6)
    assert decode(torch.tensor([half]), bits, "mu-law", quantizer=OFFICIAL).item() == 0.0  # silence exactly


def test_official_normalisation_keeps_the_span_guard():
    window = torch.tensor([0.0, 2.0])
    assert normalize_window(window, "minmax", quantizer=OFFICIAL).tolist() == pytest.approx([-1.0, 1 - 1e-6], abs=1e-7)


def test_quantizers_differ_by_at_most_one_level_on_music():
    rng = np.random.default_rng(0)
    t = np.arange(16384) / 16000
    music = (0.4 * np.sin(2 * np.pi * 220 * t) * np.exp(-t) + 0.01 * rng.normal(size=t.size)).astype(np.float32)
    window = torch.from_numpy(music)
    official = tokenize(window, 8, "mu-law", "minmax", quantizer=OFFICIAL)
    nearest = tokenize(window, 8, "mu-law", "minmax", quantizer="torchaudio")
    difference = (official - nearest).abs()
    assert difference.max().item() == 1
    assert 0.05 < difference.float().mean().item() < 0.8
