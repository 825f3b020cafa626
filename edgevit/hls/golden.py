"""The numpy golden model: every HLS kernel in ``hw/include/edgevit`` redone on raw integers, bit for bit.

Arrays hold raw fixed-point integers (``int64``); formats are :class:`~edgevit.hls.fixed.Fmt`. Each function
names the header it mirrors. Layouts are channels-last, as in the kernels.
"""

from __future__ import annotations

import numpy as np

from . import tables as tb
from .fixed import Fmt, convert, msb, shift

EXP_FRAC = 16
XHAT_FRAC = 16
_T = {name: fn() for name, fn in tb.TABLES.items()}


def _interp(table, idx, r, bits):
    a, b = table[idx], table[np.minimum(idx + 1, len(table) - 1)]
    return a + (((b - a) * r) >> bits)


ACT_FRAC = tb.TABLE_FRAC   # the epilogue's internal activation format (activation.h): 20 fractional bits,
ACT_FMT = Fmt(40, 20)     # range +-2^19, whatever the layer


def _table_abs(table, step_log2: int, a):
    bits = ACT_FRAC - step_log2
    idx = a >> bits
    last = len(table) - 1
    out = _interp(table, np.minimum(idx, last - 1), a & ((1 << bits) - 1), bits)
    return np.where(idx >= last, table[last], out)


def sigmoid_raw(v):
    s = _table_abs(_T["SIGMOID"], tb.SIGMOID_STEP_LOG2, np.abs(v))
    return np.where(v < 0, (1 << tb.TABLE_FRAC) - s, s)


def activate(v, act: str) -> tuple[np.ndarray, int]:
    """``activation.h``: a table activation of raw ``v`` in the internal format ``ACT_FMT``.

    Returns the raw result and its fractional bits.
    """
    v = np.asarray(v, dtype=np.int64)
    if act == "gelu":
        return np.maximum(v, 0) - _table_abs(_T["GELU_DELTA"], tb.GELU_STEP_LOG2, np.abs(v)), ACT_FRAC
    if act == "sigmoid":
        return sigmoid_raw(v), ACT_FRAC
    if act == "silu":
        return v * sigmoid_raw(v), 2 * ACT_FRAC
    if act == "hswish":
        t = np.clip(v + (3 << ACT_FRAC), 0, 6 << ACT_FRAC)
        sixth = ((1 << tb.TABLE_FRAC) + 3) // 6
        return v * ((t * sixth) >> tb.TABLE_FRAC), 2 * ACT_FRAC
    raise ValueError(act)


def epilogue(acc, frac: int, fo: Fmt, act: str = "none") -> np.ndarray:
    """``activation.h``: accumulator ``acc`` (``frac`` fractional bits) through ``act`` to format ``fo``.

    ReLU and none requantise straight to ``fo``; table activations run in ``ACT_FMT``, then requantise.
    """
    if act in ("none", "relu"):
        y = convert(acc, frac, fo)
        return np.maximum(y, 0) if act == "relu" else y
    y, fy = activate(convert(acc, frac, ACT_FMT), act)
    return convert(y, fy, fo)


def linear(x, fx: Fmt, w, fw: Fmt, b, fo: Fmt, act="none", res=None, fr: Fmt | None = None):
    """``linear.h``: ``x`` [T, CI], ``w`` [CO, CI], ``b`` [CO] raw with ``fx.frac + fw.frac`` bits or None."""
    acc = np.asarray(x, np.int64) @ np.asarray(w, np.int64).T
    if b is not None:
        acc = acc + np.asarray(b, np.int64)
    y = epilogue(acc, fx.frac + fw.frac, fo, act)
    if res is not None:
        y = add(y, fo, res, fr, fo)
    return y


def exp_neg(x, frac: int):
    """``math.h``: e^x for raw x <= 0 with ``frac`` bits; ``EXP_FRAC`` bits out."""
    t = (np.asarray(x, np.int64) * tb.LOG2E_Q) >> frac
    n = t >> tb.LOG2E_FRAC
    f = t & ((1 << tb.LOG2E_FRAC) - 1)
    bits = tb.LOG2E_FRAC - tb.EXP2_STEP_LOG2
    p = _interp(_T["EXP2"], f >> bits, f & ((1 << bits) - 1), bits)
    s = np.minimum(tb.TABLE_FRAC - EXP_FRAC - n, 62)
    return np.where(n < -40, 0, p >> s)


def recip_norm(l):
    k = msb(l)
    mant = l >> (k - 16)
    bits = 16 - tb.RECIP_STEP_LOG2
    return _interp(_T["RECIP"], (mant - (1 << 16)) >> bits, mant & ((1 << bits) - 1), bits), k


