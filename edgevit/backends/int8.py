"""Integer kernels for QDQ models: ``dequantize -> conv2d/matmul (+ bias) -> quantize`` becomes int8 x int8 ->
int32 accumulation and one requantization.

TVM's ONNX frontend turns a QDQ model into float operators between ``R.dequantize`` and ``R.quantize``: every
quantized convolution would run in float32 on dequantized copies of its input and weights. This rewrite keeps
the int8 tensors: with ``x = sx (xq - zx)``, ``w = sw wq`` (weights are symmetric) and ``b = sx sw bq``,

    y = sx sw (Σ xq wq - zx Σ wq + bq)

so the convolution runs on the int8 input (padded with ``zx``, the zero point, which is what float zero
padding is in integers) and int8 weights (both widened to int16 for the multiplies), accumulating in int32;
``bq - zx Σ wq`` is one int32 constant per output channel, folded at compile time. The requantization is
onnxruntime's: ``M = sx sw / sy`` in float32, ``clip(round_half_even(float(acc) M) + zy)``. Results equal the
float path's except where a value falls within float rounding of a half step (see ``edgevit.quantize.verify``).
Between two quantize steps of equal parameters, data movement (reshape, transpose, slice) moves the int8 tensor
instead of a dequantized copy.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te
from tvm.ir.expr import GenericConst
from tvm.relax import PyExprMutator, expr_functor

from .cpu_schedules.common import vector_tile
from .relax_rewrite import binding_of, is_op, rewrite_functions, static_shape


def conv2d_nchw_ihwo_int32(data: te.Tensor, weight: te.Tensor, strides, dilation) -> te.Tensor:
    """NCHW convolution of an already padded input with ``IHWO`` weights (int8 values), accumulating in int32.

    The weights' contiguous output-channel axis is what the tiled-reduction rule vectorises on maps whose
    width is not a whole number of vectors (14x14, 7x7), as ``weight_packing`` does for float32.
    """
    n, c, h, w = data.shape
    _, kh, kw, f = weight.shape
    (sh, sw), (dh, dw) = (int(s) for s in strides), (int(d) for d in dilation)
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    rc, ry, rx = te.reduce_axis((0, c), "rc"), te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    return te.compute(
        (n, f, oh, ow),
        lambda nn, ff, yy, xx: te.sum(data[nn, rc, yy * sh + ry * dh, xx * sw + rx * dw].astype("int32")
                                      * weight[rc, ry, rx, ff].astype("int32"), axis=[rc, ry, rx]),
        name="conv2d_nchw_ihwo_int8")


def qlinear_add(a: te.Tensor, b: te.Tensor, ra: float, rb: float, fixed: float) -> te.Tensor:
    """``clip(round_half_even(fma(a, ra, fma(b, rb, fixed))))`` as int8, in float32 (onnxruntime's QLinearAdd)."""
    from tvm import tirx

    def fma(x, y, z):
        return tirx.call_llvm_pure_intrin("float32", "llvm.fma", x, tirx.const(y, "float32"), z)

    def body(*i):
        value = te.round(fma(a[i].astype("float32"), ra, fma(b[i].astype("float32"), rb,
                                                             tirx.const(fixed, "float32"))))
        return te.min(te.max(value, tirx.const(-128.0, "float32")), tirx.const(127.0, "float32")).astype("int8")

    return te.compute(a.shape, body, name="int8_add")


#: Operators that only move or select values: int8 tensors pass through them unchanged.
_MOVES = ("relax.reshape", "relax.permute_dims", "relax.squeeze", "relax.expand_dims", "relax.strided_slice",
          "relax.flatten")


def _constant(expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, GenericConst) and hasattr(expr.value, "numpy") else None


@expr_functor.mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, lanes: int, dot=None):
        super().__init__(mod)
        self.lanes = lanes
        self.dot = dot
        self.rewritten = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if not is_op(call, "relax.quantize"):
            return super().visit_call_(call)
        moved = self._data_movement(call)
        if moved is not None:
            self.rewritten += 1
            return moved
        product = self._activation_product(call) if self.dot is not None else None
        if product is not None:
            self.rewritten += 1
            return product
        for rewrite in (self._average_pool, self._add):
            integer = rewrite(call)
            if integer is not None:
                self.rewritten += 1
                return integer
        found = self._match(call)
        if found is None:
            return super().visit_call_(call)
        self.rewritten += 1
        return self._integer(call, *found)

    def _data_movement(self, quantize: relax.Call):
        """``quantize(move(dequantize(xq, s, z)), s, z)`` -> ``move(xq)`` for a data-movement ``move`` (reshape,
        transpose, slice...): the values pass unchanged, so the int8 tensor can move instead. Exact."""
        move = binding_of(self, quantize.args[0])
        if not any(is_op(move, name) for name in _MOVES) or str(quantize.attrs.out_dtype) != "int8":
            return None
        deq = binding_of(self, move.args[0])
        if not is_op(deq, "relax.dequantize") or str(deq.args[0].ty.dtype) != "int8":
            return None
        same = all(_constant(a) is not None and _constant(b) is not None and _constant(a).shape == _constant(b).shape
                   and np.array_equal(_constant(a), _constant(b)) for a, b in zip(deq.args[1:], quantize.args[1:]))
        if not same or _constant(deq.args[1]).size != 1:
            return None  # per-axis parameters would have to follow the axis through the move
        return relax.Call(move.op, [self.visit_expr(deq.args[0]), *move.args[1:]], move.attrs, move.ty_args)

    def _match(self, quantize: relax.Call):
        """(kernel call, activation (xq, sx, zx), weights (wq, sw), bias or None) under a per-tensor int8
        ``quantize``, or None."""
        if str(quantize.attrs.out_dtype) != "int8" or _scalar(quantize.args[1]) is None \
                or _scalar(quantize.args[2]) is None:
            return None
        value, bias = binding_of(self, quantize.args[0]), None
        if is_op(value, "relax.add"):
            for kernel_arg, bias_arg in ((0, 1), (1, 0)):
                kernel, bias = binding_of(self, value.args[kernel_arg]), self._bias(value.args[bias_arg])
                if bias is not None and (is_op(kernel, "relax.nn.conv2d") or is_op(kernel, "relax.matmul")):
                    value = kernel
                    break
            else:
                return None
        if is_op(value, "relax.nn.conv2d"):
            if value.attrs.data_layout != "NCHW" or value.attrs.kernel_layout != "OIHW" \
                    or value.attrs.groups != 1 and not _depthwise_batch_one(value):
                return None  # other grouped convs stay in float
            weights = self._weights(value.args[1], channel_axis=0)
        elif is_op(value, "relax.matmul"):
            if len(static_shape(value.args[1]) or []) != 2:
                return None  # activation x activation (attention) and batched weights stay in float
            weights = self._weights(value.args[1], channel_axis=1)
        else:
            return None
        activation = self._activation(value.args[0])
        if weights is None or activation is None:
            return None
        return value, activation, weights, bias

    def _activation_product(self, quantize: relax.Call):
        """``quantize(matmul(dequantize(xq), dequantize(yq)))`` of two int8 activations (attention's Q·Kᵀ and
        P·V) on the dot-product kernel, or None. With zero points on both sides,
        ``Σ (x - zx)(y - zy) = Σ (x + s) y - (s + zx) Σ_k y - zy Σ_k x + K zx zy`` for the kernel's shift ``s``:
        the two sums are small int32 reductions at run time."""
        from . import int8_kernels, int8_requantize

        if str(quantize.attrs.out_dtype) != "int8" or _scalar(quantize.args[1]) is None \
                or _scalar(quantize.args[2]) is None:
            return None
        value = binding_of(self, quantize.args[0])
        if not is_op(value, "relax.matmul"):
            return None
        left, right = self._activation(value.args[0]), self._activation(value.args[1])
        if left is None or right is None:
            return None
        (xq, sx, zx), (yq, sy, zy) = left, right
        xq, yq = self.visit_expr(xq), self.visit_expr(yq)
        acc = int8_kernels.emit_activation_matmul(self.builder_, self.dot, xq, yq)
        if acc is None:
            return None
        k = int(xq.ty.shape[-1])
        if self.dot.shift + zx:
            column_sums = relax.op.sum(relax.op.astype(yq, "int32"), axis=[-2], keepdims=True)
            acc = relax.op.subtract(acc, relax.op.multiply(column_sums, relax.const(self.dot.shift + zx, "int32")))
        if zy:
            row_sums = relax.op.sum(relax.op.astype(xq, "int32"), axis=[-1], keepdims=True)
            acc = relax.op.subtract(acc, relax.op.multiply(row_sums, relax.const(zy, "int32")))
        if zx * zy:
            acc = relax.op.add(acc, relax.const(k * zx * zy, "int32"))
        sout, zout = float(_scalar(quantize.args[1])), int(_scalar(quantize.args[2]))
        multiplier = np.full(1, np.float32(sx) * np.float32(sy) / np.float32(sout), np.float32)
        if self.dot.partials > 1:  # NEON without dot products: the float chain (see _requantize)
            y = relax.op.round(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(multiplier[0])))
            return relax.op.astype(relax.op.clip(relax.op.add(y, relax.const(np.float32(zout))), -128, 127), "int8")
        clamp = int8_requantize.needs_clamp(np.array([k * 255 * 255]), multiplier)  # |Σ (x - zx)(y - zy)|
        return self.builder_.call_te(int8_requantize.requantize, self.builder_.emit(acc), None,
                                     relax.const(multiplier), zout, -1, clamp, primfunc_name_hint="int8_requantize")

    def _average_pool(self, quantize: relax.Call):
        """``quantize(avg_pool2d(dequantize(xq)))`` (NCHW, one image, per-tensor int8) as the int8 depthwise
        kernel with weights 1, or None. The input is padded with its zero point, so the window's sum less
        ``kh·kw·zx`` is ``Σ (x - zx)`` over the real inputs; one float32 multiplier per output pixel,
        ``sx / (count · sy)``, takes the average and requantizes (``count``: the window's real inputs, or
        ``kh·kw`` with ``count_include_pad``). onnxruntime averages the dequantized values in float32: the two
        differ only within float rounding of a half step. EfficientFormer's token mixer (``pool(x) - x``) ran
        its window sums scalar, each tap behind a bounds test (efficientformer_l1: 4.4 of 16.9 ms)."""
        from . import int8_depthwise, int8_requantize
        from .pooling import window_counts

        if str(quantize.attrs.out_dtype) != "int8" or _scalar(quantize.args[1]) is None \
                or _scalar(quantize.args[2]) is None:
            return None
        if _aarch64(tvm.target.Target.current(allow_none=True)):
            return None  # on the Cortex-A72, 2.45 -> 2.74 M instructions per 56x56 mixer kernel: pooling.py's float pool kept
        pool = binding_of(self, quantize.args[0])
        if not is_op(pool, "relax.nn.avg_pool2d"):
            return None
        a, shape = pool.attrs, static_shape(pool.args[0])
        if bool(a.ceil_mode) or any(int(d) != 1 for d in a.dilation) or str(a.layout) != "NCHW" \
                or str(a.out_layout) != "NCHW" or shape is None or len(shape) != 4 or shape[0] != 1:
            return None
        activation = self._activation(pool.args[0])
        if activation is None:
            return None
        xq, sx, zx = activation
        (kh, kw), strides = [int(k) for k in a.pool_size], [int(s) for s in a.strides]
        top, left, bottom, right = (int(p) for p in a.padding)
        counts = np.outer(window_counts(shape[2], kh, strides[0], top, bottom),
                          window_counts(shape[3], kw, strides[1], left, right))
        if bool(a.count_include_pad):
            counts = np.full_like(counts, kh * kw)
        sy, zy = float(_scalar(quantize.args[1])), int(_scalar(quantize.args[2]))
        multiplier = (np.float64(np.float32(sx)) / counts / np.float64(np.float32(sy))).astype(np.float32)
        ones = np.ones((shape[1], 1, kh, kw), np.int8)
        acc = int8_depthwise.emit_depthwise(self.builder_, self.visit_expr(xq), ones, zx, strides,
                                            [top, left, bottom, right], [1, 1])
        offset = np.array([-kh * kw * zx], np.int32)
        clamp = int8_requantize.needs_clamp(np.array([kh * kw * 256]), multiplier)
        return self.builder_.call_te(int8_requantize.requantize, self.builder_.emit(acc), relax.const(offset),
                                     relax.const(multiplier), zy, -1, clamp, primfunc_name_hint="int8_requantize")

    def _add(self, quantize: relax.Call):
        """``quantize(add(dequantize(aq), dequantize(bq)))`` of two int8 tensors of one shape (a residual) as
        onnxruntime's QLinearAdd computes it (it fuses that group; MLAS on x86):
        ``round_half_even(fma(a, sa/sy, fma(b, sb/sy, zy - fma(sa/sy, za, sb/sy·zb))))`` in float32. Bit for bit
        on all 65,536 int8 pairs of four scale sets (``tests/backends/test_int8_add.py``), where dequantize, add,
        quantize differed in up to 2,300 (half-step ties) and took a division per value."""
        if str(quantize.attrs.out_dtype) != "int8" or _scalar(quantize.args[1]) is None \
                or _scalar(quantize.args[2]) is None:
            return None
        if _aarch64(tvm.target.Target.current(allow_none=True)):
            return None  # efficientformer_l1 on the Cortex-A72: 420.66 -> 421.23 M instructions; the float add kept
        add = binding_of(self, quantize.args[0])
        if not is_op(add, "relax.add"):
            return None
        left, right = self._activation(add.args[0]), self._activation(add.args[1])
        if left is None or right is None:
            return None
        (aq, sa, za), (bq, sb, zb) = left, right
        if _constant(aq) is not None or _constant(bq) is not None or static_shape(aq) is None \
                or static_shape(aq) != static_shape(bq):
            return None  # a constant operand is a table (``int8_tables``); broadcasts stay float
        f32 = np.float32
        sy, zy = f32(_scalar(quantize.args[1])), f32(_scalar(quantize.args[2]))
        ra, rb = f32(sa) / sy, f32(sb) / sy
        # MLAS's fixed part, with the contraction its compiler makes: zy - fma(ra, za, rb·zb)
        fixed = zy - f32(np.float64(ra) * np.float64(za) + np.float64(rb * f32(zb)))
        return self.builder_.call_te(qlinear_add, self.visit_expr(aq), self.visit_expr(bq), float(ra), float(rb),
                                     float(fixed), primfunc_name_hint="int8_add")

    def _activation(self, expr):
        """(xq, sx, zx) when ``expr`` is a per-tensor int8 ``dequantize``."""
        deq = binding_of(self, expr)
        if not is_op(deq, "relax.dequantize") or str(deq.args[0].ty.dtype) != "int8":
            return None
        sx, zx = _scalar(deq.args[1]), _scalar(deq.args[2])
        return None if sx is None or zx is None else (deq.args[0], float(sx), int(zx))

    def _weights(self, expr, channel_axis: int):
        """(int8 weights, float32 scale per output channel) of a dequantized constant, through a 2-D transpose.

        None unless the weights are symmetric (zero point 0) and their scale varies along ``channel_axis`` only.
        """
        axes = None
        deq = binding_of(self, expr)
        if is_op(deq, "relax.permute_dims"):
            axes = [int(a) for a in deq.attrs.axes] if deq.attrs.axes is not None else []
            deq = binding_of(self, deq.args[0])
        if not is_op(deq, "relax.dequantize"):
            return None
        wq, scale, zero = (_constant(a) for a in deq.args)
        if wq is None or scale is None or zero is None or wq.dtype != np.int8 or np.any(zero != 0):
            return None
        full = np.broadcast_to(scale.reshape([-1 if i == int(deq.attrs.axis) % wq.ndim else 1
                                              for i in range(wq.ndim)]) if scale.ndim else scale, wq.shape)
        if axes is not None:
            axes = axes or list(reversed(range(wq.ndim)))  # no axes: a full reversal
            wq, full = wq.transpose(axes), full.transpose(axes)
        channel = np.moveaxis(full, channel_axis, 0).reshape(full.shape[channel_axis], -1)
        if not np.all(channel == channel[:, :1]):
            return None
        return np.ascontiguousarray(wq), channel[:, 0].astype(np.float32)

    def _bias(self, expr):
        """(int32 bias, its float scale per channel) of ``[reshape] dequantize(int32 constant)``, or None."""
        deq = binding_of(self, expr)
        if is_op(deq, "relax.reshape"):
            deq = binding_of(self, deq.args[0])
        if not is_op(deq, "relax.dequantize"):
            return None
        bq, scale, zero = (_constant(a) for a in deq.args)
        if bq is None or scale is None or zero is None or bq.dtype != np.int32 or bq.ndim != 1 or np.any(zero != 0):
            return None
        return bq, np.broadcast_to(scale, bq.shape).astype(np.float32)

    def _channels_vectorise_better(self, conv) -> bool:
        """Whether the output channels make whole vectors and the output rows do not (``weight_packing``'s test;
        1x1 convs whose whole map makes whole vectors are vectorised over its pixels instead)."""
        _, channels, height, width = static_shape(conv)
        pointwise = static_shape(conv.args[1])[2:] == [1, 1] and all(int(x) == 1 for x in conv.attrs.strides)
        if pointwise and height * width % self.lanes == 0:
            return False
        width_tile = vector_tile(width, self.lanes, 2 * self.lanes)
        return width_tile < self.lanes and channels % self.lanes == 0

    def _integer(self, quantize, kernel, activation, weights, bias):
        xq, sx, zx = activation
        wq, sw = weights
        sy, zy = float(_scalar(quantize.args[1])), int(_scalar(quantize.args[2]))
        if is_op(kernel, "relax.nn.conv2d") and kernel.attrs.groups != 1:
            return self._depthwise(kernel, xq, zx, wq, sx, sw, bias, sy, zy)
        features = wq.shape[1] if is_op(kernel, "relax.matmul") else 0
        pad = -features % self.dot.lanes if self.dot is not None and wq.shape[0] % self.dot.depth == 0 else 0
        if pad:  # features up to whole vectors (zero weights) for the dot kernel; the padding is cropped below
            wq, sw = np.pad(wq, ((0, 0), (0, pad))), np.pad(sw, (0, pad), constant_values=1)
            bias = bias and (np.pad(bias[0], (0, pad)), np.pad(bias[1], (0, pad), constant_values=1))
        acc = self._dot_product(kernel, xq, zx, wq) if self.dot is not None else None
        if acc is not None and pad:
            y = self._requantize(self.builder_.emit(acc[0]), wq.T, (-1,), zx + acc[1], sx, sw,
                                 bias, sy, zy)
            return relax.op.strided_slice(self.builder_.emit(y), axes=[len(static_shape(kernel)) - 1], begin=[0],
                                          end=[features])
        if acc is not None:
            acc, shift = acc
            acc = self.builder_.emit(acc)
            conv = is_op(kernel, "relax.nn.conv2d")
            rows = wq.reshape(wq.shape[0], -1) if conv else wq.T
            flat = conv and len(static_shape(acc)) == 3  # conv pixels padded to whole vectors
            channel_shape = ((1, -1, 1) if flat else (1, -1, 1, 1)) if conv else (-1,)
            # the activations were shifted by ``shift`` (into uint8): Σ (x + shift) w = Σ x w + shift Σ w
            y = self._requantize(acc, rows, channel_shape, zx + shift, sx, sw, bias, sy, zy)
            if flat:
                _, f, oh, ow = static_shape(kernel)
                y = relax.op.reshape(relax.op.strided_slice(self.builder_.emit(y), axes=[2], begin=[0],
                                                            end=[oh * ow]), (1, f, oh, ow))
            return y
        # Where no kernel of ``int8_kernels`` fits (or the CPU has none), the int8 operands are multiplied as int16
        # (exact): NEON then multiplies-and-accumulates int16 lanes into int32 in one instruction (smlal); int8
        # operands took a widening step per operand: mobilevit_xxs for rpi4 348.0 -> 314.7 M instructions.
        xq = self.builder_.emit(relax.op.astype(self.visit_expr(xq), "int16"))
        weights_const = wq.astype(np.int16)
        if is_op(kernel, "relax.nn.conv2d"):
            attrs = kernel.attrs
            top, left, bottom, right = (int(p) for p in attrs.padding)
            if top or left or bottom or right:
                xq = self.builder_.emit(relax.op.nn.pad(xq, [0, 0, 0, 0, top, bottom, left, right],
                                                        pad_value=float(zx)))
            if self._channels_vectorise_better(kernel):
                ihwo = relax.const(weights_const.transpose(1, 2, 3, 0).copy())
                acc = self.builder_.call_te(conv2d_nchw_ihwo_int32, xq, ihwo, strides=list(attrs.strides),
                                            dilation=list(attrs.dilation), primfunc_name_hint="conv2d_nchw_ihwo_int8")
            else:
                acc = relax.op.nn.conv2d(xq, relax.const(weights_const), strides=attrs.strides, padding=0,
                                         dilation=attrs.dilation, groups=attrs.groups, out_dtype="int32")
            rows, channel_shape = wq.reshape(wq.shape[0], -1), (1, -1, 1, 1)
        else:
            acc = relax.op.matmul(xq, relax.const(weights_const), out_dtype="int32")
            rows, channel_shape = wq.T, (-1,)
        return self._requantize(acc, rows, channel_shape, zx, sx, sw, bias, sy, zy)

    def _depthwise(self, kernel, xq, zx, wq, sx, sw, bias, sy, zy):
        """A depthwise conv on ``edgevit.backends.int8_depthwise``'s kernel, requantized."""
        from . import int8_depthwise

        attrs = kernel.attrs
        acc = int8_depthwise.emit_depthwise(self.builder_, self.visit_expr(xq), wq, zx, list(attrs.strides),
                                            [int(p) for p in attrs.padding], list(attrs.dilation))
        return self._requantize(self.builder_.emit(acc), wq.reshape(wq.shape[0], -1), (1, -1, 1, 1), zx, sx, sw, bias,
                                sy, zy)

    def _dot_product(self, kernel, xq, zx: int, wq):
        """(int32 accumulator, activation shift) from the target's dot-product kernel
        (``edgevit.backends.int8_kernels``), or None where it does not fit (then the int16 kernels are used)."""
        from . import int8_kernels

        xq = self.visit_expr(xq)
        if is_op(kernel, "relax.nn.conv2d"):
            _, _, oh, ow = static_shape(kernel)
            attrs = kernel.attrs
            acc = int8_kernels.emit_conv(self.builder_, self.dot, xq, wq, zx, list(attrs.strides),
                                         [int(p) for p in attrs.padding], list(attrs.dilation), (oh, ow))
        else:
            acc = int8_kernels.emit_matmul(self.builder_, self.dot, xq, wq)
        return None if acc is None else (acc, self.dot.shift)

    def _requantize(self, acc, rows, channel_shape, zx, sx, sw, bias, sy, zy):
        """``clip(round(float(acc + offset) · M) + zy)`` as int8 (``int8_requantize``), with the zero point and
        bias folded into one int32 offset per output channel. ``rows``: the int8 weights as ``[channels, K]``."""
        from . import int8_requantize

        rows = rows.astype(np.int64)
        acc_scale = np.float32(sx) * sw  # float32, as onnxruntime computes input scale x weight scale
        offset = -zx * rows.sum(1)
        if bias is not None:  # the bias in accumulator units (onnxruntime's bias scale is sx * sw already)
            bq, bias_scale = bias
            offset = offset + np.round(bq.astype(np.float64) * bias_scale / acc_scale).astype(np.int64)
        # Only a degenerate bias scale (far below sx * sw) leaves int32; clipped, not wrapped, it stays monotonic.
        offset = np.clip(offset, -2**31, 2**31 - 1)
        multiplier = np.broadcast_to(acc_scale / np.float32(sy), offset.shape).astype(np.float32)
        if self.dot is not None and self.dot.partials > 1:
            # NEON without dot products: the integer stage counted more instructions on the A72 (its partial
            # sums went through memory); the float chain is kept there
            acc = relax.op.add(acc, relax.const(offset.astype(np.int32).reshape(channel_shape)))
            y = relax.op.round(relax.op.multiply(relax.op.astype(acc, "float32"),
                                                 relax.const(multiplier.reshape(channel_shape))))
            return relax.op.astype(relax.op.clip(relax.op.add(y, relax.const(np.float32(zy))), -128, 127), "int8")
        # |acc| <= 256 Σ|w| (activations, shifted or not, within [-128, 255])
        clamp = int8_requantize.needs_clamp(256 * np.abs(rows).sum(1) + np.abs(offset), multiplier)
        acc = acc if isinstance(acc, relax.Var) else self.builder_.emit(acc)
        return self.builder_.call_te(int8_requantize.requantize, acc, relax.const(offset.astype(np.int32)),
                                     relax.const(multiplier), int(zy),
                                     list(channel_shape).index(-1) - len(channel_shape), clamp,
                                     primfunc_name_hint="int8_requantize")


