"""Post-training int8 quantization: calibration data and QDQ ONNX models (onnxruntime's static quantizer).

``calibration`` turns Fashion-MNIST or a folder of ``.npy`` files into inputs of a model's shape; ``qdq``
writes the quantized model (QuantizeLinear/DequantizeLinear around int8 tensors), which onnxruntime runs as the
int8 reference and ``edgevit compile`` builds; ``fallback`` measures each quantized node's error so that the
worst ones can stay in float (``--keep-float N``); ``groups`` is the int8 rule of ``run --verify`` (every
quantized tensor against onnxruntime given the same int8 inputs), ``verify`` the end-to-end comparison in output
quantization steps.
"""

from .calibration import FASHION_MNIST, calibration_inputs
from .verify import MAX_STEPS, Int8Comparison, compare_int8, output_steps
from .qdq import METHODS, QuantizeSettings, is_qdq_model, quantize_cached, quantize_model

__all__ = ["FASHION_MNIST", "Int8Comparison", "MAX_STEPS", "METHODS", "QuantizeSettings", "calibration_inputs", "compare_int8",
           "is_qdq_model", "output_steps", "quantize_cached", "quantize_model"]
