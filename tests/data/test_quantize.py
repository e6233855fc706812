"""The torchaudio quantizer: round-trip error bounds derived from the formulas, zero level, shift, normalisation.

The official quantizer has its own tests in test_official_quantizer.py."""

import math

import numpy as np
import pytest
import torch

from study.data.quantize import decode, encode, normalize_window, shift_inputs, tokenize, zero_token

BITS = (2, 4, 8, 12, 16)
TA = "torchaudio"


def reference_encode(x: np.ndarray, bits: int, quantization: str) -> np.ndarray:
    """Independent numpy float64 version of the documented formulas."""
    mu = 2**bits - 1
    x = np.clip(x.astype(np.float64), -1, 1)
    c = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu) if quantization == "mu-law" else x
    return np.floor(mu * (c + 1) / 2 + 0.5).astype(np.int64)


def mu_law_bound(x: np.ndarray, bits: int) -> np.ndarray:
    """|x - decode(encode(x))| for mu-law: the companded value is off by at most half a step, 1/mu, and the
    expansion G(c) = ((1+mu)^|c| - 1)/mu has slope ln(1+mu)(1+mu)^|c|/mu, largest at |c| + 1/mu, where
    (1+mu)^|c| = 1 + mu|x|. So the error is at most ln(1+mu)/mu^2 (1 + mu|x|) (1+mu)^(1/mu)."""
    mu = 2**bits - 1
    return math.log1p(mu) / mu**2 * (1 + mu * np.abs(x)) * (1 + mu) ** (1 / mu)


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    rng = np.random.default_rng(0)
    grid = np.linspace(-1, 1, 200_001)
    quiet = rng.uniform(-1e-3, 1e-3, 50_000)  # where mu-law spends its resolution
    return np.concatenate([grid, quiet, rng.uniform(-1, 1, 50_000), [0.0, -1.0, 1.0]])


@pytest.mark.parametrize("bits", BITS)
def test_linear_round_trip_error_is_at_most_half_a_step(samples, bits):
    # levels are 2/mu apart over [-1, 1]; rounding to the nearest misses by at most half of that, 1/mu
    x = torch.from_numpy(samples)
    error = (decode(encode(x, bits, "linear", quantizer=TA), bits, "linear", quantizer=TA).double() - x).abs()
    step = 2 / (2**bits - 1)
    assert error.max().item() <= step / 2 + 1e-6
    assert error.max().item() >= 0.45 * step  # the bound is reached, not loose


@pytest.mark.parametrize("bits", BITS)
def test_mu_law_round_trip_error_within_companding_slope_bound(samples, bits):
    x = torch.from_numpy(samples)
    error = (decode(encode(x, bits, "mu-law", quantizer=TA), bits, "mu-law", quantizer=TA).double() - x).abs().numpy()
    bound = mu_law_bound(samples, bits)
    assert np.all(error <= bound + 1e-6), float(np.max(error - bound))
    assert np.max(error / (bound + 1e-6)) > 0.3  # the bound is of the right size


@pytest.mark.parametrize("quantization", ["mu-law", "linear"])
@pytest.mark.parametrize("bits", BITS)
def test_encode_matches_independent_formula_and_range(samples, bits, quantization):
    tokens = encode(torch.from_numpy(samples), bits, quantization, quantizer=TA).numpy()
    expected = reference_encode(samples, bits, quantization)
    assert tokens.dtype == np.int64
    assert tokens.min() == 0 and tokens.max() == 2**bits - 1
    assert np.all(np.abs(tokens - expected) <= 1)  # float32 vs float64 at a rounding boundary
    assert np.mean(tokens == expected) > 0.999
    assert np.all(np.diff(encode(torch.linspace(-1, 1, 5001), bits, quantization, quantizer=TA).numpy()) >= 0)  # monotone


@pytest.mark.parametrize("quantization", ["mu-law", "linear"])
@pytest.mark.parametrize("bits", BITS)
def test_decode_then_encode_gives_back_every_token(bits, quantization):
    tokens = torch.arange(2**bits)
    assert torch.equal(encode(decode(tokens, bits, quantization, quantizer=TA), bits, quantization, quantizer=TA), tokens)


@pytest.mark.parametrize("quantization", ["mu-law", "linear"])
@pytest.mark.parametrize("bits", BITS)
def test_silence_encodes_to_the_zero_token(bits, quantization):
    assert zero_token(bits) == 2 ** (bits - 1)
    assert encode(torch.zeros(3), bits, quantization, quantizer=TA).tolist() == [zero_token(bits)] * 3
    # the zero token sits half a companded step above 0: c' = 1/mu, so x' = 1/mu (linear), ((1+mu)^(1/mu)-1)/mu (mu-law)
    mu = 2**bits - 1
    expected = 1 / mu if quantization == "linear" else ((1 + mu) ** (1 / mu) - 1) / mu
    assert decode(torch.tensor([zero_token(bits)]), bits, quantization, quantizer=TA).item() == pytest.approx(expected, rel=1e-4)


def test_out_of_range_audio_is_clamped():
    tokens = encode(torch.tensor([-3.0, 3.0, float("1e9")]), 8, "mu-law", quantizer=TA)
    assert tokens.tolist() == [0, 255, 255]


def test_shift_inputs_puts_zero_first_and_delays_by_one():
    targets = torch.randint(0, 256, (3, 10))
    original = targets.clone()
    inputs = shift_inputs(targets, 8)
    assert torch.equal(targets, original)
    assert torch.all(inputs[:, 0] == 128)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    assert torch.equal(shift_inputs(torch.tensor([5, 6, 7]), 16), torch.tensor([32768, 5, 6]))


def test_minmax_normalisation_spans_minus_one_to_one_per_window():
    rng = np.random.default_rng(1)
    windows = torch.from_numpy(rng.normal(0.1, 0.05, (4, 1000)).astype(np.float32))
    scaled = normalize_window(windows, "minmax", quantizer=TA)
    assert torch.allclose(scaled.amin(dim=-1), torch.full((4,), -1.0), atol=1e-6)
    assert torch.allclose(scaled.amax(dim=-1), torch.full((4,), 1.0), atol=1e-6)
    for row in range(4):  # an affine map of each window: x' = a x + b with a > 0
        a, b = np.polyfit(windows[row].double().numpy(), scaled[row].double().numpy(), 1)
        assert a > 0
        assert np.allclose(a * windows[row].double().numpy() + b, scaled[row].double().numpy(), atol=1e-5)


def test_constant_window_normalises_to_silence_and_none_is_identity():
    flat = torch.full((2, 50), 0.3)
    assert torch.equal(normalize_window(flat, "minmax", quantizer=TA), torch.zeros(2, 50))
    assert torch.equal(normalize_window(flat, "none", quantizer=TA), flat)
    assert torch.equal(tokenize(flat, 8, "mu-law", "minmax", quantizer=TA), torch.full((2, 50), 128))


def test_bad_arguments_raise_with_the_fix():
    with pytest.raises(ValueError, match="data.bits=8"):
        encode(torch.zeros(2), 40, "mu-law", quantizer=TA)
    with pytest.raises(ValueError, match="data.quantization"):
        decode(torch.zeros(2), 8, "a-law", quantizer=TA)
    with pytest.raises(ValueError, match="data.quantizer=official"):
        encode(torch.zeros(2), 8, "mu-law", quantizer="nearest")
    with pytest.raises(ValueError, match="data.normalization"):
        normalize_window(torch.zeros(2), "rms", quantizer=TA)