def rsqrt_norm(d):
    j = msb(d) >> 1
    s = 2 * j - 16
    m = np.where(s > 0, d >> np.maximum(s, 0), d << np.maximum(-s, 0))
    bits = 16 - tb.RSQRT_STEP_LOG2
    return _interp(_T["RSQRT"], (m - (1 << 16)) >> bits, m & ((1 << bits) - 1), bits), j


def layernorm(x, fx: Fmt, gamma, beta, fg: Fmt, fo: Fmt, eps: float):
    """``layernorm.h``: one-pass LayerNorm over the last axis of ``x`` [T, C]."""
    x = np.asarray(x, np.int64)
    c = x.shape[-1]
    s1 = x.sum(-1, keepdims=True)
    s2 = (x * x).sum(-1, keepdims=True)
    d = c * s2 - s1 * s1 + eps_q(eps, fx) * c * c
    rs, j = rsqrt_norm(np.maximum(d, 1))
    rs = np.where(d > 0, rs, 0)
    xhat = ((c * x - s1) * rs) >> (j + tb.TABLE_FRAC - XHAT_FRAC)
    acc = np.asarray(gamma, np.int64) * xhat + (np.asarray(beta, np.int64) << XHAT_FRAC)
    return convert(acc, fg.frac + XHAT_FRAC, fo)


GN_MEAN_FRAC = 4   # extra fractional bits of the global norm's mean and deviations (layernorm.h)


