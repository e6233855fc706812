"""Integer linear layers of the CPU engine ('w8a8'): int8 weights per output row times 8-bit activations
per vector, summed exactly in int32 (AVX-512 VNNI where the CPU has it), rescaled in float32.

y_o = scale_o (step sum_i W_q[o, i] q_i + low sum_i W_q[o, i]) + bias_o, where the input x is quantized
per vector and call as x_i ~ low + step q_i, q_i in 0..255 (asymmetric: the full 8 bits over [min, max]).
The integer sums are the same on every CPU (the portable path computes them with plain vector
arithmetic); they never allocate and never read outside the packed groups.
"""

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from study.generation.engines.numba_kernels import JIT, to_int8_rows

BLOCK_ROWS = 16      # output rows per packed block (one 512-bit vector of int32 sums)
GROUP_INPUTS = 4     # inputs per group: a block's group is 16 rows x 4 int8 = 64 bytes, one row of Q
HAS_VNNI = bool(llvm.get_host_cpu_features().get("avx512vnni", False))
INSTRUCTIONS = "AVX-512 VNNI" if HAS_VNNI else "portable integer vectors (no AVX-512 VNNI on this CPU)"

# The rescaling runs without fast-math: no FMA contraction or reordering, so a stream's numbers are the
# same whether it runs alone or in a pair (the integer sums are exact either way).
EXACT = dict(error_model="numpy", cache=True)
_I32 = ir.IntType(32)
_SUMS = ir.VectorType(_I32, BLOCK_ROWS)


