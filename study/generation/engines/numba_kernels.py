"""Vectorised numba kernels of the CPU generation engine: linear layers, norms, GELU, GLU (the S4
step is in `numba_ssm`).

Linear weights come as float32, bfloat16 (the upper 16 bits of a float32, in uint16) or int8 with
one scale per output row, widened in registers; every sum accumulates in float32.

Each works on a batch of streams held in float32 rows and is checked through the engine against the
model; they never allocate inside their loops and never call libm in a loop they mean to vectorise.
"""

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from study.generation.engines.numba_math import FASTMATH, INV_SQRT2, erf_approx, tanh_approx

NORM_TRANSPOSED, NORM_LAYER = 0, 1

# -- batched building blocks --------------------------------------------------------------------------
# W (batch, work) and S (batch, state_size) are float32 rows per stream; P is the flat parameter array.
# Every inner loop indexes a unit-stride view with the loop variable: numba's negative-index wraparound
# on `offset + i` and Python's zero-division checks (error_model="numpy" drops them) block vectorisation.
JIT = dict(fastmath=FASTMATH, error_model="numpy", cache=True)
PREFETCH_TILES = 2          # software prefetch distance in the linear layers, in 4-row tiles


@intrinsic
def prefetch(typingctx, array, index):
    """llvm.prefetch(&array[index], read, keep in all cache levels): starts a cache-line load early."""
    signature = types.void(array, index)

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        address = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
        int32 = ir.IntType(32)
        function = builder.module.declare_intrinsic(
            "llvm.prefetch", (), ir.FunctionType(ir.VoidType(), [address.type, int32, int32, int32]))
        builder.call(function, [address, ir.Constant(int32, 0), ir.Constant(int32, 3), ir.Constant(int32, 1)])
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def widen(typingctx, value):
    """A stored weight as float32: float32 as is, a bfloat16 (uint16) shifted into a float32's upper half,
    an int8 converted (its row's scale is applied to the sum)."""
    if value == types.int8:
        def codegen(context, builder, sig, args):
            return builder.sitofp(args[0], ir.FloatType())
    elif isinstance(value, types.Float):
        def codegen(context, builder, sig, args):
            return context.cast(builder, args[0], sig.args[0], types.float32)
    elif value == types.uint16:
        def codegen(context, builder, sig, args):
            wide = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
            return builder.bitcast(wide, ir.FloatType())
    else:
        return None
    return types.float32(value), codegen


def to_bfloat16(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), as the uint16 upper halves."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def to_int8_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 matrix, float32 scale per row): symmetric, round to nearest, |w| max of a row -> 127."""
    matrix = np.asarray(matrix, dtype=np.float64)
    scales = np.abs(matrix).max(axis=1) / 127.0
    scales[scales == 0] = 1.0
    quantized = np.clip(np.rint(matrix / scales[:, None]), -127, 127).astype(np.int8)
    return quantized, scales.astype(np.float32)


def from_bfloat16(values: np.ndarray) -> np.ndarray:
    """bfloat16 (uint16 upper halves) widened to float32 exactly."""
    return (values.astype(np.uint32) << 16).view(np.float32)


@numba.njit(**JIT, inline="always")
def _store4(Y, b, at, bias, scale, o, r0, r1, r2, r3, accumulate):
    y = Y[b, at:at + 4]
    if accumulate:
        y[0] += r0 * scale[o] + bias[o]
        y[1] += r1 * scale[o + 1] + bias[o + 1]
        y[2] += r2 * scale[o + 2] + bias[o + 2]
        y[3] += r3 * scale[o + 3] + bias[o + 3]
    else:
        y[0] = r0 * scale[o] + bias[o]
        y[1] = r1 * scale[o + 1] + bias[o + 1]
        y[2] = r2 * scale[o + 2] + bias[o + 2]
        y[3] = r3 * scale[o + 3] + bias[o + 3]