def global_norm(x, fx: Fmt, fo: Fmt, eps: float):
    """``layernorm.h`` (``global_norm``): ``x`` normalised by the mean and variance of all its words.

    With n words and r = round(2^32 / n): mean mu = (S1 r) >> 28 (4 more fractional bits than x), deviations
    dx = 16 x - mu, variance v = ((sum((dx dx) >> 8) >> 8) r) >> 24 (2 fx fractional bits), then
    xhat = dx rsqrt(v + eps). Every product and sum stays within 64 bits for n < 2^24 words of 16 bits.
    """
    x = np.asarray(x, np.int64)
    n = x.size
    r = ((1 << 32) + n // 2) // n
    mu = (int(x.sum()) * r) >> 28
    dx = (x << GN_MEAN_FRAC) - mu
    v = ((int(((dx * dx) >> 8).sum()) >> 8) * r) >> 24
    dv = v + eps_q(eps, fx)
    rs, j = rsqrt_norm(np.int64(max(dv, 1)))
    rs = rs if dv > 0 else 0
    xhat = (dx * rs) >> (j + tb.TABLE_FRAC - XHAT_FRAC + GN_MEAN_FRAC)
    return convert(xhat, XHAT_FRAC, fo)


CTX_FRAC = 8   # extra fractional bits of the separable attention's context vector (attention.h)


def separable_attention(qk, fq: Fmt, v, fv: Fmt, fo: Fmt):
    """``attention.h`` (``separable_attention``): ``qk`` [G, N, 1 + D] (scores, keys), ``v`` [G, N, D] -> [G, N, D].

    Per group: e_n = exp(q_n - max q) (``EXP_FRAC`` bits), the context c = sum_n e_n k_n / sum_n e_n with
    ``fq.frac + CTX_FRAC`` bits, y = v c.
    """
    qk = np.asarray(qk, np.int64)
    q, k = qk[..., 0], qk[..., 1:]
    e = exp_neg(q - q.max(1, keepdims=True), fq.frac)                   # [G, N]
    rm, k2 = recip_norm(e.sum(1))                                       # [G]
    acc = (e[..., None] * k).sum(1)                                     # [G, D]
    ctx = (acc * rm[:, None]) >> (tb.TABLE_FRAC + k2 - CTX_FRAC)[:, None]
    return convert(np.asarray(v, np.int64) * ctx[:, None, :], fv.frac + fq.frac + CTX_FRAC, fo)


def eps_q(eps: float, fx: Fmt) -> int:
    """LayerNorm's eps with ``2 * fx.frac`` fractional bits (the kernel's ``EPS_Q``)."""
    return int(np.floor(eps * 2.0 ** (2 * fx.frac) + 0.5))


def attention(qkv, fq: Fmt, fl: Fmt, fo: Fmt, heads: int):
    """``attention.h``: ``qkv`` [G, N, 3D] -> [G, N, D], online softmax in key order per row."""
    qkv = np.asarray(qkv, np.int64)
    g, n, w = qkv.shape
    d = w // 3
    dh = d // heads
    out = np.zeros((g, n, d), np.int64)
    for h in range(heads):
        q = qkv[:, :, h * dh:(h + 1) * dh]
        k = qkv[:, :, d + h * dh:d + (h + 1) * dh]
        v = qkv[:, :, 2 * d + h * dh:2 * d + (h + 1) * dh]
        s = convert(np.einsum("gqc,gkc->gqk", q, k), 2 * fq.frac, fl)   # [G, Nq, Nk]
        m = s[:, :, 0].copy()
        lsum = np.full((g, n), 1 << EXP_FRAC, np.int64)
        o = v[:, 0:1, :].repeat(n, 1) << EXP_FRAC                        # [G, Nq, DH]
        for j in range(1, n):
            sj = s[:, :, j]
            vj = v[:, j:j + 1, :]
            new = sj > m
            e = exp_neg(np.where(new, m - sj, sj - m), fl.frac)
            lsum = np.where(new, ((lsum * e) >> EXP_FRAC) + (1 << EXP_FRAC), lsum + e)
            o = np.where(new[..., None], ((o * e[..., None]) >> EXP_FRAC) + (vj << EXP_FRAC), o + e[..., None] * vj)
            m = np.where(new, sj, m)
        rm, k2 = recip_norm(lsum)
        sh = fq.frac + tb.TABLE_FRAC + k2 - fo.frac - 8
        prod = o * rm[..., None]
        shd = np.where(sh[..., None] > 0, prod >> np.maximum(sh, 0)[..., None], prod << np.maximum(-sh, 0)[..., None])
        out[:, :, h * dh:(h + 1) * dh] = convert(shd, fo.frac + 8, fo)
    return out


def attention_done_steps(groups: int, heads: int, n: int, rows: int) -> np.ndarray:
    """The step at which each query row completes under the skewed schedule of ``attention.h``."""
    skew = -(-n // rows)
    return np.tile(np.arange(n) * skew + n - 1, groups * heads)


def depthwise_conv(x, fx: Fmt, w, fw: Fmt, b, fo: Fmt, stride: int, pad: int, act="none"):
    """``conv.h``: ``x`` [H, W, C], ``w`` [C, K, K] -> [HO, WO, C]."""
    cols = _patches(np.asarray(x, np.int64), w.shape[-1], stride, pad)   # [HO, WO, K, K, C]
    acc = np.einsum("hwijc,cij->hwc", cols, np.asarray(w, np.int64))
    if b is not None:
        acc = acc + np.asarray(b, np.int64)
    return epilogue(acc, fx.frac + fw.frac, fo, act)


def _patches(x, k: int, stride: int, pad: int):
    h, w, c = x.shape
    xp = np.zeros((h + 2 * pad, w + 2 * pad, c), np.int64)
    xp[pad:pad + h, pad:pad + w] = x
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    out = np.empty((ho, wo, k, k, c), np.int64)
    for ky in range(k):
        for kx in range(k):
            out[:, :, ky, kx] = xp[ky:ky + stride * ho:stride, kx:kx + stride * wo:stride]
    return out


def im2col(x, k: int, stride: int, pad: int):
    """``conv.h``: [H, W, C] -> [HO * WO, K * K * C] in (ky, kx, c) order."""
    p = _patches(np.asarray(x, np.int64), k, stride, pad)
    return p.reshape(p.shape[0] * p.shape[1], -1)


def unfold(x, ph: int, pw: int):
    """``layout.h``: [H, W, C] -> [PH * PW, N, C]."""
    h, w, c = x.shape
    t = np.asarray(x).reshape(h // ph, ph, w // pw, pw, c).transpose(1, 3, 0, 2, 4)
    return t.reshape(ph * pw, (h // ph) * (w // pw), c)


def fold(x, h: int, w: int, ph: int, pw: int):
    """``layout.h``: [PH * PW, N, C] -> [H, W, C]."""
    c = x.shape[-1]
    t = np.asarray(x).reshape(ph, pw, h // ph, w // pw, c).transpose(2, 0, 3, 1, 4)
    return t.reshape(h, w, c)


def concat(a, fa: Fmt, b, fb: Fmt, fo: Fmt):
    return np.concatenate([convert(a, fa.frac, fo), convert(b, fb.frac, fo)], axis=-1)


def avgpool(x, fx: Fmt, fo: Fmt):
    """``layout.h``: mean over tokens of ``x`` [T, C]."""
    x = np.asarray(x, np.int64).reshape(-1, np.shape(x)[-1])
    t = x.shape[0]
    r = ((1 << 24) + t // 2) // t
    return convert(x.sum(0, keepdims=True) * r, fx.frac + 24, fo)


NORM_FRAC = 16


def pool_mixer(x, fx: Fmt, fo: Fmt, k: int, scale=None, fs: Fmt | None = None):
    """``token_mixers.h``: m = avgpool_KxK(x) - x over in-map pixels, ``x`` [H, W, C]; with ``scale``, x + scale * m."""
    x = np.asarray(x, np.int64)
    s = _patches(x, k, 1, k // 2).sum((2, 3))
    n = _patches(np.ones(x.shape[:2] + (1,), np.int64), k, 1, k // 2).sum((2, 3))
    m = s * (((1 << 24) + n // 2) // n) - (x << 24)
    if scale is None:
        return convert(m, fx.frac + 24, fo)
    return convert(np.asarray(scale, np.int64) * m + (x << (24 + fs.frac)), fx.frac + 24 + fs.frac, fo)


def l2_normalize(x, fo: Fmt):
    """``token_mixers.h``: each row of ``x`` [T, C] divided by its L2 norm (zero rows stay zero)."""
    x = np.asarray(x, np.int64)
    s = (x * x).sum(-1, keepdims=True)
    rs, j = rsqrt_norm(np.maximum(s, 1))
    rs = np.where(s > 0, rs, 0)
    return convert((x * rs) >> (j + tb.TABLE_FRAC - NORM_FRAC), NORM_FRAC, fo)


def additive_attention(qn, fq: Fmt, kn, fk: Fmt, wg, fw: Fmt, fo: Fmt):
    """``token_mixers.h``: SwiftFormer's additive attention on normalised ``qn``, ``kn`` [T, D]."""
    qn, kn, wg = (np.asarray(v, np.int64) for v in (qn, kn, wg))
    a = shift(qn @ wg.ravel(), fq.frac + fw.frac - NORM_FRAC)
    s = int((a * a).sum())
    rs, j = rsqrt_norm(np.int64(max(s, 1)))
    rs = rs if s > 0 else 0
    an = (a * rs) >> (j + tb.TABLE_FRAC - NORM_FRAC)
    g = shift(an @ qn, fq.frac)
    return convert(g[None, :] * kn, NORM_FRAC + fk.frac, fo)


GATE_FMT = Fmt(16, 2)   # MoE gate weights in [0, 1]: 14 fractional bits


def moe_route(logits, fl: Fmt, k: int, fo: Fmt = GATE_FMT):
    """``moe.h``: per patch, the ``k`` largest of ``logits`` [N, E] (ties to the lower expert id) and the softmax
    over them -> [N, k, 2] rows of (expert id, gate weight raw in ``fo``)."""
    z = np.asarray(logits, np.int64).reshape(-1, np.shape(logits)[-1])
    idx = np.argsort(-z, axis=1, kind="stable")[:, :k]
    val = np.take_along_axis(z, idx, 1)
    e = exp_neg(val - val[:, :1], fl.frac)
    rm, k2 = recip_norm(e.sum(1))
    s = (tb.TABLE_FRAC + k2 - fo.frac)[:, None]
    w = np.clip((e * rm[:, None] + (np.int64(1) << (s - 1))) >> s, fo.lo, fo.hi)
    return np.stack([idx, w], -1)


def moe_experts(x, fx: Fmt, route, fg: Fmt, w1, b1, w2, b2, fw: Fmt, fh: Fmt, fo: Fmt, act="gelu"):
    """``moe.h``: each patch of ``x`` [N, D] through its routed experts, fc2(act(fc1(x))), weighted by the gate.

    ``route`` [N, k, 2] from :func:`moe_route`; ``w1`` [E, H, D], ``w2`` [E, D, H] raw in ``fw``; biases ``b1``
    [E, H], ``b2`` [E, D] at the accumulator scales; ``fh`` the hidden format, ``fo`` the expert outputs' and
    the result's. Each expert runs on its patches at once (the order does not matter: the sums are exact).
    """
    d = np.shape(x)[-1]
    x = np.asarray(x, np.int64).reshape(-1, d)
    route = np.asarray(route, np.int64).reshape(x.shape[0], -1, 2)
    acc = np.zeros_like(x)
    for e in range(len(w1)):
        tok, slot = np.nonzero(route[:, :, 0] == e)
        if tok.size:
            h = linear(x[tok], fx, w1[e], fw, b1[e], fh, act)
            acc[tok] += route[tok, slot, 1][:, None] * linear(h, fh, w2[e], fw, b2[e], fo)
    return convert(acc, fg.frac + fo.frac, fo)


def moe_active_experts(route, experts: int) -> np.ndarray:
    """How many patches each expert gets from a ``route`` table (zero: its weights are never needed)."""
    ids = np.asarray(route, np.int64)[..., 0].ravel()
    return np.bincount(ids, minlength=experts)


def add(a, fa: Fmt, b, fb: Fmt, fo: Fmt):
    """``moe.h``: ``a + b`` summed exactly at the finer of the two formats, then converted to ``fo``."""
    f = max(fa.frac, fb.frac)
    return convert(shift(a, fa.frac - f) + shift(np.asarray(b, np.int64).reshape(np.shape(a)), fb.frac - f), f, fo)
