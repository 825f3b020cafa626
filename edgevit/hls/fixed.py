"""Fixed-point formats and the integer arithmetic shared by the golden model and the HLS kernels.

A value of format ``Fmt(w, i)`` is stored as a raw signed integer ``r`` (``int64`` in numpy) meaning
``r / 2**frac`` with ``frac = w - i``, the meaning of ``ap_fixed<w, i, AP_RND, AP_SAT>``. Converting to a format
rounds half up (``floor(x + 1/2)``, what ``AP_RND`` does) and then saturates, as ``ap_fixed`` assignment does and
as the units' runtime ``requant`` (``hw/include/edgevit/fixed.h``) does.
Shifts inside the nonlinear units are floor shifts (``>>``), the same in C++ and numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Fmt:
    """A signed fixed-point format: ``w`` total bits, ``i`` integer bits (sign included)."""

    w: int
    i: int

    @property
    def frac(self) -> int:
        return self.w - self.i

    @property
    def lo(self) -> int:
        return -(1 << (self.w - 1))

    @property
    def hi(self) -> int:
        return (1 << (self.w - 1)) - 1

    def __str__(self) -> str:
        return f"ap_fixed<{self.w},{self.i}>"


@dataclass(frozen=True)
class QFmt(Fmt):
    """An int8 tensor of a QDQ model: ``q = clip(round(x / scale) + zero_point, -128, 127)``.

    The arena holds ``q - zero_point`` (in [-255, 255], a 9-bit integer: ``Fmt(9, 9)``), so real values are
    ``raw * scale`` and zero padding is a real zero; the program's float model works in these steps too.
    """

    scale: float = 1.0
    zero_point: int = 0

    def quantize_steps(self, x) -> np.ndarray:
        """onnxruntime's QuantizeLinear in float32 (``x / scale``, round half to even, clip), minus the zero
        point."""
        q = np.rint(np.asarray(x, np.float32) / np.float32(self.scale)) + self.zero_point
        return np.clip(q, -128, 127).astype(np.int64) - self.zero_point

    def __str__(self) -> str:
        return f"int8 (scale {self.scale:.6g}, zero point {self.zero_point})"


def int8_format(scale: float, zero_point: int) -> QFmt:
    """The :class:`QFmt` of an int8 tensor (scale and zero point as onnxruntime stores them)."""
    return QFmt(9, 9, float(np.float32(scale)), int(zero_point))


def shift(raw, s: int):
    """Multiply raw integers by ``2**-s`` with a floor (``s > 0``) or exactly (``s <= 0``)."""
    raw = np.asarray(raw, dtype=np.int64)
    return raw >> s if s > 0 else raw << (-s)


def convert(raw, frac: int, fmt: Fmt) -> np.ndarray:
    """Convert raw integers with ``frac`` fractional bits to ``fmt``: round half up, then saturate."""
    raw = np.asarray(raw, dtype=np.int64)
    s = frac - fmt.frac
    out = (raw + (1 << (s - 1))) >> s if s > 0 else raw << (-s)
    return np.clip(out, fmt.lo, fmt.hi)


def quantize(x, fmt: Fmt) -> np.ndarray:
    """Round floats to ``fmt`` (half up, saturating), the same rule as every other conversion; an int8
    :class:`QFmt` quantizes as onnxruntime's QuantizeLinear does."""
    if isinstance(fmt, QFmt):
        return fmt.quantize_steps(x)
    scaled = np.floor(np.asarray(x, dtype=np.float64) * 2.0 ** fmt.frac + 0.5)
    return np.clip(scaled, fmt.lo, fmt.hi).astype(np.int64)


def to_float(raw, fmt_or_frac) -> np.ndarray:
    frac = fmt_or_frac.frac if isinstance(fmt_or_frac, Fmt) else fmt_or_frac
    return np.asarray(raw, dtype=np.float64) / 2.0 ** frac


def msb(v) -> np.ndarray:
    """Index of the highest set bit of positive integers (the hardware's leading-one detector)."""
    v = np.asarray(v, dtype=np.int64)
    return sum(((v >> k) > 0).astype(np.int64) for k in range(1, 63))


MIN_INT_BITS = -4   # ap_fixed allows I < 0: tensors below 1/16 keep more fractional bits


def fit_format(max_abs: float, width: int, headroom: float = 1.0) -> Fmt:
    """The format of ``width`` bits with the fewest integer bits that holds ``max_abs * headroom``."""
    need = max_abs * headroom
    i = MIN_INT_BITS
    while (2.0 ** (i - 1)) - 2.0 ** (i - width) < need:
        i += 1
    return Fmt(width, i)
