"""A small CNN in which one chosen convolution quantizes badly (for the float-fallback tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LAYERS = ("conv1", "conv2", "conv3", "conv4")


def outlier_cnn_onnx(path: Path, bad: str) -> Path:
    """Four 3x3 convolutions with ReLUs, average pooling and a classifier; ``bad`` (one of ``LAYERS`` but the
    first) reads a channel that is always zero with weights 1000x the others'.

    In float that channel adds nothing. Quantized per tensor, the weight scale is set by the outlier, so every
    other weight of ``bad`` rounds to zero: ``bad``'s output loses its signal, and so does every later layer.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    nodes, inits, previous, channels = [], [], "x", 3
    for i, name in enumerate(LAYERS):
        w = (rng.standard_normal((8, channels, 3, 3)) * 0.3).astype(np.float32)
        b = (rng.standard_normal(8) * 0.1).astype(np.float32)
        if i + 1 < len(LAYERS) and LAYERS[i + 1] == bad:
            w[0], b[0] = 0, -1     # output channel 0 is negative, so zero after the ReLU
        if name == bad:
            w[:, 0] *= 1000        # huge weights on that dead channel
        inits += [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]
        nodes += [helper.make_node("Conv", [previous, f"{name}_w", f"{name}_b"], [f"{name}_out"], name=name,
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"{name}_out"], [f"{name}_relu"], name=f"{name}_relu")]
        previous, channels = f"{name}_relu", 8
    inits += [numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "fc_w"),
              numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fc_b")]
    nodes += [helper.make_node("GlobalAveragePool", [previous], ["pooled"], name="pool"),
              helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "outlier_cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
