"""2x bilinear upsampling with integer indices (EfficientFormerV2's attention upsamples 7x7 -> 14x14).

TVM's ``resize2d`` computes every output's source coordinate in floating point (``floor``, casts, clamps) and
its interpolation weights from it; fused with the GELU that follows, that scalar work is repeated per output
and dominated the kernel (efficientformerv2_s0 on Zen 3: 2.9 ms per call, 13 % of the model). For an exact 2x
half-pixel upsample the source rows/columns and weights follow from the output index's parity:
output ``2i`` interpolates inputs ``i-1`` and ``i`` with weights 0.25 / 0.75, output ``2i+1`` inputs ``i`` and
``i+1`` with 0.75 / 0.25 (indices clamped at the border). The products and sums are the ones ``resize2d``
computes, in the same order, so the result is the same to the bit.

Compiled models take the two interpolations as separate stages (``separable``): each map's rows first (the
columns' taps gather), then down the columns, which reads two of those rows with plain vector loads and is
computed inside the consumer (the GELU that follows in EfficientFormerV2); the same products and sums, in the
same order. 2x upsample + GELU of 1024 x 7 x 7: 5.5 -> 3.7 M instructions (qemu count, Cortex-A72), 0.404 ->
0.197 ms (Zen 4, one thread, docs/cpu.md). The one-stage form stays as the tests' reference.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx
from tvm.relax import PyExprMutator, expr_functor

from .relax_rewrite import is_op, rewrite_functions, static_shape


def _taps(out, size: int):
    """(low source index, high source index, weight of the high one) for output index ``out`` of a 2x upsample."""
    half, odd = tirx.floordiv(out, 2), tirx.floormod(out, 2)
    low = tirx.max(half + odd - 1, 0)
    high = tirx.min(half + odd, size - 1)
    weight = tirx.Select(odd == 0, tirx.const(0.75, "float32"), tirx.const(0.25, "float32"))
    return low, high, weight


def upsample2x_bilinear(data: te.Tensor, separable: bool = False) -> te.Tensor:
    """NCHW bilinear 2x upsample, half-pixel centres (ONNX ``Resize`` linear ``half_pixel`` /
    ``pytorch_half_pixel``, PyTorch ``Upsample(scale_factor=2, mode="bilinear")``); ``separable``: rows first,
    as a stage of their own (the same arithmetic)."""
    n, c, h, w = (int(d) for d in data.shape)
    one = tirx.const(1.0, "float32")

    def lerp(a, b, t):
        return a * (one - t) + b * t  # resize2d's _lerp

    if separable:
        def across(b, ch, r, x):
            x0, x1, tx = _taps(x, w)
            return lerp(data[b, ch, r, x0], data[b, ch, r, x1], tx)

        rows = te.compute((n, c, h, 2 * w), across, name="upsample2x_rows", tag="injective")

        def down(b, ch, y, x):
            y0, y1, ty = _taps(y, h)
            return lerp(rows[b, ch, y0, x], rows[b, ch, y1, x], ty)

        return te.compute((n, c, 2 * h, 2 * w), down, name="upsample2x", tag="injective")

    def value(b, ch, y, x):
        y0, y1, ty = _taps(y, h)
        x0, x1, tx = _taps(x, w)
        top = lerp(data[b, ch, y0, x0], data[b, ch, y0, x1], tx)
        bottom = lerp(data[b, ch, y1, x0], data[b, ch, y1, x1], tx)
        return lerp(top, bottom, ty)

    return te.compute((n, c, 2 * h, 2 * w), value, name="upsample2x", tag="injective")


@expr_functor.mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, separable: bool):
        super().__init__(mod)
        self.separable = separable

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if is_op(call, "relax.image.resize2d") and _is_2x_bilinear(call):
            return self.builder_.call_te(upsample2x_bilinear, self.visit_expr(call.args[0]),
                                         separable=self.separable, primfunc_name_hint="upsample2x")
        return super().visit_call_(call)


def _is_2x_bilinear(call: relax.Call) -> bool:
    a = call.attrs
    src, out = static_shape(call.args[0]), static_shape(call)
    # half_pixel and pytorch_half_pixel differ only for an output of size 1.
    return (str(a.method) == "linear" and str(a.layout) == "NCHW"
            and str(a.coordinate_transformation_mode) in ("half_pixel", "pytorch_half_pixel")
            and str(call.args[0].ty.dtype) == "float32" and str(call.ty.dtype) == "float32"
            and src is not None and out is not None and len(src) == 4
            and out[:2] == src[:2] and out[2:] == [2 * src[2], 2 * src[3]] and min(src[2:]) >= 1)


@tvm.transform.module_pass(opt_level=0, name="BilinearUpsample2x")
class BilinearUpsample2x:
    """Rewrite exact 2x bilinear ``resize2d`` (NCHW, half-pixel, float32) to :func:`upsample2x_bilinear`
    (``separable``: rows first, what compiled models use)."""

    def __init__(self, separable: bool = True):
        self.separable = separable

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_functions(_Rewriter(mod, self.separable), mod)
