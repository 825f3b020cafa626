"""Float64 references of the accelerator layers (exact GELU/SiLU/softmax), to measure fixed-point error."""

from __future__ import annotations

import math

import numpy as np


def activate(x, act: str):
    if act == "none":
        return x
    if act == "relu":
        return np.maximum(x, 0)
    if act == "gelu":
        return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    if act == "sigmoid":
        return 1 / (1 + np.exp(-x))
    if act == "silu":
        return x / (1 + np.exp(-x))
    if act == "hswish":
        return x * np.clip(x + 3, 0, 6) / 6
    raise ValueError(act)


def linear(x, w, b, act="none", res=None):
    y = activate(x @ w.T + (0 if b is None else b), act)
    return y if res is None else y + res


def layernorm(x, gamma, beta, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def attention(qkv, heads: int):
    """Returns the output [G, N, D] and the largest |logit| (for calibrating the logit format)."""
    g, n, w = qkv.shape
    d = w // 3
    dh = d // heads
    out = np.zeros((g, n, d))
    peak = 0.0
    for h in range(heads):
        q, k, v = (qkv[:, :, o + h * dh:o + (h + 1) * dh] for o in (0, d, 2 * d))
        s = np.einsum("gqc,gkc->gqk", q, k)
        peak = max(peak, float(np.abs(s).max()))
        p = np.exp(s - s.max(-1, keepdims=True))
        out[:, :, h * dh:(h + 1) * dh] = (p / p.sum(-1, keepdims=True)) @ v
    return out, peak


def depthwise_conv(x, w, b, stride, pad, act="none"):
    cols = _patches(x, w.shape[-1], stride, pad)
    y = np.einsum("hwijc,cij->hwc", cols, w) + (0 if b is None else b)
    return activate(y, act)


def _patches(x, k, stride, pad):
    h, w, c = x.shape
    xp = np.zeros((h + 2 * pad, w + 2 * pad, c))
    xp[pad:pad + h, pad:pad + w] = x
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    out = np.empty((ho, wo, k, k, c))
    for ky in range(k):
        for kx in range(k):
            out[:, :, ky, kx] = xp[ky:ky + stride * ho:stride, kx:kx + stride * wo:stride]
    return out


def im2col(x, k, stride, pad):
    p = _patches(x, k, stride, pad)
    return p.reshape(p.shape[0] * p.shape[1], -1)


def pool_mixer(x, k, scale=None):
    h, w, c = x.shape
    s = _patches(x, k, 1, k // 2).sum((2, 3))
    n = _patches(np.ones((h, w, 1)), k, 1, k // 2).sum((2, 3))
    return s / n - x if scale is None else x + scale * (s / n - x)


def l2_normalize(x):
    norm = np.sqrt((x * x).sum(-1, keepdims=True))
    return x / np.maximum(norm, 1e-12)


def additive_attention(qn, kn, wg):
    a = l2_normalize((qn @ wg.ravel())[None])[0]
    g = a @ qn
    return g[None, :] * kn
