"""TVM 0.27's Relax TFLite frontend, completed for fully-int8 models.

TVM 0.27 converts a quantized TFLite operator only if it is on its ``_SUPPORTED_QUANTIZED_OPS`` list, which
misses operators every int8 model converted from PyTorch has: TRANSPOSE (the NCHW <-> NHWC moves), PAD, SLICE,
BATCH_MATMUL (attention) and GELU. ``check_unsupported_ops`` refuses the whole model for them ("Quantized
operators require explicit QDQ lowering"). ``Int8CompleteConverter`` gives every other operator that
explicit lowering: its quantized inputs are dequantized, TVM's float converter builds the operator, and each
quantized output is quantized with its own parameters. That is what TFLite's integer kernels compute up to
rounding (they requantize with fixed-point multipliers); data movement between equal parameters stays exact,
and edgevit's ``IntegerQdqKernels`` turns ``quantize(move(dequantize(x)))`` back into ``move(x)``.

The ``tflite`` package misreads operator codes that ai-edge-quantizer writes (QUANTIZE read as ADD, see
``frontend_tflite.builtin_code``); the converter reads them as LiteRT does.

Two float operators are converted wrongly and are redone here: FULLY_CONNECTED without ``keep_num_dims`` keeps
its input's rank (TFLite flattens it to [rows, units]: a [1, 1, C] input gave [1, 1, 1000] logits), and
BATCH_MATMUL with broadcast batch dimensions fails ("'Type' object has no attribute 'shape'") on a shape it
reads before normalising; Relax's ``matmul`` broadcasts batch dimensions itself.

TVM 0.27 also reads constant data only from inside the flatbuffer (``Buffer.data``); ai-edge-quantizer writes
weights after it (``Buffer.offset``/``size``, the format for models over 2 GB that it uses for all sizes), which
TVM reads as empty (a ``TypeError`` in ``get_tensor_value``). The converter serves those from the file's bytes.
"""

from __future__ import annotations

import functools

import math

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator
from tvm.relax.frontend.tflite.tflite_frontend import OperatorConverter, TensorWrapper, get_tensor_name

from ..frontend_tflite import builtin_code
from .relax_rewrite import is_op, rewrite_functions, static_shape

#: Multi-axis means/sums over more values than this are reduced one axis at a time (see ReduceOneAxisAtATime).
LONG_REDUCTION = 4096


class _FloatTensor:
    """A TFLite tensor seen as float32: what TVM's float converters read an int8 tensor as, once dequantized."""

    def __init__(self, tensor):
        self._tensor = tensor

    def Type(self):  # noqa: N802 (flatbuffers' accessor name)
        from tflite.TensorType import TensorType

        return TensorType.FLOAT32

    def __getattr__(self, name):
        return getattr(self._tensor, name)


class _AppendedBuffer:
    """A ``Buffer`` whose data follows the flatbuffer (``offset``/``size``), served as inline data would be."""

    def __init__(self, data):
        self._data = data

    def DataAsNumpy(self):  # noqa: N802 (flatbuffers' accessor names)
        return self._data

    def DataLength(self):  # noqa: N802
        return self._data.size