@numba.njit(**JIT)
def padded(count: int, multiple: int) -> int:
    """count rounded up to a multiple of `multiple`."""
    return -(-count // multiple) * multiple


def pack_w8a8(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(groups, 64) int8, scales (n_out,), row sums (n_out,): the matrix (n_out, n_in) as int8 per row
    (`to_int8_rows`), zero-padded to whole blocks and groups, block after block, each block its groups
    in input order; row r of a group holds the block's 16 rows' weights for 4 consecutive inputs."""
    quantized, scales = to_int8_rows(matrix)
    n_out, n_in = quantized.shape
    full = np.zeros((padded(n_out, BLOCK_ROWS), padded(n_in, GROUP_INPUTS)), np.int8)
    full[:n_out, :n_in] = quantized
    blocks = full.reshape(full.shape[0] // BLOCK_ROWS, BLOCK_ROWS, full.shape[1] // GROUP_INPUTS, GROUP_INPUTS)
    groups = np.ascontiguousarray(blocks.transpose(0, 2, 1, 3)).reshape(-1, BLOCK_ROWS * GROUP_INPUTS)
    return groups, scales, quantized.astype(np.int64).sum(axis=1).astype(np.float32)


def _dot4(builder: ir.IRBuilder, sums: ir.Value, inputs: ir.Value, weights: ir.Value, vnni: bool) -> ir.Value:
    """sums_r + sum_{m<4} u8(inputs)[4r + m] * s8(weights)[4r + m] for r < 16, exactly in int32: one VNNI
    instruction, or the same sums in plain vector arithmetic."""
    if vnni:
        function = builder.module.declare_intrinsic(
            "llvm.x86.avx512.vpdpbusd.512", (), ir.FunctionType(_SUMS, [_SUMS, _SUMS, _SUMS]))
        return builder.call(function, [sums, inputs, weights])
    bytes64, wide = ir.VectorType(ir.IntType(8), 64), ir.VectorType(_I32, 64)
    products = builder.mul(builder.zext(builder.bitcast(inputs, bytes64), wide),
                           builder.sext(builder.bitcast(weights, bytes64), wide))
    for m in range(GROUP_INPUTS):
        lanes = ir.Constant(_SUMS, [ir.Constant(_I32, GROUP_INPUTS * r + m) for r in range(BLOCK_ROWS)])
        sums = builder.add(sums, builder.shuffle_vector(products, products, lanes))
    return sums


def block_sums_kernel(blocks: int, streams: int, vnni: bool = HAS_VNNI):
    """An intrinsic (Q, group, T, x_at, sums_at, stride, groups): the int32 sums of `blocks` consecutive
    blocks starting at Q row `group` (each `groups` rows long) with the quantized inputs of `streams`
    streams (4 bytes per float32 slot of T at flat index x_at + s stride), as float32 at flat index
    sums_at + s stride + 16 j of T. vnni=False computes the same sums without VNNI instructions."""

    @intrinsic
    def block_sums(typingctx, Q, group, T, x_at, sums_at, stride, groups):
        signature = types.void(Q, group, T, x_at, sums_at, stride, groups)

        def codegen(context, builder, sig, args):
            q, first, t, x_index, sums_index, row_stride, count = args
            weights = builder.bitcast(context.make_array(sig.args[0])(context, builder, q).data, _SUMS.as_pointer())
            data = context.make_array(sig.args[2])(context, builder, t).data
            inputs = [builder.bitcast(builder.gep(data, [builder.add(x_index, builder.mul(row_stride, ir.Constant(
                row_stride.type, s)))]), _I32.as_pointer()) for s in range(streams)]
            outputs = [builder.gep(data, [builder.add(sums_index, builder.mul(row_stride, ir.Constant(
                row_stride.type, s)))]) for s in range(streams)]
            zero = ir.Constant(_SUMS, [ir.Constant(_I32, 0)] * BLOCK_ROWS)   # also the splat of lane 0
            slots = [[cgutils.alloca_once_value(builder, zero) for _ in range(streams)] for _ in range(blocks)]
            with cgutils.for_range(builder, count) as loop:
                broadcast = []
                for s in range(streams):
                    word = builder.load(builder.gep(inputs[s], [loop.index]), align=4)
                    vector = builder.insert_element(ir.Constant(_SUMS, None), word, ir.Constant(_I32, 0))
                    broadcast.append(builder.shuffle_vector(vector, vector, zero))
                for j in range(blocks):
                    row = builder.add(builder.add(first, builder.mul(count, ir.Constant(count.type, j))), loop.index)
                    packed = builder.load(builder.gep(weights, [row]), align=1)
                    for s in range(streams):
                        total = _dot4(builder, builder.load(slots[j][s]), broadcast[s], packed, vnni)
                        builder.store(total, slots[j][s])
            vector_ptr = ir.VectorType(ir.FloatType(), BLOCK_ROWS).as_pointer()
            for j in range(blocks):
                for s in range(streams):
                    floats = builder.sitofp(builder.load(slots[j][s]), vector_ptr.pointee)
                    target = builder.bitcast(builder.gep(outputs[s], [ir.Constant(_I32, BLOCK_ROWS * j)]), vector_ptr)
                    builder.store(floats, target, align=4)
            return context.get_dummy_value()

        return signature, codegen

    return block_sums


_sums_4x1, _sums_1x1 = block_sums_kernel(4, 1), block_sums_kernel(1, 1)
_sums_4x2, _sums_1x2 = block_sums_kernel(4, 2), block_sums_kernel(1, 2)


@numba.njit(**JIT)
def _range(x, n_in):
    """(min, max) of x[:n_in]: exact in any order, so this reduction may vectorise."""
    low = x[0]
    high = x[0]
    for i in range(n_in):
        low = min(low, x[i])
        high = max(high, x[i])
    return low, high


@numba.njit(**EXACT)
def _quantize(X, b, x_off, n_in, T, quant_at):
    """X[b, x_off:x_off + n_in] as bytes round((x - low) / step) at T[b, quant_at:] (zero bytes up to a
    whole group); returns (low, step)."""
    x = X[b, x_off:x_off + n_in]
    low, high = _range(x, n_in)
    step = (high - low) / np.float32(255.0)
    if not step > 0:
        step = np.float32(1.0)
    inverse = np.float32(1.0) / step
    q = T[b].view(np.uint8)[4 * quant_at:4 * quant_at + padded(n_in, GROUP_INPUTS)]
    for i in range(n_in):
        q[i] = np.uint8(min(np.int32((x[i] - low) * inverse + np.float32(0.5)), 255))
    for i in range(n_in, q.shape[0]):
        q[i] = 0
    return low, step


@numba.njit(**EXACT)
def _finish(P, bias, n_out, T, b, sums_at, low, step, Y, y_off, accumulate):
    """Y[b, y_off + o] (+)= scale_o (step sums_o + low rowsum_o) + bias_o."""
    shift = P[bias:bias + n_out]
    scale = P[bias - n_out:bias]
    rowsum = P[bias - 2 * n_out:bias - n_out]
    sums = T[b, sums_at:sums_at + n_out]
    y = Y[b, y_off:y_off + n_out]
    if accumulate:
        for o in range(n_out):
            y[o] += scale[o] * (step * sums[o] + low * rowsum[o]) + shift[o]
    else:
        for o in range(n_out):
            y[o] = scale[o] * (step * sums[o] + low * rowsum[o]) + shift[o]


@numba.njit(**JIT)
def linear_w8a8(P, Q, w, bias, n_out, n_in, X, x_off, Y, y_off, batch, accumulate, T, quant_at, sums_at):
    """Y[b, y_off + o] (+)= sum_i W[o, i] X[b, x_off + i] + bias[o] for every stream b, W packed by `pack_w8a8`
    from Q row w, its row sums and scales at P[bias - 2 n_out:bias], bias = P[bias:]; scratch rows T hold
    the quantized inputs (at quant_at) and the sums (at sums_at). Streams in pairs, 4 blocks at a time."""
    groups = padded(n_in, GROUP_INPUTS) // GROUP_INPUTS
    n_blocks = padded(n_out, BLOCK_ROWS) // BLOCK_ROWS
    stride = T.shape[1]
    b = 0
    while b < batch:
        pair = b + 1 < batch
        low, step = _quantize(X, b, x_off, n_in, T, quant_at)
        low2, step2 = low, step
        if pair:
            low2, step2 = _quantize(X, b + 1, x_off, n_in, T, quant_at)
        x_at = b * stride + quant_at
        sums = b * stride + sums_at
        j = 0
        while j + 4 <= n_blocks:
            if pair:
                _sums_4x2(Q, w + j * groups, T, x_at, sums + BLOCK_ROWS * j, stride, groups)
            else:
                _sums_4x1(Q, w + j * groups, T, x_at, sums + BLOCK_ROWS * j, stride, groups)
            j += 4
        while j < n_blocks:
            if pair:
                _sums_1x2(Q, w + j * groups, T, x_at, sums + BLOCK_ROWS * j, stride, groups)
            else:
                _sums_1x1(Q, w + j * groups, T, x_at, sums + BLOCK_ROWS * j, stride, groups)
            j += 1
        _finish(P, bias, n_out, T, b, sums_at, low, step, Y, y_off, accumulate)
        if pair:
            _finish(P, bias, n_out, T, b + 1, sums_at, low2, step2, Y, y_off, accumulate)
        b += 2 if pair else 1
