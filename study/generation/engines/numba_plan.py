"""The SaShiMi model as the CPU engine reads it: a named plan, one dataclass per block kind, built
from the model's modules (float64 numpy copies of the weights and of the S4 step in two forms:
the folded matrices of `ssm_matrices` and the compact constants of `compact_ssm`).

The order of operations is the model's own: `SaShiMiBackbone.step_program` at each phase, as a table
of op codes (`STEP_OPS`). Building a plan never changes the model.
"""

import copy
from dataclasses import dataclass

import numpy as np
import torch

from study.s4.layer import DiagonalKernel, DPLRKernel, S4Block
from study.sashimi import ChannelLayerNorm, FeedForward, ResidualBlock, SaShiMi, SaShiMiBackbone, TransposedLN

# op codes of the step program's table: StepOp.kind -> code (fields per op: code, level, slot, completes)
STEP_OPS = {"down": 0, "up": 1, "stage": 2}


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().double().numpy().copy()


@dataclass
class NormPlan:
    """The prenorm of a residual block: 'transposed' (scalars [m, s], no eps) or 'layer' ([weight, bias])."""
    kind: str
    parameters: np.ndarray   # transposed: (2,) [m, s]; layer: (2, H) [weight, bias]
    eps: float


@dataclass
class CompactSSMPlan:
    """The S4 step in the compact form of `compact_ssm`: F and C per (n, h), the rest per n or per h."""
    sigma: float              # +1 (bilinear, DPLR) or -1 (zero-order hold, diagonal)
    channel: np.ndarray       # (3, H): rows alpha, b, gamma
    state: np.ndarray         # (N/2, 4): columns Re P, Im P, Re Bv, Im Bv
    rows: np.ndarray          # (N/2, 4, H): per state index the rows Fr, Fi, Cr, Ci


@dataclass
class S4Plan:
    """x + GLU(W GELU(SSM(z) + D z) + b) with z = norm(x); the SSM step in the folded form of `ssm_matrices`
    and in the compact form of `compact_ssm` (the engine reads one of them)."""
    norm: NormPlan
    matrices: np.ndarray        # (N/2, 10, H): per state index the rows Mr, Mi, Fr, Fi, Gr, Gi, Gpr, Gpi, Cr, Ci
    compact: CompactSSMPlan
    rank1: bool                 # DPLR (the s = Re(M.x) correction) or diagonal
    skip: np.ndarray            # D (H,)
    output_weight: np.ndarray   # (2H, H) with GLU, (H, H) without
    output_bias: np.ndarray
    glu: bool

    @property
    def channels(self) -> int:
        return self.skip.shape[0]

    @property
    def half_state(self) -> int:
        return self.matrices.shape[0]


@dataclass
class FeedForwardPlan:
    """x + W2 GELU(W1 z + b1) + b2 with z = norm(x)."""
    norm: NormPlan
    weight_in: np.ndarray    # (F, H)
    bias_in: np.ndarray
    weight_out: np.ndarray   # (H, F)
    bias_out: np.ndarray

    @property
    def channels(self) -> int:
        return self.weight_in.shape[1]


@dataclass
class LevelPlan:
    """Pooling level l (0: outermost, d_model channels; the last: the centre, no pools) and its stage.

    Pool buffers are slot-major ([slot * H_l + h]) so a sample is one contiguous vector; the pool
    weights are permuted from the model's [h * s + slot] to match."""
    channels: int
    stride: int                       # 0 at the centre
    blocks: list                      # S4Plan | FeedForwardPlan, in the stage's order
    down_weight: np.ndarray | None    # (H_{l+1}, s H_l)
    down_bias: np.ndarray | None      # (H_{l+1},)
    up_weight: np.ndarray | None      # (s H_l, H_{l+1})
    up_bias: np.ndarray | None        # (s H_l,)


@dataclass
class NetworkPlan:
    """Embedding -> levels (down path, centre, up path with skips) -> final LayerNorm -> decoder."""
    embedding: np.ndarray       # (C, d_model)
    levels: list[LevelPlan]     # outermost first, the centre last
    final_weight: np.ndarray    # (d_model,)
    final_bias: np.ndarray
    final_eps: float
    decoder_weight: np.ndarray  # (C, d_model)
    decoder_bias: np.ndarray
    program: np.ndarray         # (total_pool, max ops, 4) int64: the step program of each phase (step_program_table)
    program_lengths: np.ndarray  # (total_pool,) int64: how many ops of each phase's row are used

    @property
    def n_classes(self) -> int:
        return self.embedding.shape[0]

    @property
    def total_pool(self) -> int:
        return self.program.shape[0]


