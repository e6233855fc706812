"""The S4 layer: DPLR (S4) and diagonal (S4D) kernel modules over their parameters, and the S4 block.

Every module has its parallel face (`forward`, whole sequences; the kernel math is in
study/s4/kernels.py) and its recurrent face (`step`, one sample) side by side. Nothing here
rewrites a parameter inside `forward`.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from study.s4 import hippo
from study.s4.kernels import (conj_pairs, diagonal_kernel, dplr_bilinear_dense, dplr_kernel, dt_from_parameter,
                              dt_to_parameter, fft_convolution, matrix_power, zero_order_hold)


def mark_optim(parameter: nn.Parameter, **settings) -> nn.Parameter:
    """Attach optimizer settings (e.g. lr=0.001, weight_decay=0.0) to a parameter where it is born."""
    parameter._optim = dict(settings)
    return parameter


def log_uniform_dt(channels: int, dt_min: float, dt_max: float) -> torch.Tensor:
    """dt ~ exp(U[log dt_min, log dt_max]), shape (H, 1). Uses the global torch RNG."""
    log_dt = torch.rand(channels, 1) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    return torch.exp(log_dt)


def init_ssm_parameters(module: nn.Module, A: torch.Tensor, B: torch.Tensor, channels: int, dt_min: float,
                        dt_max: float, dt_transform: str, lr: float) -> None:
    """Register inv_dt (H, 1), A_real, A_imag (1, N/2) and B (1, N/2) on `module`, all at learning rate
    `lr` without weight decay; A = -exp(A_real) - i A_imag. Draws dt from the global RNG."""
    dt = log_uniform_dt(channels, dt_min, dt_max)
    module.inv_dt = mark_optim(nn.Parameter(dt_to_parameter(dt, dt_transform)), lr=lr, weight_decay=0.0)
    module.A_real = mark_optim(nn.Parameter(torch.log(-A.real).float().unsqueeze(0)), lr=lr, weight_decay=0.0)
    module.A_imag = mark_optim(nn.Parameter((-A.imag).float().unsqueeze(0)), lr=lr, weight_decay=0.0)
    module.B = mark_optim(nn.Parameter(torch.view_as_real(B.to(torch.complex64)).unsqueeze(0).clone()),
                          lr=lr, weight_decay=0.0)


class DPLRKernel(nn.Module):
    """S4 kernel with A = diag(lam) - P P^*, bilinear discretisation, and C stored as C~.

    Parameters (n_ssm = 1: A, B, P shared by all H channels; dt and C per channel):
      inv_dt (H, 1); A_real, A_imag (1, N/2) with lam = -exp(A_real) - i A_imag;
      B (1, N/2), P (R, 1, N/2), C (H, N/2) as real views of complex numbers.
    C is the "C~" of the S4 paper for the reference length L0: C~^T = C^T (I - A_bar^L0), the
    quantity the official code learns. A kernel of length L <= L0 is the length-L0 kernel cut to L;
    a longer one uses C~(2L) = (I + A_bar^L)^T C~(L) without touching the parameter.
    """

    def __init__(self, channels: int, state_size: int, reference_length: int, rank: int = 1,
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_transform: str = "softplus",
                 lr: float = 0.001, backend: str = "auto"):
        super().__init__()
        self.channels, self.half_state, self.rank = channels, state_size // 2, rank
        self.reference_length = reference_length
        self.dt_transform, self.backend = dt_transform, backend
        W, P, B, _ = hippo.legs_nplr(state_size)
        if rank != 1:
            raise ValueError(f"model.rank={rank}: HiPPO-LegS has a rank-1 correction; set model.rank=1")
        init_ssm_parameters(self, W, B, channels, dt_min, dt_max, dt_transform, lr)
        self.P = mark_optim(nn.Parameter(torch.view_as_real(P.to(torch.complex64)).unsqueeze(1).clone()),
                            lr=lr, weight_decay=0.0)
        C = torch.randn(channels, self.half_state, dtype=torch.complex64)
        self.C = nn.Parameter(torch.view_as_real(C).clone())
        with torch.no_grad():  # the official init: C ~ N(0, 1) is the recurrence's C; store its C~
            self.C.copy_(torch.view_as_real(self._c_tilde_from_c(C)))

    # -- parameters in complex form -------------------------------------------------------------
    def continuous_parameters(self):
        """dt (H, 1), lam (H, N/2), P (R, H, N/2), B (H, N/2), C~ (H, N/2)."""
        dt = dt_from_parameter(self.inv_dt, self.dt_transform)
        lam = (-torch.exp(self.A_real) - 1j * self.A_imag).expand(self.channels, -1)
        P = torch.view_as_complex(self.P).expand(-1, self.channels, -1)
        B = torch.view_as_complex(self.B).expand(self.channels, -1)
        C = torch.view_as_complex(self.C)
        return dt, lam, P, B, C

    @torch.no_grad()
    def dense_discrete(self, dtype=torch.complex128):
        """A_bar (H, N, N), B_bar (H, N) of the full (conjugate-paired) system."""
        dt, lam, P, B, _ = self.continuous_parameters()
        real = torch.float64 if dtype == torch.complex128 else torch.float32
        return dplr_bilinear_dense(dt.to(real), lam.to(dtype), P.to(dtype), B.to(dtype))

    @torch.no_grad()
    def _c_tilde_from_c(self, C: torch.Tensor) -> torch.Tensor:
        """C~ = first half of (I - A_bar^L0)^T [C, conj C]: the official init of C at length L0
        (in complex64, as the official code computes it)."""
        A_bar, _ = self.dense_discrete(dtype=torch.complex64)
        power = matrix_power(A_bar, self.reference_length)
        full = conj_pairs(C)
        tilde = full - torch.einsum("hmn,hm->hn", power, full)
        return tilde[..., : self.half_state]

    @torch.no_grad()
    def c_true(self) -> torch.Tensor:
        """C of the recurrence, (I - A_bar^L0)^-T C~, half representation, complex128 (H, N/2)."""
        A_bar, _ = self.dense_discrete()
        power = matrix_power(A_bar, self.reference_length)
        identity = torch.eye(A_bar.shape[-1], dtype=A_bar.dtype)
        full = conj_pairs(torch.view_as_complex(self.C).to(torch.complex128))
        solved = torch.linalg.solve((identity - power).transpose(-1, -2), full.unsqueeze(-1)).squeeze(-1)
        return solved[..., : self.half_state]

    def forward(self, length: int) -> torch.Tensor:
        """The convolution kernel K[h, l] = C^T A_bar^l B_bar, l < length: (H, length) (kernels.dplr_kernel)."""
        return dplr_kernel(*self.continuous_parameters(), self.reference_length, length, self.rank, self.backend)

    # -- recurrent face ---------------------------------------------------------------------------
    @torch.no_grad()
    def step_parameters(self) -> dict[str, torch.Tensor]:
        """O(N) bilinear step of the DPLR recurrence (half representation, complex64):

          u_mid = E x - P (2 Re Q^T x) + 2 B u,           E = 2/dt + lam
          x'    = D u_mid - D P (2 Re Q^T D u_mid) / (1 + 2 Re Q^T D P),   D = (2/dt - lam)^-1
          y     = 2 Re C^T x'
        (Woodbury on (I - dt/2 A)^-1 with A = diag(lam) - P Q^T, Q = conj P; rank 1.)
        """
        dt, lam, P, B, _ = self.continuous_parameters()
        P, Q = P[0], P[0].conj()
        D = 1 / (2 / dt - lam)
        denominator = 1 + 2 * (Q * D * P).sum(-1, keepdim=True).real   # (H, 1)
        return {
            "E": (2 / dt + lam).detach(),
            "D": D.detach(),
            "P": P.detach(),
            "Q": Q.detach(),
            "DP": (D * P).detach(),
            "QD_scaled": (Q * D / denominator).detach(),
            "B2": (2 * B).detach(),
            "C2": (2 * self.c_true()).to(torch.complex64),
        }

    def initial_memory(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, self.channels, self.half_state, dtype=torch.complex64,
                           device=self.C.device)

    @staticmethod
    def step(u: torch.Tensor, memory: torch.Tensor, params: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """u: (B, H) real, memory: (B, H, N/2) complex -> y (B, H), memory'."""
        qx = 2 * (params["Q"] * memory).sum(-1, keepdim=True).real
        u_mid = params["E"] * memory - params["P"] * qx + params["B2"] * u.unsqueeze(-1)
        correction = 2 * (params["QD_scaled"] * u_mid).sum(-1, keepdim=True).real
        memory = params["D"] * u_mid - params["DP"] * correction
        y = (params["C2"] * memory).sum(-1).real
        return y, memory


