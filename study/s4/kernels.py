"""S4 convolution kernels as pure functions of the continuous parameters, each with its formula:
DPLR (S4, bilinear, Cauchy sums + Woodbury) and diagonal (S4D, zero-order hold, Vandermonde sum).

The modules in study/s4/layer.py own the parameters and call these; nothing here holds state or
touches a parameter. Shapes: H channels, N/2 conjugate-pair states, R the low-rank correction.
"""

import math

import torch
import torch.nn.functional as F

from study.s4.sums.reference import cauchy_conj, vandermonde_conj


def conj_pairs(x: torch.Tensor) -> torch.Tensor:
    """[x, conj(x)] along the last axis: the full state from its conjugate-pair half."""
    return torch.cat([x, x.conj()], dim=-1)


def dt_from_parameter(inv_dt: torch.Tensor, transform: str) -> torch.Tensor:
    """dt = softplus(inv_dt) or exp(inv_dt)."""
    if transform == "softplus":
        return F.softplus(inv_dt)
    if transform == "exp":
        return torch.exp(inv_dt)
    raise ValueError(f"model.dt_transform={transform!r} is unknown: use softplus or exp")


def dt_to_parameter(dt: torch.Tensor, transform: str) -> torch.Tensor:
    """Inverse of dt_from_parameter: log(exp(dt) - 1) or log(dt)."""
    if transform == "softplus":
        return torch.log(torch.expm1(dt))
    if transform == "exp":
        return torch.log(dt)
    raise ValueError(f"model.dt_transform={transform!r} is unknown: use softplus or exp")


