"""The fused numba loop of the CPU engine: the SaShiMi recurrence and the sampler, over a flat network.

`flatten` turns the named plan (`numba_plan.network_plan`) into one float32 array, one array of
linear-layer weights (float32, bfloat16 or int8, `PRECISIONS`) and tables of offsets whose layout is
private to this module; `run_steps` advances a batch T samples with no
Python per sample. It must draw the tokens of `SaShiMi.step` + `sampling.sample` and give the logits of
`SaShiMi.forward` (tests/generation/test_engines.py); it never changes the model and never draws
from global random state.

Per sample it executes the model's own step program for the phase (`SaShiMiBackbone.step_program`, as
the plan's op table): this module implements each op (down, up, stage and the blocks inside a stage)
and never orders them itself. The S4 step is `DPLRKernel.step`
(or `DiagonalKernel.step`) in one of two forms (`SSM_FORMS`): folded, its two rank-1 corrections
folded into one (`numba_plan.ssm_matrices`), or compact (`numba_plan.compact_ssm`). The S4 kernels
live in `numba_ssm`, the other vectorised kernels in `numba_kernels`, the sampler in `numba_sampler`;
`numba_engine` runs batches as threads.
"""

import math
from dataclasses import dataclass

import numba
import numpy as np

from numba.extending import overload

from study.generation.engines.numba_kernels import (JIT, NORM_LAYER, NORM_TRANSPOSED, channel_norm, copy_rows,
                                                    gelu_rows, glu_add, linear_widened, to_bfloat16, to_int8_rows)
from study.generation.engines.numba_plan import STEP_OPS, FeedForwardPlan, NetworkPlan, S4Plan
from study.generation.engines.numba_sampler import exp_weights, largest, sample_one, uniform
from study.generation.engines.numba_ssm import compact_ssm_step, folded_ssm_step
from study.generation.engines.numba_w8a8 import BLOCK_ROWS, GROUP_INPUTS, linear_w8a8, pack_w8a8, padded

# -- the flat form (its layout is private to this module) ---------------------------------------------------------
# levels[l], l = 0 (outermost, d_model channels) .. D (centre), D = len(pool)
(_L_H, _L_STRIDE, _L_DOWN_W, _L_DOWN_B, _L_DOWN_BUF, _L_UP_W, _L_UP_B, _L_UP_BUF, _L_FIRST, _L_END,
 _L_SKIP) = range(11)
_LEVEL_FIELDS = 11
# blocks[i]: one prenorm residual block
(_B_KIND, _B_H, _B_NORM, _B_NORM_OFF, _B_SSM, _B_N2, _B_DSKIP, _B_W1, _B_B1, _B_OUT1, _B_GLU, _B_RANK1, _B_MEM,
 _B_W2, _B_B2, _B_SSM_FORM) = range(16)
_BLOCK_FIELDS = 16
_KIND_S4, _KIND_FF = 0, 1
_SSM_FOLDED, _SSM_COMPACT = 0, 1
# head: embedding, final LayerNorm, decoder, work-row layout
(_H_EMBED, _H_D0, _H_CLASSES, _H_FINAL_W, _H_FINAL_B, _H_DEC_W, _H_DEC_B, _H_STATE, _H_WORK, _H_CUR, _H_STAGE_IN,
 _H_Z, _H_HA, _H_HB, _H_LOGITS, _H_LN, _H_QUANT, _H_SUMS) = range(18)