@numba.njit(**JIT)
def _linear_stream(P, Q, w, bias, n_out, n_in, X, b, x_off, Y, y_off, accumulate):
    """One stream: Y[b, y_off + o] (+)= sum_i W[o, i] X[b, x_off + i] + bias[o], 8 rows per tile (eight
    independent sums keep both FMA units busy), then a 4-row tile, then single rows."""
    weight = Q[w:w + n_out * n_in].reshape((n_out, n_in))
    shift = P[bias:bias + n_out]
    scale = P[bias - n_out:bias]   # per-row scales of the stored weights, just before the bias
    x = X[b, x_off:x_off + n_in]
    limit = Q.shape[0]
    step = 64 // Q.itemsize  # one prefetch per cache line
    o = 0
    while o + 8 <= n_out:
        # Keep a software prefetch stream running ahead of the reads, past the end of this matrix into
        # whatever is stored next (the weights are laid out in the order the step uses them).
        ahead = w + (o + 4 * PREFETCH_TILES) * n_in
        for k in range(0, min(8 * n_in, limit - ahead), step):
            prefetch(Q, ahead + k)
        w0 = weight[o]
        w1 = weight[o + 1]
        w2 = weight[o + 2]
        w3 = weight[o + 3]
        w4 = weight[o + 4]
        w5 = weight[o + 5]
        w6 = weight[o + 6]
        w7 = weight[o + 7]
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        a4 = np.float32(0.0)
        a5 = np.float32(0.0)
        a6 = np.float32(0.0)
        a7 = np.float32(0.0)
        for i in range(n_in):
            v = x[i]
            a0 += widen(w0[i]) * v
            a1 += widen(w1[i]) * v
            a2 += widen(w2[i]) * v
            a3 += widen(w3[i]) * v
            a4 += widen(w4[i]) * v
            a5 += widen(w5[i]) * v
            a6 += widen(w6[i]) * v
            a7 += widen(w7[i]) * v
        _store4(Y, b, y_off + o, shift, scale, o, a0, a1, a2, a3, accumulate)
        _store4(Y, b, y_off + o + 4, shift, scale, o + 4, a4, a5, a6, a7, accumulate)
        o += 8
    if o + 4 <= n_out:
        ahead = w + (o + 4 * PREFETCH_TILES) * n_in
        for k in range(0, min(4 * n_in, limit - ahead), step):
            prefetch(Q, ahead + k)
        w0 = weight[o]
        w1 = weight[o + 1]
        w2 = weight[o + 2]
        w3 = weight[o + 3]
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        for i in range(n_in):
            v = x[i]
            a0 += widen(w0[i]) * v
            a1 += widen(w1[i]) * v
            a2 += widen(w2[i]) * v
            a3 += widen(w3[i]) * v
        _store4(Y, b, y_off + o, shift, scale, o, a0, a1, a2, a3, accumulate)
        o += 4
    while o < n_out:
        w0 = weight[o]
        a0 = np.float32(0.0)
        for i in range(n_in):
            a0 += widen(w0[i]) * x[i]
        if accumulate:
            Y[b, y_off + o] += a0 * scale[o] + shift[o]
        else:
            Y[b, y_off + o] = a0 * scale[o] + shift[o]
        o += 1


@numba.njit(**JIT)
def _linear_pairs(P, Q, w, bias, n_out, n_in, X, b, x_off, Y, y_off, accumulate):
    """Streams b and b + 1 together: each weight load serves both, each input load four rows."""
    weight = Q[w:w + n_out * n_in].reshape((n_out, n_in))
    shift = P[bias:bias + n_out]
    scale = P[bias - n_out:bias]   # per-row scales of the stored weights, just before the bias
    x = X[b, x_off:x_off + n_in]
    x2 = X[b + 1, x_off:x_off + n_in]
    limit = Q.shape[0]
    step = 64 // Q.itemsize  # one prefetch per cache line
    o = 0
    while o + 4 <= n_out:
        ahead = w + (o + 4 * PREFETCH_TILES) * n_in
        for k in range(0, min(4 * n_in, limit - ahead), step):
            prefetch(Q, ahead + k)
        w0 = weight[o]
        w1 = weight[o + 1]
        w2 = weight[o + 2]
        w3 = weight[o + 3]
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        c0 = np.float32(0.0)
        c1 = np.float32(0.0)
        c2 = np.float32(0.0)
        c3 = np.float32(0.0)
        for i in range(n_in):
            v = x[i]
            v2 = x2[i]
            q0 = widen(w0[i])
            q1 = widen(w1[i])
            q2 = widen(w2[i])
            q3 = widen(w3[i])
            a0 += q0 * v
            a1 += q1 * v
            a2 += q2 * v
            a3 += q3 * v
            c0 += q0 * v2
            c1 += q1 * v2
            c2 += q2 * v2
            c3 += q3 * v2
        _store4(Y, b, y_off + o, shift, scale, o, a0, a1, a2, a3, accumulate)
        _store4(Y, b + 1, y_off + o, shift, scale, o, c0, c1, c2, c3, accumulate)
        o += 4
    while o < n_out:
        w0 = weight[o]
        a0 = np.float32(0.0)
        c0 = np.float32(0.0)
        for i in range(n_in):
            a0 += widen(w0[i]) * x[i]
            c0 += widen(w0[i]) * x2[i]
        if accumulate:
            Y[b, y_off + o] += a0 * scale[o] + shift[o]
            Y[b + 1, y_off + o] += c0 * scale[o] + shift[o]
        else:
            Y[b, y_off + o] = a0 * scale[o] + shift[o]
            Y[b + 1, y_off + o] = c0 * scale[o] + shift[o]
        o += 1


