"""The reference sampler on hand-made logits (temperature, top-k, nucleus), and the counter-based
random numbers every backend shares."""

import math

import numpy as np
import pytest
import torch

from study.generation.sampling import SamplingSettings, sample, stream_keys, uniforms


def draw_all(probabilities, settings, points=2000):
    """Tokens drawn for u on a uniform grid over [0, 1): their frequencies are the sampled distribution."""
    logits = torch.log(torch.tensor(probabilities, dtype=torch.float64)).float()
    u = (torch.arange(points, dtype=torch.float64) + 0.5) / points
    draw = sample(logits.expand(points, -1), settings, u)
    return draw, np.bincount(draw.tokens.numpy(), minlength=len(probabilities)) / points


def test_plain_sampling_follows_the_model():
    probabilities = [0.5, 0.3, 0.15, 0.05]
    draw, frequencies = draw_all(probabilities, SamplingSettings())
    assert np.allclose(frequencies, probabilities, atol=1e-3)
    assert torch.allclose(draw.logp_sample, draw.logp_model)
    assert torch.allclose(draw.logp_model, torch.log(torch.tensor(probabilities, dtype=torch.float64))[draw.tokens])


def test_top_p_keeps_the_token_that_crosses_p():
    # cumulative probability before each token: 0, 0.5, 0.8, 0.95
    draw, frequencies = draw_all([0.5, 0.3, 0.15, 0.05], SamplingSettings(top_p=0.6))
    assert np.allclose(frequencies, [0.5 / 0.8, 0.3 / 0.8, 0, 0], atol=1e-3)
    assert torch.allclose(draw.logp_sample, torch.log(torch.tensor([0.5 / 0.8, 0.3 / 0.8], dtype=torch.float64))
                          [draw.tokens])
    # the model log-likelihood ignores the truncation
    assert torch.allclose(draw.logp_model, torch.log(torch.tensor([0.5, 0.3], dtype=torch.float64))[draw.tokens])


def test_top_p_below_the_largest_probability_is_greedy():
    _, frequencies = draw_all([0.3, 0.5, 0.2], SamplingSettings(top_p=0.1))
    assert frequencies.tolist() == [0, 1, 0]


def test_top_p_cut_is_strict_at_equality():
    # before token 1 the cumulative probability is exactly 0.5: it is not < 0.5, so only token 0 is kept
    _, frequencies = draw_all([0.5, 0.25, 0.25], SamplingSettings(top_p=0.5))
    assert frequencies.tolist() == [1, 0, 0]


def test_top_k_1_is_argmax_and_top_k_2_renormalises():
    probabilities = [0.2, 0.1, 0.4, 0.3]
    _, frequencies = draw_all(probabilities, SamplingSettings(top_k=1))
    assert frequencies.tolist() == [0, 0, 1, 0]
    _, frequencies = draw_all(probabilities, SamplingSettings(top_k=2))
    assert np.allclose(frequencies, [0, 0, 0.4 / 0.7, 0.3 / 0.7], atol=1e-3)


def test_top_k_and_top_p_keep_the_shorter_prefix():
    _, frequencies = draw_all([0.4, 0.3, 0.2, 0.1], SamplingSettings(top_k=3, top_p=0.5))
    assert np.allclose(frequencies, [0.4 / 0.7, 0.3 / 0.7, 0, 0], atol=1e-3)


def test_temperature_sharpens_and_zero_is_greedy():
    probabilities = np.array([0.5, 0.3, 0.2])
    draw, frequencies = draw_all(probabilities, SamplingSettings(temperature=0.5))
    expected = probabilities ** 2 / (probabilities ** 2).sum()
    assert np.allclose(frequencies, expected, atol=1e-3)
    assert np.allclose(draw.logp_sample.numpy(), np.log(expected)[draw.tokens.numpy()])
    draw, frequencies = draw_all(probabilities, SamplingSettings(temperature=0))
    assert frequencies.tolist() == [1, 0, 0]
    assert (draw.logp_sample == 0).all()


def test_temperature_applies_after_the_nucleus():
    # nucleus at temperature 1: tokens 0 and 1 (before: 0, 0.5, 0.8); temperature 2 then flattens them
    probabilities = np.array([0.5, 0.3, 0.2])
    _, frequencies = draw_all(probabilities, SamplingSettings(temperature=2.0, top_p=0.6))
    kept = probabilities[:2] ** 0.5
    assert np.allclose(frequencies[:2], kept / kept.sum(), atol=1e-3) and frequencies[2] == 0


def test_ties_go_to_the_lower_index():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0]])
    assert sample(logits, SamplingSettings(temperature=0), torch.tensor([0.5])).tokens.item() == 1
    assert sample(logits, SamplingSettings(top_k=1), torch.tensor([0.99])).tokens.item() == 1


@pytest.mark.parametrize("settings, message", [
    (SamplingSettings(temperature=-0.1), "temperature"),
    (SamplingSettings(top_p=0.0), "top_p"),
    (SamplingSettings(top_p=1.5), "top_p"),
    (SamplingSettings(top_k=-1), "top_k"),
])
def test_invalid_settings_name_the_setting(settings, message):
    with pytest.raises(ValueError, match=message):
        settings.validate()


def test_uniforms_depend_only_on_seed_stream_and_sample_index():
    keys = stream_keys(7, [0, 1, 2])
    whole = uniforms(keys, 0, 100)
    assert np.array_equal(whole[:, 40:], uniforms(keys, 40, 60))
    assert np.array_equal(whole[1:2], uniforms(stream_keys(7, [1]), 0, 100))
    assert not np.array_equal(whole, uniforms(stream_keys(8, [0, 1, 2]), 0, 100))
    assert ((whole >= 0) & (whole < 1)).all()
    many = uniforms(stream_keys(0, np.arange(8)), 0, 20000).ravel()
    assert abs(many.mean() - 0.5) < 0.005 and abs(many.var() - 1 / 12) < 0.002
    assert np.histogram(many, bins=10, range=(0, 1))[0].min() > 0.09 * many.size


def test_seed_must_be_non_negative():
    with pytest.raises(ValueError, match="seed"):
        stream_keys(-1, [0])
    assert math.isfinite(uniforms(stream_keys(2 ** 62, [0]), 0, 1)[0, 0])
