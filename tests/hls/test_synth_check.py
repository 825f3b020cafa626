"""The synthesis-mode check: generated projects pass it, planted violations are named file:line, and the
C-simulation stream has the FIFO's bounded depth."""

import re
import shutil
import subprocess

import numpy as np
import pytest

from edgevit.errors import VerificationError
from edgevit.hls import codegen, csim, estimator, ops, project, synth_check
from edgevit.zoo.tiny_mobilevit import build_tiny_mobilevit

# Every zoo model the backend supports (wholly or up to its CPU tail); generated without testbench data, a few
# seconds each. tools/synth_check_zoo.py runs the same check from the command line.
ZOO_MODELS = ("mobilevit_xxs", "swiftformer_xs", "efficientformer_l1", "mobilevitv2_050")


def _sources(model, shape, out, every_unit=False):
    """(program, project) of ``model`` without testbench data."""
    sample = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return project.generate(model, shape, "zcu102", out, [sample], testbench=False, every_unit=every_unit)


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory):
    """tiny_mobilevit's project with every op dispatched: it reaches the whole unit library, so the checks below see
    every unit (a project of one model reaches only its own units)."""
    return _sources(build_tiny_mobilevit().eval(), (1, 1, 8, 8), tmp_path_factory.mktemp("synth") / "tiny", True)[1]


def _units_match_the_estimator(prog, report):
    """The units the check found reachable are those the estimator counts: its resources cover each of them and
    nothing else."""
    assert report.units == ops.program_units(l.kind for l in prog.layers)
    config = (report.project / "config.h").read_text()
    assert re.findall(r"#define EDGEVIT_OP_(\w+) 1", config) == [k.upper() for k in codegen.dispatched_kinds(prog)]


def _planted(tiny_project, tmp_path):
    out = tmp_path / "planted"
    shutil.copytree(tiny_project, out)
    return out