@numba.njit(**JIT)
def linear_widened(P, Q, w, bias, n_out, n_in, X, x_off, Y, y_off, batch, accumulate):
    """Y[b, y_off + o] (+)= sum_i W[o, i] X[b, x_off + i] + bias[o] for every stream b,
    W = Q[w:].reshape(n_out, n_in) (float32, bfloat16 or int8) times the row scales P[bias - n_out:bias],
    bias = P[bias:]: streams in pairs, then the odd one. (The two loop nests live in
    separate functions: in one function LLVM compiles the single-stream loop 3x slower.)"""
    b = 0
    while b + 1 < batch:
        _linear_pairs(P, Q, w, bias, n_out, n_in, X, b, x_off, Y, y_off, accumulate)
        b += 2
    if b < batch:
        _linear_stream(P, Q, w, bias, n_out, n_in, X, b, x_off, Y, y_off, accumulate)


@numba.njit(**JIT)
def channel_norm(P, kind, off, eps, channels, W, x_off, z_off, batch):
    """W[b, z] = norm(W[b, x]). Transposed: s / std (x - mean + m), biased std, no eps;
    layer: (x - mean) / sqrt(var + eps) w + b."""
    for b in range(batch):
        x = W[b, x_off:x_off + channels]
        z = W[b, z_off:z_off + channels]
        mean = np.float32(0.0)
        for i in range(channels):
            mean += x[i]
        mean = mean / np.float32(channels)
        var = np.float32(0.0)
        for i in range(channels):
            d = x[i] - mean
            var += d * d
        var = var / np.float32(channels)
        if kind == NORM_TRANSPOSED:
            scale = P[off + 1] / np.float32(math.sqrt(var))
            shift = P[off] - mean
            for i in range(channels):
                z[i] = scale * (x[i] + shift)
        else:
            inv = np.float32(1.0 / math.sqrt(var + eps))
            weight = P[off:off + channels]
            bias = P[off + channels:off + 2 * channels]
            for i in range(channels):
                z[i] = (x[i] - mean) * inv * weight[i] + bias[i]


@numba.njit(**JIT)
def gelu_rows(W, off, n, batch):
    for b in range(batch):
        x = W[b, off:off + n]
        for i in range(n):
            v = np.float64(x[i])
            x[i] = 0.5 * v * (1.0 + erf_approx(v * INV_SQRT2))


@numba.njit(**JIT)
def glu_add(W, a_off, channels, out_off, batch):
    """W[b, out] += a * sigmoid(g), (a, g) = the two halves of W[b, a_off:a_off + 2 channels]."""
    for b in range(batch):
        a = W[b, a_off:a_off + channels]
        g = W[b, a_off + channels:a_off + 2 * channels]
        out = W[b, out_off:out_off + channels]
        for i in range(channels):
            out[i] += a[i] * np.float32(0.5 + 0.5 * tanh_approx(0.5 * np.float64(g[i])))


@numba.njit(**JIT)
def copy_rows(src, src_off, dst, dst_off, n, batch):
    for b in range(batch):
        x = src[b, src_off:src_off + n]
        y = dst[b, dst_off:dst_off + n]
        for i in range(n):
            y[i] = x[i]