class DiagonalKernel(nn.Module):
    """S4D kernel: diagonal A, zero-order-hold discretisation, Vandermonde sum.

    A_bar = exp(dt A),  B_bar = (exp(dt A) - 1) / A * B,  K[h, l] = 2 Re sum_n C B_bar A_bar^l.
    """

    def __init__(self, channels: int, state_size: int, init: str = "diag-lin", dt_min: float = 0.001,
                 dt_max: float = 0.1, dt_transform: str = "softplus", lr: float = 0.001, backend: str = "auto"):
        super().__init__()
        self.channels, self.half_state = channels, state_size // 2
        self.dt_transform, self.backend = dt_transform, backend
        A, B = hippo.diagonal_init(init, state_size)
        init_ssm_parameters(self, A, B, channels, dt_min, dt_max, dt_transform, lr)
        C = torch.randn(channels, self.half_state, dtype=torch.complex64)
        self.C = nn.Parameter(torch.view_as_real(C).clone())

    def continuous_parameters(self):
        """dt (H, 1), A (H, N/2), B (H, N/2), C (H, N/2)."""
        dt = dt_from_parameter(self.inv_dt, self.dt_transform)
        A = (-torch.exp(self.A_real) - 1j * self.A_imag).expand(self.channels, -1)
        B = torch.view_as_complex(self.B).expand(self.channels, -1)
        return dt, A, B, torch.view_as_complex(self.C)

    def discrete(self):
        """dt A, B_bar (zero-order hold), C: (H, N/2) each."""
        dt, A, B, C = self.continuous_parameters()
        return (*zero_order_hold(dt, A, B), C)

    def forward(self, length: int) -> torch.Tensor:
        """K[h, l] = 2 Re sum_n C B_bar A_bar^l, l < length: (H, length) (kernels.diagonal_kernel)."""
        return diagonal_kernel(*self.continuous_parameters(), length, backend=self.backend)

    @torch.no_grad()
    def step_parameters(self) -> dict[str, torch.Tensor]:
        """x' = A_bar x + B_bar u,  y = 2 Re C^T x'."""
        dtA, B_bar, C = self.discrete()
        return {"A_bar": torch.exp(dtA).detach(), "B_bar": B_bar.detach(), "C2": (2 * C).detach()}

    def initial_memory(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, self.channels, self.half_state, dtype=torch.complex64,
                           device=self.C.device)

    @staticmethod
    def step(u, memory, params):
        memory = params["A_bar"] * memory + params["B_bar"] * u.unsqueeze(-1)
        return (params["C2"] * memory).sum(-1).real, memory


