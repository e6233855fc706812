"""HiPPO-LegS and its NPLR form against explicit formulas."""

import math

import torch

from study.s4 import hippo


def test_legs_matrix_matches_its_definition():
    N = 6
    A, B = hippo.legs_transition(N)
    for n in range(N):
        assert math.isclose(B[n].item(), math.sqrt(2 * n + 1))
        for k in range(N):
            expected = -math.sqrt((2 * n + 1) * (2 * k + 1)) if n > k else (-(n + 1) if n == k else 0.0)
            assert math.isclose(A[n, k].item(), expected, abs_tol=1e-12)


def test_nplr_form_reconstructs_legs():
    N = 16
    W, P, B, V = hippo.legs_nplr(N, b_clip=None)
    A, B_legs = hippo.legs_transition(N)
    p = hippo.legs_rank_correction(N)
    normal_part = 2 * (V @ torch.diag(W) @ V.conj().T).real   # both conjugate halves
    assert torch.allclose(normal_part - p.T @ p, A, atol=1e-8)
    assert torch.allclose(B, V.conj().T @ B_legs.to(torch.complex128))
    assert torch.allclose(P, (V.conj().T @ p.T.to(torch.complex128)).T)
    assert torch.all(W.real < 0) and torch.all(W.imag <= 0)


def test_diagonal_inits_follow_their_formulas():
    A, B = hippo.diagonal_init("diag-lin", 8)
    assert torch.allclose(A, -0.5 - 1j * math.pi * torch.arange(4, dtype=torch.float64))
    A, _ = hippo.diagonal_init("diag-inv", 8)
    n = torch.arange(4, dtype=torch.float64)
    assert torch.allclose(A.imag, -(8 / math.pi) * (8 / (2 * n + 1) - 1))
    A_legs, _ = hippo.diagonal_init("legs", 8)
    W, _, _, _ = hippo.legs_nplr(8)
    assert torch.allclose(A_legs.imag, W.imag)
