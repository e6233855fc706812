"""The CPU generation engine: the whole SaShiMi recurrence and sampler fused into one numba loop.

`export_plan` flattens a model's weights and discretised step matrices into float32 arrays; `run_steps`
advances a batch T samples with no Python per sample. It must give the logits of `SaShiMi.forward`
(tests/test_fast_step.py holds it to 1e-4) and the tokens of `study.sampling.sample`; it never
changes the model and never draws from global random state.

Per sample only the outermost stage runs; the stage at pooling depth d runs once every
prod(pool[:d]) samples, as in `SaShiMiBackbone.step`. The S4 step is the DPLR bilinear step of
`DPLRKernel.step` with its two rank-1 corrections folded into one (derived in `ssm_matrices`). The
vectorised kernels live in `study.generation.engines.numba_kernels`; batches run as independent threads of streams.
"""

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
import torch

from study.generation.engines.numba_kernels import (JIT, NORM_LAYER, NORM_TRANSPOSED, channel_norm, copy_rows, gelu_rows, glu_add,
                                 linear, ssm_step)
from study.s4.layer import DiagonalKernel, DPLRKernel, S4Block
from study.generation.sampling import SamplingSettings
from study.sashimi import ChannelLayerNorm, FeedForward, SaShiMi, TransposedLN

# -- plan tables ------------------------------------------------------------------------------------
# levels[l], l = 0 (outermost, d_model channels) .. D (centre), D = len(pool)
L_H, L_PERIOD, L_STRIDE, L_DOWN_W, L_DOWN_B, L_DOWN_BUF, L_UP_W, L_UP_B, L_UP_BUF, L_FIRST, L_END, L_SKIP = range(12)
LEVEL_FIELDS = 12
# blocks[i]: one prenorm residual block
B_KIND, B_H, B_NORM, B_NORM_OFF, B_SSM, B_N2, B_DSKIP, B_W1, B_B1, B_OUT1, B_GLU, B_RANK1, B_MEM, B_W2, B_B2 = range(15)
BLOCK_FIELDS = 15
KIND_S4, KIND_FF = 0, 1
# head: embedding, final LayerNorm, decoder, work-row layout
(H_EMBED, H_D0, H_CLASSES, H_FINAL_W, H_FINAL_B, H_DEC_W, H_DEC_B, H_STATE, H_WORK, H_CUR, H_STAGE_IN, H_Z,
 H_HA, H_HB, H_COARSE, H_LOGITS, H_LN) = range(17)
HEAD_FIELDS = 17


@dataclass
class EnginePlan:
    """A model as flat arrays: `params` float32, tables of offsets into it, and state / work row sizes."""
    params: np.ndarray       # (P,) float32
    levels: np.ndarray       # (D + 1, LEVEL_FIELDS) int64
    blocks: np.ndarray       # (n_blocks, BLOCK_FIELDS) int64
    head: np.ndarray         # (HEAD_FIELDS,) int64
    norm_eps: np.ndarray     # (n_blocks + 1,) float64: LayerNorm eps per block, then the final norm's
    state_size: int          # floats of recurrent state per stream
    n_classes: int
    total_pool: int


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


class _Packer:
    """Appends float32 arrays to one flat buffer and returns their offsets."""

    def __init__(self):
        self.parts, self.size = [], 0

    def add(self, array) -> int:
        if isinstance(array, torch.Tensor):
            array = array.detach().cpu().double().numpy()
        flat = np.ascontiguousarray(np.asarray(array, dtype=np.float64).reshape(-1)).astype(np.float32)
        offset = self.size
        self.parts.append(flat)
        self.size += flat.size
        return offset

    def array(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)


