"""The session's bad files (one workspace, built from the tiny model and its artifact compiled once)."""

from __future__ import annotations

import pytest

from bad_input_files import build_workspace


@pytest.fixture(scope="session")
def ws(tmp_path_factory, tiny_onnx, tiny_host_artifact) -> dict:
    return build_workspace(tmp_path_factory.mktemp("bad_inputs"), tiny_onnx, tiny_host_artifact)


@pytest.fixture
def protect(ws) -> list:
    """Files no bad input may change: the user's model, artifact, inputs, target and a bystander."""
    return [ws[k] for k in ("onnx", "art", "x_npy", "secret", "ext", "target_good")] + [ws["ext"].parent / "ext.data"]
