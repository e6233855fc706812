"""The reference sampler of study.generation.sampling as numba functions on one stream's logits.

Called per sample inside the CPU engine's loop and checked against `sampling.sample` on random logits;
they never allocate, never touch global random state and never differ from the definition.
"""

import math

import numba
import numpy as np

from study.generation.engines.numba_kernels import JIT


@numba.njit(cache=True)
def mix64(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True)
def uniform(key, counter):
    z = mix64(key + np.uint64(0x9E3779B97F4A7C15) * np.uint64(counter + 1))
    return np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01   # ln 2 = LN2_HI + LN2_LO, LN2_HI with trailing zero bits (k LN2_HI exact)
LN2_LO = 1.90821492927058770002e-10
EXP_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(13))


@numba.njit(error_model="numpy", cache=True)
def exp_nonpositive(x, out, exponents, n):
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
def exp_weights(logits, scale, top, shifted, weights, exponents, classes):
    """weights[i] = exp((l_i - top) * scale); returns their sum."""
    for i in range(classes):
        shifted[i] = (np.float64(logits[i]) - top) * scale
    exp_nonpositive(shifted, weights, exponents, classes)
    total = 0.0
    for i in range(classes):
        total += weights[i]
    return total


@numba.njit(**JIT)
def largest(logits, classes):
    top = logits[0]
    for i in range(1, classes):
        top = max(top, logits[i])
    return np.float64(top)


@numba.njit(**JIT)
def sample_one(logits, classes, temperature, top_k, top_p, u, shifted, weights, exponents, candidates):
    """(token, log p_model, log p_sample) for one stream's logits, as study.sampling.sample."""
    top = largest(logits, classes)
    total1 = exp_weights(logits, 1.0, top, shifted, weights, exponents, classes)
    log_total1 = math.log(total1)
    if temperature == 0.0:
        best = 0
        for i in range(1, classes):
            if logits[i] > logits[best]:
                best = i
        return best, np.float64(logits[best]) - top - log_total1, 0.0
    if top_k == 0 and top_p >= 1.0:
        if temperature != 1.0:
            total = exp_weights(logits, 1.0 / temperature, top, shifted, weights, exponents, classes)
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
    exp_nonpositive(shifted, weights, exponents, count)
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
