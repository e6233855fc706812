"""Fused CPU Cauchy sum (numba): forward and backward without any (H, N, K) temporary.

The CPU twin of the Triton kernel; `kernel_ops.cauchy_conj_torch` is the reference it is tested
against. It must compute exactly the reference's formula and gradients, nothing more.
"""

import numba
import numpy as np
import torch

# With c = Re z - Re w, a = Im z - Im w, b = Im z + Im w, d1 = 1/(c^2 + a^2), d2 = 1/(c^2 + b^2):
#   1/(z - w) = (c - i a) d1,   1/(z - conj w) = (c - i b) d2,
#   p = c (d1 + d2),  q = a d1 - b d2,  s = c (d1 - d2),  t = a d1 + b d2.
#   r   = sum_n v/(z-w) + conj(v)/(z-conj w):   Re r += vr p + vi q,   Im r += vi s - vr t
#   dv  = sum_k g conj(1/(z-w)) + conj(g)/(z-conj w):   Re += gr p - gi t,   Im += gi s + gr q
#   dw  = sum_m conj(v_m) G_m,  G_m = sum_k g conj(1/(z-w))^2 + conj(g) (1/(z-conj w))^2


@numba.njit(fastmath=True, inline="always")
def _node_terms(z_re, z_im, wr, wi, p, q, s, t):
    """p, q, s, t of every node k for one (h, n); vectorised over k."""
    for k in range(z_re.shape[0]):
        c = z_re[k] - wr
        a = z_im[k] - wi
        b = z_im[k] + wi
        c2 = c * c
        d1 = 1.0 / (c2 + a * a)
        d2 = 1.0 / (c2 + b * b)
        p[k] = c * (d1 + d2)
        q[k] = a * d1 - b * d2
        s[k] = c * (d1 - d2)
        t[k] = a * d1 + b * d2


@numba.njit(parallel=True, fastmath=True, cache=True)
def _cauchy_forward(v_re, v_im, w_re, w_im, z_re, z_im, out_re, out_im):
    channels, rows, state = v_re.shape
    nodes = z_re.shape[0]
    for h in numba.prange(channels):
        p = np.empty(nodes, dtype=v_re.dtype)
        q = np.empty_like(p)
        s = np.empty_like(p)
        t = np.empty_like(p)
        for n in range(state):
            _node_terms(z_re, z_im, w_re[h, n], w_im[h, n], p, q, s, t)
            for m in range(rows):
                vr, vi = v_re[h, m, n], v_im[h, m, n]
                for k in range(nodes):
                    out_re[h, m, k] += vr * p[k] + vi * q[k]
                    out_im[h, m, k] += vi * s[k] - vr * t[k]


