"""Every compiler-side Apache TVM call edgevit makes lives here (TVM's Python API changes every release).

The board side has its own, smaller counterpart: ``edgevit.runtime.tvm_runtime`` (no ``tvm.relax`` there).
Pinned to apache-tvm 0.27 with apache-tvm-ffi 0.1.14.post1 (see pyproject.toml).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from ..errors import ModelImportError, ToolMissingError


def host_cpu_name() -> str:
    """The name LLVM gives this machine's CPU (e.g. ``rocketlake``), so builds use its real instruction set."""
    from tvm.target import codegen

    name = codegen.llvm_get_system_cpu()
    if not name or name == "generic":
        raise ToolMissingError("LLVM could not identify this CPU; set an explicit mcpu in targets/host.toml")
    return name


def versions() -> dict[str, str]:
    """Versions of the TVM packages in use (recorded in artifacts)."""
    import tvm
    import tvm_ffi

    return {"tvm": tvm.__version__, "tvm_ffi": getattr(tvm_ffi, "__version__", "unknown")}


def target_dict(tvm_target: dict) -> dict:
    """The ``tvm`` table of a target file with ``mcpu = "detect"`` resolved to this machine's CPU name (what a
    build uses and an artifact records)."""
    if tvm_target.get("mcpu") != "detect":
        return dict(tvm_target)
    return {**tvm_target, "mcpu": host_cpu_name()}


def make_target(tvm_target: dict):
    """A ``tvm.target.Target`` from the ``tvm`` table of a target file."""
    import tvm

    return tvm.target.Target(target_dict(tvm_target))


def import_onnx(model, input_specs) -> "tvm.IRModule":
    """Convert an ONNX model to a Relax module with the weights bound as constants.

    Raises
    ------
    ModelImportError
        With the names of the operators TVM's ONNX frontend does not support, or the converter's message.
    """
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    shapes = {s.name: list(s.shape) for s in input_specs}
    dtypes = {s.name: s.dtype for s in input_specs}
    try:
        return from_onnx(model, shape_dict=shapes, dtype_dict=dtypes, keep_params_in_input=False)
    except tvm.error.OpNotImplemented as exc:
        raise ModelImportError(f"TVM cannot import this model: {str(exc).strip().splitlines()[-1]}") from None
    except Exception as exc:  # the converters raise ValueError/NotImplementedError/TVMError alike
        message = str(exc).strip().splitlines()
        raise ModelImportError(f"TVM's ONNX import failed: {type(exc).__name__}: "
                               f"{message[-1] if message else ''}") from None


def import_tflite(model, input_specs) -> "tvm.IRModule":
    """Convert a ``tflite.Model`` (``frontend_tflite.read_tflite``) to a Relax module, weights as constants.

    Fully-int8 models go through ``tflite_import.Int8CompleteConverter`` (TVM 0.27 refuses quantized
    TRANSPOSE, PAD, SLICE, BATCH_MATMUL, GELU and misreads some operator codes and weight buffers); long
    multi-axis means (TFLite's GroupNorm) are reduced one axis at a time (``ReduceOneAxisAtATime``).

    Raises
    ------
    ModelImportError
        With the frontend's message (the operators it refuses are named in it).
    """
    import tvm
    from tvm.relax.frontend.tflite import from_tflite

    from .tflite_import import Int8CompleteConverter, ReduceOneAxisAtATime

    shapes = {s.name: tuple(s.shape) for s in input_specs}
    dtypes = {s.name: s.dtype for s in input_specs}
    try:
        mod = from_tflite(model, shape_dict=shapes, dtype_dict=dtypes, op_converter=Int8CompleteConverter)
        return ReduceOneAxisAtATime()(mod)
    except tvm.error.OpNotImplemented as exc:
        message = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
        raise ModelImportError(f"TVM cannot import this model: {message}") from None
    except Exception as exc:  # asserts, NotImplementedError, TVMError from shape inference alike
        message = str(exc).strip().splitlines()
        raise ModelImportError(f"TVM's TFLite import failed: {type(exc).__name__}: "
                               f"{message[-1] if message else ''}") from None


def supported_tflite_ops() -> set[str]:
    """The TFLite operator names TVM's Relax TFLite frontend converts (its converter map)."""
    from tvm.relax.frontend.tflite.tflite_frontend import OperatorConverter

    return set(OperatorConverter(None, None, None, None).convert_map)


