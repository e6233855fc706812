"""The S4 step of the CPU generation engine in its two forms, over a batch of float32 streams.

The folded form reads 10 float32 rows per (state index n, channel h) (`numba_plan.ssm_matrices`);
the compact form reads F and C (4 rows) and rebuilds the rest from per-n and per-h constants
(`numba_plan.compact_ssm`). Both keep a stream's memory as Re (N/2, H), Im (N/2, H), then the
correction s = Re(M.x) of the memory as it stands (H), which the step that writes x computes on the
way, so one pass over the state indices does a step; either form continues the other's state. They
never allocate inside their loops.
"""

import numba

from study.generation.engines.numba_kernels import JIT, prefetch

PREFETCH_STEP = 16          # float32 values per 64-byte cache line


@numba.njit(**JIT)
def _folded_stream(m, dskip, n2, channels, rank1, W, b, z_off, y_off, s_off, S, mem_off, limit_prefetch, P, off):
    """One stream of `folded_ssm_step`."""
    block = channels * n2
    xr = S[b, mem_off:mem_off + block]
    xi = S[b, mem_off + block:mem_off + 2 * block]
    carried = S[b, mem_off + 2 * block:mem_off + 2 * block + channels]   # Re(M.x), then Re(M.x')
    u = W[b, z_off:z_off + channels]
    s = W[b, s_off:s_off + channels]
    y = W[b, y_off:y_off + channels]
    for h in range(channels):
        s[h] = carried[h] if rank1 else 0.0
        carried[h] = 0.0
        y[h] = dskip[h] * u[h]
    for n in range(n2):
        ahead = off + (n + 1) * 10 * channels  # the next state index, then what follows the matrices
        for k in range(0, min(10 * channels, limit_prefetch - ahead), PREFETCH_STEP):
            prefetch(P, ahead + k)
        mr = m[n, 0]
        mi = m[n, 1]
        fr = m[n, 2]
        fi = m[n, 3]
        gr = m[n, 4]
        gi = m[n, 5]
        pr = m[n, 6]
        pi = m[n, 7]
        cr = m[n, 8]
        ci = m[n, 9]
        base = n * channels
        for h in range(channels):
            j = base + h
            ar = xr[j]
            ai = xi[j]
            sv = s[h]
            uv = u[h]
            nr = fr[h] * ar - fi[h] * ai - pr[h] * sv + gr[h] * uv
            ni = fr[h] * ai + fi[h] * ar - pi[h] * sv + gi[h] * uv
            xr[j] = nr
            xi[j] = ni
            y[h] += cr[h] * nr - ci[h] * ni
            if rank1:
                carried[h] += mr[h] * nr - mi[h] * ni


@numba.njit(**JIT)
def _folded_pairs(m, dskip, n2, channels, rank1, W, b, z_off, y_off, s_off, S, mem_off, limit_prefetch, P, off):
    """Streams b and b + 1 of `folded_ssm_step`: each load of the matrices serves both."""
    block = channels * n2
    c = b + 1
    xr = S[b, mem_off:mem_off + block]
    xi = S[b, mem_off + block:mem_off + 2 * block]
    carried = S[b, mem_off + 2 * block:mem_off + 2 * block + channels]
    u = W[b, z_off:z_off + channels]
    s = W[b, s_off:s_off + channels]
    y = W[b, y_off:y_off + channels]
    xr2 = S[c, mem_off:mem_off + block]
    xi2 = S[c, mem_off + block:mem_off + 2 * block]
    carried2 = S[c, mem_off + 2 * block:mem_off + 2 * block + channels]
    u2 = W[c, z_off:z_off + channels]
    s2 = W[c, s_off:s_off + channels]
    y2 = W[c, y_off:y_off + channels]
    for h in range(channels):
        s[h] = carried[h] if rank1 else 0.0
        s2[h] = carried2[h] if rank1 else 0.0
        carried[h] = 0.0
        carried2[h] = 0.0
        y[h] = dskip[h] * u[h]
        y2[h] = dskip[h] * u2[h]
    for n in range(n2):
        ahead = off + (n + 1) * 10 * channels
        for k in range(0, min(10 * channels, limit_prefetch - ahead), PREFETCH_STEP):
            prefetch(P, ahead + k)
        mr = m[n, 0]
        mi = m[n, 1]
        fr = m[n, 2]
        fi = m[n, 3]
        gr = m[n, 4]
        gi = m[n, 5]
        pr = m[n, 6]
        pi = m[n, 7]
        cr = m[n, 8]
        ci = m[n, 9]
        base = n * channels
        for h in range(channels):
            j = base + h
            ar = xr[j]
            ai = xi[j]
            sv = s[h]
            uv = u[h]
            nr = fr[h] * ar - fi[h] * ai - pr[h] * sv + gr[h] * uv
            ni = fr[h] * ai + fi[h] * ar - pi[h] * sv + gi[h] * uv
            xr[j] = nr
            xi[j] = ni
            y[h] += cr[h] * nr - ci[h] * ni
            ar = xr2[j]
            ai = xi2[j]
            sv = s2[h]
            uv = u2[h]
            nr2 = fr[h] * ar - fi[h] * ai - pr[h] * sv + gr[h] * uv
            ni2 = fr[h] * ai + fi[h] * ar - pi[h] * sv + gi[h] * uv
            xr2[j] = nr2
            xi2[j] = ni2
            y2[h] += cr[h] * nr2 - ci[h] * ni2
            if rank1:
                carried[h] += mr[h] * nr - mi[h] * ni
                carried2[h] += mr[h] * nr2 - mi[h] * ni2