_HEAD_FIELDS = 18
_OP_DOWN, _OP_UP, _OP_STAGE = STEP_OPS["down"], STEP_OPS["up"], STEP_OPS["stage"]
_NORM_KINDS = {"transposed": NORM_TRANSPOSED, "layer": NORM_LAYER}
# Storage of the linear layers' weights (pools, S4 output layers, feed-forward layers, decoder); the S4
# step, norms, biases and the embedding stay float32 (the recurrence needs its precision).
# Each stored matrix is followed in `params` by one scale per output row (1 unless int8 or w8a8), then its
# bias; w8a8 (int8 weights packed by `pack_w8a8`, 8-bit activations) puts the rows' integer sums first.
PRECISIONS = ("fp32", "bf16", "int8", "w8a8")
# The S4 step's form per precision: fp32 keeps the folded matrices (40 bytes per (n, h)), the reduced
# precisions read the compact form (16 bytes per (n, h), plus per-n and per-h constants).
SSM_FORMS = ("folded", "compact")
_SSM_FORM_OF = {"fp32": _SSM_FOLDED, "bf16": _SSM_COMPACT, "int8": _SSM_COMPACT, "w8a8": _SSM_COMPACT}
WEIGHT_ALIGNMENT = 64   # bytes: the packed w8a8 groups start on cache lines


@dataclass
class FlatNetwork:
    """A plan as flat arrays: `params` float32, tables of offsets into it, and state / work row sizes."""
    params: np.ndarray       # (P,) float32, in the order the step reads them (the S4 step prefetches ahead)
    weights: np.ndarray      # linear weights in the order the step reads them: (Q,) float32, uint16 (bfloat16)
                             # or int8, or (groups, 64) int8 for w8a8
    levels: np.ndarray       # (D + 1, _LEVEL_FIELDS) int64
    blocks: np.ndarray       # (n_blocks, _BLOCK_FIELDS) int64
    head: np.ndarray         # (_HEAD_FIELDS,) int64
    norm_eps: np.ndarray     # (n_blocks + 1,) float64: LayerNorm eps per block, then the final norm's
    program: np.ndarray      # (total_pool, max ops, 4) int64: the model's step program per phase
    program_lengths: np.ndarray  # (total_pool,) int64
    state_size: int          # floats of recurrent state per stream
    n_classes: int
    precision: str           # storage of `weights`, one of PRECISIONS
    ssm_form: str            # the S4 step's form, one of SSM_FORMS
    bytes_per_sample: float  # parameter bytes one stream's step reads, averaged over the pooling period


