"""Small TFLite models written in the tests (flatbuffers builder + the ``tflite`` package's generated writers).

The converted fixtures (tests/backends/data/tiny*.tflite) cover the usual path; these cover what converters
rarely write but real files have: a QUANTIZE whose code is only in ``builtin_code`` (ai-edge-quantizer's way),
weights stored after the flatbuffer (``Buffer.offset``/``size``), dynamic input dimensions, operators TVM's
frontend does not convert.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import flatbuffers
import numpy as np

_TYPES = {"float32": 0, "int32": 2, "int16": 7, "int8": 9}


def _fb(name: str):
    return importlib.import_module(f"tflite.{name}")  # the module (``tflite.Model`` is the class)


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    data: np.ndarray | None = None          # a constant
    quant: tuple[float, int] | None = None  # (scale, zero point), per tensor
    signature: tuple[int, ...] | None = None  # with -1 for dynamic dimensions


@dataclass
class Op:
    code: int                    # tflite.BuiltinOperator value
    inputs: list[int]
    outputs: list[int]
    custom: str | None = None    # custom operator name (code 32, CUSTOM)
    deprecated_code: bool = True  # also write the old 8-bit code field, as TensorFlow's converter does
    options: tuple | None = None  # (BuiltinOptions type, writer(builder) -> table offset)


@dataclass
class Graph:
    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]
    appended: bool = False   # constants after the flatbuffer (offset/size), as ai-edge-quantizer writes them
    version: int = 3
    extra: dict = field(default_factory=dict)


def _vector(b, start, values, prepend):
    start(b, len(values))
    for v in reversed(values):
        prepend(v)
    return b.EndVector()


def _serialize(g: Graph, data_start: int) -> tuple[bytes, list[bytes]]:
    """The flatbuffer, and the blobs to append (empty unless ``g.appended``); constants at ``data_start``."""
    m, sg, t, o, oc, buf, q = (_fb(n) for n in ("Model", "SubGraph", "Tensor", "Operator", "OperatorCode",
                                               "Buffer", "QuantizationParameters"))
    b = flatbuffers.Builder(1024)
    blobs, buffers, offset = [], [], data_start
    buffers_data = [None] + [x.data for x in g.tensors if x.data is not None]
    for data in buffers_data:
        raw = None if data is None else np.ascontiguousarray(data).tobytes()
        vec = None
        if raw is not None and not g.appended:
            vec = b.CreateByteVector(raw)
        buf.BufferStart(b)
        if vec is not None:
            buf.BufferAddData(b, vec)
        elif raw is not None:
            buf.BufferAddOffset(b, offset)
            buf.BufferAddSize(b, len(raw))
            blobs.append(raw)
            offset += len(raw)
        buffers.append(buf.BufferEnd(b))
    tensors, next_buffer = [], 1
    for x in g.tensors:
        name = b.CreateString(x.name)
        shape = _vector(b, t.TensorStartShapeVector, list(x.shape), b.PrependInt32)
        sig = _vector(b, t.TensorStartShapeSignatureVector, list(x.signature), b.PrependInt32) if x.signature else None
        quant = None
        if x.quant:
            scale = _vector(b, q.QuantizationParametersStartScaleVector, [x.quant[0]], b.PrependFloat32)
            zero = _vector(b, q.QuantizationParametersStartZeroPointVector, [x.quant[1]], b.PrependInt64)
            q.QuantizationParametersStart(b)
            q.QuantizationParametersAddScale(b, scale)
            q.QuantizationParametersAddZeroPoint(b, zero)
            quant = q.QuantizationParametersEnd(b)
        t.TensorStart(b)
        t.TensorAddShape(b, shape)
        if sig is not None:
            t.TensorAddShapeSignature(b, sig)
        t.TensorAddType(b, _TYPES[x.dtype])
        t.TensorAddName(b, name)
        if x.data is not None:
            t.TensorAddBuffer(b, next_buffer)
            next_buffer += 1
        if quant is not None:
            t.TensorAddQuantization(b, quant)
        tensors.append(t.TensorEnd(b))
    codes, ops = [], []
    for index, op in enumerate(g.ops):
        custom = b.CreateString(op.custom) if op.custom else None
        oc.OperatorCodeStart(b)
        if op.deprecated_code:
            oc.OperatorCodeAddDeprecatedBuiltinCode(b, min(op.code, 127))
        oc.OperatorCodeAddBuiltinCode(b, op.code)
        if custom is not None:
            oc.OperatorCodeAddCustomCode(b, custom)
        oc.OperatorCodeAddVersion(b, 1)
        codes.append(oc.OperatorCodeEnd(b))
        ins = _vector(b, o.OperatorStartInputsVector, op.inputs, b.PrependInt32)
        outs = _vector(b, o.OperatorStartOutputsVector, op.outputs, b.PrependInt32)
        options = op.options[1](b) if op.options else None
        o.OperatorStart(b)
        o.OperatorAddOpcodeIndex(b, index)
        o.OperatorAddInputs(b, ins)
        o.OperatorAddOutputs(b, outs)
        if options is not None:
            o.OperatorAddBuiltinOptionsType(b, op.options[0])
            o.OperatorAddBuiltinOptions(b, options)
        ops.append(o.OperatorEnd(b))
    tensor_vec = _vector(b, sg.SubGraphStartTensorsVector, tensors, b.PrependUOffsetTRelative)
    op_vec = _vector(b, sg.SubGraphStartOperatorsVector, ops, b.PrependUOffsetTRelative)
    in_vec = _vector(b, sg.SubGraphStartInputsVector, g.inputs, b.PrependInt32)
    out_vec = _vector(b, sg.SubGraphStartOutputsVector, g.outputs, b.PrependInt32)
    sg.SubGraphStart(b)
    sg.SubGraphAddTensors(b, tensor_vec)
    sg.SubGraphAddOperators(b, op_vec)
    sg.SubGraphAddInputs(b, in_vec)
    sg.SubGraphAddOutputs(b, out_vec)
    subgraph = sg.SubGraphEnd(b)
    subgraphs = _vector(b, m.ModelStartSubgraphsVector, [subgraph], b.PrependUOffsetTRelative)
    code_vec = _vector(b, m.ModelStartOperatorCodesVector, codes, b.PrependUOffsetTRelative)
    buffer_vec = _vector(b, m.ModelStartBuffersVector, buffers, b.PrependUOffsetTRelative)
    description = b.CreateString("edgevit test model")
    m.ModelStart(b)
    m.ModelAddVersion(b, g.version)
    m.ModelAddOperatorCodes(b, code_vec)
    m.ModelAddSubgraphs(b, subgraphs)
    m.ModelAddDescription(b, description)
    m.ModelAddBuffers(b, buffer_vec)
    b.Finish(m.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output()), blobs


def write(g: Graph, path: Path) -> Path:
    """Write ``g`` as a .tflite file (constants appended after the flatbuffer when ``g.appended``)."""
    flat, _ = _serialize(g, data_start=1 << 20)  # the offsets' values do not change the flatbuffer's size
    start = (len(flat) + 15) // 16 * 16
    flat, blobs = _serialize(g, data_start=start)
    assert (len(flat) + 15) // 16 * 16 == start
    Path(path).write_bytes(flat + b"\0" * (start - len(flat)) + b"".join(blobs))
    return Path(path)


def fully_connected_options():
    """FULLY_CONNECTED's options table (no fused activation, default weight format)."""
    fc = _fb("FullyConnectedOptions")

    def writer(b):
        fc.FullyConnectedOptionsStart(b)
        return fc.FullyConnectedOptionsEnd(b)

    return (_fb("BuiltinOptions").BuiltinOptions.FullyConnectedOptions, writer)


