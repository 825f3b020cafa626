"""The layer program: descriptor table layout, its round trip through program.bin, and the shared-unit top."""

import re
import subprocess

import numpy as np
import pytest

from edgevit.hls import codegen, csim, layer_table
from edgevit.hls.csim import HW_INCLUDE
from edgevit.hls.program import calibrate
from edgevit.zoo.tiny_mobilevit import build_tiny_mobilevit
from edgevit.hls.torch_import import lower, to_accel_layout
from edgevit.targets import get_target

from hls_helpers import program


@pytest.fixture(scope="module")
def tiny():
    prog = lower(build_tiny_mobilevit().eval(), (1, 1, 8, 8))
    rng = np.random.default_rng(0)
    return calibrate(prog, [to_accel_layout(rng.standard_normal((1, 1, 8, 8))) for _ in range(2)])


def test_python_layout_matches_descriptor_h():
    text = (HW_INCLUDE / "edgevit" / "descriptor.h").read_text()

    def members(struct):
        body = re.search(r"struct %s \{(.*?)\};" % struct, text, re.S).group(1)
        return tuple(re.findall(r"\w+", body.replace("int", "", 1)))

    assert members("program_header") == layer_table.HEADER
    assert members("layer_desc") == layer_table.FIELDS
    ops = {name.lower(): int(v) for name, v in re.findall(r"OP_(\w+) = (\d+)", text)}
    assert ops == layer_table.OPS
    assert f"0x{layer_table.MAGIC:08X}" in text


def test_descriptor_table_round_trips(tiny):
    table = layer_table.build(tiny)
    header, descriptors = layer_table.parse(table.to_bytes())
    assert header == table.header and descriptors == table.descriptors
    assert header["layers"] == len(tiny.layers) and header["params_words"] == table.params.size
    readable = table.to_json()
    assert [d["op"] for d in readable["layers"]] == [l.kind for l in tiny.layers]
    # Tensors tile the arena without overlap, each on a 512-bit boundary (a residual then sits at its output's
    # lanes), with gaps only up to that boundary; every descriptor points inside the arena.
    spans = sorted(table.tensors.values())
    assert all(a % layer_table.TENSOR_ALIGN == 0 for a, _ in spans)
    assert all(0 <= b - (a + n) < layer_table.TENSOR_ALIGN for (a, n), (b, _) in zip(spans, spans[1:]))
    assert spans[0][0] == 0 and spans[-1][0] + spans[-1][1] == header["arena_words"]
    for d in descriptors:
        assert 0 <= d["x"] < header["arena_words"] and 0 <= d["y"] < header["arena_words"]
    # Parameters come back from the int16 words: weights as they are, biases from four words each.
    layer, d = next((l, d) for l, d in zip(tiny.layers, descriptors) if l.kind == "linear" and "b" in l.params)
    q = tiny.quantized_params(layer)
    co, ci = q["w"][0].shape
    assert (table.params[d["w"]:d["w"] + co * ci].reshape(co, ci) == q["w"][0]).all()
    bias = table.params[d["b"]:d["b"] + 4 * co].astype("<i2").view("<i8")
    assert (bias == q["b"][0]).all()
    assert d["fw"] == q["w"][1].frac and d["fo"] == tiny.formats[layer.output].frac


def test_top_instantiates_each_unit_once(tiny, tmp_path):
    fpga = get_target("pynq-z2").require_fpga()
    out = codegen.write_project(tiny, tmp_path / "tiny", fpga, "pynq-z2")
    kinds = [l.kind for l in tiny.layers]
    assert kinds.count("linear") >= 8
    top = (out / "top.cpp").read_text()
    for unit in ("linear_unit<", "depthwise_unit<", "attention_unit<", "layernorm_unit<", "im2col<", "concat<"):
        assert top.count(unit) == 1, unit
    other = program([("linear", ["input"], "out", {"act": "gelu"}, {"w": np.ones((3, 4))})],
                    {"input": (2, 4), "out": (2, 3)})
    calibrate(other, [np.ones((2, 4))])
    assert (codegen.write_project(other, tmp_path / "one", fpga, "pynq-z2") / "top.cpp").read_text() == top
    assert not (out / "testdata").exists()


def test_testbench_checks_golden_outputs(tmp_path):
    prog = program([("linear", ["input"], "out", {"act": "relu"}, {"w": np.eye(3, 4), "b": np.ones(3)})],
                   {"input": (2, 4), "out": (2, 3)})
    samples = np.random.default_rng(0).standard_normal((3, 2, 4))
    calibrate(prog, samples)
    out = codegen.write_project(prog, tmp_path / "prj", get_target("zcu102").require_fpga(), "zcu102", samples)
    exe = csim.build([out / "top.cpp", out / "tb.cpp"], [out], [out / "config.h"])
    ok = subprocess.run([str(exe)], cwd=out, capture_output=True, text=True)
    assert ok.returncode == 0 and "3 inputs simulated: 0 mismatches" in ok.stdout
    golden = np.fromfile(out / "testdata" / "golden.bin", "<i2")
    golden[4] += 1
    golden.tofile(out / "testdata" / "golden.bin")
    bad = subprocess.run([str(exe)], cwd=out, capture_output=True, text=True)
    assert bad.returncode == 1 and "1 mismatches" in bad.stdout
