"""The integer linear layers of the CPU engine (w8a8) against numpy: the packed layout, the exact int32
sums of both instruction paths (VNNI and portable), and whole layers against dequantized float64 math."""

import numba
import numpy as np
import pytest

from study.generation.engines import numba_w8a8
from study.generation.engines.numba_kernels import to_int8_rows
from study.generation.engines.numba_w8a8 import BLOCK_ROWS, GROUP_INPUTS, block_sums_kernel, linear_w8a8, pack_w8a8

PATHS = [pytest.param(False, id="portable"),
         pytest.param(True, id="vnni", marks=pytest.mark.skipif(not numba_w8a8.HAS_VNNI, reason="no AVX-512 VNNI"))]


def test_packing_puts_16_rows_by_4_inputs_in_each_group_and_pads_with_zeros():
    matrix = np.random.default_rng(0).standard_normal((20, 6))
    groups, scales, row_sums = pack_w8a8(matrix)
    quantized, expected_scales = to_int8_rows(matrix)
    assert groups.shape == (2 * 2, 64) and groups.dtype == np.int8   # 2 blocks of 16 rows, 2 groups of 4 inputs
    assert np.array_equal(scales, expected_scales)
    assert np.array_equal(row_sums, quantized.sum(axis=1).astype(np.float32))
    for row in range(32):
        for column in range(8):
            block, group = row // BLOCK_ROWS, column // GROUP_INPUTS
            stored = groups[block * 2 + group, (row % BLOCK_ROWS) * GROUP_INPUTS + column % GROUP_INPUTS]
            assert stored == (quantized[row, column] if row < 20 and column < 6 else 0)


def _sums_runner(blocks: int, streams: int, vnni: bool):
    kernel = block_sums_kernel(blocks, streams, vnni)

    @numba.njit
    def run(Q, T, x_at, sums_at, groups):
        kernel(Q, 0, T, x_at, sums_at, T.shape[1], groups)

    return run


@pytest.mark.parametrize("vnni", PATHS)
@pytest.mark.parametrize("blocks, streams", [(1, 1), (4, 1), (1, 2), (4, 2)])
def test_block_sums_are_the_exact_integer_products(vnni, blocks, streams):
    generator = np.random.default_rng(blocks * 10 + streams)
    n_in = 40
    weights = generator.integers(-127, 128, (blocks * BLOCK_ROWS, n_in)).astype(np.int8)
    weights[:, 1] = 127                           # every row spans 127, so packing gives these int8 values back
    weights[0, :] = -127                          # the extremes: 255 * -127 summed over every input
    groups = pack_w8a8(weights.astype(np.float64) / 127 * 3.0)[0]   # scale 3 / 127: the same int8 values back
    inputs = generator.integers(0, 256, (streams, n_in)).astype(np.uint8)
    inputs[0, :] = 255
    T = np.zeros((streams, n_in // 4 + blocks * BLOCK_ROWS), np.float32)
    T.view(np.uint8)[:, :n_in] = inputs
    _sums_runner(blocks, streams, vnni)(groups, T, 0, n_in // 4, n_in // 4)
    expected = inputs.astype(np.int64) @ weights.astype(np.int64).T
    assert np.array_equal(T[:, n_in // 4:], expected.astype(np.float32))
    assert expected[0, 0] == -127 * 255 * n_in


@pytest.mark.parametrize("n_out, n_in, batch", [(64, 128, 1), (70, 37, 3), (256, 64, 2), (16, 4, 5)])
@pytest.mark.parametrize("accumulate", [False, True])
def test_a_layer_equals_dequantized_float64_math(n_out, n_in, batch, accumulate):
    generator = np.random.default_rng(n_out + n_in + batch)
    matrix = generator.standard_normal((n_out, n_in))
    groups, scales, row_sums = pack_w8a8(matrix)
    bias = generator.standard_normal(n_out)
    P = np.concatenate([[9.0], row_sums, scales, bias]).astype(np.float32)   # row sums, scales, bias
    x_off, quant_at = 3, 3 + n_in
    sums_at = quant_at + -(-n_in // 4)
    T = np.zeros((batch, sums_at + -(-n_out // 16) * 16), np.float32)
    T[:, x_off:x_off + n_in] = generator.standard_normal((batch, n_in)) * np.arange(1, batch + 1)[:, None]
    Y = np.full((batch, n_out + 2), 0.5, np.float32)
    linear_w8a8(P, groups, 0, 1 + 2 * n_out, n_out, n_in, T, x_off, Y, 1, batch, accumulate, T, quant_at, sums_at)

    x = T[:, x_off:x_off + n_in].astype(np.float64)
    low = x.min(axis=1, keepdims=True)
    step = (x.max(axis=1, keepdims=True) - low) / 255
    levels = np.floor((x - low) / step + 0.5)
    assert levels.min() == 0 and levels.max() == 255           # the 8 bits span each vector's range
    quantized, _ = to_int8_rows(matrix)
    expected = (low + step * levels) @ (quantized * scales[:, None].astype(np.float64)).T + bias
    expected += 0.5 if accumulate else 0.0
    assert np.abs(Y[:, 1:-1] - expected).max() < 1e-5 * np.abs(expected).max()
    assert np.all(Y[:, [0, -1]] == 0.5)                         # nothing outside the output range is written
    # and the layer approximates the float one to a few 8-bit steps
    assert np.abs(Y[:, 1:-1] - (x @ matrix.T + bias + (0.5 if accumulate else 0.0))).max() < 0.05 * np.abs(
        expected).max()


def test_a_constant_input_is_carried_exactly():
    matrix = np.random.default_rng(3).standard_normal((16, 8))
    groups, scales, row_sums = pack_w8a8(matrix)
    P = np.concatenate([row_sums, scales, np.zeros(16)]).astype(np.float32)
    T = np.zeros((1, 8 + 2 + 16), np.float32)
    T[0, :8] = -1.25
    Y = np.zeros((1, 16), np.float32)
    linear_w8a8(P, groups, 0, 32, 16, 8, T, 0, Y, 0, 1, False, T, 8, 10)
    quantized, _ = to_int8_rows(matrix)
    assert np.allclose(Y[0], -1.25 * (quantized * scales[:, None]).sum(axis=1), rtol=1e-6, atol=1e-6)
