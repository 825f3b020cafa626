"""Quantize a float .tflite to int8 with ai-edge-quantizer: LiteRT int8 in ``edgevit bench --quantize int8``.

``python -m edgevit.litert_int8 FLOAT.tflite SAMPLES.npz OUT.tflite per-channel|per-tensor``, run in the LiteRT
converter venv (``tools/setup_litert.sh``; ai-edge-quantizer is in ``tools/requirements-litert.lock``) with the
checkout on ``PYTHONPATH``. Static int8: int8 weights (symmetric, per channel or per tensor) and int8 activations
with min/max ranges, calibrated on the samples in SAMPLES.npz, which are the ones onnxruntime's quantizer saw for
edgevit's QDQ model. ai-edge-quantizer makes the model's input and output int8 too; the bench worker quantizes
the input and dequantizes the output with their scales.

Imports numpy and ai-edge-quantizer only.
"""

from __future__ import annotations

import sys

import numpy as np


def quantize_tflite(source: str, samples: list[np.ndarray], output: str, per_channel: bool) -> None:
    """Write the static int8 form of the float .tflite ``source`` to ``output``, calibrated on ``samples``."""
    from ai_edge_quantizer import qtyping, quantizer, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_litert.interpreter import Interpreter

    manager = recipe_manager.RecipeManager()
    manager.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                              activation_num_bits=8, weight_num_bits=8,
                              weight_granularity=qtyping.QuantGranularity.CHANNELWISE if per_channel
                              else qtyping.QuantGranularity.TENSORWISE,
                              algorithm_key=AlgorithmName.MIN_MAX_UNIFORM_QUANT)
    signatures = Interpreter(model_path=source).get_signature_list()
    signature, names = next(iter(signatures.items()))
    model = quantizer.Quantizer(source)
    model.load_quantization_recipe(manager.get_quantization_recipe())
    calibration = model.calibrate({signature: [{names["inputs"][0]: s} for s in samples]}, num_threads=1)
    model.quantize(calibration, enable_progress_bar=False).export_model(output, overwrite=True)


def main(argv: list[str]) -> int:
    source, samples_path, output, granularity = argv
    with np.load(samples_path) as data:
        samples = [data[f"arr_{i}"] for i in range(len(data.files))]
    quantize_tflite(source, samples, output, granularity == "per-channel")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
