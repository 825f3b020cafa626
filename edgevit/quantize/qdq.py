"""Static int8 quantization into a QDQ ONNX model with onnxruntime's quantizer.

The QDQ form keeps every operator in float and marks int8 tensors with QuantizeLinear -> DequantizeLinear pairs
(weights: an int8 initializer and a DequantizeLinear; biases: int32 with scale input_scale x weight_scale).
onnxruntime fuses these pairs into its int8 kernels, so the same file is both what edgevit compiles and the
int8 reference it is verified against.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, ModelImportError
from ..frontend import ImportedModel, from_onnx_file
from ..settings import cache_dir
from .calibration import calibration_inputs
from .fallback import float_outputs, name_nodes, node_errors, output_sqnr

METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class QuantizeSettings:
    """How to quantize: calibration source and count, weight granularity, range estimator.

    ``per_channel`` gives each output channel of a Conv/Gemm/MatMul weight its own scale (hybrid ViTs have
    channels whose ranges differ by orders of magnitude); ``method`` is onnxruntime's calibrator;
    ``keep_float`` is how many of the nodes with the largest measured error stay in float
    (:mod:`edgevit.quantize.fallback`).
    """

    calibration: str
    count: int = 32
    per_channel: bool = False
    method: str = "minmax"
    keep_float: int = 0

    def to_json(self) -> dict:
        settings = {"scheme": "int8 QDQ (onnxruntime quantize_static)", "activations": "int8", "weights": "int8",
                    "calibration": self.calibration, "calibration_count": self.count,
                    "per_channel": self.per_channel, "method": self.method}
        if self.keep_float:  # only when asked: all-int8 models keep the cache keys they had
            settings["keep_float"] = self.keep_float
        return settings


def is_qdq_model(model) -> bool:
    """Whether an ``onnx.ModelProto`` holds QuantizeLinear/DequantizeLinear nodes (a quantized model)."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def quantize_model(model: ImportedModel, settings: QuantizeSettings, output: Path) -> dict:
    """Calibrate ``model`` and write its int8 QDQ form to ``output``.

    Parameters
    ----------
    model
        From ``edgevit.frontend.load_model`` (zoo name or float ONNX file), with one float input.
    settings
        Calibration data and options.
    output
        The ``.onnx`` file to write; its folder must exist.

    Returns
    -------
    dict
        ``settings`` as JSON plus the number of samples used, quantized operators per type, and seconds.

    Raises
    ------
    InputError
        The model has several inputs or is quantized already, or the calibration data does not fit it.
    ModelImportError
        onnxruntime cannot quantize the model.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    if settings.method not in METHODS:
        raise InputError(f"unknown calibration method '{settings.method}': use one of {', '.join(METHODS)}")
    if len(model.inputs) != 1:
        raise InputError(f"{model.name} has {len(model.inputs)} inputs; calibration feeds models with one input")
    if is_qdq_model(model.load()):
        raise InputError(f"{model.source} is quantized already (it has QuantizeLinear/DequantizeLinear nodes)")
    start = time.monotonic()
    spec = model.inputs[0]
    samples = calibration_inputs(settings.calibration, spec, settings.count)
    if not samples:
        raise InputError(f"calibration data '{settings.calibration}' gave no sample of batch size {spec.shape[0]}")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._samples = iter(samples)

        def get_next(self):
            return next(({spec.name: s} for s in self._samples), None)

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings.method]
    fallback: dict = {}
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer warns through the root logger on every call
    try:
        with tempfile.TemporaryDirectory(prefix="edgevit-quantize-") as tmp:
            # Shape inference and onnxruntime's basic graph optimisations (BatchNorm folded into Conv, constants
            # folded) first: the quantizer then sees the operators as they will run.
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(model.onnx_path), str(prepared), skip_symbolic_shape=True)
            float_model = onnx.load(str(prepared))
            if name_nodes(float_model):  # nodes_to_exclude names nodes
                onnx.save(float_model, str(prepared))

            def quantize(path: Path, exclude: list[str]) -> None:
                quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                per_channel=settings.per_channel, calibrate_method=method,
                                nodes_to_exclude=exclude)
                if exclude:  # the kept nodes' readers get their float outputs (what was measured)
                    quantized = onnx.load(str(path))
                    float_outputs(quantized, exclude, float_model)
                    onnx.save(quantized, str(path))

            if settings.keep_float:
                fallback = _float_fallback(model.name, settings.keep_float, prepared, Path(tmp) / "all_int8.onnx",
                                           output, quantize, [{spec.name: s} for s in samples])
            else:
                quantize(output, [])
    except InputError:
        raise
    except Exception as exc:  # onnxruntime raises RuntimeError/ValueError/its own Fail types alike
        lines = str(exc).strip().splitlines()
        raise ModelImportError(f"onnxruntime could not quantize {model.name}: {type(exc).__name__}: "
                               f"{lines[0] if lines else ''}") from None
    finally:
        logging.getLogger().setLevel(quiet)
    quantized = onnx.load(str(output), load_external_data=False)
    counts: dict[str, int] = {}
    produced_by_dq = {o for n in quantized.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    kept = {k["node"] for k in fallback.get("kept_float", [])}
    for node in quantized.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") and node.name not in kept \
                and any(i in produced_by_dq for i in node.input):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return {**settings.to_json(), "samples": len(samples), "quantized_ops": dict(sorted(counts.items())),
            **fallback, "seconds": time.monotonic() - start}


def _float_fallback(name: str, keep: int, prepared: Path, all_int8: Path, output: Path, quantize,
                    feeds: list[dict]) -> dict:
    """Quantize everything, measure each node's error, quantize again with the ``keep`` worst in float.

    Returns the summary's fallback fields: the nodes kept in float with their SQNR, how many were measured,
    and the SQNR of the model's outputs against float before and after.
    """
    quantize(all_int8, [])
    errors = node_errors(prepared, all_int8, feeds)
    if keep > len(errors):
        raise InputError(f"--keep-float {keep}: {name} has {len(errors)} quantized nodes whose error could be "
                         f"measured; keep at most {len(errors)} in float")
    kept = errors[:keep]
    quantize(output, [e.node for e in kept])
    return {"kept_float": [e.to_json() for e in kept], "measured_nodes": len(errors),
            "output_sqnr_db": {"all_int8": round(output_sqnr(prepared, all_int8, feeds), 2),
                               "with_float_fallback": round(output_sqnr(prepared, output, feeds), 2)}}


def quantize_cached(model: ImportedModel, settings: QuantizeSettings) -> ImportedModel:
    """``model`` quantized with ``settings`` (``compile --quantize int8``): kept in edgevit's cache, keyed by the
    model file and the settings, and recorded in the model's ``extra`` (the artifact's metadata).

    Raises
    ------
    InputError, ModelImportError
        As :func:`quantize_model`.
    """
    digest = hashlib.sha256(model.onnx_path.read_bytes() + json.dumps(settings.to_json()).encode())
    folder = Path(settings.calibration)
    if folder.is_dir():  # a folder's samples may change between runs
        for f in sorted(folder.glob("*.npy")):
            digest.update(f"{f.name} {f.stat().st_size} {f.stat().st_mtime_ns}".encode())
    key = digest.hexdigest()[:16]
    path = cache_dir("onnx") / f"{model.name}-int8-{key}.onnx"
    summary_path = path.with_suffix(".json")
    if path.exists() and summary_path.exists():
        summary = json.loads(summary_path.read_text())
    else:
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # a killed run leaves no half-written model
            partial = Path(tmp) / path.name
            summary = quantize_model(model, settings, partial)
            partial.replace(path)
        summary_path.write_text(json.dumps(summary, indent=1))
    quantized = from_onnx_file(path)
    quantized.name, quantized.family = f"{model.name}-int8", model.family
    quantized.source = f"{model.source}, quantized to int8"
    quantized.extra = {**model.extra, "quantization": summary}
    return quantized
