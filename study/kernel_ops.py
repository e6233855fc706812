"""The two structured sums behind S4 kernels (Cauchy for DPLR, Vandermonde for S4D), with backends.

The PyTorch path here is the reference: chunked over the length so that no (H, N, L) tensor is ever
stored, with hand-written backward passes. It must never fall back silently to another backend.
"""

import logging
import os
import torch

log = logging.getLogger(__name__)

# Elements of one (..., H, N, chunk) temporary: keeps the chunked path's peak memory near 64 MB
# (complex64) whatever the length.
CHUNK_ELEMENTS = 1 << 23


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


class _CauchyConj(torch.autograd.Function):
    """Chunked Cauchy sum with a recomputing backward.

    Gradients (PyTorch's conjugate-Wirtinger convention, g = upstream grad of r):
      dL/dv = sum_k g conj(1/(z-w)) + conj(g) / (z - conj(w))
      dL/dw = sum_k g conj(v/(z-w)^2) + conj(g) conj(v) / (z - conj(w))^2
    """

    @staticmethod
    def forward(ctx, v, z, w):
        ctx.save_for_backward(v, z, w)
        rows = v.numel() // v.shape[-1]
        step = _chunk_length(rows, v.shape[-1])
        out = torch.empty(*v.shape[:-1], z.shape[0], dtype=v.dtype, device=v.device)
        vz = v.unsqueeze(-1)
        vz_conj = vz.conj()
        wz = w.unsqueeze(-1)
        wz_conj = wz.conj()
        for start in range(0, z.shape[0], step):
            zc = z[start:start + step]
            out[..., start:start + step] = (vz / (zc - wz) + vz_conj / (zc - wz_conj)).sum(-2)
        return out

    @staticmethod
    def backward(ctx, grad):
        v, z, w = ctx.saved_tensors
        rows = v.numel() // v.shape[-1]
        step = _chunk_length(rows, v.shape[-1])
        grad_v = torch.zeros_like(v)
        grad_w_full = torch.zeros_like(v)  # (..., H, N), reduced to w's shape at the end
        vz = v.unsqueeze(-1)
        wz = w.unsqueeze(-1)
        for start in range(0, z.shape[0], step):
            zc = z[start:start + step]
            g = grad[..., start:start + step].unsqueeze(-2)  # (..., H, 1, K)
            inv = 1.0 / (zc - wz)  # (H, N, K)
            inv_conj = 1.0 / (zc - wz.conj())
            grad_v += (g * inv.conj() + g.conj() * inv_conj).sum(-1)
            grad_w_full += (g * (vz * inv * inv).conj() + g.conj() * vz.conj() * inv_conj * inv_conj).sum(-1)
        grad_w = grad_w_full.reshape(-1, *w.shape).sum(0)
        return grad_v, None, grad_w


class _VandermondeConj(torch.autograd.Function):
    """Chunked Vandermonde sum K = 2 Re sum_n c exp(x l), with a recomputing backward.

      dL/dc = 2 sum_l g_l conj(exp(x l))
      dL/dx = 2 sum_l g_l conj(c l exp(x l))     (g real; PyTorch's conjugate-Wirtinger convention)
    """

    @staticmethod
    def forward(ctx, c, x, length):
        ctx.save_for_backward(c, x)
        ctx.length = length
        rows = c.numel() // c.shape[-1]
        step = _chunk_length(max(rows, x.shape[0]), c.shape[-1])
        out = torch.empty(*c.shape[:-1], length, dtype=c.real.dtype, device=c.device)
        for start in range(0, length, step):
            positions = torch.arange(start, min(start + step, length), device=x.device, dtype=x.real.dtype)
            powers = torch.exp(x.unsqueeze(-1) * positions)  # (H, N, K)
            out[..., start:start + step] = 2 * torch.einsum("...hn,hnl->...hl", c, powers).real
        return out

    @staticmethod
    def backward(ctx, grad):
        c, x = ctx.saved_tensors
        length = ctx.length
        rows = c.numel() // c.shape[-1]
        step = _chunk_length(max(rows, x.shape[0]), c.shape[-1])
        grad_c = torch.zeros_like(c)
        grad_x_full = torch.zeros_like(c)
        grad = grad.to(c.real.dtype)
        for start in range(0, length, step):
            positions = torch.arange(start, min(start + step, length), device=x.device, dtype=x.real.dtype)
            powers_conj = torch.exp(x.unsqueeze(-1) * positions).conj()  # (H, N, K)
            g = grad[..., start:start + step]  # (..., H, K)
            grad_c += 2 * torch.einsum("...hl,hnl->...hn", g.to(c.dtype), powers_conj)
            grad_x_full += 2 * c.conj() * torch.einsum("...hl,hnl->...hn", (g * positions).to(c.dtype), powers_conj)
        grad_x = grad_x_full.reshape(-1, *x.shape).sum(0)
        return grad_c, grad_x, None


