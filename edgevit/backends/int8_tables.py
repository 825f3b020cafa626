"""Elementwise functions of one int8 tensor as 256-entry tables: ``quantize(f(dequantize(x)))`` -> ``table[x]``;
and softmax on int8 values with a table of exponentials.

In a QDQ model an activation such as SiLU is ``dequantize -> sigmoid -> quantize -> dequantize -> multiply ->
quantize``: about 40 float operations per element for a function of one int8 value, which has 256 possible
inputs. This rewrite evaluates the float subgraph once per input value at compile time (numpy, float32,
onnxruntime's quantize/dequantize arithmetic) and replaces it with a lookup, as onnxruntime's own QLinear
activations (QLinearSigmoid, its lookup-table ops) do. ``quantize(softmax(dequantize(x)))`` over the last axis
needs only ``exp(sx (x - max x))``, 256 values: ``edgevit.backends.int8_softmax`` looks them up (as
QLinearSoftmax does).
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.relax import PyExprMutator, expr_functor
from tvm.script import tirx as T

from .int8 import _aarch64, _constant, _scalar
from .int8_softmax import emit_softmax
from .relax_rewrite import binding_of, is_op, rewrite_functions, static_shape

_erf = np.frompyfunc(math.erf, 1, 1)

#: Unary float operators the tables evaluate (numpy, float32).
_UNARY = {
    "relax.sigmoid": lambda v: np.float32(1) / (np.float32(1) + np.exp(-v)),
    "relax.tanh": np.tanh,
    "relax.exp": np.exp,
    "relax.sqrt": np.sqrt,
    "relax.erf": lambda v: _erf(v.astype(np.float64)).astype(np.float32),
    "relax.nn.relu": lambda v: np.maximum(v, np.float32(0)),
    "relax.negative": np.negative,
}
#: Binary float operators (the other operand a one-element constant, or a function of the same input).
_BINARY = {"relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply,
           "relax.divide": np.divide, "relax.maximum": np.maximum, "relax.minimum": np.minimum}


def softmax_exp_table(sx: float, length: int) -> np.ndarray:
    """onnxruntime's ``QLinearSoftmax`` table: ``exp(sx (d + b))`` for ``d = x - max(x)`` in -255..0, computed in
    float64 and stored as float32, with ``b = max(0, ln(FLT_MAX / length) - 5) / sx``.

    The factor ``exp(sx b)`` keeps ``Σe`` of a row of ``length`` values below float32's range; it cancels in
    ``e / Σe`` except for float32 rounding, which is why it is reproduced.
    """
    shift = max(0.0, math.log(np.finfo(np.float32).max / np.float32(length)) - 5) / float(sx)
    return np.exp((np.arange(256, dtype=np.float64) - 255 + shift) * float(sx)).astype(np.float32)


class _NotElementwise(Exception):
    """The subgraph is not a function of one per-tensor int8 input."""


@expr_functor.mutator
class _Tables(PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.rewritten = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if not is_op(call, "relax.quantize") or str(call.attrs.out_dtype) != "int8":
            return super().visit_call_(call)
        softmax = self._softmax(call)
        if softmax is not None:
            self.rewritten += 1
            return softmax
        try:
            self._source, self._nonlinear = None, False
            table = self._quantized(call)
        except _NotElementwise:
            return super().visit_call_(call)
        if self._source is None or not self._nonlinear:
            return super().visit_call_(call)
        self.rewritten += 1
        return emit_lookup(self.builder_, table, self.visit_expr(self._source))

    def _softmax(self, quantize: relax.Call):
        """``quantize(softmax(dequantize(x), axis=-1))`` -> ``int8_softmax.softmax_int8`` with a table of
        ``exp``, or None."""
        softmax = binding_of(self, quantize.args[0])
        if not is_op(softmax, "relax.nn.softmax"):
            return None
        deq = binding_of(self, softmax.args[0])
        if not is_op(deq, "relax.dequantize") or str(deq.args[0].ty.dtype) != "int8":
            return None
        ndim = len(deq.args[0].ty.shape)
        params = [_scalar(a) for a in (deq.args[1], quantize.args[1], quantize.args[2])]
        if int(softmax.attrs.axis) % ndim != ndim - 1 or any(p is None for p in params):
            return None
        length = static_shape(deq.args[0])
        if length is None:
            return None  # the table depends on the row length
        sx, sy, zy = params
        # onnxruntime scales by floor(1 / sy), not 1 / sy: with sy = float32(1/255) that is 254, so its
        # probabilities are 254/255 of the exact ones (measured: every mobilevitv2_050 softmax differed)
        output_scale = float(np.floor(np.float32(1) / np.float32(sy)))
        return emit_softmax(self.builder_, self.visit_expr(deq.args[0]), softmax_exp_table(sx, int(length[-1])),
                            output_scale, int(zy))

    def _eval(self, expr) -> np.ndarray:
        """``expr`` evaluated for each of the 256 int8 inputs (float32), or raise :class:`_NotElementwise`."""
        value = _constant(expr)
        if value is not None:
            if value.size != 1:
                raise _NotElementwise
            return np.float32(value.reshape(()))
        call = binding_of(self, expr)
        if call is None or not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op):
            raise _NotElementwise
        name = call.op.name
        if name == "relax.dequantize":
            constant = _constant(call.args[0])
            if constant is not None and constant.size == 1:  # a quantized scalar (GELU's 1 and 0.5)
                if _scalar(call.args[1]) is None or _scalar(call.args[2]) is None:
                    raise _NotElementwise
                return _dequantize_values(constant.reshape(()), call)
            return self._dequantize(call)
        if name == "relax.quantize":
            self._nonlinear = True
            return _dequantize_values(self._quantized(call), call)
        if name in _UNARY:
            self._nonlinear = True
            return _UNARY[name](self._eval(call.args[0])).astype(np.float32)
        if name in _BINARY:
            self._nonlinear = True
            return _BINARY[name](self._eval(call.args[0]), self._eval(call.args[1])).astype(np.float32)
        if name == "relax.clip":
            self._nonlinear = True
            low, high = (float(_scalar(a)) if _scalar(a) is not None else None for a in call.args[1:3])
            if low is None or high is None:
                raise _NotElementwise
            return np.clip(self._eval(call.args[0]), np.float32(low), np.float32(high))
        raise _NotElementwise

    def _quantized(self, quantize) -> np.ndarray:
        """``quantize`` (a call) for each of the 256 input values, as onnxruntime computes it: the sum of a
        dequantized value and a dequantized constant by its QLinearAdd arithmetic (it fuses that group), anything
        else by QuantizeLinear of the float32 value."""
        add = binding_of(self, quantize.args[0])
        if is_op(add, "relax.add"):
            deqs = [binding_of(self, a) for a in add.args]
            if all(is_op(d, "relax.dequantize") for d in deqs):
                constants = [_constant(d.args[0]) for d in deqs]
                if sum(c is not None and c.size == 1 for c in constants) == 1 and str(quantize.attrs.out_dtype) == \
                        "int8" and all(_scalar(a) is not None for c in (quantize, *deqs) for a in c.args[1:3]):
                    tensor = deqs[0] if constants[1] is not None else deqs[1]
                    constant = deqs[1] if tensor is deqs[0] else deqs[0]
                    values = self._dequantize(tensor, steps=True)
                    self._nonlinear = True
                    return _qlinear_add(values, tensor, _constant(constant.args[0]).reshape(()), constant, quantize)
        return _quantize(self._eval(quantize.args[0]), quantize)

    def _dequantize(self, call, steps: bool = False) -> np.ndarray:
        """The leaf: ``dequantize(x)`` of the one int8 input, per tensor (with ``steps``, ``x`` itself)."""
        source = call.args[0]
        if str(source.ty.dtype) != "int8" or _constant(source) is not None or _scalar(call.args[1]) is None \
                or _scalar(call.args[2]) is None:
            raise _NotElementwise  # per-axis parameters, or a dequantized constant (weights)
        values = np.arange(-128, 128, dtype=np.float32)
        looked_up = self._table_lookup(source)
        if looked_up is not None:  # a table made earlier in this pass (SiLU's sigmoid, before its multiply)
            source, table = looked_up
            values = table.astype(np.float32)
        if self._source is None:
            self._source = source
        elif not self._source.same_as(source):
            raise _NotElementwise
        if steps:
            return values
        return ((values - np.float32(_scalar(call.args[2]))) * np.float32(_scalar(call.args[1]))).astype(np.float32)

    def _table_lookup(self, expr):
        """(int8 input, table) if ``expr`` is a lookup this pass wrote, else None."""
        call = binding_of(self, expr)
        if not is_op(call, "relax.call_tir") or not call.args[0].name_hint.startswith(_LOOKUP):
            return None
        table, source = call.args[1].fields
        return source, _constant(table)


_LOOKUP = "int8_lookup"
#: FuseOps' ``kBroadcast``: a gather is ``kOpaque`` to its analysis, which would keep every lookup a kernel of
#: its own, fed an int32 index; marked so, it fuses with a neighbouring kernel.
_FUSABLE_AFTER_KERNELS = 1
_OPAQUE = 8


def lookup(table: te.Tensor, data: te.Tensor) -> te.Tensor:
    """``table[data + 128]`` for an int8 ``data`` and a 256-entry ``table``."""
    return te.compute(data.shape, lambda *i: table[data[i].astype("int32") + 128], name=_LOOKUP)


def _tbl4(table, base: int, index, fallback=None):
    """NEON ``tbl``/``tbx`` over the 64 table bytes from ``base``: ``index`` >= 64 gives 0 (``tbl``) or keeps
    ``fallback`` (``tbx``)."""
    rows = [table.vload([base + 16 * r], "int8x16") for r in range(4)]
    if fallback is None:
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.tbl4.v16i8"), *rows, index,
                                       dtype="int8x16")
    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.tbx4.v16i8"), fallback, *rows,
                                   index, dtype="int8x16")


def lookup_neon(shape) -> tirx.PrimFunc:
    """:func:`lookup` for AArch64, 16 values per ``tbl`` + 3 ``tbx`` over the table held in 16 registers (NEON has
    no gather: LLVM's vectorised ``lookup`` moves every lane to a general register and back)."""
    n = int(np.prod(shape))
    vectors = n // 16

    @T.prim_func(private=True, s_tir=True)
    def func(table: T.Buffer((256,), "int8"), data: T.Buffer(shape, "int8"), out: T.Buffer(shape, "int8")):
        T.func_attr({"tirx.noalias": True})
        x = T.decl_buffer((n,), "int8", data=data.data)
        y = T.decl_buffer((n,), "int8", data=out.data)
        for i in range(vectors):
            index = x.vload([i * 16], "int8x16") ^ T.broadcast(T.int8(-128), 16)  # x + 128 as a byte
            looked_up = _tbl4(table, 0, index)
            looked_up = _tbl4(table, 64, index - T.broadcast(T.int8(64), 16), looked_up)
            looked_up = _tbl4(table, 128, index - T.broadcast(T.int8(-128), 16), looked_up)
            y[T.ramp(i * 16, 1, 16)] = _tbl4(table, 192, index - T.broadcast(T.int8(-64), 16), looked_up)
        for j in range(vectors * 16, n):
            y[j] = table[T.Cast("int32", x[j]) + 128]

    return func


#: AVX-512 VBMI ``vpermi2b``: 64 bytes looked up in a 128-byte table (two registers) by the low 7 index bits.
_VPERMI2B = "llvm.x86.avx512.vpermi2var.qi.512"


def lookup_pack_vbmi(channels: int, height: int, width: int, pixels: int) -> tirx.PrimFunc:
    """A lookup and the conv input packing that reads it (``int8_kernels.pack_conv_input`` of a 1x1, stride-1
    conv) as one x86 kernel: ``out[c/4, p, c%4] = table[x[0, c, p] + 128]`` for an int8 NCHW ``x``, pixels
    ``p >= height·width`` repeating the last one; the table already holds the packing's ``+128`` (uint8).

    Per 16 pixels of 4 channels: the 4 rows of 16 bytes as one 64-byte vector, looked up by two ``vpermi2b``
    (table halves 0-127 and 128-255, chosen by the sign of ``x``), interleaved by one byte shuffle (``vpermb``)
    and stored whole. Fused as TE, the lookup was a scalar load per byte inserted lane by lane (swiftformer_xs:
    0.38 ms for 192 x 56 x 56).
    """
    hw = height * width
    vectors = hw // 16
    blocks = channels // 4
    interleave = [kk * 16 + p for p in range(16) for kk in range(4)]

    @T.prim_func(private=True, s_tir=True)
    def func(table: T.Buffer((256,), "uint8"), data: T.Buffer((1, channels, height, width), "int8"),
             out: T.Buffer((blocks, pixels, 4), "uint8")):
        T.func_attr({"tirx.noalias": True})
        x = T.decl_buffer((channels * hw,), "int8", data=data.data)
        y = T.decl_buffer((blocks * pixels * 4,), "uint8", data=out.data)
        for b in range(blocks):
            for i in range(vectors):
                v = T.Shuffle([x.vload([(b * 4 + kk) * hw + i * 16], "int8x16") for kk in range(4)], list(range(64)))
                low = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(_VPERMI2B), table.vload([0], "uint8x64"), v,
                                              table.vload([64], "uint8x64"), dtype="uint8x64")
                high = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(_VPERMI2B), table.vload([128], "uint8x64"),
                                               v, table.vload([192], "uint8x64"), dtype="uint8x64")
                looked_up = T.Select(v < T.broadcast(T.int8(0), 64), low, high)
                y[T.ramp((b * pixels + i * 16) * 4, 1, 64)] = T.Shuffle([looked_up], interleave)
            for j, kk in T.grid(pixels - vectors * 16, 4):
                y[(b * pixels + vectors * 16 + j) * 4 + kk] = table[
                    T.Cast("int32", x[(b * 4 + kk) * hw + T.min(vectors * 16 + j, hw - 1)]) + 128]

    return func


