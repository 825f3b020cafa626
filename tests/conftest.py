"""Shared fixtures: thread pinning, small hand-built ONNX models, artifacts compiled once per session, and
the pynq venv's Python (the board side of the FPGA tests runs in it)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TVM_NUM_THREADS", "1")

import subprocess
from pathlib import Path

import pytest

from tiny_onnx_models import tiny_cnn_onnx


@pytest.fixture(scope="session")
def pynq_python() -> str:
    """The pynq venv's python (``tools/setup_pynq_env.sh``; fails, never skips, if it cannot be made)."""
    script = Path(__file__).resolve().parents[1] / "tools" / "setup_pynq_env.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, f"tools/setup_pynq_env.sh failed:\n{proc.stderr[-3000:]}"
    return proc.stdout.strip().splitlines()[-1]


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