def dplr_bilinear_dense(dt: torch.Tensor, lam: torch.Tensor, P: torch.Tensor,
                        B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear discretisation of the full rank-1 DPLR system, without a dense solve:

      A_bar = (I - dt/2 A)^-1 (I + dt/2 A) = M (diag(E) - p q^T),   B_bar = (I - dt/2 A)^-1 dt B = 2 M b
      M = diag(D) - D p q^T D / (1 + q^T D p),   D = 1 / (2/dt - lam),  E = 2/dt + lam,
    with A = diag(lam) - p q^T in the full space (lam, p, b conjugate-paired, q = conj p).
    dt: (H, 1), lam: (H, N/2), P: (1, H, N/2), B: (H, N/2) -> A_bar (H, N, N), B_bar (H, N).
    """
    lam_full, p, b = conj_pairs(lam), conj_pairs(P[0]), conj_pairs(B)
    q = p.conj()
    D, E = 1 / (2 / dt - lam_full), 2 / dt + lam_full
    DX = D.unsqueeze(-1) * (torch.diag_embed(E) - p.unsqueeze(-1) * q.unsqueeze(-2))   # D (diag(E) - p q^T)
    Dp = D * p
    denominator = 1 + (q * Dp).sum(-1, keepdim=True)                                   # (H, 1)
    A_bar = DX - Dp.unsqueeze(-1) * torch.einsum("hn,hnm->hm", q, DX).unsqueeze(-2) / denominator.unsqueeze(-1)
    Db = D * b
    B_bar = 2 * (Db - Dp * (q * Db).sum(-1, keepdim=True) / denominator)
    return A_bar, B_bar


def matrix_power(A: torch.Tensor, exponent: int) -> torch.Tensor:
    """A^exponent by repeated squaring (batched over leading axes)."""
    result = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device).expand_as(A).clone()
    base = A
    while exponent > 0:
        if exponent & 1:
            result = result @ base
        exponent >>= 1
        if exponent:
            base = base @ base
    return result


def bilinear_roots_of_unity(length: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes of the generating function at the roots of unity, for irfft of size `length`.

    omega_k = exp(-2 pi i k / L), k = 0..L//2;  z_k = 2 (1 - omega_k) / (1 + omega_k);
    scale_k = 2 / (1 + omega_k). Computed in float64 so that the Nyquist node (omega = -1) stays
    finite and accurate, then cast.
    """
    k = torch.arange(length // 2 + 1, dtype=torch.float64)
    omega = torch.exp(-2j * math.pi * k / length)
    z = 2 * (1 - omega) / (1 + omega)
    scale = 2 / (1 + omega)
    return z.to(dtype=dtype, device=device), scale.to(dtype=dtype, device=device)


def woodbury_rank_correction(r: torch.Tensor, rank: int) -> torch.Tensor:
    """From the Cauchy sums r[i, j] (i over [B, P_1..P_R], j over [C, Q_1..Q_R]) the DPLR resolvent:

    k = r00 - r01 (I + r11)^-1 r10   (the Woodbury identity for (R^-1 + P Q^T)^-1).
    r: (1+R, 1+R, H, K) -> (H, K).
    """
    r00, r01 = r[0, 0], r[0, 1:]          # (H, K), (R, H, K)
    r10, r11 = r[1:, 0], r[1:, 1:]        # (R, H, K), (R, R, H, K)
    if rank == 1:
        return r00 - r01[0] * r10[0] / (1 + r11[0, 0])
    system = torch.eye(rank, dtype=r.dtype, device=r.device) + r11.permute(2, 3, 0, 1)  # (H, K, R, R)
    solved = torch.linalg.solve(system, r10.permute(1, 2, 0).unsqueeze(-1)).squeeze(-1)  # (H, K, R)
    return r00 - (r01.permute(1, 2, 0) * solved).sum(-1)


def c_tilde_for_length(dt: torch.Tensor, lam: torch.Tensor, P: torch.Tensor, B: torch.Tensor,
                       C_tilde: torch.Tensor, reference_length: int, length: int) -> tuple[torch.Tensor, int]:
    """(C~, kernel length L') with L' = reference_length * 2^j >= length and C~ valid for L':

      C~(2L) = (I + A_bar^L)^T C~(L)    (in complex128, then cast back),
    since C~(L)^T = C^T (I - A_bar^L). Shapes (H, N/2); below reference_length C~ is returned unchanged.
    """
    kernel_length = reference_length
    if length <= kernel_length:
        return C_tilde, kernel_length
    A_bar, _ = dplr_bilinear_dense(dt.double(), lam.to(torch.complex128), P.to(torch.complex128),
                                   B.to(torch.complex128))                               # (H, N, N)
    full = conj_pairs(C_tilde.to(torch.complex128))                                      # (H, N)
    while kernel_length < length:
        full = full + torch.einsum("hmn,hm->hn", matrix_power(A_bar, kernel_length), full)
        kernel_length *= 2
    return full[..., : C_tilde.shape[-1]].to(C_tilde.dtype), kernel_length


def dplr_kernel(dt: torch.Tensor, lam: torch.Tensor, P: torch.Tensor, B: torch.Tensor, C_tilde: torch.Tensor,
                reference_length: int, length: int, rank: int = 1, backend: str = "auto") -> torch.Tensor:
    """The S4 convolution kernel K[h, l] = C^T A_bar^l B_bar, l < length, of A = diag(lam) - P Q^T
    (Q = conj P) discretised bilinearly, with C stored as C~ for the reference length L0.

    Generating function at the roots of unity omega_k of size L' (L0 doubled until >= length):
      K^(omega) = 2/(1+omega) [C~^T R B - (C~^T R P)(Q^T R B) / (1 + Q^T R P)] dt,
      R = (z - dt lam)^-1,  z = 2(1-omega)/(1+omega)  (Cauchy sums over conjugate pairs),
    then K = irfft(K^)[:length].
    dt (H, 1), lam (H, N/2), P (R, H, N/2), B (H, N/2), C~ (H, N/2) -> (H, length) real.
    """
    C, kernel_length = c_tilde_for_length(dt, lam, P, B, C_tilde, reference_length, length)
    z, scale = bilinear_roots_of_unity(kernel_length, lam.dtype, lam.device)    # (K,), K = L'//2 + 1
    rows = torch.cat([B.unsqueeze(0), P], dim=0)                 # (1+R, H, N/2)
    cols = torch.cat([C.unsqueeze(0), P.conj()], dim=0)          # (1+R, H, N/2)
    v = rows.unsqueeze(1) * cols.unsqueeze(0) * dt               # (1+R, 1+R, H, N/2)
    r = cauchy_conj(v, z, lam * dt, backend=backend)            # (1+R, 1+R, H, K)
    k_f = woodbury_rank_correction(r, rank) * scale              # (H, K)
    return torch.fft.irfft(k_f, n=kernel_length)[..., :length]   # (H, length)


def zero_order_hold(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dt A and B_bar = (exp(dt A) - 1) / A * B of a diagonal system: dt (H, 1), A, B (H, N/2) -> (H, N/2) each."""
    dtA = dt * A
    return dtA, (torch.exp(dtA) - 1) / A * B


def diagonal_kernel(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, length: int,
                    backend: str = "auto") -> torch.Tensor:
    """The S4D convolution kernel of a diagonal A discretised by zero-order hold:

      A_bar = exp(dt A),  B_bar = (A_bar - 1) / A * B,  K[h, l] = 2 Re sum_n C[h, n] B_bar[h, n] A_bar[h, n]^l
    (a Vandermonde sum over conjugate pairs). dt (H, 1), A, B, C (H, N/2) -> (H, length) real.
    """
    dtA, B_bar = zero_order_hold(dt, A, B)                        # (H, N/2) each
    return vandermonde_conj(C * B_bar, dtA, length, backend=backend)  # (H, length)


def fft_convolution(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Causal convolution y[l] = sum_{j<=l} k[j] x[l-j] via FFT of size 2L. x (B, H, L), k (H, L)."""
    length = x.shape[-1]
    n = 2 * length
    y = torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(kernel, n=n), n=n)
    return y[..., :length]