@torch.no_grad()
def export_plan(model: SaShiMi) -> EnginePlan:
    """Flatten `model` (its current weights) for `run_steps`; export again after changing the weights."""
    config = model.config
    backbone = model.backbone
    depth = len(backbone.down_pools)
    pack = _Packer()
    state_size = 0

    def allocate(count: int) -> int:
        nonlocal state_size
        offset = state_size
        state_size += count
        return offset

    blocks, eps = [], []

    def add_block(block) -> None:
        row = np.zeros(BLOCK_FIELDS, np.int64)
        norm = block.norm
        if isinstance(norm, TransposedLN):
            row[B_NORM] = NORM_TRANSPOSED
            row[B_NORM_OFF] = pack.add(torch.cat([norm.m, norm.s]))
            eps.append(0.0)
        elif isinstance(norm, ChannelLayerNorm):
            row[B_NORM] = NORM_LAYER
            row[B_NORM_OFF] = pack.add(torch.cat([norm.norm.weight, norm.norm.bias]))
            eps.append(float(norm.norm.eps))
        else:
            raise TypeError(f"no fast step for norm {type(norm).__name__}")
        layer = block.layer
        if isinstance(layer, S4Block):
            matrices = ssm_matrices(layer.kernel)
            channels, half = matrices["F"].shape
            row[B_KIND], row[B_H], row[B_N2] = KIND_S4, channels, half
            rows = [part.T for name in ("M", "F", "G", "G_p", "C") for part in (matrices[name].real, matrices[name].imag)]
            row[B_SSM] = pack.add(np.stack(rows, axis=1))  # (n2, 10, H)
            row[B_RANK1] = int(matrices["rank1"])
            row[B_DSKIP] = pack.add(layer.D)
            row[B_W1] = pack.add(layer.output_linear.weight)
            row[B_B1] = pack.add(layer.output_linear.bias)
            row[B_OUT1] = layer.output_linear.weight.shape[0]
            row[B_GLU] = int(layer.glu)
            row[B_MEM] = allocate(2 * channels * half)
        elif isinstance(layer, FeedForward):
            channels = layer.linear_in.weight.shape[1]
            row[B_KIND], row[B_H] = KIND_FF, channels
            row[B_W1] = pack.add(layer.linear_in.weight)
            row[B_B1] = pack.add(layer.linear_in.bias)
            row[B_OUT1] = layer.linear_in.weight.shape[0]
            row[B_W2] = pack.add(layer.linear_out.weight)
            row[B_B2] = pack.add(layer.linear_out.bias)
        else:
            raise TypeError(f"no fast step for layer {type(layer).__name__}")
        blocks.append(row)

    head = np.zeros(HEAD_FIELDS, np.int64)
    head[H_EMBED] = pack.add(model.encoder.weight)
    head[H_D0], head[H_CLASSES] = config.d_model, config.n_classes
    levels = np.zeros((depth + 1, LEVEL_FIELDS), np.int64)
    channels, period = config.d_model, 1
    for level in range(depth + 1):
        levels[level, L_H], levels[level, L_PERIOD] = channels, period
        if level < depth:
            down = backbone.down_pools[level]
            up = backbone.up_stages[depth - 1 - level][0]
            stride = down.stride
            levels[level, L_STRIDE] = stride
            # The pool buffers are slot-major ([slot * H_l + h]) so a sample is written or read as one
            # contiguous vector; the pool weights are permuted to match the model's [h * s + slot].
            inner = down.linear.weight.shape[0]
            levels[level, L_DOWN_W] = pack.add(                              # (H_{l+1}, s * H_l)
                down.linear.weight.view(inner, channels, stride).transpose(1, 2).reshape(inner, stride * channels))
            levels[level, L_DOWN_B] = pack.add(down.linear.bias)
            levels[level, L_DOWN_BUF] = allocate(channels * stride)
            levels[level, L_UP_W] = pack.add(                                # (s * H_l, H_{l+1})
                up.linear.weight.view(channels, stride, inner).transpose(0, 1).reshape(stride * channels, inner))
            levels[level, L_UP_B] = pack.add(up.linear.bias.view(channels, stride).t().reshape(-1))
            levels[level, L_UP_BUF] = allocate(channels * stride)
            stage = list(backbone.up_stages[depth - 1 - level])[1:]
            channels, period = down.linear.weight.shape[0], period * stride
        else:
            stage = list(backbone.centre)
        levels[level, L_FIRST] = len(blocks)
        for block in stage:
            add_block(block)
        levels[level, L_END] = len(blocks)
    final = backbone.final_norm
    head[H_FINAL_W], head[H_FINAL_B] = pack.add(final.weight), pack.add(final.bias)
    eps.append(float(final.eps))
    head[H_DEC_W], head[H_DEC_B] = pack.add(model.decoder.weight), pack.add(model.decoder.bias)

    # Work row per stream: skip inputs of every level, then the scratch vectors.
    widest = int(levels[:, L_H].max())
    hidden = max([int(row[B_OUT1]) for row in blocks] + [widest])
    offset = 0
    for level in range(depth + 1):
        levels[level, L_SKIP] = offset
        offset += int(levels[level, L_H])
    for field, size in ((H_CUR, widest), (H_STAGE_IN, widest), (H_Z, widest), (H_HA, hidden), (H_HB, hidden),
                        (H_COARSE, widest), (H_LOGITS, config.n_classes), (H_LN, config.d_model)):
        head[field] = offset
        offset += size
    head[H_WORK] = offset
    head[H_STATE] = state_size
    block_table = np.stack(blocks) if blocks else np.zeros((0, BLOCK_FIELDS), np.int64)
    return EnginePlan(params=pack.array(), levels=levels, blocks=block_table, head=head,
                      norm_eps=np.array(eps, np.float64), state_size=state_size,
                      n_classes=config.n_classes, total_pool=config.total_pool)