def cauchy_conj_torch(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Chunked PyTorch Cauchy sum; v (..., H, N), z (K,), w (H, N) complex -> (..., H, K). No gradient for z."""
    if z.requires_grad and torch.is_grad_enabled():
        raise ValueError("cauchy_conj_torch gives no gradient for the nodes z: pass z.detach() (S4's z are constants)")
    return _CauchyConj.apply(v, z, w)


def vandermonde_conj_torch(c: torch.Tensor, x: torch.Tensor, length: int) -> torch.Tensor:
    """Chunked PyTorch Vandermonde sum; c (..., H, N), x (H, N) complex -> real (..., H, length)."""
    return _VandermondeConj.apply(c, x, length)


BACKENDS = ("auto", "torch", "triton")
_announced: set[tuple[str, str]] = set()


def _triton_unavailable_reason(device: torch.device) -> str | None:
    """None when the Triton kernels can run on `device`, else why not."""
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if device.type not in ("cuda", "cpu") or (device.type == "cpu" and not interpret):
        return f"tensors are on {device.type}, and Triton needs CUDA (or CPU with TRITON_INTERPRET=1, for tests)"
    try:
        import study.kernel_ops_triton as kernel_ops_triton
    except ImportError as error:
        return f"Triton kernels could not be imported: {error}"
    if device.type == "cpu" and not kernel_ops_triton.INTERPRETED:
        return "TRITON_INTERPRET=1 was set after the Triton kernels were imported; set it before Python starts"
    return None


def resolve_backend(name: str, device: torch.device) -> str:
    """Turn `auto|torch|triton` into the backend that will run, logging the choice once.

    `auto` picks Triton on CUDA when it imports, else PyTorch; `triton` where it cannot run is an
    error, never a fallback.
    """
    if name not in BACKENDS:
        raise ValueError(f"model.kernel_backend={name!r} is unknown: use one of {', '.join(BACKENDS)}")
    reason = _triton_unavailable_reason(device) if name in ("auto", "triton") else "asked for torch"
    if name == "triton" and reason is not None:
        raise RuntimeError(f"model.kernel_backend=triton cannot run: {reason}. Use model.kernel_backend=torch or auto.")
    if name == "auto" and device.type != "cuda":
        reason = reason or f"tensors are on {device.type}"
    chosen = "triton" if reason is None else "torch"
    key = (name, chosen)
    if key not in _announced:
        _announced.add(key)
        why = "" if chosen == "triton" else f" ({reason})"
        log.info("S4 kernel backend: %s%s", chosen, why)
    return chosen


def cauchy_conj(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Dispatching Cauchy sum (see cauchy_conj_naive for the formula)."""
    if resolve_backend(backend, v.device) == "triton":
        from study.kernel_ops_triton import cauchy_conj_triton
        return cauchy_conj_triton(v, z, w)
    return cauchy_conj_torch(v, z, w)


def vandermonde_conj(c: torch.Tensor, x: torch.Tensor, length: int, backend: str = "auto") -> torch.Tensor:
    """Dispatching Vandermonde sum (see vandermonde_conj_naive for the formula)."""
    if resolve_backend(backend, c.device) == "triton":
        from study.kernel_ops_triton import vandermonde_conj_triton
        return vandermonde_conj_triton(c, x, length)
    return vandermonde_conj_torch(c, x, length)