@numba.njit(**JIT)
def folded_ssm_step(P, off, n2, channels, rank1, d_off, W, z_off, y_off, s_off, S, mem_off, batch):
    """W[b, y + h] = Re(C.x') + D u for u = W[b, z + h], advancing the memory x of every (b, h), in the
    folded form x' = F x - G_p s + G u, s = Re(M.x) (`numba_plan.ssm_matrices`), s carried in the memory.

    P[off:] is (n2, 10, channels): for each state index n the rows Mr, Mi, Fr, Fi, Gr, Gi, Gpr, Gpi,
    Cr, Ci, so the inner loops run over channels and each n reads one contiguous piece; a stream's
    memory is Re (n2, channels), Im (n2, channels), then s (channels) at S[b, mem_off:]. W[b, s_off:] is
    scratch for this step's s. Streams go in pairs so that each load of the matrices serves two."""
    m = P[off:off + 10 * channels * n2].reshape((n2, 10, channels))
    dskip = P[d_off:d_off + channels]
    limit = P.shape[0]
    b = 0
    while b + 1 < batch:
        _folded_pairs(m, dskip, n2, channels, rank1, W, b, z_off, y_off, s_off, S, mem_off, limit, P, off)
        b += 2
    if b < batch:
        _folded_stream(m, dskip, n2, channels, rank1, W, b, z_off, y_off, s_off, S, mem_off, limit, P, off)


@numba.njit(**JIT)
def _compact_stream(sigma, alpha, shift, gamma, state, rows, dskip, n2, channels, rank1, W, b, z_off, y_off, t_off, S,
                    mem_off, P, rows_off, limit_prefetch):
    """One stream of `compact_ssm_step`."""
    block = channels * n2
    xr = S[b, mem_off:mem_off + block]
    xi = S[b, mem_off + block:mem_off + 2 * block]
    carried = S[b, mem_off + 2 * block:mem_off + 2 * block + channels]   # Re(M.x), then Re(M.x')
    u = W[b, z_off:z_off + channels]
    t = W[b, t_off:t_off + channels]
    y = W[b, y_off:y_off + channels]
    for h in range(channels):
        t[h] = alpha[h] * (carried[h] + shift[h] * u[h]) if rank1 else 0.0
        carried[h] = 0.0
        y[h] = dskip[h] * u[h]
    for n in range(n2):
        ahead = rows_off + (n + 1) * 4 * channels  # the next state index, then what follows the rows
        for k in range(0, min(4 * channels, limit_prefetch - ahead), PREFETCH_STEP):
            prefetch(P, ahead + k)
        pr = state[n, 0]
        pi = state[n, 1]
        br = state[n, 2]
        bi = state[n, 3]
        fr = rows[n, 0]
        fi = rows[n, 1]
        cr = rows[n, 2]
        ci = rows[n, 3]
        base = n * channels
        for h in range(channels):
            j = base + h
            ar = xr[j]
            ai = xi[j]
            au = alpha[h] * u[h]
            tv = t[h]
            vr = br * au - pr * tv
            vi = bi * au - pi * tv
            wr = fr[h] + sigma
            wi = fi[h]
            nr = fr[h] * ar - fi[h] * ai + wr * vr - wi * vi
            ni = fr[h] * ai + fi[h] * ar + wr * vi + wi * vr
            xr[j] = nr
            xi[j] = ni
            y[h] += cr[h] * nr - ci[h] * ni
            if rank1:      # Re((F + sigma) Q x'), Q = conj P
                carried[h] += wr * (pr * nr + pi * ni) - wi * (pr * ni - pi * nr)
    if rank1:
        for h in range(channels):
            carried[h] *= gamma[h]


