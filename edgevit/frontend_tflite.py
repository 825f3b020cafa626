"""TFLite model import: a ``.tflite`` file, checked and read into what a build and its verification need.

A ``.tflite`` file is compiled as it is (TVM's Relax TFLite frontend, ``backends.tvm_compiler.import_tflite``)
rather than through ONNX: the int8 models people already have are TFLite files, and LiteRT running the same file
is the reference an artifact is verified against. The file is untrusted: it is read with the ``tflite`` package
(pure Python flatbuffers accessors, no C++ parser), its structure is checked first (identifier, schema version,
every index and buffer range), so a damaged file is one ``ModelImportError`` instead of an error deep inside a
converter or LiteRT.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, ModelImportError
from .frontend import MAX_DIM, TensorSpec, parse_input_shape
from .memory_estimate import MemoryEstimate

IDENTIFIER = b"TFL3"   # the file identifier, at bytes 4-8 of every TFLite flatbuffer
SCHEMA_VERSION = 3
_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8",
           10: "float64"}   # tflite.TensorType -> numpy name
_QUANTIZED = {"int8", "uint8", "int16"}


@dataclass
class TfliteModel:
    """A checked ``.tflite`` file: its path, static input specs and where it came from."""

    name: str
    path: Path
    inputs: list[TensorSpec]
    source: str
    quantized: bool            # integer activations (full-integer quantization), checked by the int8 rule
    family: str = ""
    extra: dict = field(default_factory=dict)

    def load(self):
        """The file's bytes and its ``tflite.Model`` root over them."""
        return read_tflite(self.path)


def is_tflite_path(spec: str) -> bool:
    """Whether a model argument names a TFLite file (by its suffix, as ``.onnx`` names an ONNX file)."""
    return spec.lower().endswith(".tflite")


def builtin_code(op_code) -> int:
    """An ``OperatorCode``'s operator, as LiteRT reads it: the larger of ``builtin_code`` and the old 8-bit
    ``deprecated_builtin_code``.

    The ``tflite`` package's ``BuiltinCode()`` returns the deprecated field for codes below 127 (it assumes
    writers fill both, as TensorFlow's converter does); ai-edge-quantizer writes only ``builtin_code``, so its
    QUANTIZE ops would read as ADD. The field is read raw here.
    """
    import flatbuffers

    slot = op_code._tab.Offset(10)
    raw = op_code._tab.Get(flatbuffers.number_types.Int32Flags, slot + op_code._tab.Pos) if slot else 0
    return max(raw, op_code.DeprecatedBuiltinCode())


def operator_name(model, op) -> str:
    """The TFLite name of an operator (``CONV_2D``; ``CUSTOM:<name>`` for custom operators)."""
    from tflite.BuiltinOperator import BuiltinOperator

    code = builtin_code(model.OperatorCodes(op.OpcodeIndex()))
    if code == BuiltinOperator.CUSTOM:
        custom = model.OperatorCodes(op.OpcodeIndex()).CustomCode() or b""
        return f"CUSTOM:{custom.decode(errors='replace')}"
    return _operator_names().get(code, f"operator code {code}")


@functools.cache
def _operator_names() -> dict[int, str]:
    from tflite.BuiltinOperator import BuiltinOperator

    return {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}


