"""int8 requantization: the golden model of ``hw/include/edgevit/requant.h`` and the int8 units' numerics.

onnxruntime requantizes an int32 accumulator with float32 arithmetic: ``M = x_scale * w_scale / y_scale``
(float32, per output channel), ``y = clip(round_half_even(float32(float32(acc) * M)) + y_zero_point)``. The
accelerator does the same in integers: ``M = m0 * 2^-n`` exactly (``m0`` is float32 M's 24-bit mantissa, ``n``
its exponent, both computed at compile time), and the two float32 roundings are rounding to 24 significant bits
(round half to even). So the integer result equals onnxruntime's float one wherever onnxruntime computes exactly
that (its QLinearConv / QGemm kernels do); see docs/fpga.md "int8 (QDQ) models" for what was measured.

Tensors of a QDQ program hold ``q - zero_point`` (:class:`~edgevit.hls.fixed.QFmt`), so an accumulator is
``sum (x - zx) w + b`` without zero-point corrections and requantized results are stored minus ``y_zero_point``.
"""

from __future__ import annotations

import numpy as np

MANTISSA_BITS = 24        # float32's significand, hidden bit included
MAX_SHIFT = 62            # acc * m0 < 2^55 and the rounding shift stays inside int64
RECORD_WORDS = 4          # per output channel: m0 >> 12, m0 & 4095, n, y zero point (16-bit words)
TABLE_WORDS, TABLE_OFFSET = 512, 256   # a qtable layer's table: entry x + 256 for every q - zero point


def multiplier(m) -> tuple[np.ndarray, np.ndarray]:
    """float32 multipliers as ``(m0, n)`` with ``M = m0 * 2^-n`` exactly, ``2^23 <= m0 < 2^24``.

    Raises
    ------
    ValueError
        If a multiplier is not finite and positive, or needs a shift outside [1, ``MAX_SHIFT``].
    """
    m = np.atleast_1d(np.asarray(m, np.float32))
    if not np.all(np.isfinite(m)) or np.any(m <= 0):
        raise ValueError("requantization multiplier that is not a positive finite number")
    mant, exp = np.frexp(m.astype(np.float64))          # m = mant * 2^exp, mant in [0.5, 1)
    m0 = np.round(mant * (1 << MANTISSA_BITS)).astype(np.int64)
    n = (MANTISSA_BITS - exp).astype(np.int64)
    if np.any(n < 1) or np.any(n > MAX_SHIFT):
        raise ValueError(f"requantization multiplier {float(m.min()):.3g}..{float(m.max()):.3g} needs a shift "
                         f"outside 1..{MAX_SHIFT}")
    assert np.all(m0.astype(np.float64) * 2.0 ** -n.astype(np.float64) == m.astype(np.float64))
    return m0, n


def rne_shift(v, s):
    """``v * 2^-s`` rounded half to even, ``s >= 1`` (``requant.h``)."""
    v, s = np.asarray(v, np.int64), np.asarray(s, np.int64)
    q = v >> s
    r = v - (q << s)
    half = np.int64(1) << (s - 1)
    return q + ((r > half) | ((r == half) & ((q & 1) == 1)))


def round_float32(v):
    """Integers rounded to 24 significant bits, half to even: what converting to float32 does (``requant.h``)."""
    v = np.asarray(v, np.int64)
    a = np.abs(v)
    k = np.zeros_like(a)
    for b in range(1, 63):   # the leading-one detector of fixed.h's msb
        k = np.where((a >> b) > 0, b, k)
    s = np.maximum(k - (MANTISSA_BITS - 1), 1)
    return np.where(k < MANTISSA_BITS, v, rne_shift(v, s) << s)


def requantize(acc, m0, n, zy, relu: bool = False):
    """``requant.h``: int accumulators (last axis = output channels) to int8 minus ``zy``.

    ``y = round_half_even(float32(float32(acc) * M))`` in integers, clipped to [-128 - zy, 127 - zy] (and at 0
    with ``relu``: onnxruntime's quantizer drops a ReLU before a QuantizeLinear whose zero point is its range's
    low end; a kept one clips at the zero point).
    """
    p = round_float32(round_float32(acc) * np.asarray(m0, np.int64))
    y = rne_shift(p, n)
    lo = max(-128 - int(zy), 0) if relu else -128 - int(zy)
    return np.clip(y, lo, 127 - int(zy))


def records(m0, n, zy) -> np.ndarray:
    """Per output channel the 16-bit words ``requant.h`` reads: ``m0 >> 12, m0 & 4095, n, zy``."""
    m0 = np.asarray(m0, np.int64)
    return np.stack([m0 >> 12, m0 & 4095, np.broadcast_to(n, m0.shape), np.full(m0.shape, int(zy))], -1)


