"""The onnxruntime CPU session every numeric reference uses (a module of its own: the frontend's shape folding
needs it, and :mod:`edgevit.reference` imports the frontend)."""

from __future__ import annotations

from pathlib import Path

from .errors import ModelImportError


def onnxruntime_session(onnx_path: Path | bytes, threads: int = 1):
    """An onnxruntime CPU session with a fixed intra-op thread count.

    onnxruntime's ``WeightBiasQuantization`` optimizer is off: it quantizes the float weights of a Conv/Gemm/
    MatMul that reads a DequantizeLinear output, i.e. it would run in int8 the nodes a QDQ model keeps in float
    (``--keep-float``). Models without such nodes are unaffected.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        model = onnx_path if isinstance(onnx_path, bytes) else str(onnx_path)  # a file or serialized model
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=["WeightBiasQuantization"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelImportError(f"onnxruntime cannot load the reference model: {str(exc).splitlines()[0]}") from None
