"""Metric definitions against hand-computed values."""

import math

import pytest
import torch

from study.training.metrics import MetricSums


def test_metrics_on_hand_made_logits():
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 3.0, 2.0, 0.0]]])
    targets = torch.tensor([[0, 2, 3]])
    sums = MetricSums()
    sums.update(logits, targets)
    result = sums.result()
    expected_losses = [-torch.log_softmax(logits[0, i], 0)[targets[0, i]].item() for i in range(3)]
    assert math.isclose(result["loss"], sum(expected_losses) / 3, rel_tol=1e-6)
    assert math.isclose(result["bpb"], result["loss"] / math.log(2))
    # sample 0: target is the argmax; sample 1: a 4-way tie counts as a hit; sample 2: 3 logits above it
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["accuracy@3"] == pytest.approx(2 / 3)
    assert result["accuracy@5"] == pytest.approx(1.0)
    assert result["accuracy@10"] == pytest.approx(1.0)


def test_every_sample_weighs_the_same_across_batches():
    torch.manual_seed(1)
    logits, targets = torch.randn(3, 7, 16), torch.randint(0, 16, (3, 7))
    together, apart = MetricSums(), MetricSums()
    together.update(logits, targets)
    apart.update(logits[:1], targets[:1])
    apart.update(logits[1:], targets[1:])
    for name, value in together.result().items():
        assert math.isclose(value, apart.result()[name], rel_tol=1e-6), name


def test_empty_split_is_an_error():
    with pytest.raises(ValueError, match="no samples"):
        MetricSums().result()