@expr_functor.mutator
class _LookupPacks(PyExprMutator):
    """``pack_conv_input(lookup(table, x))`` of a 1x1 stride-1 conv -> :func:`lookup_pack_vbmi`."""

    def __init__(self, mod):
        super().__init__(mod)
        self.mod = mod
        self.rewritten = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if not is_op(call, "relax.call_tir") or not call.args[0].name_hint.startswith("int8_pack_conv_input"):
            return super().visit_call_(call)
        (source,) = call.args[1].fields
        lookup = binding_of(self, source)
        if not is_op(lookup, "relax.call_tir") or not lookup.args[0].name_hint.startswith(_LOOKUP):
            return super().visit_call_(call)
        table, data = lookup.args[1].fields
        shape, (blocks, pixels, four) = static_shape(data), static_shape(call)
        # a 1x1 stride-1 conv's packing: a row per 4 channels, every input pixel (then whole vectors)
        if shape is None or len(shape) != 4 or shape[0] != 1 or four != 4 or blocks * 4 != shape[1] \
                or not shape[2] * shape[3] <= pixels < shape[2] * shape[3] + 16 or str(call.ty.dtype) != "uint8":
            return super().visit_call_(call)
        func = lookup_pack_vbmi(shape[1], shape[2], shape[3], pixels)
        gv = self.builder_.add_func(func.with_attrs({"op_pattern": _OPAQUE, "tirx.is_scheduled": True}),
                                    "int8_lookup_pack_vbmi")
        shifted = (_constant(table).astype(np.int16) + 128).astype(np.uint8)
        self.rewritten += 1
        return relax.call_tir(gv, [relax.const(shifted), self.visit_expr(data)], call.ty)