@numba.njit(parallel=True, fastmath=True, cache=True)
def _cauchy_backward(v_re, v_im, w_re, w_im, z_re, z_im, g_re, g_im, dv_re, dv_im, dw_re, dw_im):
    channels, rows, state = v_re.shape
    nodes = z_re.shape[0]
    for h in numba.prange(channels):
        p = np.empty(nodes, dtype=v_re.dtype)
        q = np.empty_like(p)
        s = np.empty_like(p)
        t = np.empty_like(p)
        e_sum_re = np.empty_like(p)   # Re(conj(1/(z-w))^2) + Re((1/(z-conj w))^2)
        e_dif_im = np.empty_like(p)   # Im((1/(z-conj w))^2) - Im(conj(1/(z-w))^2)
        e_sum_im = np.empty_like(p)
        e_dif_re = np.empty_like(p)
        for n in range(state):
            wr, wi = w_re[h, n], w_im[h, n]
            for k in range(nodes):  # the forward's node terms and the squared reciprocals, in one pass
                c = z_re[k] - wr
                a = z_im[k] - wi
                b = z_im[k] + wi
                c2 = c * c
                d1 = 1.0 / (c2 + a * a)
                d2 = 1.0 / (c2 + b * b)
                p[k] = c * (d1 + d2)
                q[k] = a * d1 - b * d2
                s[k] = c * (d1 - d2)
                t[k] = a * d1 + b * d2
                e1r = (c2 - a * a) * d1 * d1     # conj(1/(z-w))^2
                e1i = 2.0 * a * c * d1 * d1
                e2r = (c2 - b * b) * d2 * d2     # (1/(z-conj w))^2
                e2i = -2.0 * b * c * d2 * d2
                e_sum_re[k] = e1r + e2r
                e_dif_im[k] = e2i - e1i
                e_sum_im[k] = e1i + e2i
                e_dif_re[k] = e1r - e2r
            total_re = 0.0
            total_im = 0.0
            for m in range(rows):
                acc_re = 0.0
                acc_im = 0.0
                G_re = 0.0
                G_im = 0.0
                for k in range(nodes):
                    gr, gi = g_re[h, m, k], g_im[h, m, k]
                    acc_re += gr * p[k] - gi * t[k]
                    acc_im += gi * s[k] + gr * q[k]
                    G_re += gr * e_sum_re[k] + gi * e_dif_im[k]
                    G_im += gr * e_sum_im[k] + gi * e_dif_re[k]
                dv_re[h, m, n] = acc_re
                dv_im[h, m, n] = acc_im
                vr, vi = v_re[h, m, n], v_im[h, m, n]
                total_re += vr * G_re + vi * G_im      # conj(v) G
                total_im += vr * G_im - vi * G_re
            dw_re[h, n] = total_re
            dw_im[h, n] = total_im


def _parts(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    x = x.detach().resolve_conj()
    return np.ascontiguousarray(x.real.numpy()), np.ascontiguousarray(x.imag.numpy())


class _CauchyConjNumba(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, z, w):
        ctx.save_for_backward(v, z, w)
        leading = v.shape[:-2]
        rows = v.reshape(-1, *v.shape[-2:]).transpose(0, 1)  # (H, M, N)
        v_re, v_im = _parts(rows)
        w_re, w_im = _parts(w)
        z_re, z_im = _parts(z)
        out_re = np.zeros((rows.shape[0], rows.shape[1], z.shape[0]), dtype=v_re.dtype)
        out_im = np.zeros_like(out_re)
        _cauchy_forward(v_re, v_im, w_re, w_im, z_re, z_im, out_re, out_im)
        out = torch.complex(torch.from_numpy(out_re), torch.from_numpy(out_im))  # (H, M, K)
        return out.transpose(0, 1).reshape(*leading, rows.shape[0], z.shape[0])

    @staticmethod
    def backward(ctx, grad):
        v, z, w = ctx.saved_tensors
        rows = v.reshape(-1, *v.shape[-2:]).transpose(0, 1)
        g_rows = grad.reshape(-1, *grad.shape[-2:]).transpose(0, 1)
        v_re, v_im = _parts(rows)
        w_re, w_im = _parts(w)
        z_re, z_im = _parts(z)
        g_re, g_im = _parts(g_rows.to(v.dtype))
        dv_re, dv_im = np.zeros_like(v_re), np.zeros_like(v_re)
        dw_re, dw_im = np.zeros_like(w_re), np.zeros_like(w_re)
        _cauchy_backward(v_re, v_im, w_re, w_im, z_re, z_im, g_re, g_im, dv_re, dv_im, dw_re, dw_im)
        grad_v = torch.complex(torch.from_numpy(dv_re), torch.from_numpy(dv_im)).transpose(0, 1).reshape(v.shape)
        grad_w = torch.complex(torch.from_numpy(dw_re), torch.from_numpy(dw_im))
        return grad_v, None, grad_w


def cauchy_conj_numba(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Fused CPU Cauchy sum; same contract as kernel_ops.cauchy_conj_torch (CPU tensors only)."""
    if v.device.type != "cpu":
        raise RuntimeError(f"the numba Cauchy kernel runs on CPU tensors, got {v.device}; "
                           "use model.kernel_backend=auto, torch or triton")
    return _CauchyConjNumba.apply(v, z, w)