def step_program_table(backbone: SaShiMiBackbone, period: int) -> tuple[np.ndarray, np.ndarray]:
    """`backbone.step_program(phase)` for each phase < period as rows of [STEP_OPS code, level, slot, completes],
    padded to the longest: (period, max ops, 4) int64, and the length of each row (period,)."""
    programs = [backbone.step_program(phase) for phase in range(period)]
    table = np.full((period, max(map(len, programs)), 4), -1, np.int64)
    for phase, program in enumerate(programs):
        for index, op in enumerate(program):
            table[phase, index] = STEP_OPS[op.kind], op.level, op.slot, op.completes
    return table, np.array([len(program) for program in programs], np.int64)


def ssm_matrices(kernel: torch.nn.Module) -> dict[str, np.ndarray]:
    """The S4 step as x' = F x - G_p s + G u, s = Re(M . x), y = Re(C . x') (complex, (H, N/2) each).

    DPLR (from DPLRKernel.step_parameters, computed in complex128):
      qx = 2 Re Q.x;  u_mid = E x - P qx + B2 u;  corr = 2 Re QD_scaled.u_mid;  x' = D u_mid - DP corr
      => x' = (D E) x - DP (qx + corr) + (D B2) u, and with a = 2 Re QD_scaled.P, b = 2 Re QD_scaled.B2:
         qx + corr = Re(M.x) + b u,  M = 2 ((1 - a) Q + QD_scaled E)
      => F = D E,  G_p = DP,  G = D B2 - b DP,  C = C2.
    Diagonal: F = A_bar, G = B_bar, C = C2, no correction (M = G_p = 0).
    """
    params = {k: v.detach().cpu().to(torch.complex128) for k, v in kernel.step_parameters().items()}
    if isinstance(kernel, DPLRKernel):
        a = 2 * (params["QD_scaled"] * params["P"]).sum(-1, keepdim=True).real
        b = 2 * (params["QD_scaled"] * params["B2"]).sum(-1, keepdim=True).real
        M = 2 * ((1 - a) * params["Q"] + params["QD_scaled"] * params["E"])
        F = params["D"] * params["E"]
        G_p = params["DP"]
        G = params["D"] * params["B2"] - b * params["DP"]
        rank1 = True
    elif isinstance(kernel, DiagonalKernel):
        F, G = params["A_bar"], params["B_bar"]
        M = G_p = torch.zeros_like(F)
        rank1 = False
    else:
        raise TypeError(f"no fast step for kernel {type(kernel).__name__}")
    matrices = {name: value.numpy() for name, value in dict(M=M, F=F, G=G, G_p=G_p, C=params["C2"]).items()}
    matrices["rank1"] = rank1
    return matrices


def compact_ssm(kernel: torch.nn.Module) -> dict:
    """The S4 step as x' = F x + alpha_h (F + sigma) (Bv u - P t), y = Re(C.x'), from the kernel's
    parameters in float64 / complex128 (C is the folded form's, `ssm_matrices`, stored as is).

    lam, P, B are per state index n, shared by all channels (n_ssm = 1); dt and C are per channel h.
    DPLR (bilinear), r = 2 / dt_h, D = 1 / (r - lam_n), F = D (r + lam_n), Q = conj P, so 1 + F = 2 r D:
      sigma = +1,  alpha_h = 1 / (2 r_h),  Bv_n = B2_n = 2 B_n,
      den_h = 1 + 2 Re sum_n Q D P,  gamma_h = 2 / den_h,  b_h = 2 Re sum_n Q D B2 / den_h,
      t_h = s_h + b_h u_h with s_h = gamma_h Re sum_n (1 + F) Q x_n,
    which is `ssm_matrices`' fold: G_p = (1 + F) alpha P,  G = (1 + F) alpha (B2 - b P),  M = (1 + F) gamma Q.
    Diagonal (zero-order hold): F = exp(dt_h A_n), B_bar = (F - 1) B_n / A_n:
      sigma = -1,  alpha = 1,  Bv_n = B_n / A_n,  P = 0,  b = gamma = 0 (t = 0, no s pass).
    Returns F (H, N/2); P, Bv (N/2,); alpha, b, gamma (H,); sigma and rank1.
    """
    kernel = copy.deepcopy(kernel).cpu().double()
    with torch.no_grad():
        if isinstance(kernel, DPLRKernel):
            dt, lam, P, B, _ = kernel.continuous_parameters()
            r = 2 / dt                                        # (H, 1)
            lam, P, B2 = lam[0], P[0, 0], 2 * B[0]            # (N/2,) each, shared by the channels
            Q = P.conj()
            D = 1 / (r - lam)                                 # (H, N/2)
            denominator = 1 + 2 * (Q * D * P).sum(-1).real    # (H,)
            parts = dict(F=D * (r + lam), P=P, Bv=B2, alpha=1 / (2 * r[:, 0]),
                         b=2 * (Q * D * B2).sum(-1).real / denominator, gamma=2 / denominator)
            sigma, rank1 = 1.0, True
        elif isinstance(kernel, DiagonalKernel):
            dt, A, B, _ = kernel.continuous_parameters()
            A, B = A[0], B[0]                                 # (N/2,) each, shared by the channels
            zeros = torch.zeros(dt.shape[0], dtype=torch.float64)
            parts = dict(F=torch.exp(dt * A), P=torch.zeros_like(A), Bv=B / A, alpha=zeros + 1, b=zeros, gamma=zeros)
            sigma, rank1 = -1.0, False
        else:
            raise TypeError(f"no fast step for kernel {type(kernel).__name__}")
    constants = {name: value.detach().numpy() for name, value in parts.items()}
    constants["sigma"], constants["rank1"] = sigma, rank1
    return constants