def _vbmi(target) -> bool:
    from tvm.target import codegen

    return target is not None and str(target.kind.name) == "llvm" \
        and bool(codegen.target_has_features("avx512vbmi", target))


def emit_lookup(builder, table: np.ndarray, data) -> relax.Expr:
    """Emit :func:`lookup` of the constant ``table`` (int8, 256 values) into a Relax builder: as a kernel that
    fusion may put next to its neighbours, or on AArch64 (the current target's) as :func:`lookup_neon`."""
    if _aarch64(tvm.target.Target.current(allow_none=True)):
        shape = [int(d) for d in data.ty.shape]
        func = lookup_neon(shape).with_attrs({"op_pattern": _OPAQUE, "tirx.is_scheduled": True})
        gv = builder.add_func(func, _LOOKUP + "_neon")
        return relax.call_tir(gv, [relax.const(table), data], relax.TensorType(shape, "int8"))
    call = builder.call_te(lookup, relax.const(table), data, primfunc_name_hint=_LOOKUP)
    gv = call.args[0]
    builder.update_func(gv, builder.get()[gv].with_attr("op_pattern", _FUSABLE_AFTER_KERNELS))
    return call


def _quantize(values: np.ndarray, call) -> np.ndarray:
    """onnxruntime's QuantizeLinear: ``saturate(round_half_even(v / scale) + zero_point)`` (per tensor)."""
    scale, zero = _scalar(call.args[1]), _scalar(call.args[2])
    if scale is None or zero is None or str(call.attrs.out_dtype) != "int8":
        raise _NotElementwise
    values = np.broadcast_to(values, (256,))
    return np.clip(np.rint(values / np.float32(scale)) + zero, -128, 127).astype(np.int8)