def requantize_then_dense(path: Path, appended: bool) -> Path:
    """int8 [1,16] -> QUANTIZE (requantize; code in ``builtin_code`` only) -> FULLY_CONNECTED (int8 weights,
    int32 bias) -> int8 [1,8]: what ai-edge-quantizer writes, in miniature."""
    rng = np.random.default_rng(3)
    weights = rng.integers(-127, 128, (8, 16)).astype(np.int8)
    bias = rng.integers(-500, 500, 8).astype(np.int32)
    s_in, s_mid, s_w, s_out = 0.02, 0.03, 0.01, 0.05
    tensors = [Tensor("input", (1, 16), "int8", quant=(s_in, 3)),
               Tensor("requantized", (1, 16), "int8", quant=(s_mid, -5)),
               Tensor("weights", (8, 16), "int8", data=weights, quant=(s_w, 0)),
               Tensor("bias", (8,), "int32", data=bias, quant=(s_mid * s_w, 0)),
               Tensor("output", (1, 8), "int8", quant=(s_out, 1))]
    ops = [Op(114, [0], [1], deprecated_code=False),   # QUANTIZE
           Op(9, [1, 2, 3], [4], options=fully_connected_options())]   # FULLY_CONNECTED
    return write(Graph(tensors, ops, [0], [4], appended=appended), path)


def one_op(path: Path, code: int, shape=(1, 4), signature=None, custom: str | None = None, version: int = 3) -> Path:
    """float input -> one operator -> float output of the same shape (RELU is code 19)."""
    tensors = [Tensor("input", shape, signature=signature), Tensor("output", shape, signature=signature)]
    return write(Graph(tensors, [Op(code, [0], [1], custom=custom)], [0], [1], version=version), path)


def dense_of_tokens(path: Path) -> Path:
    """float [1, 1, 16] -> FULLY_CONNECTED (keep_num_dims false) -> [1, 8]: a classifier head on one token, as
    litert-torch writes timm's edgenext_xx_small (TFLite flattens the leading dimensions)."""
    rng = np.random.default_rng(4)
    tensors = [Tensor("input", (1, 1, 16)),
               Tensor("weights", (8, 16), data=rng.standard_normal((8, 16)).astype(np.float32)),
               Tensor("bias", (8,), data=rng.standard_normal(8).astype(np.float32)),
               Tensor("output", (1, 8))]
    return write(Graph(tensors, [Op(9, [0, 1, 2], [3], options=fully_connected_options())], [0], [3]), path)


def broadcast_batch_matmul(path: Path) -> Path:
    """float [2, 3, 4] x float [1, 4, 5] (two inputs) -> BATCH_MATMUL -> [2, 3, 5]: batch dimensions broadcast, as
    litert-torch writes timm's efficientvit_m0 attention."""
    options = _fb("BatchMatMulOptions")

    def writer(b):
        options.BatchMatMulOptionsStart(b)
        return options.BatchMatMulOptionsEnd(b)

    tensors = [Tensor("a", (2, 3, 4)), Tensor("b", (1, 4, 5)), Tensor("output", (2, 3, 5))]
    op = Op(126, [0, 1], [2], options=(_fb("BuiltinOptions").BuiltinOptions.BatchMatMulOptions, writer))
    return write(Graph(tensors, [op], [0, 1], [2]), path)
