"""Weight pre-packing for convolutions on small feature maps.

A NCHW convolution vectorises along the output width, which on 7x7, 14x14, 28x28 or 56x56 maps is not a
multiple of the vector width (16 floats with AVX-512). For those, the output channels are the better vector
axis, but then the weights must be contiguous along the output channel: ``OIHW`` weights are transposed once,
at compile time (``FoldConstant`` folds the transpose of the constant), to ``IHWO``. A depthwise conv on such
a map is vectorised along its channels too: its weights become ``1HWC`` and its padded input is made
channel-last (:func:`depthwise_conv2d_nchw_hwc`). A 1x1 conv on such a map is a matmul over the map's pixels,
on a view of its input (:func:`pointwise_nchw_ihwo`).
"""

from __future__ import annotations

import tvm
from tvm import relax, te, topi
from tvm.ir.expr import GenericConst
from tvm.relax import PyExprMutator, expr_functor

from .cpu_schedules.common import LAYOUT_FREE, largest_divisor, vector_tile
from .relax_rewrite import is_op, rewrite_functions, static_shape

#: Output channels the tiled-reduction rule likes to hold per register block (see ``_Packer._pad_channels``).
CHANNEL_BLOCK = 8


def _window(h, w, kh, kw, strides, padding, dilation) -> tuple:
    """A conv's strides, dilations and paddings as ints, then its output height and width."""
    sh, sw = (int(s) for s in strides)
    dh, dw = (int(d) for d in dilation)
    top, left, bottom, right = (int(p) for p in padding)
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    return sh, sw, dh, dw, top, left, bottom, right, oh, ow


def conv2d_nchw_ihwo(data: te.Tensor, weight: te.Tensor, strides, padding, dilation,
                     channels: int | None = None) -> te.Tensor:
    """NCHW convolution with ``IHWO`` weights (groups 1): ``out[n,f,y,x] = Σ in[n,c,y',x'] * w[c,ky,kx,f]``.

    ``channels`` < the weights' ``O`` means the weights were zero-padded to a whole number of vectors: the
    padded channels are computed (in registers) and cropped.
    """
    n, c, h, w = data.shape
    _, kh, kw, f = weight.shape
    sh, sw, dh, dw, top, left, bottom, right, oh, ow = _window(h, w, kh, kw, strides, padding, dilation)
    padded = data
    if top or left or bottom or right:
        padded = topi.nn.pad(data, [0, 0, top, left], [0, 0, bottom, right], name="pad_temp")
    rc = te.reduce_axis((0, c), "rc")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    out = te.compute(
        (n, f, oh, ow),
        lambda nn, ff, yy, xx: te.sum(padded[nn, rc, yy * sh + ry * dh, xx * sw + rx * dw] * weight[rc, ry, rx, ff],
                                      axis=[rc, ry, rx]),
        name="conv2d_nchw_ihwo")
    if channels is None or channels == int(f):
        return out
    return te.compute((n, channels, oh, ow), lambda *i: out(*i), name="conv2d_nchw_ihwo_crop")


def depthwise_conv2d_nchw_hwc(data: te.Tensor, weight: te.Tensor, strides, padding, dilation) -> te.Tensor:
    """NCHW depthwise convolution with ``1HWC`` weights: ``out[n,c,y,x] = Σ in[n,c,y',x'] * w[0,ky,kx,c]``.

    The zero-padded input is materialised channel-last (``pad_temp[n, y, x, c]``), so that both operands are
    contiguous along the channels, the vector axis: on a 7x7 map the NCHW form had no vector axis at all
    (7-wide rows) and ran at ~2 GFLOP/s, its GELU epilogue gathering along the columns.
    """
    n, c, h, w = data.shape
    _, kh, kw, _ = weight.shape
    sh, sw, dh, dw, top, left, bottom, right, oh, ow = _window(h, w, kh, kw, strides, padding, dilation)
    zero = tvm.tirx.const(0.0, data.dtype)

    def padded_value(nn, y, x, cc):
        inside = tvm.tirx.all(y >= top, y < h + top, x >= left, x < w + left)
        return tvm.tirx.if_then_else(inside, data[nn, cc, y - top, x - left], zero)

    padded = te.compute((n, h + top + bottom, w + left + right, c), padded_value, name="pad_temp")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    return te.compute(
        (n, c, oh, ow),
        lambda nn, cc, yy, xx: te.sum(padded[nn, yy * sh + ry * dh, xx * sw + rx * dw, cc] * weight[0, ry, rx, cc],
                                      axis=[ry, rx]),
        name="depthwise_conv2d_nchw_hwc")