def _qlinear_add(a: np.ndarray, dequantize_a, b: np.ndarray, dequantize_b, quantize) -> np.ndarray:
    """onnxruntime's QLinearAdd (MLAS, x86 AVX2) of int8 values ``a`` and a constant ``b``:
    ``round_half_even(fma(a, sa / sy, c))`` in float32, where ``c = (zy - (sa / sy * za + sb / sy * zb)) + b * (sb /
    sy)``. Its result differs from ``quantize(dequantize(a) + dequantize(b))`` where the sum is a half step in exact
    arithmetic (efficientformerv2's ``x + 1`` with sy = 2/255: 41 k of 200 k values of one Add)."""
    f32 = np.float32
    (sa, za), (sb, zb) = ((f32(_scalar(d.args[1])), f32(_scalar(d.args[2]))) for d in (dequantize_a, dequantize_b))
    sy, zy = f32(_scalar(quantize.args[1])), f32(_scalar(quantize.args[2]))
    ra, rb = sa / sy, sb / sy
    fixed = (zy - (ra * za + rb * zb)) + f32(b) * rb
    fused = (a.astype(np.float64) * np.float64(ra) + np.float64(fixed)).astype(f32)  # exact in float64: one rounding
    return np.clip(np.rint(fused), -128, 127).astype(np.int8)


