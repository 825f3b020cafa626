"""Average pooling that leaves the padding out of its count (EfficientFormer's token mixer, ``pool(x) - x``).

TVM's ``avg_pool2d`` with ``count_include_pad=False`` divides every output by its window's count of real inputs,
an int64 ``min``/``max`` expression of the output's row and column computed per element, and its legalised form
reads the zero-padded input through a bounds test per tap. Both ran scalar: efficientformer_l1's four pooling
kernels executed 44 M of its 506 M aarch64 instructions (147 per output on 56x56). Here the padded input is a
buffer of its own, the window is summed over it, and the sum is multiplied by ``1 / count``, a constant map of
the output's rows and columns computed at compile time. ``sum * (1 / count)`` instead of ``sum / count``: at
most one rounding apart (relative 6e-8).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, topi
from tvm.relax import PyExprMutator, expr_functor

from .relax_rewrite import is_op, rewrite_functions, static_shape


def window_counts(size: int, kernel: int, stride: int, before: int, after: int) -> np.ndarray:
    """How many real (unpadded) inputs each output's window covers along one axis."""
    out = (size + before + after - kernel) // stride + 1
    start = np.arange(out) * stride - before
    return np.minimum(start + kernel, size) - np.maximum(start, 0)


def avg_pool2d_nchw(data: te.Tensor, scale: te.Tensor, kernel, strides, padding) -> te.Tensor:
    """``out[n, c, y, x] = scale[y, x] * Σ pad(data)[n, c, y * sy + ry, x * sx + rx]`` (NCHW, no dilation)."""
    n, c, h, w = data.shape
    kh, kw = (int(k) for k in kernel)
    sh, sw = (int(s) for s in strides)
    top, left, bottom, right = (int(p) for p in padding)
    padded = topi.nn.pad(data, [0, 0, top, left], [0, 0, bottom, right], name="pad_temp")
    oh, ow = (int(d) for d in scale.shape)
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    total = te.compute((n, c, oh, ow), lambda b, ch, y, x: te.sum(padded[b, ch, y * sh + ry, x * sw + rx],
                                                                  axis=[ry, rx]), name="pool_sum")
    return te.compute((n, c, oh, ow), lambda b, ch, y, x: total[b, ch, y, x] * scale[y, x], name="pool_avg")


@expr_functor.mutator
class _Rewriter(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if not (is_op(call, "relax.nn.avg_pool2d") and _excludes_padding(call)):
            return super().visit_call_(call)
        a = call.attrs
        _, _, h, w = static_shape(call.args[0])
        top, left, bottom, right = (int(p) for p in a.padding)
        (kh, kw), (sh, sw) = [int(k) for k in a.pool_size], [int(s) for s in a.strides]
        counts = np.outer(window_counts(h, kh, sh, top, bottom), window_counts(w, kw, sw, left, right))
        scale = relax.const((1.0 / counts).astype("float32"))
        return self.builder_.call_te(avg_pool2d_nchw, self.visit_expr(call.args[0]), scale, kernel=[kh, kw],
                                     strides=[sh, sw], padding=[top, left, bottom, right],
                                     primfunc_name_hint="avg_pool2d")


def _excludes_padding(call: relax.Call) -> bool:
    """A static-shape float32 NCHW ``avg_pool2d`` with padding it leaves out of the count, no dilation, floor mode."""
    a = call.attrs
    shape = static_shape(call.args[0])
    return (not bool(a.count_include_pad) and not bool(a.ceil_mode) and any(int(p) for p in a.padding)
            and all(int(d) == 1 for d in a.dilation) and str(a.layout) == "NCHW" and str(a.out_layout) == "NCHW"
            and str(call.args[0].ty.dtype) == "float32" and shape is not None and len(shape) == 4)


@tvm.transform.module_pass(opt_level=0, name="AveragePoolExcludingPadding")
class AveragePoolExcludingPadding:
    """Rewrite ``avg_pool2d(count_include_pad=False)`` to :func:`avg_pool2d_nchw` with a constant ``1 / count`` map."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_functions(_Rewriter(mod), mod)