def depthwise_conv2d_nchw_wide(data: te.Tensor, weight: te.Tensor, strides, padding, dilation,
                               width: int) -> te.Tensor:
    """NCHW depthwise convolution computed over output rows ``width`` wide (more than the map's) and cropped.

    The zero padding is made wide enough for the extra columns, which are computed in registers and dropped:
    rows of 28 or 14 (4 and 2 floats apart from 16-lane vectors) then vectorise as 32 or 16, and the conv
    needs no channel-last copy of its input and no lane-by-lane stores of its output.
    """
    n, c, h, w = data.shape
    _, _, kh, kw = weight.shape
    sh, sw, dh, dw, top, left, bottom, right, oh, ow = _window(h, w, kh, kw, strides, padding, dilation)
    padded_width = (width - 1) * sw + (kw - 1) * dw + 1
    padded_width += -padded_width % sw  # whole strides, so the schedule can de-interleave it
    zero = tvm.tirx.const(0.0, data.dtype)

    def padded_value(nn, cc, y, x):
        inside = tvm.tirx.all(y >= top, y < h + top, x >= left, x < w + left)
        return tvm.tirx.if_then_else(inside, data[nn, cc, y - top, x - left], zero)

    padded = te.compute((n, c, h + top + bottom, padded_width), padded_value, name="pad_temp")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    out = te.compute(
        (n, c, oh, width),
        lambda nn, cc, yy, xx: te.sum(padded[nn, cc, yy * sh + ry * dh, xx * sw + rx * dw] * weight[cc, 0, ry, rx],
                                      axis=[ry, rx]),
        name="depthwise_conv2d_nchw")
    return te.compute((n, c, oh, ow), lambda *i: out(*i), name="depthwise_conv2d_nchw_crop")