def unpack(rec) -> tuple[np.ndarray, np.ndarray, int]:
    """The inverse of :func:`records`: ``(m0, n, zy)``."""
    rec = np.asarray(rec, np.int64).reshape(-1, RECORD_WORDS)
    return (rec[:, 0] << 12) | rec[:, 1], rec[:, 2], int(rec[0, 3])


def qlinear(x, w, b, rec, relu: bool = False):
    """``qlinear.h``: ``x`` [T, K] and ``w`` [N, K] int8 minus zero points, ``b`` [N] int32 or None, ``rec`` the
    requantization records [N, 4] -> [T, N]."""
    acc = np.asarray(x, np.int64) @ np.asarray(w, np.int64).T
    if b is not None:
        acc = acc + np.asarray(b, np.int64)
    m0, n, zy = unpack(rec)
    return requantize(acc, m0, n, zy, relu)


def qdepthwise(x, w, b, rec, stride: int, pad: int, relu: bool = False):
    """``qlinear.h`` (``qdwconv_unit``): ``x`` [H, W, C], ``w`` [C, K, K], ``b`` [C] or None -> [HO, WO, C]."""
    from .golden import _patches

    cols = _patches(np.asarray(x, np.int64), np.shape(w)[-1], stride, pad)   # [HO, WO, K, K, C]
    acc = np.einsum("hwijc,cij->hwc", cols, np.asarray(w, np.int64))
    if b is not None:
        acc = acc + np.asarray(b, np.int64)
    m0, n, zy = unpack(rec)
    return requantize(acc, m0, n, zy, relu)


ADD_BITS = 30   # the larger of a qadd layer's two multipliers is in [2^29, 2^30)


def add_record(ra: float, rb: float, zy: int) -> np.ndarray:
    """A ``qadd`` layer's record (16-bit words ``MA >> 15, MA & 32767, MB >> 15, MB & 32767, n, zy``) for the
    ratios ``ra = sa / sy``, ``rb = sb / sy``: ``MA = round(ra 2^n)``, ``MB = round(rb 2^n)``.

    Raises
    ------
    ValueError
        Ratios that are not positive finite numbers or need a shift outside [1, ``MAX_SHIFT``].
    """
    top = max(ra, rb)
    if not (np.isfinite(top) and ra > 0 and rb > 0):
        raise ValueError("int8 add with a scale ratio that is not a positive finite number")
    n = ADD_BITS - 1 - int(np.floor(np.log2(top)))
    if not 1 <= n <= MAX_SHIFT - 10:
        raise ValueError(f"int8 add with scale ratios {ra:.3g}, {rb:.3g} outside the unit's range")
    ma, mb = (min(int(round(r * 2.0 ** n)), (1 << ADD_BITS) - 1) for r in (ra, rb))
    return np.array([ma >> 15, ma & 32767, mb >> 15, mb & 32767, n, int(zy)], np.int64)


def qadd(a, b, rec):
    """``qlinear.h`` (``qadd``): ``round_half_even((a MA + b MB) 2^-n)`` clipped to int8 minus ``zy``, for ``a``, ``b``
    int8 minus their zero points. It approximates onnxruntime's float32 ``a sa / sy + b sb / sy`` (within a
    step)."""
    r = np.asarray(rec, np.int64)
    ma, mb, n, zy = (r[0] << 15) | r[1], (r[2] << 15) | r[3], int(r[4]), int(r[5])
    y = rne_shift(np.asarray(a, np.int64) * ma + np.asarray(b, np.int64).reshape(np.shape(a)) * mb, n)
    return np.clip(y, -128 - zy, 127 - zy)


def qavgpool(x, rec):
    """``qlinear.h`` (``qavgpool``): the sum over tokens of ``x`` [T, C] requantized with ``M = sx / (sy T)``."""
    x = np.asarray(x, np.int64).reshape(-1, np.shape(x)[-1])
    m0, n, zy = unpack(rec)
    return requantize(x.sum(0, keepdims=True), m0, n, zy)


def qlinear_float(x, w, b, m, zy, relu: bool = False):
    """The float64 model of :func:`qlinear` in steps of the output: ``acc * M`` rounded half to even with M in
    float64, clipped. It differs from the integer unit only where float32's rounding moves a value across a
    half step."""
    acc = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    if b is not None:
        acc = acc + np.asarray(b, np.float64)
    lo = max(-128 - zy, 0) if relu else -128 - zy
    return np.clip(np.rint(acc * np.asarray(m, np.float64)), lo, 127 - zy)
