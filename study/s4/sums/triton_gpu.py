"""Triton kernels for the two structured sums of S4 (Cauchy, Vandermonde), forward and backward.

Fused over the state size N so that no (H, N, L) tensor is ever stored; the PyTorch reference they
must match lives in study.s4.sums.reference. They never run in place of another backend without being asked.

Layout: every program owns one head h, a group of leading rows (Woodbury combos, channels) and one
block of K (or L) positions, keeps them in registers and loops over n < N, computing each basis
value 1/(z - w) or exp(x l) once for all rows of the group. Complex numbers travel as interleaved
(real, imag) float32 pairs (`torch.view_as_real`). Backward passes reduce over K (or L) inside
each program and write one partial sum per (split, row, h, n); the few splits are summed in
PyTorch, so results are deterministic (no atomics).
"""

import math
import operator
import os

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

# Decided when this module is imported, as triton.jit itself decides: with TRITON_INTERPRET=1 the
# kernels run in triton's NumPy interpreter (CPU tensors work; slow, for tests).
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

# Positions of K (Cauchy) or L (Vandermonde) per program and per loop step.
CAUCHY_BLOCK = 128
VANDERMONDE_BLOCK = 256
# Rows of the leading batch (Woodbury combos, channels) handled together, sharing each basis value.
MAX_BLOCK_ROWS = 8
# Backward: how many programs to aim for; the K (or L) axis is split into that many / H pieces.
TARGET_PROGRAMS = 2048
NUM_WARPS = 4

# exp(x l) = exp(Re x l) (cos + i sin)(Im x l), each factor computed directly from l, never by
# repeated multiplication. tl.exp (ex2.approx) loses relative accuracy only where Re(x) l is large
# and negative, i.e. where the term is negligible.
if INTERPRETED:  # NumPy's cos/sin; libdevice does not run in the interpreter
    @triton.jit
    def _cos(x):
        return tl.cos(x)

    @triton.jit
    def _sin(x):
        return tl.sin(x)
else:
    from triton.language.extra import libdevice

    # libdevice's cosf/sinf reduce large arguments exactly (phases reach ~1e6 rad at L = 131072).
    @triton.jit
    def _cos(x):
        return libdevice.cos(x)

    @triton.jit
    def _sin(x):
        return libdevice.sin(x)


@triton.jit
def _cauchy_basis(z_re, z_im, w_re, w_im, mask):
    """a = 1/(z - w) and b = 1/(z - conj w) as (a_re, a_im, b_re, b_im); masked lanes give finite junk."""
    d_re = z_re - w_re
    d_re2 = d_re * d_re
    minus_im = z_im - w_im  # Im(z - w)
    plus_im = z_im + w_im  # Im(z - conj w)
    inv_minus = 1.0 / tl.where(mask, d_re2 + minus_im * minus_im, 1.0)
    inv_plus = 1.0 / tl.where(mask, d_re2 + plus_im * plus_im, 1.0)
    a_re = d_re * inv_minus
    a_im = -minus_im * inv_minus
    b_re = d_re * inv_plus
    b_im = -plus_im * inv_plus
    return a_re, a_im, b_re, b_im