def pointwise_nchw_ihwo(data: te.Tensor, weight: te.Tensor, width: int, channels: int) -> te.Tensor:
    """1x1 convolution over a map's pixels, a matmul: ``out[n,f,p] = Σ in[n,c,p] * w[c,0,0,f]``, then
    unflattened to ``[n, f, y, x]``. ``data`` is the NCHW input reshaped to ``[n, c, y * x]``.

    Over pixels, not rows and columns, the rule can tile 49 pixels (a 7x7 map) as 54 = 9 x 6 (padded) instead
    of 7 x 7: 2 vectors x 6 pixels instead of 1 x 7 (:func:`~.cpu_schedules.tiled_reduction._pad_axes`).
    ``channels`` < the weights' ``O`` crops zero-padded channels, as in :func:`conv2d_nchw_ihwo`.
    """
    n, c, pixels = data.shape
    f = weight.shape[3]
    rc = te.reduce_axis((0, c), "rc")
    out = te.compute((n, f, pixels), lambda nn, ff, p: te.sum(data[nn, rc, p] * weight[rc, 0, 0, ff], axis=rc),
                     name="conv2d_nchw_ihwo")
    return te.compute((n, channels, pixels // width, width), lambda nn, ff, y, x: out[nn, ff, y * width + x],
                      name="conv2d_nchw_ihwo_unflatten")


@expr_functor.mutator
class _Packer(PyExprMutator):
    def __init__(self, mod, lanes: int):
        super().__init__(mod)
        self.lanes = lanes

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if is_op(call, "relax.nn.conv2d") and self._depthwise(call) and self._wide_rows(call):
            a = call.attrs
            return self.builder_.call_te(depthwise_conv2d_nchw_wide, self.visit_expr(call.args[0]), call.args[1],
                                         strides=list(a.strides), padding=list(a.padding),
                                         dilation=list(a.dilation), width=self._wide_rows(call),
                                         primfunc_name_hint="depthwise_conv2d_nchw_wide")
        if is_op(call, "relax.nn.conv2d") and self._depthwise(call):
            a = call.attrs
            packed = self._ihwo(call.args[1])  # 1HWC: the depthwise conv's O is its channel axis
            return self.builder_.call_te(depthwise_conv2d_nchw_hwc, self.visit_expr(call.args[0]), packed,
                                         strides=list(a.strides), padding=list(a.padding),
                                         dilation=list(a.dilation), primfunc_name_hint="depthwise_conv2d_nchw_hwc")
        if not (is_op(call, "relax.nn.conv2d") and int(call.attrs.groups) == 1 and self._eligible(call)):
            return super().visit_call_(call)
        if not self._wants(call):
            padded = self._pad_channels(call)
            return padded if padded is not None else super().visit_call_(call)
        data, weight = self.visit_expr(call.args[0]), call.args[1]
        a = call.attrs
        packed = self._ihwo(weight)
        channels = static_shape(weight)[0]
        extra = -channels % self.lanes
        if extra and vector_tile(channels, self.lanes, 2 * self.lanes) < self.lanes:
            # e.g. 220 channels: 4-wide vectors; zero-pad the weights to 224 and crop the output instead
            packed = self.builder_.emit(relax.op.nn.pad(packed, [0, 0, 0, 0, 0, 0, 0, extra]))
        if self._pointwise(call):
            n, c, h, w = static_shape(call.args[0])
            # A view, no copy. (R.reshape would be fused into the kernel that makes ``data``, which then writes
            # [n, c, h * w]: efficientformerv2's 2x upsample + GELU ran 6x slower that way.)
            flat = self.builder_.emit(relax.op.memory.view(data, [n, c, h * w]))
            return self.builder_.call_te(pointwise_nchw_ihwo, flat, packed, width=w, channels=channels,
                                         primfunc_name_hint="conv2d_nchw_ihwo")
        return self.builder_.call_te(conv2d_nchw_ihwo, data, packed, strides=list(a.strides),
                                     padding=list(a.padding), dilation=list(a.dilation), channels=channels,
                                     primfunc_name_hint="conv2d_nchw_ihwo")

    def _pad_channels(self, call: relax.Call) -> relax.Expr | None:
        """An NCHW conv whose output channels split badly into register blocks (MobileViTv2's 193 = 1 + 2 x 96:
        a prime, so one channel per block) computes zero-padded weights' channels and crops them."""
        channels = static_shape(call)[1]
        if channels <= CHANNEL_BLOCK or largest_divisor(channels, CHANNEL_BLOCK) >= CHANNEL_BLOCK // 2:
            return None
        a = call.attrs
        weight = self.builder_.emit(relax.op.nn.pad(call.args[1], [0, -channels % CHANNEL_BLOCK, 0, 0, 0, 0, 0, 0]))
        out = self.builder_.emit(relax.op.nn.conv2d(self.visit_expr(call.args[0]), weight, strides=a.strides,
                                                    padding=a.padding, dilation=a.dilation, groups=1,
                                                    out_dtype=a.out_dtype))
        return relax.op.strided_slice(out, axes=[1], begin=[0], end=[channels])

    def _depthwise(self, call: relax.Call) -> bool:
        """A padded depthwise conv (one weight per channel) whose rows vectorise worse than its channels."""
        a = call.attrs
        if int(a.groups) == 1 or not self._eligible(call):
            return False
        weight, out = static_shape(call.args[1]), static_shape(call)
        return weight[0] == out[1] == int(a.groups) and weight[1] == 1 and any(int(x) for x in a.padding) \
            and vector_tile(out[3], self.lanes, 2 * self.lanes) < self.lanes \
            and vector_tile(out[1], self.lanes, 2 * self.lanes) >= self.lanes

    def _wide_rows(self, call: relax.Call) -> int:
        """The row width (a multiple of 8, at most 1/7 more) a depthwise conv computes on 16-lane targets, or 0.

        With 16 lanes (AVX-512), rows of half vectors count as vectorising (Zen 4 runs 512-bit FMAs on 256-bit
        units, so 8-wide ones lose nothing), and 28- or 14-wide rows are computed as 32 or 16 and cropped
        (:func:`depthwise_conv2d_nchw_wide`): the channel-last form transposes its input and stores its output
        a lane at a time. 3x3 depthwise + GELU (Zen 4, 1 thread, CPU time): 128 x 56x56 0.43 -> 0.32 ms.
        """
        width = static_shape(call)[3]
        wide = width + -width % 8
        stride1 = all(int(s) == 1 for s in call.attrs.strides)
        return wide if self.lanes == 16 and stride1 and wide >= 2 * self.lanes and wide - width <= width // 7 else 0

    def _ihwo(self, weight: relax.Expr) -> relax.Expr:
        """OIHW weights transposed to IHWO (``FoldConstant`` folds it at compile time)."""
        return self.builder_.emit(relax.op.permute_dims(weight, [1, 2, 3, 0]))

    def _eligible(self, call: relax.Call) -> bool:
        """An NCHW/OIHW float32 conv with constant weights and static shapes (any groups: callers test those)."""
        a = call.attrs
        return ((a.data_layout, a.kernel_layout, a.out_layout) == ("NCHW", "OIHW", "NCHW")
                and isinstance(call.args[1], GenericConst) and str(call.args[0].ty.dtype) == "float32"
                and static_shape(call) is not None and static_shape(call.args[1]) is not None)

    @staticmethod
    def _pointwise(call: relax.Call) -> bool:
        a = call.attrs
        return static_shape(call.args[1])[2:] == [1, 1] and all(int(x) == 1 for x in (*a.strides, *a.dilation)) \
            and not any(int(x) for x in a.padding)

    def _wants(self, call: relax.Call) -> bool:
        out = static_shape(call)
        width, channels = out[3], out[1]
        if self._pointwise(call) and (out[2] * width) % self.lanes == 0:
            return False  # the rule vectorises over the map's pixels instead (tiled_reduction._flatten_pixels)
        width_tile = vector_tile(width, self.lanes, 2 * self.lanes)
        channel_tile = vector_tile(channels + (-channels % self.lanes), self.lanes, 2 * self.lanes)
        return width_tile < self.lanes and channel_tile > width_tile


@tvm.transform.module_pass(opt_level=0, name="PackConvWeights")
class PackConvWeights:
    """Rewrite constant-weight NCHW convolutions whose output width vectorises worse than their channels to ``IHWO`` weights.

    Safe: the same sums in the same order per output element; only the weight layout and the loop nest change.
    """

    def __init__(self, lanes: int):
        self.lanes = lanes

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_functions(_Packer(mod, self.lanes), mod)


@tvm.transform.module_pass(opt_level=0, name="MarkWeightParams")
class MarkWeightParams:
    """Mark each kernel's parameters that every call passes a model constant (its weights) in ``layout_free_buffers``.

    TVM's ``AttachAttrLayoutFreeBuffers`` does the same but copies every kernel under a new name
    (``fused_conv2d_add_relu1``), which the profiles and tuning records would then show.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        constant: dict = {}  # kernel GlobalVar -> parameter indices passed a constant by every call

        def visit(expr):
            if is_op(expr, "relax.call_tir") and isinstance(expr.args[1], relax.Tuple):
                found = {i for i, arg in enumerate(expr.args[1].fields) if isinstance(arg, GenericConst)}
                gv = expr.args[0]
                constant[gv] = constant[gv] & found if gv in constant else found

        for func in mod.functions.values():
            if isinstance(func, relax.Function):
                relax.analysis.post_order_visit(func, visit)
        for gv, indices in constant.items():
            if indices:
                mod[gv] = mod[gv].with_attr(LAYOUT_FREE, sorted(indices))
        return mod
