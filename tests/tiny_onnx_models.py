"""Small hand-built ONNX models for tests (a module name unique across test folders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_cnn_onnx(path: Path, batch: int | str = 1) -> Path:
    """A small Conv-Relu-GlobalAveragePool-Flatten-Gemm classifier as ONNX (seeded weights).

    ``batch`` may be a string to make the batch dimension symbolic.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    fc = numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "fc")
    fcb = numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fcb")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "tiny_cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
                              initializer=[w, b, fc, fcb])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tiny_attention_onnx(path: Path, heads: int = 2, tokens: int = 64, dim: int = 16) -> Path:
    """``softmax(x Wq (x Wk)ᵀ) x Wv`` over ``heads`` heads: the pattern edgevit fuses into one attention kernel."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    weights = [numpy_helper.from_array((rng.standard_normal((dim, dim)) * 0.3).astype(np.float32), name)
               for name in ("wq", "wk", "wv")]
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["q"]), helper.make_node("MatMul", ["x", "wk"], ["k"]),
             helper.make_node("MatMul", ["x", "wv"], ["v"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["y"])]
    shape = [1, heads, tokens, dim]
    graph = helper.make_graph(nodes, "tiny_attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tiny_hybrid():
    """The tiny MobileViT trained on scikit-learn's digits (edgevit.zoo.tiny_mobilevit) with its head as pool +
    flatten + linear: a hybrid outside the zoo, whose head the FPGA accelerator does not run."""
    import torch.nn as nn

    from edgevit.zoo.tiny_mobilevit import trained_tiny_mobilevit

    trained = trained_tiny_mobilevit()
    head = nn.Linear(16, 10)
    head.load_state_dict(trained[3].fc.state_dict())
    return nn.Sequential(trained[0], trained[1], trained[2], nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()


def tiny_hybrid_onnx(path: Path) -> Path:
    """:func:`tiny_hybrid` exported to ``path`` (input [1, 1, 8, 8])."""
    from edgevit.frontend import from_torch

    path.write_bytes(from_torch(tiny_hybrid(), (1, 1, 8, 8), path.stem).onnx_path.read_bytes())
    return path



def shape_arithmetic_onnx(path: Path) -> Path:
    """Torch's ``F.pad``, a conv and a positional ramp with their pads and shapes computed at run time, node for
    node as torch's TorchScript exporter writes them (timm's efficientvit_m0 / efficientvit_b0 /
    edgenext_xx_small): pads ``Constant -> ConstantOfShape -> Concat -> Reshape -> Slice -> Transpose -> Reshape
    -> Cast -> Pad``, ``Reshape(-1)`` of the padded map, a ramp ``Shape -> Gather -> Concat -> ConstantOfShape ->
    CumSum``. TVM 0.27's ONNX import refuses it as it is ("Reshape expects the input tensor to have known
    shape")."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)

    def const(name, values):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, np.int64), name))

    def int64_fill(value, dtype=np.int64):
        return numpy_helper.from_array(np.array([value], dtype))

    nodes = [
        const("torch_pads", [0, 0, 0, 2]), const("n_pads", [4]),                       # F.pad(x, (0, 0, 0, 2))
        helper.make_node("ConstantOfShape", ["n_pads"], ["zeros"], value=int64_fill(0)),
        helper.make_node("Concat", ["torch_pads", "zeros"], ["pads8"], axis=0),
        const("pairs", [-1, 2]), helper.make_node("Reshape", ["pads8", "pairs"], ["pads_2d"]),
        const("start", [-1]), const("end", [-(2**63 - 1)]), const("axis0", [0]), const("step", [-1]),
        helper.make_node("Slice", ["pads_2d", "start", "end", "axis0", "step"], ["reversed"]),
        helper.make_node("Transpose", ["reversed"], ["onnx_order"], perm=[1, 0]),
        const("flat", [-1]), helper.make_node("Reshape", ["onnx_order", "flat"], ["pads_any"]),
        helper.make_node("Cast", ["pads_any"], ["pads"], to=TensorProto.INT64),
        helper.make_node("Pad", ["x", "pads", ""], ["p"], mode="constant"),            # [1, 3, 8, 6]
        helper.make_node("Conv", ["p", "w"], ["c"], pads=[1, 1, 1, 1]),                # [1, 4, 8, 6]
        const("tokens", [1, 4, -1]), helper.make_node("Reshape", ["c", "tokens"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),                   # [1, 48, 4]
        helper.make_node("Shape", ["t"], ["s"]),
        const("i0", 0), helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
        const("i1", 1), helper.make_node("Gather", ["s", "i1"], ["n"], axis=0),
        const("ax", [0]), helper.make_node("Unsqueeze", ["b", "ax"], ["b1"]),
        helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
        const("one", [1]), helper.make_node("Concat", ["b1", "n1", "one"], ["ramp_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["ramp_shape"], ["ones"], value=int64_fill(1.0, np.float32)),
        const("along", 1), helper.make_node("CumSum", ["ones", "along"], ["ramp"]),
        helper.make_node("Mul", ["ramp", "scale"], ["ramp_s"]),
        helper.make_node("Add", ["t", "ramp_s"], ["z"]),
        helper.make_node("ReduceMean", ["z"], ["y"], axes=[1], keepdims=0),          # opset 17: axes attribute
    ]
    graph = helper.make_graph(
        nodes, "shape_arithmetic", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
                     numpy_helper.from_array(np.array(0.01, np.float32), "scale")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def torchscript_style_cnn_onnx(path: Path) -> Path:
    """Conv 3x3 -> GELU -> conv 3x3 + conv 1x1 (MobileOne's branches) -> channel softmax -> x 2, written as
    torch's TorchScript exporter writes it (timm's repvit_m0_9, fastvit_t8): each constant a ``Constant`` node
    just before the node reading it (GELU's sqrt(2), 1 and 0.5 come after the conv they follow), GELU spelled
    Div/Erf/Add/Mul/Mul, the 1x1 branch added to the 3x3 conv's output, and no value_info."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(6)

    def const(name, value):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.float32), name))

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        const("sqrt2", 1.4142135), helper.make_node("Div", ["c1", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        const("one", 1.0), helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["c1", "e1"], ["m"]),
        const("half", 0.5), helper.make_node("Mul", ["m", "half"], ["g"]),
        helper.make_node("Conv", ["g", "w3"], ["c3"]),                                  # 1x1 branch first
        helper.make_node("Conv", ["g", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "c3"], ["r"]),
        helper.make_node("Softmax", ["r"], ["s"], axis=1),
        const("two", 2.0), helper.make_node("Mul", ["s", "two"], ["y"]),
    ]
    weights = [numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)
               for name, shape in (("w1", (4, 3, 3, 3)), ("b1", (4,)), ("w2", (4, 4, 3, 3)), ("b2", (4,)),
                                         ("w3", (4, 4, 1, 1)))]
    graph = helper.make_graph(nodes, "torchscript_style", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                         [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