def cpu_pipeline(target, database=None):
    """The Relax pipeline edgevit compiles CPU builds with.

    TVM's CPU pipeline plus: integer kernels for QDQ models, inference decompositions, weight packing and fast
    math before legalisation; then, after fusion, the kernels of a tuning ``database`` (MetaSchedule) where it
    has them, the int8 kernels' schedules (``edgevit.backends.int8``) and edgevit's default rules
    (``edgevit.backends.cpu_schedules``) for every other kernel.
    """
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from .cpu_schedules import DefaultCpuSchedule
    from .int8 import ScheduleIntegerKernels

    @tvm.transform.module_pass(opt_level=0, name="EdgevitCpuPipeline")
    def _pipeline(mod, _ctx):
        passes = _lowering_passes(target)
        if database is not None:
            passes.append(relax.transform.MetaScheduleApplyDatabase(enable_warning=False))
        # Weights re-laid out by the schedules (tiled_reduction's prepacking) are split off and folded now.
        split = tvm.transform.module_pass(_split_weight_prepacking, opt_level=0, name="SplitWeightPrepacking")
        passes += [ScheduleIntegerKernels(target), DefaultCpuSchedule(target), split, relax.transform.FoldConstant(),
                   *cpu.dataflow_lower_passes(target), *cpu.finalize_passes(target)]
        with target, database if database is not None else contextlib.nullcontext():
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def _split_weight_prepacking(mod, _ctx):
    """TVM's ``SplitLayoutRewritePreproc`` on the kernels that re-lay out a weight: each becomes a re-layout
    kernel (folded into the constant by ``FoldConstant``) and the kernel proper. The other kernels are kept out
    of its way: it rejects extern-call kernels such as ``topk``'s."""
    import tvm
    from tvm import relax, tirx

    from .cpu_schedules.tiled_reduction import LAYOUT_REWRITE

    others = {gv: f for gv, f in mod.functions_items()
              if isinstance(f, tirx.PrimFunc) and LAYOUT_REWRITE not in f.script(show_meta=False)}
    part = tvm.IRModule({gv: f for gv, f in mod.functions_items() if gv not in others}, attrs=mod.attrs)
    if not any(isinstance(f, tirx.PrimFunc) for f in part.functions.values()):
        return mod
    split = relax.transform.SplitLayoutRewritePreproc()(part)
    for gv, f in others.items():
        split[gv] = f
    return split


def _lowering_passes(target) -> list:
    """Everything before scheduling: library dispatch, edgevit's rewrites, legalisation and fusion."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from .weight_packing import MarkWeightParams

    # Which kernel parameters are the model's constants (weights), for the schedules that re-lay them out.
    return [*cpu.library_dispatch_passes(target), *_prepare_passes(target), *_legalize_passes(target, cpu),
            MarkWeightParams()]


def _legalize_passes(target, cpu) -> list:
    """TVM's CPU legalisation, with ``relax.quantize`` lowered as onnxruntime computes QuantizeLinear."""
    from tvm import relax

    passes = cpu.legalize_passes(target)
    assert passes[0].info.name == "LegalizeOps", passes[0].info.name  # TVM 0.27's list starts with it
    return [relax.transform.LegalizeOps({"relax.quantize": _legalize_quantize}), *passes[1:]]


def _legalize_quantize(bb, call):
    """``relax.quantize`` as ``min(max(round(x / scale) + zero, lo), hi)``: the clamp's lower bound first, as
    onnxruntime's MLAS QuantizeLinear does, so that a NaN (an int8 model's 0/0) becomes the lowest value there
    and here. TVM's own lowering clamps ``min`` first, and its ``min`` of NaN is the upper bound. Every other
    value is the same either way."""
    from tvm import te, tirx

    axis, dtype = call.attrs.axis, str(call.attrs.out_dtype)

    def parameter(p, index):
        if not isinstance(p, te.Tensor):
            return p                                    # a scalar constant
        if all(isinstance(d, tirx.IntImm) and d.value == 1 for d in p.shape):
            return p[(0,) * len(p.shape)]               # one value for the whole tensor
        return p[index[axis]]                           # per channel along ``axis``

    def quantize(data, scale, zero):
        def value(*index):
            v = data[index] / parameter(scale, index)
            v = (te.round(v) if "int" in dtype else v) + parameter(zero, index)
            low = te.max(v, tirx.min_value(dtype).astype(data.dtype))
            return te.min(low, tirx.max_value(dtype).astype(data.dtype)).astype(dtype)
        return te.compute(data.shape, value, name="quantized")

    from tvm.relax.transform.legalize_ops.common import _try_convert_to_scalar_const
    return bb.call_te(quantize, call.args[0], _try_convert_to_scalar_const(call.args[1]),
                      _try_convert_to_scalar_const(call.args[2]), primfunc_name_hint="quantize")