def _dequantize_values(q: np.ndarray, call) -> np.ndarray:
    """What a ``dequantize`` with ``call``'s (quantize) parameters gives back for ``q``."""
    return ((q.astype(np.float32) - np.float32(_scalar(call.args[2]))) * np.float32(_scalar(call.args[1])))


@tvm.transform.module_pass(opt_level=0, name="Int8ElementwiseTables")
class Int8ElementwiseTables:
    """Replace ``quantize(f(dequantize(x)))`` by a 256-entry table lookup of ``x``.

    Safe when: ``x`` is one int8 tensor with a per-tensor scale and zero point, the output quantize is
    per-tensor int8, and ``f`` is built from elementwise operators (:data:`_UNARY`, :data:`_BINARY`, clip,
    quantize/dequantize pairs) of ``dequantize(x)`` and one-element constants. Then the output is a function of
    the int8 value alone; the table holds it for all 256 values (float32 arithmetic, onnxruntime's rounding).
    Requantization alone (no operator between) is left to the integer kernels. Also
    ``quantize(softmax(dequantize(x), axis=-1))`` with per-tensor parameters becomes ``int8_softmax.softmax_int8``.
    On x86 with AVX-512 VBMI a lookup read by a 1x1 conv's input packing becomes one kernel with it
    (:func:`lookup_pack_vbmi`).
    """

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = _Tables(mod)
        rewritten = rewrite_functions(rewriter, mod)
        if not rewriter.rewritten:
            return mod
        mod = relax.transform.DeadCodeElimination()(rewritten)
        if _vbmi(tvm.target.Target.current(allow_none=True)):
            packs = _LookupPacks(mod)
            mod = rewrite_functions(packs, mod)
            if packs.rewritten:
                mod = relax.transform.DeadCodeElimination()(mod)
        return mod
