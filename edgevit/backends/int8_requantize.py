"""The requantizing epilogue of the int8 kernels, in saturating integer steps.

onnxruntime's requantization is ``clip(round_half_even(float(acc) · M) + zy, -128, 127)`` in float32. Written
with float ``round``/``add``/``min``/``max``, it cost 8 instructions per 4 outputs on NEON (``frinti``,
``fadd``, ``fminnm``, ``fmaxnm``, ``fcvtzs`` and narrowing, after ``scvtf`` + ``fmul``) and 7 per 16 on
AVX-512. Here the rounding is ``lrint`` (round half to even in the default rounding mode: NEON ``frintx`` +
``fcvtzs``, x86 ``vcvtps2dq``) and the zero point is added with saturation in int16, narrowed with saturation:
NEON ``sqxtn`` / ``sqadd`` / ``sqxtn``, x86 ``vpmovsdw`` / ``vpaddsw`` / ``vpmovswb`` — the same values, one
kernel stage that fusion puts into the dot kernel's epilogue (it stays an elementwise TE function).

``lrint`` of a value outside int32 is unspecified (x86 returns ``INT32_MIN``): where the accumulator's bound
times the multiplier could leave ``±2^30``, the value is first clamped there in float (exact: far outside the
int8 range either way).
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

#: Values beyond this (in output steps) saturate anyway; ``lrint`` is exact below it.
_SAFE = float(2 ** 30)


def needs_clamp(bound: np.ndarray, multiplier: np.ndarray) -> bool:
    """Whether ``|acc| <= bound`` times ``multiplier`` may leave the range ``lrint`` converts exactly."""
    return bool(np.any(np.abs(bound.astype(np.float64)) * np.abs(multiplier.astype(np.float64)) >= _SAFE))


def _llvm(name: str, dtype: str, *args):
    return tirx.call_llvm_pure_intrin(dtype, name, *args)


def requantize(acc: te.Tensor, offset: te.Tensor | None, multiplier: te.Tensor, zero_point: int, axis: int,
               clamp: bool) -> te.Tensor:
    """``clip(round_half_even(float(acc + offset) · multiplier) + zero_point)`` as int8.

    Parameters
    ----------
    acc
        The int32 accumulator.
    offset, multiplier
        One int32 / float32 value per index of ``acc``'s axis ``axis`` (1-D), per-tensor (one element), or
        one per index of ``acc``'s last two axes (2-D: an average pool's ``1 / count`` map); ``offset`` None:
        nothing to add.
    zero_point
        The output's zero point (int8 range).
    clamp
        Clamp the scaled value to ``±2^30`` first (:func:`needs_clamp`).
    """
    axis = axis % len(acc.shape)
    zy = tirx.const(int(zero_point), "int16")

    def pick(param, idx):
        if len(param.shape) == 2:
            return param[idx[-2], idx[-1]]
        return param[idx[axis] if int(param.shape[0]) > 1 else 0]

    def body(*idx):
        value = acc[idx]
        if offset is not None:
            value = value + pick(offset, idx)
        scaled = value.astype("float32") * pick(multiplier, idx)
        if clamp:
            scaled = te.max(te.min(scaled, tirx.const(_SAFE, "float32")), tirx.const(-_SAFE, "float32"))
        rounded = te.max(te.min(_llvm("llvm.lrint", "int32", scaled), 32767), -32768).astype("int16")
        shifted = _llvm("llvm.sadd.sat", "int16", rounded, zy)
        return te.max(te.min(shifted, tirx.const(127, "int16")), tirx.const(-128, "int16")).astype("int8")

    return te.compute(acc.shape, body, name="int8_requantize")


__all__ = ["needs_clamp", "requantize"]
