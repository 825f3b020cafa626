"""Shared fixtures: thread pinning, small hand-built ONNX models, and artifacts compiled once per session."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TVM_NUM_THREADS", "1")

from pathlib import Path

import pytest

from tiny_onnx_models import tiny_cnn_onnx


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