@dataclass
class S4LayerSettings:
    """The S4 options of a model config that every S4 layer shares."""
    mode: str = "nplr"
    init: str = "legs"
    d_state: int = 64
    rank: int = 1
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_transform: str = "softplus"
    lr: float = 0.001
    final_act: str = "glu"
    dropout: float = 0.0
    kernel_backend: str = "auto"


def build_kernel(channels: int, reference_length: int, settings: S4LayerSettings) -> nn.Module:
    common = dict(dt_min=settings.dt_min, dt_max=settings.dt_max, dt_transform=settings.dt_transform,
                  lr=settings.lr, backend=settings.kernel_backend)
    if settings.mode == "nplr":
        if settings.init != "legs":
            raise ValueError(f"model.ssm_init={settings.init!r} with model.ssm_mode=nplr: the DPLR kernel "
                             "supports init=legs; use model.ssm_mode=diag for diag-lin / diag-inv")
        return DPLRKernel(channels, settings.d_state, reference_length, rank=settings.rank, **common)
    if settings.mode == "diag":
        return DiagonalKernel(channels, settings.d_state, init=settings.init, **common)
    raise ValueError(f"model.ssm_mode={settings.mode!r} is unknown: use nplr (S4) or diag (S4D)")


class S4Block(nn.Module):
    """SSM convolution (+ D skip) -> dropout -> GELU -> dropout -> linear H->2H -> GLU (or H->H, id).

    The two dropouts follow the official code (one inside its FFTConv, one in its S4Block).
    Shapes: forward (B, H, L) -> (B, H, L); step (B, H) -> (B, H).
    """

    def __init__(self, channels: int, reference_length: int, settings: S4LayerSettings):
        super().__init__()
        self.kernel = build_kernel(channels, reference_length, settings)
        self.D = nn.Parameter(torch.randn(channels))
        self.dropout = nn.Dropout(settings.dropout) if settings.dropout > 0 else nn.Identity()
        if settings.final_act not in ("glu", "id"):
            raise ValueError(f"model.final_act={settings.final_act!r} is unknown: use glu or id")
        self.glu = settings.final_act == "glu"
        self.output_linear = ChannelLinear(channels, 2 * channels if self.glu else channels)

    def _after_convolution(self, y: torch.Tensor) -> torch.Tensor:
        y = self.dropout(F.gelu(self.dropout(y)))
        y = self.output_linear(y)
        return F.glu(y, dim=1) if self.glu else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.kernel(x.shape[-1])                         # (H, L)
        y = fft_convolution(x, kernel) + x * self.D.unsqueeze(-1)  # (B, H, L)
        return self._after_convolution(y)

    def step_parameters(self) -> dict[str, torch.Tensor]:
        return self.kernel.step_parameters()

    def allocate_inference_cache(self, batch_size: int) -> torch.Tensor:
        return self.kernel.initial_memory(batch_size)  # (B, H, N/2) complex64, zero

    def step(self, x: torch.Tensor, memory: torch.Tensor, params: dict) -> torch.Tensor:
        """x (B, H) -> y (B, H); `memory` (B, H, N/2) advances one sample in place."""
        y, advanced = self.kernel.step(x, memory, params)
        memory.copy_(advanced)
        return self._after_convolution((y + x * self.D).unsqueeze(-1)).squeeze(-1)


class ChannelLinear(nn.Module):
    """Linear map over the channel axis of (B, C, L) or (B, C): y = W x + b.

    With weight_norm, W = g v / ||v|| (row norms), as torch's weight_norm with dim=0.
    Initialised like nn.Linear. Biases are marked to take no weight decay.
    """

    def __init__(self, in_channels: int, out_channels: int, weight_norm: bool = False):
        super().__init__()
        reference = nn.Linear(in_channels, out_channels)
        self.weight_norm = weight_norm
        if weight_norm:
            self.weight_v = nn.Parameter(reference.weight.detach().clone())
            self.weight_g = nn.Parameter(reference.weight.detach().norm(dim=1, keepdim=True))
        else:
            self.weight_raw = nn.Parameter(reference.weight.detach().clone())
        self.bias = mark_optim(nn.Parameter(reference.bias.detach().clone()), weight_decay=0.0)

    @property
    def weight(self) -> torch.Tensor:
        if self.weight_norm:
            return self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)
        return self.weight_raw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return F.linear(x, self.weight, self.bias)
        return torch.matmul(self.weight, x) + self.bias.unsqueeze(-1)