def flatten(plan: NetworkPlan, precision: str = "fp32") -> FlatNetwork:
    """The plan as the arrays `run_steps` reads (parameters in the order the step uses them), the
    linear layers' weights stored in `precision` and the S4 step in the form that precision reads."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is unknown: use one of {PRECISIONS}")
    ssm_form = _SSM_FORM_OF[precision]
    parts, weight_parts, sizes = [], [], [0, 0, 0]   # parameter floats, state floats, weight values (or groups)
    shapes = []                  # (n_out, n_in) of every stored matrix
    rate = [1.0]                 # how often (per sample) the stage being added runs
    read = [0.0]                 # bytes read per sample, rate-weighted
    itemsize = {"fp32": 4, "bf16": 2, "int8": 1, "w8a8": 1}[precision]

    def add(array: np.ndarray, per_sample: float | None = None) -> int:
        flat = np.ascontiguousarray(array, dtype=np.float64).reshape(-1).astype(np.float32)
        parts.append(flat)
        sizes[0] += flat.size
        read[0] += 4 * flat.size * (rate[0] if per_sample is None else per_sample)
        return sizes[0] - flat.size

    def add_weight(array: np.ndarray, per_sample: float | None = None) -> int:
        """The matrix (n_out, n_in) into `weights`, its row scales into `params` (the caller adds the bias next)."""
        matrix = np.asarray(array, dtype=np.float64)
        shapes.append(matrix.shape)
        flat = np.ascontiguousarray(matrix).reshape(-1).astype(np.float32)
        scales = np.ones(matrix.shape[0], np.float32)
        if precision == "w8a8":
            flat, scales, row_sums = pack_w8a8(matrix)
            add(row_sums, per_sample)
        elif precision == "bf16":
            flat = to_bfloat16(flat)
        elif precision == "int8":
            quantized, scales = to_int8_rows(matrix)
            flat = quantized.reshape(-1)
        weight_parts.append(flat)
        add(scales, per_sample)
        sizes[2] += len(flat)
        read[0] += itemsize * flat.size * (rate[0] if per_sample is None else per_sample)
        return sizes[2] - len(flat)

    def allocate(count: int) -> int:
        sizes[1] += count
        return sizes[1] - count

    def add_ssm(block: S4Plan) -> int:
        """The S4 step in `ssm_form`; compact: sigma, the per-channel rows, the per-state-index constants,
        the (N/2, 4, H) rows, one after the other (`compact_ssm_step`)."""
        if ssm_form == _SSM_FOLDED:
            return add(block.matrices)
        compact = block.compact
        first = add(np.array([compact.sigma]))
        add(compact.channel)
        add(compact.state)
        add(compact.rows)
        return first

    blocks, eps = [], []

    def add_block(block: S4Plan | FeedForwardPlan) -> None:
        row = np.zeros(_BLOCK_FIELDS, np.int64)
        row[_B_NORM], row[_B_NORM_OFF] = _NORM_KINDS[block.norm.kind], add(block.norm.parameters)
        eps.append(block.norm.eps)
        row[_B_H] = block.channels
        if isinstance(block, S4Plan):
            row[_B_KIND], row[_B_N2], row[_B_RANK1], row[_B_GLU] = _KIND_S4, block.half_state, block.rank1, block.glu
            row[_B_SSM_FORM], row[_B_SSM] = ssm_form, add_ssm(block)
            row[_B_DSKIP] = add(block.skip)
            row[_B_W1], row[_B_B1] = add_weight(block.output_weight), add(block.output_bias)
            row[_B_OUT1] = block.output_weight.shape[0]
            row[_B_MEM] = allocate((2 * block.half_state + 1) * block.channels)   # x, then s = Re(M.x)
        else:
            row[_B_KIND], row[_B_OUT1] = _KIND_FF, block.weight_in.shape[0]
            row[_B_W1], row[_B_B1] = add_weight(block.weight_in), add(block.bias_in)
            row[_B_W2], row[_B_B2] = add_weight(block.weight_out), add(block.bias_out)
        blocks.append(row)

    head = np.zeros(_HEAD_FIELDS, np.int64)
    d0 = plan.embedding.shape[1]
    head[_H_EMBED], head[_H_D0], head[_H_CLASSES] = add(plan.embedding, d0 / plan.embedding.size), d0, plan.n_classes
    levels = np.zeros((len(plan.levels), _LEVEL_FIELDS), np.int64)
    for index, level in enumerate(plan.levels):
        levels[index, _L_H], levels[index, _L_STRIDE] = level.channels, level.stride
        if level.stride:   # the pools run when the next level receives a sample
            inner = rate[0] / level.stride
            levels[index, _L_DOWN_W] = add_weight(level.down_weight, inner)
            levels[index, _L_DOWN_B] = add(level.down_bias, inner)
            levels[index, _L_DOWN_BUF] = allocate(level.channels * level.stride)
            levels[index, _L_UP_W], levels[index, _L_UP_B] = add_weight(level.up_weight, inner), add(level.up_bias, inner)
            levels[index, _L_UP_BUF] = allocate(level.channels * level.stride)
        levels[index, _L_FIRST] = len(blocks)
        for block in level.blocks:
            add_block(block)
        levels[index, _L_END] = len(blocks)
        rate[0] /= max(level.stride, 1)
    rate[0] = 1.0
    head[_H_FINAL_W], head[_H_FINAL_B] = add(plan.final_weight), add(plan.final_bias)
    eps.append(plan.final_eps)
    head[_H_DEC_W], head[_H_DEC_B] = add_weight(plan.decoder_weight), add(plan.decoder_bias)

    # Work row per stream: skip inputs of every level, then the scratch vectors.
    widest = int(levels[:, _L_H].max())
    hidden = max([int(row[_B_OUT1]) for row in blocks] + [widest])
    offset = 0
    for index in range(len(plan.levels)):
        levels[index, _L_SKIP] = offset
        offset += int(levels[index, _L_H])
    # w8a8 scratch: the quantized input (4 bytes per float32) and the integer sums of the widest layer
    quantized = padded(max(n_in for _, n_in in shapes), GROUP_INPUTS) // GROUP_INPUTS if precision == "w8a8" else 0
    sums = padded(max(n_out for n_out, _ in shapes), BLOCK_ROWS) if precision == "w8a8" else 0
    for field, size in ((_H_CUR, widest), (_H_STAGE_IN, widest), (_H_Z, widest), (_H_HA, hidden), (_H_HB, hidden),
                        (_H_LOGITS, plan.n_classes), (_H_LN, d0), (_H_QUANT, quantized), (_H_SUMS, sums)):
        head[field] = offset
        offset += size
    head[_H_WORK], head[_H_STATE] = offset, sizes[1]
    block_table = np.stack(blocks) if blocks else np.zeros((0, _BLOCK_FIELDS), np.int64)
    params = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    weights = _aligned(np.concatenate(weight_parts)) if weight_parts else np.zeros(0, np.float32)
    return FlatNetwork(params, weights, levels, block_table, head, np.array(eps, np.float64), plan.program,
                       plan.program_lengths, sizes[1], plan.n_classes, precision, SSM_FORMS[ssm_form], read[0])


def _aligned(weights: np.ndarray) -> np.ndarray:
    """A copy of `weights` that starts on a WEIGHT_ALIGNMENT boundary."""
    raw = np.empty(weights.nbytes + WEIGHT_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % WEIGHT_ALIGNMENT
    aligned = raw[start:start + weights.nbytes].view(weights.dtype).reshape(weights.shape)
    aligned[...] = weights
    return aligned


def linear(P, Q, w, bias, n_out, n_in, X, x_off, Y, y_off, batch, accumulate, W, head):
    """Y[b, y_off + o] (+)= sum_i W[o, i] X[b, x_off + i] + bias[o] for the weights stored from Q[w] (numba only:
    the storage picks the kernel when `run_steps` compiles; w8a8 uses the work rows' scratch)."""
    raise NotImplementedError("linear runs inside numba-compiled code only")


@overload(linear, jit_options=JIT)
def _linear_for_storage(P, Q, w, bias, n_out, n_in, X, x_off, Y, y_off, batch, accumulate, W, head):
    if Q.ndim == 2:   # w8a8: packed int8 groups
        def integer(P, Q, w, bias, n_out, n_in, X, x_off, Y, y_off, batch, accumulate, W, head):
            linear_w8a8(P, Q, w, bias, n_out, n_in, X, x_off, Y, y_off, batch, accumulate, W, head[_H_QUANT],
                        head[_H_SUMS])
        return integer

    def widened(P, Q, w, bias, n_out, n_in, X, x_off, Y, y_off, batch, accumulate, W, head):
        linear_widened(P, Q, w, bias, n_out, n_in, X, x_off, Y, y_off, batch, accumulate)
    return widened


@numba.njit(**JIT)
def _run_blocks(P, Q, blocks, first, end, norm_eps, head, W, S, batch):
    """The residual blocks [first, end) of one stage on W[:, cur]: x + layer(norm(x)) each."""
    cur = head[_H_CUR]
    z = head[_H_Z]
    ha = head[_H_HA]
    hb = head[_H_HB]
    for index in range(first, end):
        row = blocks[index]
        channels = row[_B_H]
        channel_norm(P, row[_B_NORM], row[_B_NORM_OFF], norm_eps[index], channels, W, cur, z, batch)
        if row[_B_KIND] == _KIND_S4:
            if row[_B_SSM_FORM] == _SSM_COMPACT:
                compact_ssm_step(P, row[_B_SSM], row[_B_N2], channels, row[_B_RANK1], row[_B_DSKIP], W, z, ha, hb, S,
                                 row[_B_MEM], batch)
            else:
                folded_ssm_step(P, row[_B_SSM], row[_B_N2], channels, row[_B_RANK1], row[_B_DSKIP], W, z, ha, hb, S,
                                row[_B_MEM], batch)
            gelu_rows(W, ha, channels, batch)
            if row[_B_GLU]:
                linear(P, Q, row[_B_W1], row[_B_B1], row[_B_OUT1], channels, W, ha, W, hb, batch, False, W, head)
                glu_add(W, hb, channels, cur, batch)
            else:
                linear(P, Q, row[_B_W1], row[_B_B1], row[_B_OUT1], channels, W, ha, W, cur, batch, True, W, head)
        else:
            hidden = row[_B_OUT1]
            linear(P, Q, row[_B_W1], row[_B_B1], hidden, channels, W, z, W, ha, batch, False, W, head)
            gelu_rows(W, ha, hidden, batch)
            linear(P, Q, row[_B_W2], row[_B_B2], channels, hidden, W, ha, W, cur, batch, True, W, head)


@numba.njit(**JIT)
def _down(P, Q, levels, head, level, slot, completes, W, x_at, S, batch):
    """`DownPool.step`: level `level`'s input W[:, x_at] into its pool's slot; a completed group emits
    the next level's input (its skip row). Returns where the current input now is."""
    channels = levels[level, _L_H]
    buf = levels[level, _L_DOWN_BUF]
    copy_rows(W, x_at, S, buf + slot * channels, channels, batch)
    if not completes:
        return x_at
    inner = levels[level + 1, _L_SKIP]
    linear(P, Q, levels[level, _L_DOWN_W], levels[level, _L_DOWN_B], levels[level + 1, _L_H],
           channels * levels[level, _L_STRIDE], S, buf, W, inner, batch, False, W, head)
    return inner


@numba.njit(**JIT)
def _up(P, Q, levels, head, level, slot, completes, W, x_at, S, batch):
    """`UpPool.step` plus the level's skip: the previous group's output for the slot + the level's input,
    into the stage-input row (returned); a completed group first refills from the coarse output W[:, x_at]."""
    channels = levels[level, _L_H]
    buf = levels[level, _L_UP_BUF]
    skip = levels[level, _L_SKIP]
    stage_in = head[_H_STAGE_IN]
    for b in range(batch):
        pooled = S[b, buf + slot * channels:buf + (slot + 1) * channels]
        x = W[b, skip:skip + channels]
        out = W[b, stage_in:stage_in + channels]
        for h in range(channels):
            out[h] = pooled[h] + x[h]
    if completes:
        linear(P, Q, levels[level, _L_UP_W], levels[level, _L_UP_B], channels * levels[level, _L_STRIDE],
               levels[level + 1, _L_H], W, x_at, S, buf, batch, False, W, head)
    return stage_in


@numba.njit(**JIT)
def _stage(P, Q, levels, blocks, head, norm_eps, level, W, x_at, S, batch):
    """`SaShiMiBackbone._stage_step`: the stage's blocks on a copy of W[:, x_at] in the current row
    (returned), plus the stage's skip W[:, x_at]."""
    channels = levels[level, _L_H]
    cur = head[_H_CUR]
    copy_rows(W, x_at, W, cur, channels, batch)
    _run_blocks(P, Q, blocks, levels[level, _L_FIRST], levels[level, _L_END], norm_eps, head, W, S, batch)
    for b in range(batch):
        x = W[b, cur:cur + channels]
        s = W[b, x_at:x_at + channels]
        for h in range(channels):
            x[h] += s[h]
    return cur


@numba.njit(**JIT)
def _network_step(P, Q, levels, blocks, head, norm_eps, program, program_lengths, S, position, tokens, W, batch):
    """One sample for the batch: tokens (batch,) in, logits at W[b, head[_H_LOGITS]:] out, by the model's
    step program for this phase (program[phase, :program_lengths[phase]])."""
    phase = position % program.shape[0]
    d0 = head[_H_D0]
    embedding = P[head[_H_EMBED]:head[_H_EMBED] + head[_H_CLASSES] * d0].reshape((head[_H_CLASSES], d0))
    x_at = levels[0, _L_SKIP]    # where the current activation is in the work rows
    for b in range(batch):
        row = embedding[tokens[b]]
        x = W[b, x_at:x_at + d0]
        for i in range(d0):
            x[i] = row[i]
    for index in range(program_lengths[phase]):
        op = program[phase, index]
        if op[0] == _OP_DOWN:
            x_at = _down(P, Q, levels, head, op[1], op[2], op[3], W, x_at, S, batch)
        elif op[0] == _OP_UP:
            x_at = _up(P, Q, levels, head, op[1], op[2], op[3], W, x_at, S, batch)
        else:
            x_at = _stage(P, Q, levels, blocks, head, norm_eps, op[1], W, x_at, S, batch)
    # final LayerNorm and decoder
    eps = norm_eps[norm_eps.shape[0] - 1]
    ln = head[_H_LN]
    weight = P[head[_H_FINAL_W]:head[_H_FINAL_W] + d0]
    bias = P[head[_H_FINAL_B]:head[_H_FINAL_B] + d0]
    for b in range(batch):
        x = W[b, x_at:x_at + d0]
        y = W[b, ln:ln + d0]
        mean = np.float32(0.0)
        for i in range(d0):
            mean += x[i]
        mean = mean / np.float32(d0)
        var = np.float32(0.0)
        for i in range(d0):
            d = x[i] - mean
            var += d * d
        inv = np.float32(1.0 / math.sqrt(var / np.float32(d0) + eps))
        for i in range(d0):
            y[i] = (x[i] - mean) * inv * weight[i] + bias[i]
    linear(P, Q, head[_H_DEC_W], head[_H_DEC_B], head[_H_CLASSES], d0, W, ln, W, head[_H_LOGITS], batch, False,
           W, head)


@numba.njit(nogil=True, **JIT)
def run_steps(P, Q, levels, blocks, head, norm_eps, program, program_lengths, S, position, first_tokens, forced, stream_keys, counter,
              temperature, top_k, top_p, out_tokens, out_logp_model, out_logp_sample, out_logits):
    """Advance `batch` streams by T = forced.shape[1] samples from state S (batch, state_size) at `position`.

    Step t feeds token_in (first_tokens at t = 0, then the previous output token) and outputs
    forced[b, t] when >= 0 (teacher forcing), else a sample drawn with uniform(key_b, counter + t).
    Writes out_tokens, out_logp_model, out_logp_sample (nan where forced) and, when out_logits has
    T rows, the logits. S is advanced in place.
    """
    batch = first_tokens.shape[0]
    steps = forced.shape[1]
    classes = head[_H_CLASSES]
    at = head[_H_LOGITS]
    W = np.zeros((batch, head[_H_WORK]), np.float32)
    tokens = first_tokens.copy()
    shifted = np.empty(classes, np.float64)
    weights = np.empty(classes, np.float64)
    exponents = np.empty(classes, np.int64)
    candidates = np.empty(classes, np.int64)
    keep_logits = out_logits.shape[1] == steps
    for t in range(steps):
        _network_step(P, Q, levels, blocks, head, norm_eps, program, program_lengths, S, position + t, tokens, W, batch)
        for b in range(batch):
            logits = W[b, at:at + classes]
            if keep_logits:
                out_logits[b, t, :] = logits
            if forced[b, t] >= 0:
                token = forced[b, t]
                top = largest(logits, classes)
                total = exp_weights(logits, 1.0, top, shifted, weights, exponents, classes)
                out_logp_model[b, t] = np.float64(logits[token]) - top - math.log(total)
                out_logp_sample[b, t] = np.nan
            else:
                u = uniform(stream_keys[b], counter + t)
                token, logp_model, logp_sample = sample_one(logits, classes, temperature, top_k, top_p, u,
                                                             shifted, weights, exponents, candidates)
                out_logp_model[b, t] = logp_model
                out_logp_sample[b, t] = logp_sample
            out_tokens[b, t] = token
            tokens[b] = token