def _depthwise_batch_one(conv) -> bool:
    """Whether a grouped NCHW conv2d is depthwise (a group per input channel, one output channel each) on one
    image: ``edgevit.backends.int8_depthwise``'s kernel."""
    shape, weights = static_shape(conv.args[0]), static_shape(conv.args[1])
    return shape is not None and weights is not None and int(shape[0]) == 1 \
        and int(conv.attrs.groups) == int(shape[1]) == int(weights[0]) and int(weights[1]) == 1


def _aarch64(target) -> bool:
    return target is not None and str(target.attrs.get("mtriple", "")).startswith(("aarch64", "arm64"))


def _scalar(expr):
    """The value of a one-element constant, else None."""
    value = _constant(expr)
    return value.reshape(()).item() if value is not None and value.size == 1 else None


@tvm.transform.module_pass(opt_level=0, name="IntegerQdqKernels")
class IntegerQdqKernels:
    """Rewrite ``quantize([add(] conv2d|matmul(dequantize(xq), dequantize(W)) [, bias)])`` to int8 kernels.

    Safe when: the activation is int8 with a per-tensor scale and zero point, the weights an int8 constant with
    zero point 0 and one scale per output channel (or one for all), the bias an int32 constant, the output a
    per-tensor int8 ``quantize``; NCHW/OIHW convolutions (groups 1, or depthwise on one image:
    ``edgevit.backends.int8_depthwise``) and matmuls by a 2-D weight. Also on int8, except on AArch64 (where
    they counted more instructions): average pools (on the depthwise kernel) and adds of two int8 tensors of one
    shape (onnxruntime's QLinearAdd arithmetic), both with per-tensor parameters. Convolutions on maps whose
    rows make no whole vector get ``IHWO`` weights (:func:`conv2d_nchw_ihwo_int32`). Anything else (attention's
    activation x activation matmuls, float models) is left as it was; a module without a match is returned
    unchanged.
    """

    def __init__(self, lanes: int, dot=None):
        self.lanes = lanes  # float32 (= int32) lanes of the target's vectors
        self.dot = dot      # the target's dot-product kernel (``int8_kernels.dot_kernel_for``), or None

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = _Rewriter(mod, self.lanes, self.dot)
        rewritten = rewrite_functions(rewriter, mod)
        if not rewriter.rewritten:
            return mod
        return relax.transform.DeadCodeElimination()(rewritten)


