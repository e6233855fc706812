"""S4 kernels against the brute-force discretised recurrence K[l] = C A_bar^l B_bar (float64)."""

import numpy as np
import pytest
import torch

from study.s4.layer import DiagonalKernel, DPLRKernel, S4Block, S4LayerSettings


def perturb_(module, scale=0.1):
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn_like(parameter) * parameter.abs().mean())


def dplr_oracle(kernel: DPLRKernel, length: int) -> np.ndarray:
    """Explicit matrices, float64: A = diag([lam, conj lam]) - p p^H; bilinear; C = (I - A_bar^L0)^-T C~."""
    dt, lam, P, B, C_tilde = (t.detach().to(torch.complex128).numpy() for t in kernel.continuous_parameters())
    kernel_outputs = []
    for h in range(lam.shape[0]):
        lam_full = np.concatenate([lam[h], lam[h].conj()])
        p = np.concatenate([P[0, h], P[0, h].conj()])
        A = np.diag(lam_full) - np.outer(p, p.conj())
        identity = np.eye(len(lam_full))
        step = dt[h, 0].real
        inverse = np.linalg.inv(identity - step / 2 * A)
        A_bar = inverse @ (identity + step / 2 * A)
        B_bar = inverse @ (step * np.concatenate([B[h], B[h].conj()]))
        A_bar_power = identity.copy()
        for _ in range(kernel.reference_length):
            A_bar_power = A_bar_power @ A_bar
        C_full = np.concatenate([C_tilde[h], C_tilde[h].conj()])
        C_true = np.linalg.solve((identity - A_bar_power).T, C_full)
        state, values = B_bar.copy(), []
        for _ in range(length):
            values.append((C_true @ state).real)
            state = A_bar @ state
        kernel_outputs.append(values)
    return np.array(kernel_outputs)


def diagonal_oracle(kernel: DiagonalKernel, length: int) -> np.ndarray:
    dt, A, B, C = (t.detach().to(torch.complex128).numpy() for t in kernel.continuous_parameters())
    outputs = []
    for h in range(A.shape[0]):
        A_bar = np.exp(dt[h, 0].real * A[h])
        B_bar = (A_bar - 1) / A[h] * B[h]
        state, values = B_bar.copy(), []
        for _ in range(length):
            values.append(2 * (C[h] @ state).real)
            state = A_bar * state
        outputs.append(values)
    return np.array(outputs)


def relative_error(actual: torch.Tensor, expected: np.ndarray) -> float:
    return float(np.abs(actual.detach().double().numpy() - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("dt_min,dt_max", [(0.001, 0.1), (0.01, 0.5)])
@pytest.mark.parametrize("length", [37, 64, 100, 128])
def test_dplr_kernel_matches_the_recurrence(backend, dt_min, dt_max, length):
    kernel = DPLRKernel(channels=3, state_size=16, reference_length=64, dt_min=dt_min, dt_max=dt_max,
                        backend=backend)
    perturb_(kernel)
    assert relative_error(kernel(length), dplr_oracle(kernel, length)) <= 1e-4


def test_dplr_kernel_at_full_state_size_and_odd_reference_length():
    kernel = DPLRKernel(channels=2, state_size=64, reference_length=75)
    assert relative_error(kernel(75), dplr_oracle(kernel, 75)) <= 1e-4
    assert relative_error(kernel(160), dplr_oracle(kernel, 160)) <= 1e-4


def test_dplr_init_stores_c_tilde_of_a_standard_normal_c():
    torch.manual_seed(3)
    torch.rand(4, 1)                                        # the dt draw comes first
    expected = torch.randn(4, 8, dtype=torch.complex64)     # then C
    torch.manual_seed(3)
    kernel = DPLRKernel(channels=4, state_size=16, reference_length=50)
    # C~ is computed in complex64 as in the official code; (I - A_bar^50) amplifies its rounding
    assert torch.allclose(kernel.c_true().to(torch.complex64), expected, atol=2e-3)


def test_dplr_kernel_does_not_change_parameters():
    kernel = DPLRKernel(channels=2, state_size=16, reference_length=32)
    before = {name: p.detach().clone() for name, p in kernel.named_parameters()}
    kernel(200)
    for name, parameter in kernel.named_parameters():
        assert torch.equal(parameter, before[name]), name


@pytest.mark.parametrize("init", ["diag-lin", "diag-inv", "legs"])
@pytest.mark.parametrize("length", [50, 128])
def test_diagonal_kernel_matches_the_recurrence(init, length):
    kernel = DiagonalKernel(channels=3, state_size=16, init=init)
    perturb_(kernel)
    assert relative_error(kernel(length), diagonal_oracle(kernel, length)) <= 1e-4


@pytest.mark.parametrize("mode,init", [("nplr", "legs"), ("diag", "diag-inv")])
def test_s4_block_step_equals_forward(mode, init):
    block = S4Block(8, reference_length=64, settings=S4LayerSettings(mode=mode, init=init, d_state=16)).eval()
    perturb_(block)
    x = torch.randn(2, 8, 64)
    expected = block(x)
    params, memory = block.step_parameters(), block.allocate_inference_cache(2)
    storage = memory.data_ptr()
    outputs = [block.step(x[..., t], memory, params) for t in range(64)]
    assert torch.allclose(torch.stack(outputs, -1), expected, atol=1e-5)
    assert memory.data_ptr() == storage and memory.abs().sum() > 0  # advanced in place
