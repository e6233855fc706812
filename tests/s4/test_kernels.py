"""The pure S4 kernel functions against brute force in float64: explicit matrices, explicit
recurrences, explicit convolutions and inverses, on parameters made here rather than by the modules."""

import numpy as np
import pytest
import torch

from study.s4 import hippo, kernels


def random_complex(*shape, generator) -> torch.Tensor:
    return torch.complex(torch.randn(*shape, generator=generator), torch.randn(*shape, generator=generator))


def dplr_parameters(heads=2, state_size=8, seed=0):
    """dt (H, 1), lam (H, N/2), P (1, H, N/2), B (H, N/2), C~ (H, N/2), complex128: HiPPO-LegS with
    per-channel dt and a random C~, and P scaled off its HiPPO value so that nothing is special."""
    generator = torch.Generator().manual_seed(seed)
    W, P, B, _ = hippo.legs_nplr(state_size)
    dt = torch.exp(torch.empty(heads, 1, dtype=torch.float64).uniform_(np.log(1e-2), np.log(1e-1), generator=generator))
    lam = W.to(torch.complex128).expand(heads, -1)
    P = (0.9 * P.to(torch.complex128)).expand(1, heads, -1)
    B = B.to(torch.complex128).expand(heads, -1)
    return dt, lam, P, B, random_complex(heads, state_size // 2, generator=generator).to(torch.complex128)


def dense_system(dt, lam, P, B, h):
    """Explicit A = diag([lam, conj lam]) - p p^H of channel h and its bilinear discretisation."""
    lam_full = np.concatenate([lam[h], lam[h].conj()])
    p = np.concatenate([P[0, h], P[0, h].conj()])
    A = np.diag(lam_full) - np.outer(p, p.conj())
    identity = np.eye(len(lam_full))
    inverse = np.linalg.inv(identity - dt[h, 0].real / 2 * A)
    return inverse @ (identity + dt[h, 0].real / 2 * A), inverse @ (dt[h, 0].real * np.concatenate([B[h], B[h].conj()]))


def dplr_oracle(dt, lam, P, B, C_tilde, reference_length, length):
    """K[h, l] = C^T A_bar^l B_bar by the recurrence, with C = (I - A_bar^L0)^-T C~."""
    dt, lam, P, B, C_tilde = (t.numpy() for t in (dt, lam, P, B, C_tilde))
    rows = []
    for h in range(lam.shape[0]):
        A_bar, B_bar = dense_system(dt, lam, P, B, h)
        identity = np.eye(A_bar.shape[0])
        C = np.linalg.solve((identity - np.linalg.matrix_power(A_bar, reference_length)).T,
                            np.concatenate([C_tilde[h], C_tilde[h].conj()]))
        state, values = B_bar, []
        for _ in range(length):
            values.append((C @ state).real)
            state = A_bar @ state
        rows.append(values)
    return np.array(rows)


@pytest.mark.parametrize("length", [16, 11, 40])  # L0 itself, shorter (cut), longer (C~ doubled twice)
def test_dplr_kernel_is_the_recurrence(length):
    parameters = dplr_parameters()
    kernel = kernels.dplr_kernel(*parameters, reference_length=16, length=length, backend="torch")
    assert kernel.shape == (2, length)
    np.testing.assert_allclose(kernel.numpy(), dplr_oracle(*parameters, 16, length), rtol=0, atol=1e-9)


def test_dplr_bilinear_dense_is_the_dense_discretisation():
    dt, lam, P, B, _ = dplr_parameters(heads=3)
    A_bar, B_bar = kernels.dplr_bilinear_dense(dt, lam, P, B)
    for h in range(3):
        expected_A, expected_B = dense_system(dt.numpy(), lam.numpy(), P.numpy(), B.numpy(), h)
        np.testing.assert_allclose(A_bar[h].numpy(), expected_A, atol=1e-12)
        np.testing.assert_allclose(B_bar[h].numpy(), expected_B, atol=1e-12)


def test_c_tilde_doubling_is_the_c_tilde_of_the_doubled_length():
    """C~(L')^T = C^T (I - A_bar^L'): doubling from L0 gives what the definition gives at L' directly."""
    dt, lam, P, B, C_tilde = dplr_parameters()
    doubled, kernel_length = kernels.c_tilde_for_length(dt, lam, P, B, C_tilde, 8, 20)
    assert kernel_length == 32
    for h in range(2):
        A_bar, _ = dense_system(dt.numpy(), lam.numpy(), P.numpy(), B.numpy(), h)
        identity = np.eye(A_bar.shape[0])
        C = np.linalg.solve((identity - np.linalg.matrix_power(A_bar, 8)).T,
                            np.concatenate([C_tilde[h].numpy(), C_tilde[h].numpy().conj()]))
        expected = (identity - np.linalg.matrix_power(A_bar, 32)).T @ C
        np.testing.assert_allclose(doubled[h].numpy(), expected[:4], atol=1e-9)
    same, length = kernels.c_tilde_for_length(dt, lam, P, B, C_tilde, 8, 8)
    assert length == 8 and same is C_tilde


@pytest.mark.parametrize("length", [1, 7, 64])
def test_diagonal_kernel_is_the_zero_order_hold_recurrence(length):
    generator = torch.Generator().manual_seed(1)
    A, B = (t.to(torch.complex128) for t in hippo.diagonal_init("diag-lin", 8))
    dt = torch.tensor([[0.01], [0.1], [0.05]], dtype=torch.float64)
    A, B = A.expand(3, -1), B.expand(3, -1)
    C = random_complex(3, 4, generator=generator).to(torch.complex128)
    kernel = kernels.diagonal_kernel(dt, A, B, C, length, backend="torch")
    expected = np.zeros((3, length))
    for h in range(3):
        A_bar = np.exp(dt[h, 0].item() * A[h].numpy())
        state = (A_bar - 1) / A[h].numpy() * B[h].numpy()
        for l in range(length):
            expected[h, l] = 2 * (C[h].numpy() @ state).real
            state = A_bar * state
    np.testing.assert_allclose(kernel.numpy(), expected, rtol=0, atol=1e-10 * np.abs(expected).max())


@pytest.mark.parametrize("rank", [1, 2])
def test_woodbury_rank_correction_is_the_explicit_inverse(rank):
    generator = torch.Generator().manual_seed(2)
    r = random_complex(1 + rank, 1 + rank, 2, 5, generator=generator).to(torch.complex128)
    k = kernels.woodbury_rank_correction(r, rank)
    for h in range(2):
        for node in range(5):
            block = r[..., h, node].numpy()
            expected = block[0, 0] - block[0, 1:] @ np.linalg.inv(np.eye(rank) + block[1:, 1:]) @ block[1:, 0]
            assert abs(k[h, node].item() - expected) < 1e-12


def test_matrix_power_and_roots_of_unity_are_their_definitions():
    generator = torch.Generator().manual_seed(3)
    A = 0.5 * random_complex(2, 4, 4, generator=generator).to(torch.complex128)
    for exponent in (0, 1, 5, 16):
        np.testing.assert_allclose(kernels.matrix_power(A, exponent).numpy(),
                                   np.linalg.matrix_power(A.numpy(), exponent), atol=1e-12)
    z, scale = kernels.bilinear_roots_of_unity(6, torch.complex128, "cpu")
    omega = np.exp(-2j * np.pi * np.arange(4) / 6)
    np.testing.assert_allclose(z.numpy(), 2 * (1 - omega) / (1 + omega), atol=1e-12)
    np.testing.assert_allclose(scale.numpy(), 2 / (1 + omega), atol=1e-12)


def test_fft_convolution_is_the_causal_convolution():
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 9, generator=generator, dtype=torch.float64)
    kernel = torch.randn(3, 9, generator=generator, dtype=torch.float64)
    y = kernels.fft_convolution(x, kernel)
    for b in range(2):
        for h in range(3):
            np.testing.assert_allclose(y[b, h].numpy(), np.convolve(x[b, h].numpy(), kernel[h].numpy())[:9], atol=1e-12)


@pytest.mark.parametrize("transform", ["softplus", "exp"])
def test_dt_parametrisation_round_trips(transform):
    dt = torch.tensor([1e-3, 1e-2, 0.1], dtype=torch.float64)
    np.testing.assert_allclose(kernels.dt_from_parameter(kernels.dt_to_parameter(dt, transform), transform).numpy(),
                               dt.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="dt_transform='tanh' is unknown"):
        kernels.dt_from_parameter(dt, "tanh")