def read_tflite(path: Path):
    """Read and structurally check a ``.tflite`` file.

    Returns
    -------
    data, model
        The file's bytes and the ``tflite.Model`` over them.

    Raises
    ------
    ModelImportError
        Missing file, no TFLite identifier (another kind of file), a schema version other than 3, or a
        structure that is truncated or damaged (an index or buffer pointing outside the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelImportError(f"model file not found: {path}" + (" (a directory)" if path.is_dir() else ""))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelImportError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) < 8 or data[4:8] != IDENTIFIER:
        raise ModelImportError(f"{path} is not a TFLite model (no '{IDENTIFIER.decode()}' identifier at byte 4): "
                               "a truncated file or another format")
    try:
        import tflite
    except ImportError:
        raise ModelImportError("reading .tflite files needs the 'tflite' package: pip install tflite==2.18.0 "
                               "(it is in tools/requirements.lock)") from None
    try:
        model = tflite.Model.GetRootAs(data, 0)
        _check_structure(model, len(data))
    except ModelImportError as exc:
        raise ModelImportError(f"{path}: {exc}") from None
    except Exception as exc:  # flatbuffers reads past the end as struct.error/IndexError, garbage as anything
        raise ModelImportError(f"{path} is not a valid TFLite model (truncated or damaged: {type(exc).__name__}"
                               f"{': ' + str(exc).splitlines()[0] if str(exc) else ''})") from None
    return data, model


def _check_structure(model, size: int) -> None:
    """Every count, index and data range the build reads lies inside the file (a table entry takes at least
    4 bytes and a data byte 1, so no count can exceed ``size / 4`` or ``size``)."""
    def count(n: int, what: str, unit: int = 4) -> int:
        if not 0 <= n <= size // unit:
            raise ModelImportError(f"damaged: {n} {what} cannot fit in {size} bytes")
        return n

    if model.Version() != SCHEMA_VERSION:
        raise ModelImportError(f"TFLite schema version {model.Version()}; edgevit reads version {SCHEMA_VERSION}")
    if count(model.SubgraphsLength(), "subgraphs") < 1:
        raise ModelImportError("the model has no subgraph")
    buffers, codes = count(model.BuffersLength(), "buffers"), count(model.OperatorCodesLength(), "operator codes")
    for index in range(codes):  # read here as every later step reads them, so damage shows now
        op_code = model.OperatorCodes(index)
        builtin_code(op_code), op_code.CustomCode()
    for index in range(buffers):
        buffer = model.Buffers(index)
        if buffer.Offset() > 1 and buffer.Offset() + buffer.Size() > size:
            raise ModelImportError(f"damaged or truncated: buffer {index} holds data past the end of the file")
        count(buffer.DataLength(), "data bytes", unit=1)
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        tensors = count(graph.TensorsLength(), "tensors")
        for index in range(tensors):
            tensor = graph.Tensors(index)
            if not 0 <= tensor.Buffer() < max(buffers, 1):
                raise ModelImportError(f"damaged: tensor {index} names buffer {tensor.Buffer()} of {buffers}")
            count(tensor.ShapeLength(), "dimensions")
            count(tensor.ShapeSignatureLength(), "dimensions")
            tensor.Name(), tensor.Type(), _indices(tensor.ShapeAsNumpy()), _indices(tensor.ShapeSignatureAsNumpy())
            quantization = tensor.Quantization()
            if quantization is not None:
                count(quantization.ScaleLength(), "scales"), count(quantization.ZeroPointLength(), "zero points")
                _check_quantization(quantization, _DTYPES.get(tensor.Type()), f"tensor {index}")
        for index in range(count(graph.OperatorsLength(), "operators")):
            op = graph.Operators(index)
            if not 0 <= op.OpcodeIndex() < codes:
                raise ModelImportError(f"damaged: operator {index} names operator code {op.OpcodeIndex()} of {codes}")
            op.BuiltinOptionsType()
            for t in [*_indices(op.InputsAsNumpy()), *_indices(op.OutputsAsNumpy())]:
                if not -1 <= t < tensors:
                    raise ModelImportError(f"damaged: operator {index} names tensor {t} of {tensors}")
        for t in [*_indices(graph.InputsAsNumpy()), *_indices(graph.OutputsAsNumpy())]:
            if not 0 <= t < tensors:
                raise ModelImportError(f"damaged: subgraph {s} has input or output tensor {t} of {tensors}")


def _check_quantization(quantization, dtype: str | None, what: str) -> None:
    """Scales finite and positive, zero points inside the integer type (what the TFLite spec requires; LiteRT
    does not check every case before running)."""
    import numpy as np

    scales, zeros = quantization.ScaleAsNumpy(), quantization.ZeroPointAsNumpy()
    quantization.QuantizedDimension()
    if not isinstance(scales, int) and scales.size and not np.all(np.isfinite(scales) & (scales > 0)):
        raise ModelImportError(f"damaged: {what} has quantization scale(s) that are not finite and positive")
    if dtype in _QUANTIZED and not isinstance(zeros, int) and zeros.size:
        info = np.iinfo(dtype)
        if np.any(zeros < info.min) or np.any(zeros > info.max):
            raise ModelImportError(f"damaged: {what} is {dtype} with a zero point outside [{info.min}, {info.max}]")


def _indices(vector) -> list[int]:
    return [] if isinstance(vector, int) else [int(v) for v in vector]   # an absent vector reads as 0


def _tensor_dtype(tensor, what: str) -> str:
    from .runtime.artifact import DTYPES

    dtype = _DTYPES.get(tensor.Type())
    if dtype not in DTYPES:  # what an artifact's inputs can be
        raise ModelImportError(f"{what} has TFLite tensor type {dtype or tensor.Type()}; edgevit takes "
                               f"{', '.join(DTYPES)} inputs")
    return dtype


def _is_quantized(tensor) -> bool:
    q = tensor.Quantization()
    return q is not None and q.ScaleLength() > 0 and _DTYPES.get(tensor.Type()) in _QUANTIZED


def from_tflite_file(path: Path, input_shape: str | None = None) -> TfliteModel:
    """Read and check a ``.tflite`` file, fixing dynamic input dimensions from ``input_shape``.

    Parameters
    ----------
    path
        The ``.tflite`` file (stays as it is: the artifact stores it as LiteRT's reference).
    input_shape
        Static input shape(s) for inputs with dynamic (-1) dimensions (see ``frontend.parse_input_shape``).

    Raises
    ------
    ModelImportError
        See :func:`read_tflite`; also an input dtype an artifact cannot carry.
    InputError
        A dynamic input and no ``input_shape``, or an ``input_shape`` that does not fit the declared one.
    """
    path = Path(path)
    _, model = read_tflite(path)
    graph = model.Subgraphs(0)
    inputs = [(graph.Tensors(i), (graph.Tensors(i).Name() or b"").decode(errors="replace") or f"input_{n}")
              for n, i in enumerate(_indices(graph.InputsAsNumpy()))]
    if not inputs:
        raise ModelImportError(f"{path.name} has no inputs: edgevit compiles models that take a tensor")
    overrides = parse_input_shape(input_shape) if input_shape else {}
    names = [name for _, name in inputs]
    if None in overrides:
        if len(inputs) != 1:
            raise InputError(f"{path.name} has {len(inputs)} inputs ({', '.join(names)}): name them, e.g. "
                             "--input-shape NAME:1,224,224,3")
        overrides = {names[0]: overrides[None]}
    unknown = set(overrides) - set(names)
    if unknown:
        raise InputError(f"--input-shape names unknown input(s) {sorted(unknown)}; inputs are {names}")

    specs = []
    for tensor, name in inputs:
        signature = tensor.ShapeSignatureAsNumpy() if tensor.ShapeSignatureLength() else tensor.ShapeAsNumpy()
        declared = [int(d) if d >= 0 else None for d in _indices(signature)]
        shape = overrides.get(name)
        if shape is None:
            if None in declared:
                raise InputError(f"input '{name}' of {path.name} has dynamic shape {declared}: give a static "
                                 f"one with --input-shape {name}:{','.join(str(d or 1) for d in declared)}")
            shape = tuple(declared)
        elif len(shape) != len(declared) or any(d is not None and d != s for d, s in zip(declared, shape)):
            raise InputError(f"--input-shape {list(shape)} does not fit input '{name}' declared as {declared}"
                             + (" (dynamic dimensions as None)" if None in declared else ""))
        if any(not 0 < d <= MAX_DIM for d in shape):
            raise InputError(f"input '{name}' of {path.name} has shape {list(shape)}: every dimension must be "
                             f"1 to {MAX_DIM}")
        specs.append(TensorSpec(name, tuple(shape), _tensor_dtype(tensor, f"input '{name}'")))
    return TfliteModel(path.stem, path, specs, str(path), is_quantized(model))


def is_quantized(model) -> bool:
    """Whether a ``tflite.Model`` computes in integers: an operator of its main subgraph produces a quantized
    int8/uint8/int16 tensor (full-integer quantization; weight-only "dynamic range" models are not)."""
    graph = model.Subgraphs(0)
    return any(_is_quantized(graph.Tensors(t)) for i in range(graph.OperatorsLength())
               for t in _indices(graph.Operators(i).OutputsAsNumpy()) if t >= 0)


def check_operators(model, supported: set[str]) -> None:
    """Refuse the first operator of the main subgraph that TVM's TFLite frontend cannot convert, naming it.

    Parameters
    ----------
    model
        A ``tflite.Model`` from :func:`read_tflite`.
    supported
        The operator names the frontend converts (``backends.tvm_compiler.supported_tflite_ops``).

    Raises
    ------
    ModelImportError
        With the operator's name and its index.
    """
    graph = model.Subgraphs(0)
    for index in range(graph.OperatorsLength()):
        name = operator_name(model, graph.Operators(index))
        if name not in supported:
            raise ModelImportError(f"operator {name} (operator {index} of {graph.OperatorsLength()}) is not "
                                   "supported by TVM 0.27's TFLite frontend")


def output_steps(model) -> list[float | None]:
    """Each output's quantization step, the unit the int8 rule counts in.

    An integer output is compared in its own integers (step 1). A float output made by DEQUANTIZE has the step
    of the int8 tensor it dequantizes (the largest one if per channel). Other float outputs have None.
    """
    import numpy as np

    graph = model.Subgraphs(0)
    producers = {}
    for i in range(graph.OperatorsLength()):
        for t in _indices(graph.Operators(i).OutputsAsNumpy()):
            producers[t] = graph.Operators(i)
    steps = []
    for t in _indices(graph.OutputsAsNumpy()):
        tensor, op = graph.Tensors(t), producers.get(t)
        if _is_quantized(tensor):
            steps.append(1.0)
        elif op is not None and operator_name(model, op) == "DEQUANTIZE" and _indices(op.InputsAsNumpy()):
            source = graph.Tensors(_indices(op.InputsAsNumpy())[0])
            scale = source.Quantization().ScaleAsNumpy() if _is_quantized(source) else None
            steps.append(float(np.max(np.abs(scale))) if scale is not None and np.size(scale) else None)
        else:
            steps.append(None)
    return steps


def memory_estimate(model: TfliteModel) -> MemoryEstimate:
    """The run-time memory lower bound of ``model`` (weights, inputs, largest tensor; as for ONNX models)."""
    import numpy as np

    _, root = model.load()
    graph = root.Subgraphs(0)
    weights = sum(max(root.Buffers(b).DataLength(), root.Buffers(b).Size() if root.Buffers(b).Offset() > 1 else 0)
                  for b in range(root.BuffersLength()))
    inputs = sum(math.prod(s.shape) * np.dtype(s.dtype).itemsize for s in model.inputs)
    # Dynamic dimensions scale with the input's first one (the batch); the declared shape has 1 there.
    batch = max((s.shape[0] for s in model.inputs if s.shape), default=1)
    largest, largest_name = 0, "-"
    for index in range(graph.TensorsLength()):
        tensor = graph.Tensors(index)
        dims = _indices(tensor.ShapeSignatureAsNumpy() if tensor.ShapeSignatureLength() else tensor.ShapeAsNumpy())
        itemsize = np.dtype(_DTYPES.get(tensor.Type(), "float32")).itemsize
        size = math.prod(batch if d < 0 else d for d in dims) * itemsize
        if size > largest:
            largest, largest_name = size, (tensor.Name() or b"").decode(errors="replace")
    return MemoryEstimate(weights, inputs, largest, largest_name)