class Int8CompleteConverter(OperatorConverter):
    """TVM's TFLite ``OperatorConverter`` with a dequantize -> float -> quantize lowering for the quantized
    operators TVM 0.27 refuses (see the module docstring)."""

    def __init__(self, model, subgraph, exp_tab, ctx, conversion_state=None):
        super().__init__(model, subgraph, exp_tab, ctx, conversion_state)
        self._float_view = False
        native = type(self)._SUPPORTED_QUANTIZED_OPS
        for name, convert in list(self.convert_map.items()):
            if name not in native:
                self.convert_map[name] = functools.partial(self._convert_in_float, convert)
        self._SUPPORTED_QUANTIZED_OPS = frozenset(self.convert_map)

    def get_op_code_str(self, op):
        from tflite.BuiltinOperator import BuiltinOperator

        code = builtin_code(self.model.OperatorCodes(op.OpcodeIndex()))
        if code != BuiltinOperator.CUSTOM and code in self.builtin_op_code:
            return self.builtin_op_code[code]
        return super().get_op_code_str(op)  # custom operators and codes this schema does not know

    def get_tensors(self, tensors_idx_list):
        tensors = [self._with_appended_data(t) for t in super().get_tensors(tensors_idx_list)]
        if not self._float_view:
            return tensors
        return [TensorWrapper(t.tensor_idx, _FloatTensor(t.tensor), t.buffer) if t.qnn_params else t
                for t in tensors]

    def _with_appended_data(self, tensor):
        buffer = tensor.buffer
        if not hasattr(buffer, "Offset") or buffer.DataLength() or buffer.Offset() <= 1:
            return tensor  # Offset 1 is the writer's placeholder for "no data"
        import numpy as np

        whole = self.model._tab.Bytes  # offsets count from the start of the file
        start, size = buffer.Offset(), buffer.Size()
        if start + size > len(whole):
            raise ValueError(f"tensor '{tensor.tensor.Name().decode(errors='replace')}' reads its data past the "
                             "end of the file")
        data = np.frombuffer(whole, np.uint8, count=size, offset=start)
        return TensorWrapper(tensor.tensor_idx, tensor.tensor, _AppendedBuffer(data), tensor.qnn_params)

    def convert_fully_connected(self, op):
        """TVM's conversion, reshaped to the output shape the model declares (``keep_num_dims`` false)."""
        out = super().convert_fully_connected(op)
        declared = [int(d) for d in self.get_tensor_shape(self.get_output_tensors(op)[0])]
        if out is not None and static_shape(self.bb.normalize(out)) != declared:
            out = relax.op.reshape(out, declared)
        return out

    def convert_batch_matmul(self, op):
        """One broadcasting Relax ``matmul`` (with the adjoint flags as transposes of the last two axes)."""
        from tflite.BatchMatMulOptions import BatchMatMulOptions

        inputs = self.get_input_tensors(op)
        if any(t.qnn_params for t in inputs):
            return super().convert_batch_matmul(op)   # int8: refused by TVM, lowered in float by the caller
        options = BatchMatMulOptions()
        options.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        a, b = (self.bb.normalize(self.get_tensor_expr(t)) for t in inputs[:2])
        if options.AdjX():
            a = relax.op.permute_dims(a, _swap_last_two(len(static_shape(a))))
        if options.AdjY():
            b = relax.op.permute_dims(b, _swap_last_two(len(static_shape(b))))
        return relax.op.matmul(a, b)

    def _convert_in_float(self, convert, op):
        """``convert(op)`` on dequantized inputs, its outputs quantized as the model declares them."""
        inputs, outputs = self.get_input_tensors(op), self.get_output_tensors(op)
        if not any(t.qnn_params for t in inputs + outputs):
            return convert(op=op)
        exprs, saved = self.exp_tab.exprs, {}
        for tensor in inputs:
            if tensor.qnn_params is None:
                continue
            name = get_tensor_name(self.subgraph, tensor.tensor_idx)
            if name in saved:
                continue
            value = self.bb.normalize(self.dequantize(self.get_tensor_expr(tensor), tensor))
            saved[name] = exprs.get(name)
            exprs[name] = value
        self._float_view = True
        try:
            result = convert(op=op)
        finally:
            self._float_view = False
            for name, expr in saved.items():  # the int8 tensors stay what later operators read
                if expr is None:
                    exprs.pop(name, None)
                else:
                    exprs[name] = expr
        if result is None:
            return None
        if len(outputs) == 1:
            return self.quantize(result, outputs[0]) if outputs[0].qnn_params else result
        result = self.bb.normalize(result)
        return relax.Tuple([self.quantize(relax.TupleGetItem(result, i), t) if t.qnn_params else
                            relax.TupleGetItem(result, i) for i, t in enumerate(outputs)])


def _swap_last_two(rank: int) -> list[int]:
    return [*range(rank - 2), rank - 1, rank - 2]


@mutator
class _OneAxisAtATime(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not (is_op(call, "relax.mean") or is_op(call, "relax.sum")) or call.attrs.axis is None:
            return call
        shape = static_shape(call.args[0])
        if shape is None or len(call.attrs.axis) < 2:
            return call
        axes = sorted({int(a) % len(shape) for a in call.attrs.axis})
        if math.prod(shape[a] for a in axes) <= LONG_REDUCTION:
            return call
        reduce = relax.op.mean if is_op(call, "relax.mean") else relax.op.sum
        x = call.args[0]
        for axis in reversed(axes):  # innermost first; kept dims leave the other axes' numbers as they were
            x = self.builder_.emit(reduce(x, axis=[axis], keepdims=True))
        return x if call.attrs.keepdims else relax.op.squeeze(x, axis=axes)


@tvm.transform.module_pass(opt_level=0, name="ReduceOneAxisAtATime")
class ReduceOneAxisAtATime:
    """Rewrite a mean or sum over several axes and more than ``LONG_REDUCTION`` values as one reduction per axis.

    TVM lowers a reduction to one float32 accumulator summed in order, whose rounding error grows with the
    count: mobilevitv2_100's GroupNorm statistics (TFLite MEAN over 128 x 1024 values) came out 1.7e-5 from the
    float64 mean, the sequential float32 sum's error exactly (LiteRT 2.0e-7), and the model's output 2.5e-5.
    A mean of per-axis means is the same value in exact arithmetic (equal-sized groups) and sums 1024 then 128
    values. Safe for any float mean/sum with static shapes; single-axis reductions are left as they are.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_functions(_OneAxisAtATime(mod), mod)