def _prepare_passes(target) -> list:
    """Relax rewrites before legalisation: integer kernels for QDQ models, inference decompositions, weight
    packing, 2x upsampling, attention fusion, fast math."""
    from tvm import relax

    from .attention import FuseAttention
    from .cpu_schedules import CpuInfo
    from .fast_math import fast_math_passes
    from .int8 import IntegerQdqKernels
    from .int8_kernels import dot_kernel_for
    from .int8_tables import Int8ElementwiseTables
    from .pooling import AveragePoolExcludingPadding
    from .upsample import BilinearUpsample2x
    from .weight_packing import PackConvWeights

    # IntegerQdqKernels first: it matches the quantize/dequantize ops as the ONNX frontend wrote them (a float
    # model has none and is returned unchanged).
    info = CpuInfo.of(target)
    # Pooling's constant 1 / count map, the upsample's separate row stage, the one-kernel GELU: AArch64 only
    # (counted there; the GELU timed slower on x86, the others not timed).
    pooling = [AveragePoolExcludingPadding()] if info.lane_fma else []
    return [IntegerQdqKernels(info.lanes, dot_kernel_for(target)), Int8ElementwiseTables(),
            relax.transform.DecomposeOpsForInference(),
            PackConvWeights(info.lanes), BilinearUpsample2x(), *pooling, FuseAttention(),
            *fast_math_passes(gelu=info.lane_fma)]


def fused_module(mod, cpu):
    """The module after legalisation and fusion, before scheduling: the kernels edgevit schedules or tunes."""
    import tvm

    target = make_target(cpu.tvm)
    with target:
        # The same passes as the build's pipeline, so tuning records match the kernels the build schedules.
        return tvm.transform.Sequential(_lowering_passes(target))(mod)


def build(mod, cpu, database=None) -> "tvm.relax.VMExecutable":
    """Compile a Relax module for a target's CPU side with edgevit's default schedules (and tuned kernels).

    Parameters
    ----------
    database
        A MetaSchedule database from ``edgevit tune`` (see ``edgevit.backends.tuning``), or None.
    """
    import tvm

    from .stack_buffers import tir_pipeline

    target = make_target(cpu.tvm)
    return tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target, database),
                       tir_pipeline=tir_pipeline())


def export_library(executable, cpu, path: Path) -> None:
    """Link a compiled module into a shared library for the target, cross-linking for other architectures.

    Raises
    ------
    ToolMissingError
        The (cross) compiler the target names is not installed.
    """
    import tvm.support.cc as cc

    if cpu.cross_compiler is not None:
        tool = cpu.cross_compiler
        if shutil.which(tool.command) is None:
            raise ToolMissingError(f"cross compiler '{tool.command}' not found: apt-get install {tool.apt} "
                                   "(or run tools/setup.sh)")
        executable.export_library(str(path), fcompile=cc.cross_compiler(tool.command))
    else:
        if shutil.which("g++") is None:
            raise ToolMissingError("g++ not found: apt-get install g++ (or run tools/setup.sh)")
        executable.export_library(str(path))


def output_types(mod) -> list[tuple[tuple[int, ...], str]]:
    """Static (shape, dtype) of each output of a Relax module's ``main``.

    Raises
    ------
    ModelImportError
        If an output shape is not static.
    """
    from tvm import relax

    ret = mod["main"].ret_ty
    return _static_types(list(ret.fields) if isinstance(ret, relax.TupleType) else [ret], "output")


def input_types(mod) -> list[tuple[tuple[int, ...], str]]:
    """Static (shape, dtype) of each parameter of a Relax module's ``main`` (see :func:`output_types`)."""
    return _static_types([p.ty for p in mod["main"].params], "input")


def _static_types(fields, kind: str) -> list[tuple[tuple[int, ...], str]]:
    from tvm import relax

    types = []
    for field in fields:
        if not isinstance(field, relax.TensorType) or not isinstance(field.shape, relax.ShapeExpr):
            raise ModelImportError(f"model {kind} {field} has no static shape; give static input shapes")
        try:
            types.append((tuple(int(v) for v in field.shape.values), str(field.dtype)))
        except TypeError:
            raise ModelImportError(f"model {kind} shape {field.shape} is symbolic; give static input shapes") from None
    return types


def supported_onnx_ops() -> set[str]:
    """The ONNX operator types TVM's Relax ONNX frontend converts (its converter map, plus the ops it handles
    itself)."""
    from tvm.relax.frontend.onnx import onnx_frontend

    return set(onnx_frontend._get_convert_map()) | {"Constant", "If"}
