"""Fixtures for the PYNQ tests: the tiny trained model's HLS project, its bundle and C-sim library (the pynq
venv's Python, ``pynq_python``, comes from tests/conftest.py).

pynq (numpy<2) cannot be imported in edgevit's venv, so the board side runs in the venv of
``tools/setup_pynq_env.sh`` (created on first use, then cached) through ``pynq_helpers.run_on_board``; the tests here
(edgevit's venv) build what the host builds and assert on what the board side reports.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_bitstream import write_bit, write_hwh

TEST_INPUTS = 40     # of the 449 held-out digits: enough for bit-exactness, cheap for the golden model


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory):
    """(program, project dir, float test inputs NCHW): the tiny MobileViT on digits, generated for pynq-z2."""
    import torch

    from edgevit.hls import project
    from edgevit.datasets import digits
    from edgevit.zoo.tiny_mobilevit import trained_tiny_mobilevit

    torch.set_num_threads(1)
    xtr, _, xte, _ = digits()
    tests = [x[None] for x in xte[:TEST_INPUTS]]
    prog, out = project.generate(trained_tiny_mobilevit(), (1, 1, 8, 8), "pynq-z2",
                                 tmp_path_factory.mktemp("hls") / "tiny", [x[None] for x in xtr[:200]],
                                 test_inputs=tests, meta={"model": "tiny_mobilevit"})
    return prog, out, tests


@pytest.fixture(scope="session")
def vivado_outputs(tmp_path_factory) -> Path:
    """Stand-ins for Vivado's bitstream and hardware handoff for the PYNQ-Z2 part."""
    d = tmp_path_factory.mktemp("vivado")
    write_bit(d / "edgevit_wrapper.bit")
    write_hwh(d / "edgevit.hwh")
    return d


@pytest.fixture(scope="session")
def tiny_bundle(tiny_project, vivado_outputs, tmp_path_factory) -> Path:
    from edgevit.pynq.bundle import make_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny_bundle"
    make_bundle(tiny_project[1], out, vivado_outputs / "edgevit_wrapper.bit", vivado_outputs / "edgevit.hwh")
    return out


@pytest.fixture(scope="session")
def sim_lib(tiny_project) -> Path:
    from edgevit.pynq import simlib

    return simlib.build(tiny_project[1])