@triton.jit
def _cauchy_forward_kernel(
    v_ptr, z_ptr, w_ptr, out_ptr, rows, H, K,
    N: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    """out[r, h, k] = sum_n v[r,h,n] / (z_k - w[h,n]) + conj(v[r,h,n]) / (z_k - conj w[h,n])."""
    k = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    h = tl.program_id(1)
    r = tl.program_id(2) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    k_mask = k < K
    r_mask = r < rows
    z_re = tl.load(z_ptr + 2 * k, mask=k_mask, other=0.0)
    z_im = tl.load(z_ptr + 2 * k + 1, mask=k_mask, other=0.0)
    v_row = (r.to(tl.int64) * H + h) * N  # (BLOCK_ROWS,)
    acc_re = tl.zeros((BLOCK_ROWS, BLOCK), dtype=tl.float32)
    acc_im = tl.zeros((BLOCK_ROWS, BLOCK), dtype=tl.float32)
    for n in range(N):
        w_re = tl.load(w_ptr + 2 * (h * N + n))
        w_im = tl.load(w_ptr + 2 * (h * N + n) + 1)
        v_re = tl.load(v_ptr + 2 * (v_row + n), mask=r_mask, other=0.0)[:, None]
        v_im = tl.load(v_ptr + 2 * (v_row + n) + 1, mask=r_mask, other=0.0)[:, None]
        a_re, a_im, b_re, b_im = _cauchy_basis(z_re, z_im, w_re, w_im, k_mask)
        # v a + conj(v) b
        acc_re += v_re * (a_re + b_re)[None, :] - v_im * (a_im - b_im)[None, :]
        acc_im += v_re * (a_im + b_im)[None, :] + v_im * (a_re - b_re)[None, :]
    out = 2 * ((r.to(tl.int64) * H + h) * K)[:, None] + 2 * k[None, :]
    mask = r_mask[:, None] & k_mask[None, :]
    tl.store(out_ptr + out, acc_re, mask=mask)
    tl.store(out_ptr + out + 1, acc_im, mask=mask)


@triton.jit
def _cauchy_backward_kernel(
    grad_ptr, z_ptr, w_ptr, sums_ptr, rows, H, K,
    N: tl.constexpr, CHUNKS: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    """Partial sums over this program's K range, per (r, h, n):
      S_v = sum_k g conj(a) + conj(g) b,      S_w = sum_k g conj(a)^2 + conj(g) b^2,
    a = 1/(z_k - w), b = 1/(z_k - conj w); then grad_v = S_v and grad_w = sum_r conj(v) S_w.
    sums is (splits, 2, rows, H, N) complex.
    """
    split = tl.program_id(0)
    h = tl.program_id(1)
    r = tl.program_id(2) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    r_mask = r < rows
    g_row = ((r.to(tl.int64) * H + h) * K)[:, None]  # (BLOCK_ROWS, 1)
    sums_v = ((split * 2 * rows + r.to(tl.int64)) * H + h) * N  # (BLOCK_ROWS,)
    sums_w = (((split * 2 + 1) * rows + r.to(tl.int64)) * H + h) * N
    for n in range(N):
        w_re = tl.load(w_ptr + 2 * (h * N + n))
        w_im = tl.load(w_ptr + 2 * (h * N + n) + 1)
        v_re = tl.zeros((BLOCK_ROWS, BLOCK), dtype=tl.float32)
        v_im = tl.zeros((BLOCK_ROWS, BLOCK), dtype=tl.float32)
        s_re = tl.zeros((BLOCK_ROWS, BLOCK), dtype=tl.float32)
        s_im = tl.zeros((BLOCK_ROWS, BLOCK), dtype=tl.float32)
        for chunk in range(CHUNKS):
            k = (split * CHUNKS + chunk) * BLOCK + tl.arange(0, BLOCK)
            k_mask = k < K
            z_re = tl.load(z_ptr + 2 * k, mask=k_mask, other=0.0)
            z_im = tl.load(z_ptr + 2 * k + 1, mask=k_mask, other=0.0)
            g_mask = r_mask[:, None] & k_mask[None, :]
            g_re = tl.load(grad_ptr + 2 * (g_row + k[None, :]), mask=g_mask, other=0.0)
            g_im = tl.load(grad_ptr + 2 * (g_row + k[None, :]) + 1, mask=g_mask, other=0.0)
            a_re, a_im, b_re, b_im = _cauchy_basis(z_re, z_im, w_re, w_im, k_mask)
            # g conj(p) + conj(g) q = (g_re (p+q)_re + g_im (p+q)_im) + i (g_im (p-q)_re - g_re (p-q)_im)
            v_re += g_re * (a_re + b_re)[None, :] + g_im * (a_im + b_im)[None, :]
            v_im += g_im * (a_re - b_re)[None, :] - g_re * (a_im - b_im)[None, :]
            a2_re = a_re * a_re - a_im * a_im
            a2_im = 2 * a_re * a_im
            b2_re = b_re * b_re - b_im * b_im
            b2_im = 2 * b_re * b_im
            s_re += g_re * (a2_re + b2_re)[None, :] + g_im * (a2_im + b2_im)[None, :]
            s_im += g_im * (a2_re - b2_re)[None, :] - g_re * (a2_im - b2_im)[None, :]
        tl.store(sums_ptr + 2 * (sums_v + n), tl.sum(v_re, axis=1), mask=r_mask)
        tl.store(sums_ptr + 2 * (sums_v + n) + 1, tl.sum(v_im, axis=1), mask=r_mask)
        tl.store(sums_ptr + 2 * (sums_w + n), tl.sum(s_re, axis=1), mask=r_mask)
        tl.store(sums_ptr + 2 * (sums_w + n) + 1, tl.sum(s_im, axis=1), mask=r_mask)


@triton.jit
def _vandermonde_forward_kernel(
    c_ptr, x_ptr, out_ptr, rows, H, L,
    N: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    """out[r, h, l] = 2 Re sum_n c[r,h,n] exp(x[h,n] l), with exp(x l) = exp(Re x l) (cos + i sin)(Im x l)."""
    l = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    h = tl.program_id(1)
    r = tl.program_id(2) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    l_mask = l < L
    r_mask = r < rows
    position = l.to(tl.float32)
    c_row = (r.to(tl.int64) * H + h) * N
    acc = tl.zeros((BLOCK_ROWS, BLOCK), dtype=tl.float32)
    for n in range(N):
        x_re = tl.load(x_ptr + 2 * (h * N + n))
        x_im = tl.load(x_ptr + 2 * (h * N + n) + 1)
        c_re = tl.load(c_ptr + 2 * (c_row + n), mask=r_mask, other=0.0)[:, None]
        c_im = tl.load(c_ptr + 2 * (c_row + n) + 1, mask=r_mask, other=0.0)[:, None]
        magnitude = tl.where(l_mask, tl.exp(x_re * position), 0.0)
        phase = x_im * position
        e_re = magnitude * _cos(phase)
        e_im = magnitude * _sin(phase)
        acc += c_re * e_re[None, :] - c_im * e_im[None, :]
    out = ((r.to(tl.int64) * H + h) * L)[:, None] + l[None, :]
    tl.store(out_ptr + out, 2 * acc, mask=r_mask[:, None] & l_mask[None, :])


@triton.jit
def _vandermonde_backward_kernel(
    grad_ptr, x_ptr, sums_ptr, rows, H, L,
    N: tl.constexpr, CHUNKS: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    """Partial sums over this program's L range, per (r, h, n), with g real:
      S_c = sum_l g conj(exp(x l)),      S_x = sum_l g l conj(exp(x l));
    then grad_c = 2 S_c and grad_x = 2 sum_r conj(c) S_x. sums is (splits, 2, rows, H, N) complex.
    """
    split = tl.program_id(0)
    h = tl.program_id(1)
    r = tl.program_id(2) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    r_mask = r < rows
    g_row = ((r.to(tl.int64) * H + h) * L)[:, None]
    sums_c = ((split * 2 * rows + r.to(tl.int64)) * H + h) * N
    sums_x = (((split * 2 + 1) * rows + r.to(tl.int64)) * H + h) * N
    for n in range(N):
        x_re = tl.load(x_ptr + 2 * (h * N + n))
        x_im = tl.load(x_ptr + 2 * (h * N + n) + 1)
        c_re = tl.zeros((BLOCK_ROWS, BLOCK), dtype=tl.float32)
        c_im = tl.zeros((BLOCK_ROWS, BLOCK), dtype=tl.float32)
        x_sum_re = tl.zeros((BLOCK_ROWS, BLOCK), dtype=tl.float32)
        x_sum_im = tl.zeros((BLOCK_ROWS, BLOCK), dtype=tl.float32)
        for chunk in range(CHUNKS):
            l = (split * CHUNKS + chunk) * BLOCK + tl.arange(0, BLOCK)
            l_mask = l < L
            position = l.to(tl.float32)
            g = tl.load(grad_ptr + g_row + l[None, :], mask=r_mask[:, None] & l_mask[None, :], other=0.0)
            magnitude = tl.where(l_mask, tl.exp(x_re * position), 0.0)
            phase = x_im * position
            e_re = (magnitude * _cos(phase))[None, :]
            e_im = (magnitude * _sin(phase))[None, :]
            c_re += g * e_re
            c_im -= g * e_im
            g_position = g * position[None, :]
            x_sum_re += g_position * e_re
            x_sum_im -= g_position * e_im
        tl.store(sums_ptr + 2 * (sums_c + n), tl.sum(c_re, axis=1), mask=r_mask)
        tl.store(sums_ptr + 2 * (sums_c + n) + 1, tl.sum(c_im, axis=1), mask=r_mask)
        tl.store(sums_ptr + 2 * (sums_x + n), tl.sum(x_sum_re, axis=1), mask=r_mask)
        tl.store(sums_ptr + 2 * (sums_x + n) + 1, tl.sum(x_sum_im, axis=1), mask=r_mask)


def _check_device(function: str, *tensors: torch.Tensor) -> None:
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"{function}: inputs are on several devices {sorted(map(str, devices))}; move them to one")
    device = devices.pop()
    if device.type == "cuda" or (device.type == "cpu" and INTERPRETED):
        return
    raise RuntimeError(
        f"{function} got {device.type} tensors: the Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 "
        "set before triton is imported (tests only, slow). Use model.kernel_backend=torch on this device."
    )


def _check_complex64(function: str, **tensors: torch.Tensor) -> None:
    for name, tensor in tensors.items():
        if tensor.dtype != torch.complex64:
            raise TypeError(
                f"{function} needs complex64 {name}, got {tensor.dtype}: cast with .to(torch.complex64), "
                "or use model.kernel_backend=torch for other precisions"
            )


def _as_real(tensor: torch.Tensor) -> torch.Tensor:
    """Complex (...,) -> contiguous float (..., 2), resolving lazy conjugation and negation."""
    return torch.view_as_real(tensor.resolve_conj().resolve_neg().contiguous())


def _row_blocks(rows: int) -> tuple[int, int]:
    """(BLOCK_ROWS, number of row groups) for `rows` leading rows."""
    block_rows = min(triton.next_power_of_2(rows), MAX_BLOCK_ROWS)
    return block_rows, triton.cdiv(rows, block_rows)


def _splits(blocks: int, programs_per_split: int) -> tuple[int, int]:
    """(splits, chunks per split): cut `blocks` blocks into splits of `chunks` consecutive blocks.

    `chunks` is a compile-time constant, so it is rounded up to a power of two to bound recompiles.
    """
    wanted = max(1, min(blocks, triton.cdiv(TARGET_PROGRAMS, programs_per_split)))
    chunks = triton.next_power_of_2(triton.cdiv(blocks, wanted))
    return triton.cdiv(blocks, chunks), chunks


def _cauchy_forward(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    H, N = w.shape
    K = z.shape[0]
    rows = math.prod(v.shape[:-2])
    out = torch.empty(*v.shape[:-1], K, dtype=torch.complex64, device=v.device)
    if out.numel() == 0:
        return out.zero_()
    block_rows, row_groups = _row_blocks(rows)
    grid = (triton.cdiv(K, CAUCHY_BLOCK), H, row_groups)
    _cauchy_forward_kernel[grid](
        _as_real(v), _as_real(z), _as_real(w), torch.view_as_real(out), rows, H, K,
        N=N, BLOCK_ROWS=block_rows, BLOCK=CAUCHY_BLOCK, num_warps=NUM_WARPS,
    )
    return out


def _cauchy_backward_sums(grad: torch.Tensor, z: torch.Tensor, w: torch.Tensor, rows: int) -> torch.Tensor:
    """(2, rows, H, N) complex: S_v and S_w of _cauchy_backward_kernel, summed over K."""
    H, N = w.shape
    K = z.shape[0]
    block_rows, row_groups = _row_blocks(rows)
    splits, chunks = _splits(triton.cdiv(K, CAUCHY_BLOCK), H * row_groups)
    sums = torch.empty(splits, 2, rows, H, N, 2, dtype=torch.float32, device=w.device)
    _cauchy_backward_kernel[(splits, H, row_groups)](
        _as_real(grad), _as_real(z), _as_real(w), sums, rows, H, K,
        N=N, CHUNKS=chunks, BLOCK_ROWS=block_rows, BLOCK=CAUCHY_BLOCK, num_warps=NUM_WARPS,
    )
    return torch.view_as_complex(sums.sum(0))


def _vandermonde_forward(c: torch.Tensor, x: torch.Tensor, length: int) -> torch.Tensor:
    H, N = x.shape
    rows = math.prod(c.shape[:-2])
    out = torch.empty(*c.shape[:-1], length, dtype=torch.float32, device=c.device)
    if out.numel() == 0:
        return out.zero_()
    block_rows, row_groups = _row_blocks(rows)
    grid = (triton.cdiv(length, VANDERMONDE_BLOCK), H, row_groups)
    _vandermonde_forward_kernel[grid](
        _as_real(c), _as_real(x), out, rows, H, length,
        N=N, BLOCK_ROWS=block_rows, BLOCK=VANDERMONDE_BLOCK, num_warps=NUM_WARPS,
    )
    return out


def _vandermonde_backward_sums(grad: torch.Tensor, x: torch.Tensor, rows: int, length: int) -> torch.Tensor:
    """(2, rows, H, N) complex: S_c and S_x of _vandermonde_backward_kernel, summed over L."""
    H, N = x.shape
    block_rows, row_groups = _row_blocks(rows)
    splits, chunks = _splits(triton.cdiv(length, VANDERMONDE_BLOCK), H * row_groups)
    sums = torch.empty(splits, 2, rows, H, N, 2, dtype=torch.float32, device=x.device)
    _vandermonde_backward_kernel[(splits, H, row_groups)](
        grad.to(torch.float32).contiguous(), _as_real(x), sums, rows, H, length,
        N=N, CHUNKS=chunks, BLOCK_ROWS=block_rows, BLOCK=VANDERMONDE_BLOCK, num_warps=NUM_WARPS,
    )
    return torch.view_as_complex(sums.sum(0))


class _CauchyConjTriton(torch.autograd.Function):
    """Triton Cauchy sum; the backward recomputes 1/(z-w) per block (formulas in study.s4.sums.reference)."""

    @staticmethod
    def forward(ctx, v, z, w):
        ctx.save_for_backward(v, z, w)
        return _cauchy_forward(v, z, w)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        v, z, w = ctx.saved_tensors
        need_v, _, need_w = ctx.needs_input_grad
        if not (need_v or need_w) or v.numel() == 0:
            return (torch.zeros_like(v) if need_v else None), None, (torch.zeros_like(w) if need_w else None)
        rows = math.prod(v.shape[:-2])
        sums = _cauchy_backward_sums(grad, z, w, rows)  # (2, rows, H, N)
        grad_v = sums[0].reshape(v.shape) if need_v else None
        grad_w = (v.reshape(rows, *w.shape).conj() * sums[1]).sum(0) if need_w else None
        return grad_v, None, grad_w


class _VandermondeConjTriton(torch.autograd.Function):
    """Triton Vandermonde sum; the backward recomputes exp(x l) per block (formulas in study.s4.sums.reference)."""

    @staticmethod
    def forward(ctx, c, x, length):
        ctx.save_for_backward(c, x)
        ctx.length = length
        return _vandermonde_forward(c, x, length)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        c, x = ctx.saved_tensors
        need_c, need_x, _ = ctx.needs_input_grad
        if not (need_c or need_x) or c.numel() == 0 or ctx.length == 0:
            return (torch.zeros_like(c) if need_c else None), (torch.zeros_like(x) if need_x else None), None
        rows = math.prod(c.shape[:-2])
        sums = _vandermonde_backward_sums(grad, x, rows, ctx.length)  # (2, rows, H, N)
        grad_c = 2 * sums[0].reshape(c.shape) if need_c else None
        grad_x = 2 * (c.reshape(rows, *x.shape).conj() * sums[1]).sum(0) if need_x else None
        return grad_c, grad_x, None


def cauchy_conj_triton(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Triton Cauchy sum; v (..., H, N), z (K,), w (H, N) complex64 -> (..., H, K). No gradient for z."""
    name = "cauchy_conj_triton"
    _check_complex64(name, v=v, z=z, w=w)
    if z.dim() != 1 or w.dim() != 2 or v.dim() < 2 or tuple(v.shape[-2:]) != tuple(w.shape):
        raise ValueError(
            f"{name} needs v (..., H, N), z (K,), w (H, N) with v's last two dims equal to w's; "
            f"got v {tuple(v.shape)}, z {tuple(z.shape)}, w {tuple(w.shape)}"
        )
    _check_device(name, v, z, w)
    if z.requires_grad and torch.is_grad_enabled():
        raise ValueError(f"{name} gives no gradient for the nodes z: pass z.detach() (S4's z are constants)")
    return _CauchyConjTriton.apply(v, z, w)


def vandermonde_conj_triton(c: torch.Tensor, x: torch.Tensor, length: int) -> torch.Tensor:
    """Triton Vandermonde sum; c (..., H, N), x (H, N) complex64 -> real (..., H, length)."""
    name = "vandermonde_conj_triton"
    _check_complex64(name, c=c, x=x)
    if x.dim() != 2 or c.dim() < 2 or tuple(c.shape[-2:]) != tuple(x.shape):
        raise ValueError(
            f"{name} needs c (..., H, N) and x (H, N) with c's last two dims equal to x's; "
            f"got c {tuple(c.shape)}, x {tuple(x.shape)}"
        )
    try:
        steps = operator.index(length)
    except TypeError:
        steps = -1
    if steps < 0:
        raise ValueError(f"{name} needs a length that is an int >= 0, got {length!r}")
    _check_device(name, c, x)
    return _VandermondeConjTriton.apply(c, x, steps)