def compact_plan(constants: dict, C: np.ndarray) -> CompactSSMPlan:
    """`compact_ssm`'s constants and C (H, N/2) laid out for the engine: rows per state index, inner axis the
    channels."""
    rows = [part.T for part in (constants["F"].real, constants["F"].imag, C.real, C.imag)]
    state = np.stack([constants["P"].real, constants["P"].imag, constants["Bv"].real, constants["Bv"].imag], axis=1)
    return CompactSSMPlan(constants["sigma"], np.stack([constants[name] for name in ("alpha", "b", "gamma")]),
                          state, np.stack(rows, axis=1))


def norm_plan(norm: torch.nn.Module) -> NormPlan:
    if isinstance(norm, TransposedLN):
        return NormPlan("transposed", _array(torch.cat([norm.m, norm.s])), 0.0)
    if isinstance(norm, ChannelLayerNorm):
        return NormPlan("layer", _array(torch.stack([norm.norm.weight, norm.norm.bias])), float(norm.norm.eps))
    raise TypeError(f"no fast step for norm {type(norm).__name__}")


def block_plan(block: ResidualBlock) -> S4Plan | FeedForwardPlan:
    norm, layer = norm_plan(block.norm), block.layer
    if isinstance(layer, S4Block):
        matrices = ssm_matrices(layer.kernel)
        rows = [part.T for name in ("M", "F", "G", "G_p", "C") for part in (matrices[name].real, matrices[name].imag)]
        compact = compact_plan(compact_ssm(layer.kernel), matrices["C"])
        return S4Plan(norm, np.stack(rows, axis=1), compact, bool(matrices["rank1"]),
                      _array(layer.D), _array(layer.output_linear.weight), _array(layer.output_linear.bias),
                      bool(layer.glu))
    if isinstance(layer, FeedForward):
        return FeedForwardPlan(norm, _array(layer.linear_in.weight), _array(layer.linear_in.bias),
                               _array(layer.linear_out.weight), _array(layer.linear_out.bias))
    raise TypeError(f"no fast step for layer {type(layer).__name__}")


@torch.no_grad()
def network_plan(model: SaShiMi) -> NetworkPlan:
    """The plan of `model`'s current weights; build it again after changing them."""
    backbone = model.backbone
    depth = len(backbone.down_pools)
    levels, channels = [], model.config.d_model
    for level in range(depth + 1):
        blocks = [block_plan(block) for block in backbone.stage_blocks(level)]
        if level == depth:
            levels.append(LevelPlan(channels, 0, blocks, None, None, None, None))
            break
        down, up = backbone.down_pools[level], backbone.up_pool(level)
        stride, inner = down.stride, down.linear.weight.shape[0]
        levels.append(LevelPlan(
            channels, stride, blocks,
            _array(down.linear.weight.view(inner, channels, stride).transpose(1, 2).reshape(inner, stride * channels)),
            _array(down.linear.bias),
            _array(up.linear.weight.view(channels, stride, inner).transpose(0, 1).reshape(stride * channels, inner)),
            _array(up.linear.bias.view(channels, stride).t().reshape(-1))))
        channels = inner
    final = backbone.final_norm
    program, lengths = step_program_table(backbone, model.config.total_pool)
    return NetworkPlan(
        _array(model.encoder.weight), levels, _array(final.weight), _array(final.bias), float(final.eps),
        _array(model.decoder.weight), _array(model.decoder.bias), program, lengths)
