"""The board-side driver on the simulated PYNQ device (pynq venv) against the C-simulation run directly."""

import json

import numpy as np
import pytest
from pynq_helpers import raw_golden, run_on_board

from edgevit.hls import csim
from edgevit.hls.fixed import to_float
from edgevit.hls.torch_import import to_accel_layout

PORTS = ("program", "params", "arena", "input", "output")


@pytest.fixture(scope="module")
def driven(pynq_python, tiny_project, tiny_bundle, sim_lib, tmp_path_factory):
    """The driver's run of every self-test input and of the float test images, with the device's logs."""
    prog, _, tests = tiny_project
    samples = tmp_path_factory.mktemp("samples") / "samples.npy"
    np.save(samples, np.stack([to_accel_layout(x) for x in tests]))
    return run_on_board(pynq_python, "infer", tiny_bundle, sim_lib, samples)


def test_driver_matches_csim_bit_for_bit(driven, tiny_project, tiny_bundle):
    prog, project_dir, tests = tiny_project
    direct, _ = csim.simulate_project(project_dir)          # the generated testbench, as a g++ executable
    got = np.array(driven["outputs"])
    assert got.shape == (len(tests), 10)
    assert np.array_equal(got, np.array(direct))
    assert np.array_equal(got, raw_golden(tiny_bundle))
    assert driven["runs"] == len(tests) + len(tests)        # self-test inputs, then predict() on the images
    # pynq's own Overlay, DefaultIP and PynqBuffer ran, with numpy < 2 (the board's stack)
    assert driven["overlay_is_pynq"] and driven["ip_is_pynq"] and driven["buffers_are_pynq"]
    assert driven["numpy"].startswith("1.")
    assert driven["downloads"] == [str(tiny_bundle.resolve() / "edgevit.bit")]


def test_buffers_are_whole_beats_of_the_board_port(driven, tiny_bundle):
    # The accelerator reads and writes the int16 buffers in beats of the board's HP width (64 bits on the PYNQ-Z2):
    # the driver allocates them to whole beats, and the tiny model's 10 output words take 3 beats.
    regmap = json.loads((tiny_bundle / "regmap.json").read_text())
    config = (tiny_bundle / "config.h").read_text()
    assert "AXI_BITS = 64;" in config
    for port in ("params", "arena", "input", "output"):
        spec = regmap["buffers"][port]
        assert spec["beat_bits"] == 64
        assert driven["buffer_sizes"][port] == spec["alloc_elements"] == -(-spec["elements"] // 4) * 4
    assert driven["buffer_sizes"]["output"] == 12 and len(driven["outputs"][0]) == 10
    assert driven["buffer_sizes"]["program"] == regmap["buffers"]["program"]["elements"]


def test_float_path_quantizes_on_the_cpu_like_the_golden_model(driven, tiny_project):
    prog, _, tests = tiny_project
    for x, q, y in zip(tests, driven["quantized"], driven["predicted"]):
        raw_in = prog.quantize_input(to_accel_layout(x))
        assert np.array_equal(np.array(q), raw_in.ravel())
        golden = prog.run_fixed(raw_in)[prog.output].ravel()
        assert np.array_equal(np.array(y), to_float(golden, prog.formats[prog.output]))
    acc = np.mean([np.argmax(y) == np.argmax(prog.run_float(to_accel_layout(x))[prog.output])
                   for x, y in zip(tests, driven["predicted"])])
    assert acc >= 0.95


def test_registers_read_back_as_the_register_map_says(driven, tiny_bundle):
    regmap = json.loads((tiny_bundle / "regmap.json").read_text())
    offsets = {r["name"]: int(r["offset"], 16) for r in regmap["registers"]}
    # Vitis HLS's s_axi_control layout for five 64-bit m_axi pointers, independently of the generator
    assert [offsets[p.upper()] for p in PORTS] == [0x10 + 12 * k for k in range(5)]
    expected = {offsets["GIE"]: 0}
    for port in PORTS:
        addr = driven["addresses"][port]
        assert addr % 4096 == 0 and addr < 1 << 32
        expected[offsets[port.upper()]] = addr & 0xFFFFFFFF
        expected[offsets[port.upper()] + 4] = addr >> 32
    assert dict(driven["setup_writes"]) == expected
    assert len(driven["setup_writes"]) == len(expected)           # each register written once
    assert {int(k): v for k, v in driven["readback"].items()} == expected
    assert len(set(driven["addresses"].values())) == 5
    n = 2 * len(driven["outputs"])
    assert driven["ctrl_writes"] == [1] * n                       # exactly one ap_start per inference
    assert "not in the register map" in driven["outside_write"]


def test_cache_maintenance(driven):
    n = 2 * len(driven["outputs"])
    assert driven["flushes"] == {"program": 1, "params": 1, "arena": 1, "input": 1 + n, "output": 1}
    assert driven["invalidates"] == {"program": 0, "params": 0, "arena": 0, "input": 0, "output": n}


@pytest.mark.parametrize("mode", ["skip-flush", "skip-invalidate"])
def test_a_driver_without_flush_or_invalidate_reads_stale_data(mode, pynq_python, tiny_bundle, sim_lib):
    got = np.array(run_on_board(pynq_python, mode, tiny_bundle, sim_lib)["outputs"])
    golden = raw_golden(tiny_bundle)
    assert got.shape == golden.shape
    assert (got != golden).any(axis=1).mean() > 0.5


def test_timeout_when_the_accelerator_hangs(pynq_python, tiny_bundle, sim_lib):
    errors = run_on_board(pynq_python, "hang", tiny_bundle, sim_lib)["errors"]
    assert len(errors) == 2
    assert errors[0].startswith("ExecutionError") and "no ap_done" in errors[0]
    assert errors[1].startswith("ExecutionError") and "not idle" in errors[1]
