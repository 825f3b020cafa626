import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgevit.backends import tvm_compiler
from edgevit.errors import ModelImportError
from edgevit.frontend import load_model


def test_unsupported_operator_is_named(tmp_path):
    # Det is standard ONNX (onnxruntime runs it) but TVM's ONNX frontend has no converter for it.
    graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"])], "det",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "det.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
    model = load_model(str(path))
    with pytest.raises(ModelImportError, match="Det"):
        tvm_compiler.import_onnx(model.load(), model.inputs)


def test_output_types_are_static(tiny_onnx):
    model = load_model(str(tiny_onnx))
    mod = tvm_compiler.import_onnx(model.load(), model.inputs)
    assert tvm_compiler.output_types(mod) == [((1, 10), "float32")]


def test_host_cpu_name_is_a_real_cpu():
    assert tvm_compiler.host_cpu_name() not in ("", "generic")