def _integer_mac(sch):
    """The int32 multiply-accumulate block of a kernel made by :class:`IntegerQdqKernels`, or None."""
    from .cpu_schedules.common import is_reduction, root_blocks

    found = [b for b in root_blocks(sch) if is_reduction(sch.get(b)) and sch.get(b).writes[0].source.dtype == "int32"]
    return found[0] if len(found) == 1 else None


def schedule_integer_kernel(func, target):
    """Schedule an int8 conv/matmul kernel with the tiled-reduction rule, or return None.

    A residual add fused into the kernel's epilogue brings its own ``dequantize`` ahead of the convolution; the
    rule keeps such arithmetic producers materialised, and then cannot move the epilogue into the tile loop.
    They feed only the epilogue, so they are inlined into it first.
    """
    from tvm.s_tir import Schedule
    from tvm.s_tir.schedule import ScheduleError

    from .cpu_schedules import tiled_reduction
    from .cpu_schedules.common import root_blocks

    sch = Schedule(func)
    try:
        mac = _integer_mac(sch)
    except ScheduleError:   # no root block (kernels TVM writes itself, e.g. the MoE builds' top-k): not int8
        return None
    if mac is None:
        return None
    mac_name = sch.get(mac).name_hint
    feeding = {r.source for r in sch.get(mac).reads}
    for block in root_blocks(sch):
        stmt = sch.get(block)
        if stmt.name_hint == mac_name:
            break
        if not any(stmt.writes[0].source.same_as(b) for b in feeding):
            sch.compute_inline(block)
    try:
        return tiled_reduction.apply(sch.mod["main"], target)
    except Exception:  # noqa: BLE001 - a kernel the rule does not fit is left to the default schedules
        return None


