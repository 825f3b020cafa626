"""Shared fixtures: thread pinning, small hand-built ONNX models, and artifacts compiled once per session."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TVM_NUM_THREADS", "1")

from pathlib import Path

import numpy as np
import pytest


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


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    return tiny_cnn_onnx(tmp_path_factory.mktemp("onnx") / "tiny_cnn.onnx")


@pytest.fixture(scope="session")
def tiny_host_artifact(tmp_path_factory, tiny_onnx) -> Path:
    """The tiny CNN compiled for the host, once per session."""
    from edgevit.compiler import compile_for_target
    from edgevit.frontend import load_model
    from edgevit.targets import get_target

    path = tmp_path_factory.mktemp("artifacts") / "tiny_host.tar"
    compile_for_target(load_model(str(tiny_onnx)), get_target("host"), path, command="pytest")
    return path


@pytest.fixture(scope="session")
def tiny_rpi4_artifact(tmp_path_factory, tiny_onnx) -> Path:
    """The tiny CNN cross-compiled for rpi4 (aarch64), once per session."""
    from edgevit.compiler import compile_for_target
    from edgevit.frontend import load_model
    from edgevit.targets import get_target

    path = tmp_path_factory.mktemp("artifacts") / "tiny_rpi4.tar"
    compile_for_target(load_model(str(tiny_onnx)), get_target("rpi4"), path, command="pytest")
    return path
