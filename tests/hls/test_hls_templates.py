"""Generated project files come from hw/templates: every template is written, every placeholder filled."""

import numpy as np
import pytest

from edgevit.hls import codegen
from edgevit.hls.csim import HW_TEMPLATES
from edgevit.hls.program import calibrate
from edgevit.targets import get_target

from hls_helpers import program

# Templates that are not a project file of their own: the simulated board's C entry point (edgevit.pynq.simlib).
NOT_PROJECT_FILES = {"simlib_entry.cpp"}


def test_every_template_becomes_a_project_file_with_no_placeholder_left(tmp_path):
    prog = program([("linear", ["input"], "out", {"act": "relu"}, {"w": np.eye(3, 4), "b": np.ones(3)})],
                   {"input": (2, 4), "out": (2, 3)})
    calibrate(prog, [np.ones((2, 4))])
    out = codegen.write_project(prog, tmp_path / "prj", get_target("pynq-z2").require_fpga(), "pynq-z2")
    templates = {p.name for p in HW_TEMPLATES.iterdir()} - NOT_PROJECT_FILES
    assert templates == {"top.cpp", "tb.cpp", "config.h", "regmap.h", "hls.tcl", "vivado_bd.tcl", "README.txt"}
    for name in templates:
        text = (out / name).read_text()
        assert not codegen.TEMPLATE_PLACEHOLDER.search(text), name
    assert "set_part xc7z020clg400-1" in (out / "hls.tcl").read_text()
    assert "static const int LI = " in (out / "config.h").read_text()
    # Files without placeholders are the template itself: what a reader opens in hw/templates is what Vitis gets.
    assert (out / "top.cpp").read_text() == (HW_TEMPLATES / "top.cpp").read_text()


def test_a_writer_out_of_step_with_its_template_is_refused():
    with pytest.raises(ValueError, match="placeholders"):
        codegen.fill_template("hls.tcl", part="xc7z020clg400-1")
    with pytest.raises(ValueError, match="placeholders"):
        codegen.fill_template("top.cpp", part="xc7z020clg400-1")
