"""Reduced-precision weights (with the compact S4 step) of the CPU engine against the fp32 reference step:
bf16 rounding, the likelihood of toy-music windows, greedy streams, and the distribution of sampled tokens
(chi-square)."""

import math

import numpy as np
import pytest
import torch

from study.data.quantize import tokenize
from study.data.toy import generate_clip
from study.generation.engines.numba_engine import FastEngine
from study.generation.engines.numba_kernels import from_bfloat16, to_bfloat16, to_int8_rows
from study.generation.engines.selection import make_engine
from study.generation.engines.step import StepEngine
from study.generation.sampling import SamplingSettings, stream_keys
from study.sashimi import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
BITS_BOUND = 0.005   # bits/sample between the mean log-likelihoods of the engine and the reference step


def perturbed_model(preset="sashimi-2", seed=0, **overrides):
    torch.manual_seed(seed)
    model = build_model(preset, l_max=4096, **overrides).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter) * parameter.abs().mean())
    return model


SMALL = dict(n_layers=1, d_model=16, d_state=16)


def music_tokens(windows: int, length: int) -> np.ndarray:
    """(windows, length) tokens of toy trio music, tokenized as training windows are (mu-law, 8 bits)."""
    audio = np.stack([generate_clip("trio", 0, index, length / 16000 + 0.01)[:length] for index in range(windows)])
    return tokenize(torch.from_numpy(audio), 8, "mu-law", "minmax", quantizer="official").numpy()


def mean_bits(engine, tokens: np.ndarray) -> np.ndarray:
    """Mean -log2 p(token) per window when the engine is teacher-forced on `tokens` after the zero token."""
    batch = len(tokens)
    out = engine.run(engine.new_state(batch), np.full(batch, 128), tokens, stream_keys(0, range(batch)), 0,
                     SamplingSettings())
    return -out.logp_model.mean(axis=1) / math.log(2)


def test_bfloat16_rounding_matches_torch():
    generator = np.random.default_rng(0)
    values = (generator.standard_normal(100_000) * np.exp(generator.uniform(-30, 30, 100_000))).astype(np.float32)
    values[:6] = [0.0, -0.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -(1.0 + 2 ** -8), 3.0e38]  # ties to even, near max
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(to_bfloat16(values), expected)
    assert np.array_equal(from_bfloat16(expected), torch.from_numpy(values).to(torch.bfloat16).float().numpy())


@pytest.mark.parametrize("kernel", [dict(), dict(ssm_mode="diag", ssm_init="diag-lin")], ids=["dplr", "diagonal"])
@pytest.mark.parametrize("precision", ["bf16", "int8", "w8a8"])
def test_reduced_likelihood_of_music_windows_is_within_the_bound_of_the_reference_step(precision, kernel):
    model = perturbed_model(**SMALL, **kernel)
    tokens = music_tokens(2, 1024)
    reference = mean_bits(StepEngine(model, torch.device("cpu")), tokens)
    fp32 = mean_bits(FastEngine(model, threads=1, precision="fp32"), tokens)
    engine = FastEngine(model, threads=1, precision=precision)
    assert f"{precision} linear weights and compact S4 step" in engine.describe()
    reduced = mean_bits(engine, tokens)
    assert np.abs(fp32 - reference).max() < 1e-5
    assert np.abs(reduced - reference).max() <= BITS_BOUND
    assert np.abs(reduced - fp32).max() > 0   # the weights really are rounded


@pytest.mark.parametrize("precision", ["bf16", "w8a8"])   # w8a8: int8 weights (as int8) and 8-bit activations
@pytest.mark.parametrize("preset", ["sashimi-2", "sashimi-8"])
def test_reduced_likelihood_at_full_size_is_within_the_bound_of_the_fp32_engine(preset, precision):
    # the fp32 engine equals model.forward at full size (test_engines), and forward equals the step
    model = perturbed_model(preset)
    tokens = music_tokens(2, 2048)
    fp32 = mean_bits(FastEngine(model, threads=1, precision="fp32"), tokens)
    engine = FastEngine(model, threads=1, precision=precision)
    assert "compact S4 step" in engine.describe()
    reduced = mean_bits(engine, tokens)
    print(preset, precision, "bits/sample moved by", np.abs(reduced - fp32).max())
    assert 0 < np.abs(reduced - fp32).max() <= BITS_BOUND