@numba.njit(**JIT)
def _compact_pairs(sigma, alpha, shift, gamma, state, rows, dskip, n2, channels, rank1, W, b, z_off, y_off, t_off, S,
                   mem_off, P, rows_off, limit_prefetch):
    """Streams b and b + 1 of `compact_ssm_step`: each load of F, C and the constants serves both."""
    block = channels * n2
    c = b + 1
    xr = S[b, mem_off:mem_off + block]
    xi = S[b, mem_off + block:mem_off + 2 * block]
    carried = S[b, mem_off + 2 * block:mem_off + 2 * block + channels]
    u = W[b, z_off:z_off + channels]
    t = W[b, t_off:t_off + channels]
    y = W[b, y_off:y_off + channels]
    xr2 = S[c, mem_off:mem_off + block]
    xi2 = S[c, mem_off + block:mem_off + 2 * block]
    carried2 = S[c, mem_off + 2 * block:mem_off + 2 * block + channels]
    u2 = W[c, z_off:z_off + channels]
    t2 = W[c, t_off:t_off + channels]
    y2 = W[c, y_off:y_off + channels]
    for h in range(channels):
        t[h] = alpha[h] * (carried[h] + shift[h] * u[h]) if rank1 else 0.0
        t2[h] = alpha[h] * (carried2[h] + shift[h] * u2[h]) if rank1 else 0.0
        carried[h] = 0.0
        carried2[h] = 0.0
        y[h] = dskip[h] * u[h]
        y2[h] = dskip[h] * u2[h]
    for n in range(n2):
        ahead = rows_off + (n + 1) * 4 * channels
        for k in range(0, min(4 * channels, limit_prefetch - ahead), PREFETCH_STEP):
            prefetch(P, ahead + k)
        pr = state[n, 0]
        pi = state[n, 1]
        br = state[n, 2]
        bi = state[n, 3]
        fr = rows[n, 0]
        fi = rows[n, 1]
        cr = rows[n, 2]
        ci = rows[n, 3]
        base = n * channels
        for h in range(channels):
            j = base + h
            a = alpha[h]
            wr = fr[h] + sigma
            wi = fi[h]
            ar = xr[j]
            ai = xi[j]
            au = a * u[h]
            tv = t[h]
            vr = br * au - pr * tv
            vi = bi * au - pi * tv
            nr = fr[h] * ar - fi[h] * ai + wr * vr - wi * vi
            ni = fr[h] * ai + fi[h] * ar + wr * vi + wi * vr
            xr[j] = nr
            xi[j] = ni
            y[h] += cr[h] * nr - ci[h] * ni
            ar = xr2[j]
            ai = xi2[j]
            au = a * u2[h]
            tv = t2[h]
            vr = br * au - pr * tv
            vi = bi * au - pi * tv
            nr2 = fr[h] * ar - fi[h] * ai + wr * vr - wi * vi
            ni2 = fr[h] * ai + fi[h] * ar + wr * vi + wi * vr
            xr2[j] = nr2
            xi2[j] = ni2
            y2[h] += cr[h] * nr2 - ci[h] * ni2
            if rank1:
                carried[h] += wr * (pr * nr + pi * ni) - wi * (pr * ni - pi * nr)
                carried2[h] += wr * (pr * nr2 + pi * ni2) - wi * (pr * ni2 - pi * nr2)
    if rank1:
        for h in range(channels):
            carried[h] *= gamma[h]
            carried2[h] *= gamma[h]


@numba.njit(**JIT)
def compact_ssm_step(P, off, n2, channels, rank1, d_off, W, z_off, y_off, t_off, S, mem_off, batch):
    """W[b, y + h] = Re(C.x') + D u for u = W[b, z + h], advancing the memory x of every (b, h), in the
    compact form (`numba_plan.compact_ssm`):

      t_h = alpha_h (s_h + b_h u_h),  s_h = gamma_h Re sum_n (F + sigma) Q_n x_n   (DPLR; t = 0 when diagonal)
      x_n' = F x_n + (F + sigma) (Bv_n alpha_h u_h - P_n t_h),   Q = conj P

    (s = Re(M.x) of the folded form, carried in the memory after x and computed for x' on the way.)

    P[off:] holds sigma, then (3, channels) rows alpha, b, gamma, then (n2, 4) Re P, Im P, Re Bv, Im Bv,
    then (n2, 4, channels) rows Fr, Fi, Cr, Ci (inner loops run over channels). W[b, t_off:] is scratch
    for t. Streams go in pairs so that each load of F and C serves two."""
    sigma = P[off]
    channel = P[off + 1:off + 1 + 3 * channels].reshape((3, channels))
    state_off = off + 1 + 3 * channels
    state = P[state_off:state_off + 4 * n2].reshape((n2, 4))
    rows_off = state_off + 4 * n2
    rows = P[rows_off:rows_off + 4 * n2 * channels].reshape((n2, 4, channels))
    alpha = channel[0]
    shift = channel[1]
    gamma = channel[2]
    dskip = P[d_off:d_off + channels]
    limit = P.shape[0]
    b = 0
    while b + 1 < batch:
        _compact_pairs(sigma, alpha, shift, gamma, state, rows, dskip, n2, channels, rank1, W, b, z_off, y_off, t_off,
                       S, mem_off, P, rows_off, limit)
        b += 2
    if b < batch:
        _compact_stream(sigma, alpha, shift, gamma, state, rows, dskip, n2, channels, rank1, W, b, z_off, y_off, t_off,
                        S, mem_off, P, rows_off, limit)
