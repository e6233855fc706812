"""The two structured sums behind S4 kernels (Cauchy for DPLR, Vandermonde for S4D), with backends.

The PyTorch path here is the reference: chunked over the length so that no (H, N, L) tensor is ever
stored, with hand-written backward passes. It must never fall back silently to another backend.
"""

import logging
import os
import torch

log = logging.getLogger(__name__)

# Elements of one (H, N, chunk) temporary: keeps the chunked path's peak memory near 32 MB
# (complex64) whatever the length.
CHUNK_ELEMENTS = 1 << 22


def _chunk_length(rows: int, state_half: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, rows * state_half))


def cauchy_conj_naive(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """r[..., h, k] = sum_n v[..., h, n] / (z[k] - w[h, n]) + conj(v) / (z[k] - conj(w)).

    Materialises (..., H, N, K): for tests and tiny sizes only.
    """
    vz = v.unsqueeze(-1)
    wz = w.unsqueeze(-1)
    return (vz / (z - wz) + vz.conj() / (z - wz.conj())).sum(-2)


def vandermonde_conj_naive(c: torch.Tensor, x: torch.Tensor, length: int) -> torch.Tensor:
    """K[..., h, l] = 2 Re sum_n c[..., h, n] exp(x[h, n] l), l < length. Materialises (H, N, L)."""
    positions = torch.arange(length, device=x.device, dtype=x.real.dtype)
    powers = torch.exp(x.unsqueeze(-1) * positions)
    return 2 * torch.einsum("...hn,hnl->...hl", c, powers).real


def _rows_first(v: torch.Tensor) -> torch.Tensor:
    """(..., H, N) -> (H, M, N) with M the flattened leading axes, for batched matmuls over H."""
    return v.reshape(-1, *v.shape[-2:]).transpose(0, 1)


def _rows_back(r: torch.Tensor, leading: torch.Size) -> torch.Tensor:
    """(H, M, K) -> (..., H, K)."""
    return r.transpose(0, 1).reshape(*leading, r.shape[0], r.shape[-1])


class _CauchyConj(torch.autograd.Function):
    """Chunked Cauchy sum with a recomputing backward; the reciprocals 1/(z - w) of a chunk are
    shared by all leading rows of v and contracted with batched matmuls over H.

    Gradients (PyTorch's conjugate-Wirtinger convention, g = upstream grad of r):
      dL/dv = sum_k g conj(1/(z-w)) + conj(g) / (z - conj(w))
      dL/dw = sum_k g conj(v/(z-w)^2) + conj(g) conj(v) / (z - conj(w))^2
    """

    @staticmethod
    def forward(ctx, v, z, w):
        ctx.save_for_backward(v, z, w)
        leading = v.shape[:-2]
        rows = _rows_first(v)                      # (H, M, N)
        rows_conj = rows.conj()
        step = _chunk_length(w.shape[0], w.shape[1])
        out = torch.empty(w.shape[0], rows.shape[1], z.shape[0], dtype=v.dtype, device=v.device)
        wz = w.unsqueeze(-1)                       # (H, N, 1)
        wz_conj = wz.conj()
        for start in range(0, z.shape[0], step):
            zc = z[start:start + step]
            out[..., start:start + step] = rows @ (1.0 / (zc - wz)) + rows_conj @ (1.0 / (zc - wz_conj))
        return _rows_back(out, leading)

    @staticmethod
    def backward(ctx, grad):
        v, z, w = ctx.saved_tensors
        rows = _rows_first(v)                      # (H, M, N)
        g_rows = _rows_first(grad)                 # (H, M, K)
        step = _chunk_length(w.shape[0], w.shape[1])
        grad_rows = torch.zeros_like(rows)
        grad_w_rows = torch.zeros_like(rows)
        wz = w.unsqueeze(-1)
        for start in range(0, z.shape[0], step):
            zc = z[start:start + step]
            g = g_rows[..., start:start + step]    # (H, M, K)
            inv = 1.0 / (zc - wz)                  # (H, N, K)
            inv_conj = 1.0 / (zc - wz.conj())
            grad_rows += g @ inv.conj().transpose(-1, -2) + g.conj() @ inv_conj.transpose(-1, -2)
            grad_w_rows += (g @ (inv * inv).conj().transpose(-1, -2)) * rows.conj()
            grad_w_rows += (g.conj() @ (inv_conj * inv_conj).transpose(-1, -2)) * rows.conj()
        grad_v = grad_rows.transpose(0, 1).reshape(v.shape)
        grad_w = grad_w_rows.sum(1)
        return grad_v, None, grad_w


class _VandermondeConj(torch.autograd.Function):
    """Chunked Vandermonde sum K = 2 Re sum_n c exp(x l), with a recomputing backward:

      dL/dc = 2 sum_l g_l conj(exp(x l))
      dL/dx = 2 sum_l g_l conj(c l exp(x l))     (g real; PyTorch's conjugate-Wirtinger convention)
    """

    @staticmethod
    def forward(ctx, c, x, length):
        ctx.save_for_backward(c, x)
        ctx.length = length
        leading = c.shape[:-2]
        rows = _rows_first(c)                      # (H, M, N)
        step = _chunk_length(x.shape[0], x.shape[1])
        out = torch.empty(x.shape[0], rows.shape[1], length, dtype=c.real.dtype, device=c.device)
        for start in range(0, length, step):
            positions = torch.arange(start, min(start + step, length), device=x.device, dtype=x.real.dtype)
            powers = torch.exp(x.unsqueeze(-1) * positions)  # (H, N, K)
            out[..., start:start + step] = 2 * (rows @ powers).real
        return _rows_back(out, leading)

    @staticmethod
    def backward(ctx, grad):
        c, x = ctx.saved_tensors
        length = ctx.length
        rows = _rows_first(c)
        g_rows = _rows_first(grad.to(c.real.dtype)).to(c.dtype)  # (H, M, L)
        step = _chunk_length(x.shape[0], x.shape[1])
        grad_rows = torch.zeros_like(rows)
        grad_x_rows = torch.zeros_like(rows)
        for start in range(0, length, step):
            positions = torch.arange(start, min(start + step, length), device=x.device, dtype=x.real.dtype)
            powers_conj = torch.exp(x.unsqueeze(-1) * positions).conj().transpose(-1, -2)  # (H, K, N)
            g = g_rows[..., start:start + step]
            grad_rows += 2 * (g @ powers_conj)
            grad_x_rows += 2 * ((g * positions) @ powers_conj)
        grad_c = grad_rows.transpose(0, 1).reshape(c.shape)
        grad_x = (grad_x_rows * rows.conj()).sum(1)
        return grad_c, grad_x, None


def cauchy_conj_torch(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Chunked PyTorch Cauchy sum; v (..., H, N), z (K,), w (H, N) complex -> (..., H, K). No gradient for z."""
    if z.requires_grad and torch.is_grad_enabled():
        raise ValueError("cauchy_conj_torch gives no gradient for the nodes z: pass z.detach() (S4's z are constants)")
    return _CauchyConj.apply(v, z, w)


def vandermonde_conj_torch(c: torch.Tensor, x: torch.Tensor, length: int) -> torch.Tensor:
    """Chunked PyTorch Vandermonde sum; c (..., H, N), x (H, N) complex -> real (..., H, length)."""
    return _VandermondeConj.apply(c, x, length)


BACKENDS = ("auto", "torch", "numba", "triton")
_announced: set[tuple[str, str]] = set()


def _triton_unavailable_reason(device: torch.device) -> str | None:
    """None when the Triton kernels can run on `device`, else why not."""
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if device.type not in ("cuda", "cpu") or (device.type == "cpu" and not interpret):
        return f"tensors are on {device.type}, and Triton needs CUDA (or CPU with TRITON_INTERPRET=1, for tests)"
    try:
        import study.s4.sums.triton_gpu as kernel_ops_triton
    except ImportError as error:
        return f"Triton kernels could not be imported: {error}"
    if device.type == "cpu" and not kernel_ops_triton.INTERPRETED:
        return "TRITON_INTERPRET=1 was set after the Triton kernels were imported; set it before Python starts"
    return None


def resolve_backend(name: str, device: torch.device) -> str:
    """Turn `auto|torch|numba|triton` into the backend that will run, logging the choice once.

    `auto` picks Triton on CUDA (PyTorch if Triton does not import, saying why) and the fused
    numba kernel on CPU. `triton` or `numba` where they cannot run is an error, never a fallback.
    """
    if name not in BACKENDS:
        raise ValueError(f"model.kernel_backend={name!r} is unknown: use one of {', '.join(BACKENDS)}")
    if name == "numba" and device.type != "cpu":
        raise RuntimeError(f"model.kernel_backend=numba runs on CPU tensors, got {device.type}; use auto or triton")
    reason = None
    if name == "auto":
        if device.type == "cpu":
            chosen = "numba"
        else:
            reason = _triton_unavailable_reason(device)
            chosen = "triton" if reason is None else "torch"
    elif name == "triton":
        reason = _triton_unavailable_reason(device)
        if reason is not None:
            raise RuntimeError(f"model.kernel_backend=triton cannot run: {reason}. "
                               "Use model.kernel_backend=torch or auto.")
        chosen = "triton"
    else:
        chosen = name
    if (name, chosen) not in _announced:
        _announced.add((name, chosen))
        log.info("S4 kernel backend: %s (asked: %s%s)", chosen, name, f"; {reason}" if reason else "")
    return chosen


def cauchy_conj(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Dispatching Cauchy sum (see cauchy_conj_naive for the formula)."""
    chosen = resolve_backend(backend, v.device)
    if chosen == "triton":
        from study.s4.sums.triton_gpu import cauchy_conj_triton
        return cauchy_conj_triton(v, z, w)
    if chosen == "numba":
        from study.s4.sums.numba_cpu import cauchy_conj_numba
        return cauchy_conj_numba(v, z, w)
    return cauchy_conj_torch(v, z, w)


def vandermonde_conj(c: torch.Tensor, x: torch.Tensor, length: int, backend: str = "auto") -> torch.Tensor:
    """Dispatching Vandermonde sum (see vandermonde_conj_naive); on CPU it runs the PyTorch path."""
    if resolve_backend(backend, c.device) == "triton":
        from study.s4.sums.triton_gpu import vandermonde_conj_triton
        return vandermonde_conj_triton(c, x, length)
    return vandermonde_conj_torch(c, x, length)