def _replace(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _line_of(path, needle, after=""):
    """The number of the first line holding ``needle`` at or after the first line holding ``after``."""
    lines = path.read_text().splitlines()
    start = next(n for n, line in enumerate(lines) if after in line)
    return next(n for n, line in enumerate(lines[start:], start + 1) if needle in line)


def test_every_unit_project_is_synthesizable(tiny_project):
    report = synth_check.check_project(tiny_project)
    print(report.summary())
    assert report.ok, report.summary()
    # Every unit of the library is reached (every op dispatched), every loop seen.
    assert report.units == ops.UNITS
    assert report.functions >= 35 and report.loops >= 90 and report.tripcounted_loops >= 70


def test_a_project_reaches_only_its_programs_units(tmp_path):
    prog, out = _sources(build_tiny_mobilevit().eval(), (1, 1, 8, 8), tmp_path / "tiny")
    report = synth_check.require_synthesizable(out)
    _units_match_the_estimator(prog, report)
    assert {"qgemm_unit", "depthwise_unit<1>", "moe_experts"}.isdisjoint(report.units)
    # the estimator counts no unit the top does not reach: without the float linear unit's layers (a program of
    # the other units only), its MACs leave the DSP count
    lanes = estimator.Lanes(4, 8, 2, 1)
    full = estimator.resources(prog, lanes)
    prog.layers = [l for l in prog.layers if l.kind != "linear"]
    assert full["dsp"] - estimator.resources(prog, lanes)["dsp"] >= 4 * 8


def test_every_dispatch_case_is_guarded_by_its_op_flag():
    # top.cpp's cases, each under #ifdef EDGEVIT_OP_<KIND>, calling the kind's first unit (ops.KINDS)
    top = (csim.HW_TEMPLATES / "top.cpp").read_text()
    cases = re.findall(r"#ifdef EDGEVIT_(OP_\w+)\n\s+case (OP_\w+): (\w+)<accel_config>\(.*\n#endif", top)
    assert len(cases) == len(re.findall(r"\bcase OP_", top)) == len(ops.KINDS)
    for flag, op, unit in cases:
        kind = op.removeprefix("OP_").lower()
        assert flag == op and ops.KINDS[kind].units[0].split("<")[0] == unit, op


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_zoo_model_project_is_synthesizable(name, tmp_path):
    from edgevit import zoo

    prog, out = _sources(zoo.build(name), zoo.get_entry(name).input_shape, tmp_path / name)
    report = synth_check.require_synthesizable(out)
    print(report.summary())
    _units_match_the_estimator(prog, report)
    config = (out / "config.h").read_text()
    assert "static const int KMAX = " in config and "typedef edgevit::tripcount<" in config


def test_planted_violations_are_named_with_file_and_line(tiny_project, tmp_path):
    out = _planted(tiny_project, tmp_path)
    header = out / "include" / "edgevit" / "layernorm.h"
    _replace(header, '#include "fixed_math.h"\n', '#include "fixed_math.h"\n#include <vector>\n')
    _replace(header, "static const int XHAT_FRAC = 16;\n", "static const int XHAT_FRAC = 16;\n\n"
             "inline int planted_depth(int n) { return n > 0 ? planted_depth(n - 1) + 1 : 0; }\n")
    _replace(header, "    const i64 eps = eps_of(d);\n", "    const i64 eps = eps_of(d);\n"
             "    std::vector<int> planted_vector(4);\n"
             "    int* planted_new = new int[4];\n"
             "    delete[] planted_new;\n"
             "    int planted_sum = 0;\n"
             "    for (int k = 0; k < d.d1; ++k) planted_sum += planted_depth(k);\n"
             "    while (planted_sum > 0) planted_sum -= 2;\n")
    report = synth_check.check_project(out)
    print(report.summary())
    found = {(v.file, v.line, v.rule) for v in report.violations}
    rel = "include/edgevit/layernorm.h"
    expected = {(rel, _line_of(header, "std::vector<int> planted_vector"), "std container"),
                (rel, _line_of(header, "new int[4]"), "dynamic allocation"),
                (rel, _line_of(header, "delete[] planted_new"), "dynamic allocation"),
                (rel, _line_of(header, "for (int k = 0; k < d.d1; ++k) planted_sum"), "unbounded loop"),
                (rel, _line_of(header, "while (planted_sum > 0)"), "unbounded loop"),
                (rel, _line_of(header, "inline int planted_depth"), "recursion")}
    assert found == expected
    with pytest.raises(VerificationError, match=f"{rel}:{_line_of(header, 'new int')}: dynamic allocation"):
        synth_check.require_synthesizable(out)


def test_malloc_and_containers_behind_using_namespace_std_are_found(tiny_project, tmp_path):
    out = _planted(tiny_project, tmp_path)
    header = out / "include" / "edgevit" / "layout.h"
    _replace(header, '#include "descriptor.h"\n', '#include "descriptor.h"\n#include <cstdlib>\n#include <map>\n'
             '#include <string>\n')
    _replace(header, "    const int sa = d.fx - d.fo, sb = d.fx2 - d.fo;\n",
             "    const int sa = d.fx - d.fo, sb = d.fx2 - d.fo;\n"
             "    using namespace std;\n"
             "    map<int, int> planted_map;\n"
             "    string planted_string;\n"
             "    int* planted_buffer = (int*)malloc(16);\n"
             "    free(planted_buffer);\n")
    report = synth_check.check_project(out)
    rel = "include/edgevit/layout.h"
    assert {(v.file, v.line, v.rule) for v in report.violations} == {
        (rel, _line_of(header, "planted_map;"), "std container"),
        (rel, _line_of(header, "planted_string;"), "std container"),
        (rel, _line_of(header, "malloc(16)"), "dynamic allocation"),
        (rel, _line_of(header, "free(planted_buffer)"), "dynamic allocation")}


def test_a_loop_bounded_by_the_descriptor_needs_a_tripcount(tiny_project, tmp_path):
    out = _planted(tiny_project, tmp_path)
    header = out / "include" / "edgevit" / "layout.h"
    _replace(header, "        EDGEVIT_TRIPCOUNT(CFG::avgpool_tokens)\n", "")
    report = synth_check.check_project(out)
    assert [(v.file, v.line, v.rule) for v in report.violations] == [
        ("include/edgevit/layout.h", _line_of(header, "for (int t = 0; t < d.d0; ++t) {", "i64 token_sum"),
         "unbounded loop")]


def test_a_pipelined_loop_may_hold_only_constant_bound_loops(tiny_project, tmp_path):
    out = _planted(tiny_project, tmp_path)
    header = out / "include" / "edgevit" / "layout.h"
    # Pipelining the channel loop of avgpool would unroll its token loop (in token_sum, which it calls), whose bound
    # is the descriptor's M.
    _replace(header, "        EDGEVIT_TRIPCOUNT(CFG::avgpool_channels)\n",
             "        EDGEVIT_TRIPCOUNT(CFG::avgpool_channels)\n#pragma HLS PIPELINE II=1\n")
    report = synth_check.check_project(out)
    outer = _line_of(header, "for (int c = 0; c < C; ++c) {", "void avgpool")
    assert [(v.file, v.line, v.rule) for v in report.violations] == [
        ("include/edgevit/layout.h", _line_of(header, "for (int t = 0; t < d.d0; ++t) {", "i64 token_sum"),
         "pipeline")]
    assert f"pipelined loop at include/edgevit/layout.h:{outer}" in report.violations[0].message


def test_a_pragma_must_be_a_vitis_directive_on_a_variable_of_its_function(tiny_project, tmp_path):
    out = _planted(tiny_project, tmp_path)
    header = out / "include" / "edgevit" / "linear.h"
    _replace(header, "#pragma HLS ARRAY_PARTITION variable=bias complete",
             "#pragma HLS ARRAY_PARTITION variable=biases complete")
    _replace(header, "#pragma HLS PIPELINE II=1\n        beat_t v = 0, r0 = 0, r1 = 0;",
             "#pragma HLS PIPELNE II=1\n        beat_t v = 0, r0 = 0, r1 = 0;")
    report = synth_check.check_project(out)
    assert {(v.file, v.line, v.rule) for v in report.violations} == {
        ("include/edgevit/linear.h", _line_of(header, "variable=biases"), "pragma"),
        ("include/edgevit/linear.h", _line_of(header, "PIPELNE"), "pragma")}


def test_a_misspelt_tripcount_fails_the_synthesis_compile(tiny_project, tmp_path):
    out = _planted(tiny_project, tmp_path)
    header = out / "include" / "edgevit" / "attention.h"
    _replace(header, "EDGEVIT_TRIPCOUNT(CFG::attn_steps)", "EDGEVIT_TRIPCOUNT(CFG::attn_step)")
    report = synth_check.check_project(out)
    line = _line_of(header, "EDGEVIT_TRIPCOUNT(CFG::attn_step)")
    assert {(v.file, v.line, v.rule) for v in report.violations} == {
        ("include/edgevit/attention.h", line, "synthesis compile")}
    assert "attn_step" in report.violations[0].message


def test_interface_must_match_the_register_map(tiny_project, tmp_path):
    from edgevit.pynq import driver

    assert codegen.PORTS == driver.PORTS
    out = _planted(tiny_project, tmp_path)
    top = out / "top.cpp"
    _replace(top, "#pragma HLS INTERFACE s_axilite port=arena bundle=control\n", "")
    _replace(top, "#pragma HLS INTERFACE s_axilite port=return bundle=control\n", "")
    report = synth_check.check_project(out)
    messages = [str(v) for v in report.violations]
    print("\n".join(messages))
    assert len(messages) == 2 and all(v.rule == "interface" and v.file == "top.cpp" for v in report.violations)
    assert "arena is not in s_axilite bundle control" in messages[0] and "port=return" in messages[1]


STREAM_TEST = """#include <edgevit/stream.h>
#include <cstdio>
#include <cstring>
int main(int argc, char** argv) {
    edgevit::stream<int, 2> s;
    s.write(1);
    s.write(2);
    std::printf("full %d size %d\\n", (int)s.full(), s.size());
    if (!std::strcmp(argv[1], "overflow")) s.write(3);
    const int a = s.read();
    const int b = s.read();
    s.write(4);
    const int c = s.read();
    std::printf("read %d %d %d empty %d\\n", a, b, c, (int)s.empty());
    if (!std::strcmp(argv[1], "underflow")) s.read();
    return 0;
}
"""


def test_csim_stream_is_a_bounded_fifo_that_fails_loudly(tmp_path):
    src = tmp_path / "stream_test.cpp"
    src.write_text(STREAM_TEST)
    exe = tmp_path / "stream_test"
    subprocess.run([csim.compiler(), *csim.CXXFLAGS, f"-I{csim.HW_INCLUDE}", str(src), "-o", str(exe)], check=True)
    ok = subprocess.run([str(exe), "ok"], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout == "full 1 size 2\nread 1 2 4 empty 1\n"
    over = subprocess.run([str(exe), "overflow"], capture_output=True, text=True)
    assert over.returncode != 0 and "write to a full stream" in over.stderr and "depth 2" in over.stderr
    under = subprocess.run([str(exe), "underflow"], capture_output=True, text=True)
    assert under.returncode != 0 and "read from an empty stream" in under.stderr