@tvm.transform.module_pass(opt_level=0, name="ScheduleIntegerKernels")
class ScheduleIntegerKernels:
    """Schedule the int8 kernels (see :func:`schedule_integer_kernel`) before the default rules see them."""

    def __init__(self, target):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        from tvm import tirx

        from . import int8_depthwise, int8_kernels, int8_softmax

        dot = int8_kernels.dot_kernel_for(self.target)
        for gv, func in list(mod.functions_items()):
            if isinstance(func, tirx.PrimFunc) and not func.attrs.get("tirx.is_scheduled", False):
                sch = None
                try:
                    if "int8_softmax" in gv.name_hint:
                        sch = int8_softmax.schedule_softmax(func, self.target)
                    elif "int8_depthwise" in gv.name_hint:
                        sch = int8_depthwise.schedule_depthwise(func, self.target)
                except Exception:  # noqa: BLE001 - a fusion the schedule does not know: left to the rules
                    sch = None
                if sch is None and dot is not None and "int8_" in gv.name_hint:
                    try:
                        sch = int8_kernels.schedule_dot_kernel(func, self.target, dot) \
                            or int8_kernels.schedule_pack_kernel(func, self.target)
                    except Exception:  # noqa: BLE001 - a fusion the schedule does not know: left to the rules
                        sch = None
                sch = sch or schedule_integer_kernel(func, self.target)
                if sch is not None:
                    mod[gv] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
        return mod
