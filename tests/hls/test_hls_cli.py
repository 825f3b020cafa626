"""``edgevit hls`` through a bare argparse harness (the top-level CLI wires in the same ``register``)."""

import argparse
import json

import pytest

from edgevit.errors import EdgevitError, InputError, ToolMissingError, UnknownNameError
from edgevit.hls import cli, csim
from edgevit.hls.csim import HW_INCLUDE


def _run(argv):
    parser = argparse.ArgumentParser(prog="edgevit")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_generate_build_report(tmp_path, capsys):
    out = tmp_path / "tiny_hls"
    assert _run(["hls", "tiny_mobilevit", "--board", "pynq-z2", "-o", str(out), "--format", "input=16,4"]) == 0
    assert json.loads((out / "program.json").read_text())["formats"]["input"] == [16, 4]
    text = capsys.readouterr().out
    assert "NOT run" in text
    for name in ("top.cpp", "config.h", "tb.cpp", "program.bin", "params.bin", "regmap.json", "regmap.h", "hls.tcl",
                 "vivado_bd.tcl", "testdata/inputs.bin", "testdata/golden.bin", "testdata/reference.bin"):
        assert (out / name).exists(), name
    assert not list(out.glob("input_*.bin"))
    regmap = json.loads((out / "regmap.json").read_text())
    assert [(r["name"], r["offset"]) for r in regmap["registers"][4:]] == [
        ("PROGRAM", "0x10"), ("PARAMS", "0x1c"), ("ARENA", "0x28"), ("INPUT", "0x34"), ("OUTPUT", "0x40")]
    assert regmap["buffers"]["params"]["elements"] == (out / "params.bin").stat().st_size // 2
    hls_tcl = (out / "hls.tcl").read_text()
    assert "set_part xc7z020clg400-1" in hls_tcl
    # Self-contained: Vitis on another machine finds the unit headers inside the project.
    assert "-Iinclude " in hls_tcl and str(tmp_path) not in hls_tcl and "/hw/include" not in hls_tcl
    assert (out / "include" / "edgevit" / "units.h").read_bytes() == (HW_INCLUDE / "edgevit" / "units.h").read_bytes()
    vivado_tcl = (out / "vivado_bd.tcl").read_text()
    assert "processing_system7" in vivado_tcl
    assert "set_property board_part tul.com.tw:pynq-z2:part0:1.0" in vivado_tcl
    assert _run(["hls", "build", str(out), "--csim"]) == 0
    assert "0 mismatches" in capsys.readouterr().out
    assert _run(["hls", "report", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["fits"] and rep["resources"]["dsp"] <= 220
    assert _run(["hls", "report", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:8] == ["layer", "kind", "MACs", "cycles", "ms", "compute", "DDR", "bound"]
    rows = lines[1:1 + len(rep["layers"])]
    assert [r.split()[0] for r in rows] == [layer["layer"] for layer in rep["layers"]]
    assert all(r.split()[7] in ("compute", "memory", "ddr") for r in rows)
    # every layer's DDR floor is its traffic over the PYNQ-Z2's 2.1 GB/s at 100 MHz (21 bytes a cycle), and no
    # layer is estimated below it
    assert all(int(r.split()[6]) == -(-2 * layer["ddr_words"] // 21) <= layer["cycles"]
               for r, layer in zip(rows, rep["layers"]))
    assert any("memory-bound layers" in line for line in lines)
    assert any(line.startswith("DDR 2.1 GB/s") for line in lines)


def test_errors_are_edgevit_errors(tmp_path):
    with pytest.raises(InputError):
        _run(["hls", "report", str(tmp_path)])
    with pytest.raises(UnknownNameError):
        _run(["hls", "no_such_model", "-o", str(tmp_path / "x")])
    with pytest.raises(UnknownNameError):
        _run(["hls", "tiny_mobilevit", "--board", "no_such_board", "-o", str(tmp_path / "y")])
    with pytest.raises(InputError):
        _run(["hls", "tiny_mobilevit", "--format", "bad", "-o", str(tmp_path / "z")])
    with pytest.raises(EdgevitError):
        _run(["hls", "build", str(tmp_path)])


def test_missing_gxx_is_reported(monkeypatch):
    monkeypatch.setattr(csim.shutil, "which", lambda name: None)
    with pytest.raises(ToolMissingError, match="apt-get install g\\+\\+"):
        csim.compiler()


def test_report_refuses_a_design_that_does_not_fit(tmp_path, capsys):
    out = tmp_path / "tiny_hls"
    assert _run(["hls", "tiny_mobilevit", "--board", "pynq-z2", "-o", str(out)]) == 0
    doc = json.loads((out / "program.json").read_text())
    for layer in doc["layers"]:
        if layer["kind"] == "linear":
            layer["attrs"].update(li=64, lo=64)   # 4096 MACs: far beyond PYNQ-Z2's 220 DSPs
    (out / "program.json").write_text(json.dumps(doc))
    with pytest.raises(EdgevitError, match="does not fit"):
        _run(["hls", "report", str(out)])
    assert "DOES NOT FIT" in capsys.readouterr().out