@numba.njit(**JIT)
def _run_blocks(P, blocks, first, end, norm_eps, head, W, S, batch):
    """The residual blocks [first, end) of one stage on W[:, cur]: x + layer(norm(x)) each."""
    cur = head[H_CUR]
    z = head[H_Z]
    ha = head[H_HA]
    hb = head[H_HB]
    for index in range(first, end):
        row = blocks[index]
        channels = row[B_H]
        channel_norm(P, row[B_NORM], row[B_NORM_OFF], norm_eps[index], channels, W, cur, z, batch)
        if row[B_KIND] == KIND_S4:
            ssm_step(P, row[B_SSM], row[B_N2], channels, row[B_RANK1], row[B_DSKIP], W, z, ha, hb, S, row[B_MEM], batch)
            gelu_rows(W, ha, channels, batch)
            if row[B_GLU]:
                linear(P, row[B_W1], row[B_B1], row[B_OUT1], channels, W, ha, W, hb, batch, False)
                glu_add(W, hb, channels, cur, batch)
            else:
                linear(P, row[B_W1], row[B_B1], row[B_OUT1], channels, W, ha, W, cur, batch, True)
        else:
            hidden = row[B_OUT1]
            linear(P, row[B_W1], row[B_B1], hidden, channels, W, z, W, ha, batch, False)
            gelu_rows(W, ha, hidden, batch)
            linear(P, row[B_W2], row[B_B2], channels, hidden, W, ha, W, cur, batch, True)


