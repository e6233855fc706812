"""The structured sums: PyTorch and numba paths against the naive formula, gradients, dispatch."""

import pytest
import torch

import study.s4.sums.reference as kernel_ops
from study.s4.sums.reference import (cauchy_conj_naive, cauchy_conj_torch, resolve_backend, vandermonde_conj_naive,
                              vandermonde_conj_torch)
from study.s4.sums.numba_cpu import cauchy_conj_numba


def bilinear_nodes(length, dtype=torch.complex128):
    omega = torch.exp(-2j * torch.pi * torch.arange(length // 2 + 1, dtype=torch.float64) / length)
    return (2 * (1 - omega) / (1 + omega)).to(dtype)


def random_problem(rows, channels, half_state, dtype=torch.complex128):
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    v = torch.randn(*rows, channels, half_state, dtype=dtype, requires_grad=True)
    w = (-torch.rand(channels, half_state, dtype=real) - 1j * 20 * torch.rand(channels, half_state, dtype=real))
    return v, w.to(dtype).requires_grad_()


def relative_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_cauchy_torch_matches_naive_and_chunks_do_not_matter(monkeypatch):
    v, w = random_problem((2, 2), 3, 5)
    z = bilinear_nodes(22)
    expected = cauchy_conj_naive(v, z, w)
    monkeypatch.setattr(kernel_ops, "CHUNK_ELEMENTS", 16)  # several chunks of nodes
    assert relative_error(cauchy_conj_torch(v, z, w), expected) < 1e-12


def test_cauchy_torch_gradients_pass_gradcheck(monkeypatch):
    monkeypatch.setattr(kernel_ops, "CHUNK_ELEMENTS", 16)
    v, w = random_problem((2, 2), 3, 4)
    z = bilinear_nodes(14)
    assert torch.autograd.gradcheck(lambda v, w: cauchy_conj_torch(v, z, w), (v, w))


def test_vandermonde_torch_matches_naive_and_passes_gradcheck(monkeypatch):
    monkeypatch.setattr(kernel_ops, "CHUNK_ELEMENTS", 16)
    c = torch.randn(2, 3, 4, dtype=torch.complex128, requires_grad=True)
    x = (-0.1 * torch.rand(3, 4, dtype=torch.float64) - 1j * torch.rand(3, 4, dtype=torch.float64)).requires_grad_()
    assert relative_error(vandermonde_conj_torch(c, x, 19), vandermonde_conj_naive(c, x, 19)) < 1e-12
    assert torch.autograd.gradcheck(lambda c, x: vandermonde_conj_torch(c, x, 11), (c, x))


@pytest.mark.parametrize("channels,half_state,length", [(3, 5, 30), (8, 32, 1000), (5, 32, 4096)])
def test_numba_cauchy_values_and_gradients_match_torch(channels, half_state, length):
    v, w = random_problem((2, 2), channels, half_state, dtype=torch.complex64)
    z = bilinear_nodes(length, torch.complex64)
    upstream = torch.randn(2, 2, channels, z.shape[0], dtype=torch.complex64)
    results = []
    for function in (cauchy_conj_torch, cauchy_conj_numba):
        v.grad = w.grad = None
        r = function(v, z, w)
        (r * upstream.conj()).real.sum().backward()
        results.append((r.detach(), v.grad.clone(), w.grad.clone()))
    for fast, reference in zip(results[1], results[0]):
        assert relative_error(fast, reference) < 1e-4


def test_backend_resolution_rules():
    assert resolve_backend("auto", torch.device("cpu")) == "numba"
    assert resolve_backend("torch", torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="unknown"):
        resolve_backend("cuda-ext", torch.device("cpu"))
    with pytest.raises(RuntimeError, match="numba runs on CPU"):
        resolve_backend("numba", torch.device("cuda"))