def test_default_engine_streams_greedy_tokens_of_the_reference_step():
    """Greedy decoding runs on the fp32 weights by default: bf16 rounding moves logits by ~1e-2, enough
    to flip a near-tied argmax, after which a greedy stream (a deterministic feedback loop) differs
    (on these random models after 27-736 samples). Even fp32 sums in another order (~1e-6) flip a
    near-tie now and then (seeds 0 and 3 of this model part after 435 and 730 samples), so exact identity
    is asserted for one fixed model over 3000 samples, not as a law for every model and length. The prompt
    is primed with the greedy settings too, as `Generator` primes with the run's own (primed at temperature
    1, i.e. in int8, stream 1 of this model parts after 267 greedy samples)."""
    model = perturbed_model(seed=1, **SMALL)
    prompt = music_tokens(2, 256)
    greedy = SamplingSettings(temperature=0)
    runs = {}
    for name, engine in (("step", StepEngine(model, torch.device("cpu"))), ("default", make_engine(model, "numba"))):
        state = engine.new_state(2)
        engine.run(state, np.full(2, 128), prompt, stream_keys(0, range(2)), 0, greedy)
        runs[name] = engine.run(state, prompt[:, -1], np.full((2, 3000), -1), stream_keys(0, range(2)), 0,
                                greedy).tokens
    assert make_engine(model, "numba").precision_for(greedy) == "fp32"
    assert all(len(np.unique(row)) > 50 for row in runs["step"])   # a moving stream, not a fixed point
    assert np.array_equal(runs["default"], runs["step"])


def chi_square_p_value(counts: np.ndarray, probabilities: np.ndarray) -> float:
    """Upper-tail p-value of Pearson's chi-square (cells expecting < 5 merged into one), through the
    Wilson-Hilferty normal approximation of the chi-square distribution."""
    expected = probabilities * counts.sum()
    small = expected < 5
    observed = np.append(counts[~small], counts[small].sum())
    expected = np.append(expected[~small], expected[small].sum())
    keep = expected > 0
    assert observed[~keep].sum() == 0, "a token the reference gives probability 0 was drawn"
    statistic = float(((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    dof = keep.sum() - 1
    z = ((statistic / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))


def truncated_probabilities(logits: np.ndarray, temperature: float, top_k: int) -> np.ndarray:
    scaled = logits.astype(np.float64) / temperature
    if top_k:
        scaled[np.argsort(-scaled, kind="stable")[top_k:]] = -np.inf
    weights = np.exp(scaled - scaled.max())
    return weights / weights.sum()


@pytest.mark.parametrize("precision, temperature, top_k", [("bf16", 1.0, 0), ("bf16", 0.7, 40), ("int8", 1.0, 0),
                                                                ("w8a8", 1.0, 0), ("w8a8", 0.7, 40)])
def test_reduced_precision_draws_follow_the_reference_next_token_distribution(precision, temperature, top_k):
    model = perturbed_model(**SMALL)
    prompt = music_tokens(1, 300)
    draws = 40_000
    # the reference distribution of the token after the prompt: the step's logits one step past it
    step = StepEngine(model, torch.device("cpu"))
    forced = np.append(prompt[0], 0)[None]
    logits = step.run(step.new_state(1), np.full(1, 128), forced, stream_keys(0, [0]), 0, SamplingSettings(),
                      keep_logits=True).logits[0, -1]
    engine = FastEngine(model, threads=2, precision=precision)
    state = engine.new_state(1)
    engine.run(state, np.full(1, 128), prompt, stream_keys(0, [0]), 0, SamplingSettings())
    many = engine.select(state, [0] * draws)
    sampling = SamplingSettings(temperature=temperature, top_k=top_k)
    tokens = engine.run(many, np.full(draws, prompt[0, -1]), np.full((draws, 1), -1), stream_keys(7, range(draws)),
                        0, sampling).tokens[:, 0]
    counts = np.bincount(tokens, minlength=logits.shape[0])
    assert chi_square_p_value(counts, truncated_probabilities(logits, temperature, top_k)) > 1e-3
    # the same draws reject a slightly different distribution: the test has the power to fail
    assert chi_square_p_value(counts, truncated_probabilities(logits, temperature * 1.15, top_k)) < 1e-6


def test_int8_rows_round_to_the_nearest_step_of_their_scale():
    matrix = np.random.default_rng(1).standard_normal((8, 100)) * np.arange(1, 9)[:, None]
    matrix[3] = 0.0
    quantized, scales = to_int8_rows(matrix)
    assert np.array_equal(np.abs(quantized[[0, 1, 2, 4]]).max(axis=1), [127] * 4) and not quantized[3].any()
    assert np.all(np.abs(quantized * scales[:, None].astype(np.float64) - matrix) <= scales[:, None] * 0.5 + 1e-6)