@numba.njit(**JIT)
def _network_step(P, levels, blocks, head, norm_eps, S, position, tokens, W, batch):
    """One sample for the batch: tokens (batch,) in, logits at W[b, head[H_LOGITS]:] out."""
    depth = levels.shape[0] - 1
    d0 = head[H_D0]
    cur = head[H_CUR]
    stage_in = head[H_STAGE_IN]
    coarse = head[H_COARSE]
    embedding = P[head[H_EMBED]:head[H_EMBED] + head[H_CLASSES] * d0].reshape((head[H_CLASSES], d0))
    skip0 = levels[0, L_SKIP]
    for b in range(batch):
        row = embedding[tokens[b]]
        x = W[b, skip0:skip0 + d0]
        for i in range(d0):
            x[i] = row[i]
    # down path: level l writes its input into its pool buffer; a full buffer emits level l + 1
    top = 0
    for level in range(depth):
        channels = levels[level, L_H]
        stride = levels[level, L_STRIDE]
        slot = (position // levels[level, L_PERIOD]) % stride
        skip = levels[level, L_SKIP]
        buf = levels[level, L_DOWN_BUF]
        for b in range(batch):
            x = W[b, skip:skip + channels]
            out = S[b, buf + slot * channels:buf + (slot + 1) * channels]
            for h in range(channels):
                out[h] = x[h]
        if slot != stride - 1:
            break
        linear(P, levels[level, L_DOWN_W], levels[level, L_DOWN_B], levels[level + 1, L_H], channels * stride,
                S, buf, W, levels[level + 1, L_SKIP], batch, False)
        top = level + 1
    # centre
    if top == depth:
        channels = levels[depth, L_H]
        skip = levels[depth, L_SKIP]
        copy_rows(W, skip, W, cur, channels, batch)
        _run_blocks(P, blocks, levels[depth, L_FIRST], levels[depth, L_END], norm_eps, head, W, S, batch)
        for b in range(batch):
            x = W[b, cur:cur + channels]
            s = W[b, skip:skip + channels]
            out = W[b, coarse:coarse + channels]
            for h in range(channels):
                out[h] = x[h] + s[h]
    # up path: every level that received a sample this step, innermost first
    for level in range(min(top, depth - 1), -1, -1):
        channels = levels[level, L_H]
        stride = levels[level, L_STRIDE]
        slot = (position // levels[level, L_PERIOD]) % stride
        skip = levels[level, L_SKIP]
        buf = levels[level, L_UP_BUF]
        for b in range(batch):
            pooled = S[b, buf + slot * channels:buf + (slot + 1) * channels]
            x = W[b, skip:skip + channels]
            out = W[b, cur:cur + channels]
            kept = W[b, stage_in:stage_in + channels]
            for h in range(channels):
                value = pooled[h] + x[h]
                out[h] = value
                kept[h] = value
        if slot == stride - 1:  # the coarse output of this step refills the buffer for the next group
            linear(P, levels[level, L_UP_W], levels[level, L_UP_B], channels * stride, levels[level + 1, L_H],
                    W, coarse, S, buf, batch, False)
        _run_blocks(P, blocks, levels[level, L_FIRST], levels[level, L_END], norm_eps, head, W, S, batch)
        for b in range(batch):
            x = W[b, cur:cur + channels]
            s = W[b, stage_in:stage_in + channels]
            out = W[b, coarse:coarse + channels]
            for h in range(channels):
                value = x[h] + s[h]
                x[h] = value
                out[h] = value
    # final LayerNorm and decoder
    eps = norm_eps[norm_eps.shape[0] - 1]
    ln = head[H_LN]
    weight = P[head[H_FINAL_W]:head[H_FINAL_W] + d0]
    bias = P[head[H_FINAL_B]:head[H_FINAL_B] + d0]
    for b in range(batch):
        x = W[b, cur:cur + d0]
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
    linear(P, head[H_DEC_W], head[H_DEC_B], head[H_CLASSES], d0, W, ln, W, head[H_LOGITS], batch, False)


# -- sampling (the definition is study.generation.sampling's) ----------------------------------------------------
@numba.njit(cache=True)
def _mix64(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True)
def _uniform(key, counter):
    z = _mix64(key + np.uint64(0x9E3779B97F4A7C15) * np.uint64(counter + 1))
    return np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01   # ln 2 = LN2_HI + LN2_LO, LN2_HI with trailing zero bits (k LN2_HI exact)
LN2_LO = 1.90821492927058770002e-10
EXP_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(13))


@numba.njit(error_model="numpy", cache=True)
def _exp_nonpositive(x, out, exponents, n):
    """out[i] = exp(x[i]) for x <= 0, float64, vectorised: exp(x) = 2^k e^r, k = round(x / ln 2),
    |r| <= ln 2 / 2, e^r by its degree-12 Taylor polynomial (error < 2e-16), 2^k added to the exponent
    bits. x < -708 is taken as -708 (e^-708 ~ 3e-308, nothing next to the largest weight, 1).
    No fastmath here: reassociation would undo the two-part ln 2 reduction."""
    for i in range(n):
        v = max(x[i], -708.0)
        k = np.floor(v * LOG2E + 0.5)
        r = (v - k * LN2_HI) - k * LN2_LO
        p = EXP_TAYLOR[12]
        p = p * r + EXP_TAYLOR[11]
        p = p * r + EXP_TAYLOR[10]
        p = p * r + EXP_TAYLOR[9]
        p = p * r + EXP_TAYLOR[8]
        p = p * r + EXP_TAYLOR[7]
        p = p * r + EXP_TAYLOR[6]
        p = p * r + EXP_TAYLOR[5]
        p = p * r + EXP_TAYLOR[4]
        p = p * r + EXP_TAYLOR[3]
        p = p * r + EXP_TAYLOR[2]
        p = p * r + EXP_TAYLOR[1]
        p = p * r + EXP_TAYLOR[0]
        out[i] = p
        exponents[i] = np.int64(k) << 52
    bits = out.view(np.int64)
    for i in range(n):
        bits[i] += exponents[i]


@numba.njit(**JIT)
def _weights(logits, scale, top, shifted, weights, exponents, classes):
    """weights[i] = exp((l_i - top) * scale); returns their sum."""
    for i in range(classes):
        shifted[i] = (np.float64(logits[i]) - top) * scale
    _exp_nonpositive(shifted, weights, exponents, classes)
    total = 0.0
    for i in range(classes):
        total += weights[i]
    return total


@numba.njit(**JIT)
def _top(logits, classes):
    top = logits[0]
    for i in range(1, classes):
        top = max(top, logits[i])
    return np.float64(top)


@numba.njit(**JIT)
def _sample_one(logits, classes, temperature, top_k, top_p, u, shifted, weights, exponents, candidates):
    """(token, log p_model, log p_sample) for one stream's logits, as study.sampling.sample."""
    top = _top(logits, classes)
    total1 = _weights(logits, 1.0, top, shifted, weights, exponents, classes)
    log_total1 = math.log(total1)
    if temperature == 0.0:
        best = 0
        for i in range(1, classes):
            if logits[i] > logits[best]:
                best = i
        return best, np.float64(logits[best]) - top - log_total1, 0.0
    if top_k == 0 and top_p >= 1.0:
        if temperature != 1.0:
            total = _weights(logits, 1.0 / temperature, top, shifted, weights, exponents, classes)
        else:
            total = total1
        target = u * total
        running = 0.0
        chosen = -1
        last = 0
        for i in range(classes):
            running += weights[i]
            if weights[i] > 0.0:
                last = i
            if running > target:
                chosen = i
                break
        token = chosen if chosen >= 0 else last
        return token, np.float64(logits[token]) - top - log_total1, math.log(weights[token]) - math.log(total)
    for i in range(classes):
        shifted[i] = -np.float64(logits[i])
    order = np.argsort(shifted, kind="mergesort")  # stable: ties keep the lower index first
    count = classes if top_k == 0 else min(top_k, classes)
    if top_p < 1.0:
        running = 0.0
        kept = 0
        for j in range(count):
            p = weights[order[j]] / total1
            running += p
            if running - p < top_p:
                kept = j + 1
            else:
                break
        count = kept
    for j in range(count):
        candidates[j] = order[j]
        shifted[j] = (np.float64(logits[order[j]]) - top) / temperature
    _exp_nonpositive(shifted, weights, exponents, count)
    total = 0.0
    for j in range(count):
        total += weights[j]
    target = u * total
    running = 0.0
    chosen = -1
    last = 0
    for j in range(count):
        running += weights[j]
        if weights[j] > 0.0:
            last = j
        if running > target:
            chosen = j
            break
    if chosen < 0:
        chosen = last
    token = candidates[chosen]
    return token, np.float64(logits[token]) - top - log_total1, math.log(weights[chosen]) - math.log(total)


@numba.njit(nogil=True, **JIT)
def run_steps(P, levels, blocks, head, norm_eps, S, position, first_tokens, forced, stream_keys, counter,
              temperature, top_k, top_p, out_tokens, out_logp_model, out_logp_sample, out_logits):
    """Advance `batch` streams by T = forced.shape[1] samples from state S (batch, state_size) at `position`.

    Step t feeds token_in (first_tokens at t = 0, then the previous output token) and outputs
    forced[b, t] when >= 0 (teacher forcing), else a sample drawn with uniform(key_b, counter + t).
    Writes out_tokens, out_logp_model, out_logp_sample (nan where forced) and, when out_logits has
    T rows, the logits. S is advanced in place.
    """
    batch = first_tokens.shape[0]
    steps = forced.shape[1]
    classes = head[H_CLASSES]
    at = head[H_LOGITS]
    W = np.zeros((batch, head[H_WORK]), np.float32)
    tokens = first_tokens.copy()
    shifted = np.empty(classes, np.float64)
    weights = np.empty(classes, np.float64)
    exponents = np.empty(classes, np.int64)
    candidates = np.empty(classes, np.int64)
    keep_logits = out_logits.shape[1] == steps
    for t in range(steps):
        _network_step(P, levels, blocks, head, norm_eps, S, position + t, tokens, W, batch)
        for b in range(batch):
            logits = W[b, at:at + classes]
            if keep_logits:
                out_logits[b, t, :] = logits
            if forced[b, t] >= 0:
                token = forced[b, t]
                top = _top(logits, classes)
                total = _weights(logits, 1.0, top, shifted, weights, exponents, classes)
                out_logp_model[b, t] = np.float64(logits[token]) - top - math.log(total)
                out_logp_sample[b, t] = np.nan
            else:
                u = _uniform(stream_keys[b], counter + t)
                token, logp_model, logp_sample = _sample_one(logits, classes, temperature, top_k, top_p, u,
                                                             shifted, weights, exponents, candidates)
                out_logp_model[b, t] = logp_model
                out_logp_sample[b, t] = logp_sample
            out_tokens[b, t] = token
            tokens[b] = token


# -- the engine -------------------------------------------------------------------------------------
@dataclass
class StepOutputs:
    """What a run of T samples produced for each of B streams."""
    tokens: np.ndarray         # (B, T) int64
    logp_model: np.ndarray     # (B, T) float64
    logp_sample: np.ndarray    # (B, T) float64 (nan where teacher-forced)
    logits: np.ndarray | None  # (B, T, C) float32 when asked for


@dataclass
class FastState:
    memory: np.ndarray   # (B, state_size) float32
    batch_size: int
    position: int = 0


def default_threads(batch_size: int) -> int:
    """One thread per core this process may use, at most one per stream."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, batch_size))


class FastEngine:
    """Generation backend 'numba': `run_steps` on CPU, streams split over threads (no sync per sample)."""

    name = "numba"
    device = torch.device("cpu")

    def __init__(self, model: SaShiMi, threads: int | None = None):
        self.plan = export_plan(model)
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._lock = threading.Lock()

    def new_state(self, batch_size: int) -> FastState:
        return FastState(np.zeros((batch_size, self.plan.state_size), np.float32), batch_size)

    def select(self, state: FastState, rows: np.ndarray | list[int]) -> FastState:
        """A state whose stream i is a copy of stream rows[i] of `state` (e.g. one prompt -> n streams)."""
        rows = np.asarray(rows, dtype=np.int64)
        return FastState(np.ascontiguousarray(state.memory[rows]), len(rows), state.position)

    def run(self, state: FastState, first_tokens: np.ndarray, forced: np.ndarray, keys: np.ndarray, counter: int,
            sampling: SamplingSettings, keep_logits: bool = False) -> StepOutputs:
        batch, steps = forced.shape
        if batch != state.batch_size or len(first_tokens) != batch or len(keys) != batch:
            raise ValueError(f"batch mismatch: state {state.batch_size}, first_tokens {len(first_tokens)}, "
                             f"forced {batch}, keys {len(keys)}")
        plan = self.plan
        first_tokens = np.ascontiguousarray(first_tokens, dtype=np.int64)
        forced = np.ascontiguousarray(forced, dtype=np.int64)
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        tokens = np.empty((batch, steps), np.int64)
        logp_model = np.empty((batch, steps), np.float64)
        logp_sample = np.empty((batch, steps), np.float64)
        logits = np.empty((batch, steps if keep_logits else 0, plan.n_classes), np.float32)
        threads = self.threads or default_threads(batch)
        threads = max(1, min(threads, batch))
        bounds = np.linspace(0, batch, threads + 1).round().astype(int)

        def part(index: int) -> None:
            lo, hi = bounds[index], bounds[index + 1]
            run_steps(plan.params, plan.levels, plan.blocks, plan.head, plan.norm_eps,
                      state.memory[lo:hi], state.position, first_tokens[lo:hi], forced[lo:hi],
                      keys[lo:hi], counter, float(sampling.temperature), int(sampling.top_k), float(sampling.top_p),
                      tokens[lo:hi], logp_model[lo:hi], logp_sample[lo:hi], logits[lo:hi])

        if threads == 1:
            part(0)
        else:
            with self._lock:
                if self._pool is None or self._pool_size < threads:
                    self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fast-step")
                    self._pool_size = threads
                futures = [self._pool.submit(part, index) for index in range(threads)]
                for future in futures:
                    future.result()
        state.position += steps
        return StepOutputs(tokens, logp_model, logp_sample, logits if keep_logits else None)
