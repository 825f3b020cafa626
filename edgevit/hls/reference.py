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
    if act == "sigmoid":   # 1 / (1 + e^-x) without overflowing for large |x|
        return 0.5 * (1 + np.tanh(0.5 * np.asarray(x)))
    if act == "silu":
        return x * 0.5 * (1 + np.tanh(0.5 * np.asarray(x)))
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


def global_norm(x, eps):
    """GroupNorm with one group on one sample: mean and variance over the whole tensor (no affine)."""
    return (x - x.mean()) / np.sqrt(x.var() + eps)


def separable_attention(qk, v):
    """MobileViTv2's separable self-attention on ``qk`` [G, N, 1 + D] (a score, then D keys per token) and ``v``
    [G, N, D] (the values, ReLU applied): per group a softmax of the scores over the N tokens weights the keys
    into one context vector, which scales the values."""
    s = qk[..., :1] - qk[..., :1].max(1, keepdims=True)
    p = np.exp(s) / np.exp(s).sum(1, keepdims=True)
    return v * (qk[..., 1:] * p).sum(1, keepdims=True)


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


def moe_route(logits, k: int):
    """Top-k experts per patch of ``logits`` [N, E] and the softmax over their logits: [N, k, 2] (id, weight)."""
    z = np.asarray(logits, np.float64).reshape(-1, np.shape(logits)[-1])
    idx = np.argsort(-z, axis=1, kind="stable")[:, :k]
    val = np.take_along_axis(z, idx, 1)
    p = np.exp(val - val[:, :1])
    return np.stack([idx, p / p.sum(1, keepdims=True)], -1)


def moe_experts(x, route, w1, b1, w2, b2, act="gelu"):
    """Returns the gate-weighted sum of each patch's experts [N, D], and the peaks of the hidden activations
    and of the expert outputs (for calibrating their formats)."""
    x = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
    route = np.asarray(route).reshape(x.shape[0], -1, 2)
    out, peak_h, peak_o = np.zeros_like(x), 0.0, 0.0
    for e in range(len(w1)):
        tok, slot = np.nonzero(route[:, :, 0] == e)
        if tok.size:
            h = linear(x[tok], w1[e], b1[e], act)
            y = linear(h, w2[e], b2[e])
            peak_h, peak_o = max(peak_h, float(np.abs(h).max())), max(peak_o, float(np.abs(y).max()))
            out[tok] += route[tok, slot, 1][:, None] * y
    return out, peak_h, peak_o
