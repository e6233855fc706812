"""HiPPO initialisations of the S4 state matrix: LegS, its NPLR form, and the S4D diagonal inits.

Pure functions of (N, rank) returning tensors; they never touch modules or random state except
where the docstring says so.
"""

import math

import torch


def legs_transition(state_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegS (A, B), float64.

    A[n, k] = -sqrt(2n+1) sqrt(2k+1)  if n > k,  -(n+1) if n == k,  0 if n < k;
    B[n]    =  sqrt(2n+1).
    """
    q = torch.arange(state_size, dtype=torch.float64)
    r = torch.sqrt(2 * q + 1)
    A = -torch.tril(r[:, None] * r[None, :], diagonal=-1) - torch.diag(q + 1)
    return A, r.clone()


def legs_rank_correction(state_size: int) -> torch.Tensor:
    """P with A + P P^T normal for LegS: P[n] = sqrt(n + 1/2). Shape (1, N)."""
    return torch.sqrt(0.5 + torch.arange(state_size, dtype=torch.float64)).unsqueeze(0)


def legs_nplr(state_size: int, b_clip: float | None = 2.0):
    """Normal-plus-low-rank form of HiPPO-LegS: A = V (diag(W) - P P^*) V^*, B_nplr = V^* B.

    A + P P^T = S is (-1/2) I + skew-symmetric, so W = -1/2 + i eig(-i S) (Hermitian eigh in
    float64). Only the half of each conjugate pair with negative imaginary part is kept.
    Returns complex128 (W, P, B, V) with shapes (N/2,), (1, N/2), (N/2,), (N, N/2).
    `b_clip` clips Im(B) to [-b_clip, b_clip] as the official code does.
    """
    A, B = legs_transition(state_size)
    P = legs_rank_correction(state_size)
    S = A + P.T @ P
    w_real = torch.diagonal(S).mean()
    w_imag, V = torch.linalg.eigh(S.to(torch.complex128) * -1j)
    order = torch.argsort(w_imag)
    w_imag, V = w_imag[order], V[:, order]
    half = state_size // 2
    W = (w_real + 1j * w_imag[:half]).to(torch.complex128)
    V = V[:, :half]
    V_inv = V.conj().T
    B_nplr = V_inv @ B.to(torch.complex128)
    P_nplr = (V_inv @ P.to(torch.complex128).T).T
    if b_clip is not None:
        B_nplr = B_nplr.real + 1j * torch.clamp(B_nplr.imag, -b_clip, b_clip)
    return W, P_nplr, B_nplr, V


def diagonal_init(init: str, state_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S4D initialisations of the diagonal A and of B (complex128, N/2 conjugate-pair halves).

    diag-lin: A_n = -1/2 + i pi n,                 B_n = 1
    diag-inv: A_n = -1/2 + i N/pi (N/(2n+1) - 1),  B_n = 1
    legs:     A_n = the eigenvalues of LegS's NPLR form (S4D-LegS), B = V^* B_legs
    (The official code stores A with negative imaginary parts; the sign is immaterial since the
    conjugate pair is implicit. We follow it: A.imag <= 0.)
    """
    half = state_size // 2
    n = torch.arange(half, dtype=torch.float64)
    if init == "diag-lin":
        A = -0.5 - 1j * math.pi * n
        B = torch.ones(half, dtype=torch.complex128)
    elif init == "diag-inv":
        A = -0.5 - 1j * (state_size / math.pi) * (state_size / (2 * n + 1) - 1)
        B = torch.ones(half, dtype=torch.complex128)
    elif init == "legs":
        W, _, B, _ = legs_nplr(state_size)
        A = -0.5 - 1j * (-W.imag)
        return A.to(torch.complex128), B
    else:
        raise ValueError(f"unknown diagonal init {init!r}: use one of diag-lin, diag-inv, legs")
    return A.to(torch.complex128), B
