"""``edgevit bundle`` / ``edgevit flash``: dry run, a whole flash onto a local stand-in board with the simulated
device, and every error case with its one-line message and exit code."""

import ast
import json
import shutil
import sys
from pathlib import Path

import pytest
from fake_bitstream import write_bit, write_hwh

from edgevit import cli
from edgevit.distributed.local_cluster import free_port
from edgevit.errors import ArtifactError
from edgevit.pynq import flash as flash_mod
from edgevit.pynq.bundle import make_bundle
from edgevit.pynq.transport import LocalTransport


def _edgevit(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgevit: error: "), err
    return lines[0]


@pytest.fixture
def sim_board(tmp_path, monkeypatch, sim_lib, pynq_python):
    """``--host local:DIR`` arguments for a stand-in board running the simulated device."""
    monkeypatch.setenv("EDGEVIT_PYNQ_SIM_LIB", str(sim_lib))
    home = tmp_path / "board_home"
    home.mkdir()
    return home, ["--host", f"local:{home}", "--remote-python", pynq_python]


def _copy(bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "bundle_copy"
    shutil.copytree(bundle, out)
    return out


def test_dry_run_on_a_generated_bundle_without_bitstream(tiny_project, tmp_path, capsys):
    out = tmp_path / "nobit"
    code, text, _ = _edgevit(["bundle", tiny_project[1], "-o", out], capsys)
    assert code == 0 and "no bitstream yet" in text
    cfg = json.loads((out / "bundle.json").read_text())
    assert cfg["bitstream"] is None and cfg["part"] == "xc7z020clg400-1"
    assert {"program.bin", "params.bin", "regmap.json", "testdata/golden.bin"} <= set(cfg["files"])
    assert cfg["registers"]["ARENA"] == "0x28"
    code, text, err = _edgevit(["flash", out, "--board", "pynq-z2", "--host", "xilinx@pynq.invalid", "--dry-run"],
                               capsys)
    assert code == 0 and err == ""
    assert "bitstream: MISSING" in text and "needs Vivado" in text and "vivado_bd.tcl" in text
    assert "match their sha256" in text and "would copy" in text and "edgevit.pynq.selftest" in text
    assert "nothing was copied or run" in text
    code, _, err = _edgevit(["flash", out, "--board", "pynq-z2", "--host", "xilinx@pynq.invalid"], capsys)
    assert code == ArtifactError.exit_code and "no bitstream" in _one_line_error(err)


def test_flash_onto_a_stand_in_board(tiny_bundle, sim_board, capsys):
    home, host = sim_board
    code, text, err = _edgevit(["flash", tiny_bundle, "--board", "pynq-z2", *host], capsys)
    assert code == 0, err
    assert "part 7z020clg400 matches pynq-z2" in text
    assert "40 inputs, 0 output words differ from the golden model" in text and "simulated" in text
    remote = home / "edgevit-bundles" / tiny_bundle.name
    assert (remote / "bundle.json").read_bytes() == (tiny_bundle / "bundle.json").read_bytes()
    staged = sorted(str(p.relative_to(remote / "edgevit")) for p in (remote / "edgevit").rglob("*.py"))
    assert staged == sorted(flash_mod.BOARD_FILES)


def test_unreachable_board(tiny_bundle, capsys):
    port = free_port()   # a loopback port nobody listens on
    code, _, err = _edgevit(["flash", tiny_bundle, "--board", "pynq-z2", "--host", "xilinx@127.0.0.1",
                             "--port", port], capsys)
    assert code == 9
    assert "unreachable" in _one_line_error(err)


def test_bitstream_for_another_part(tiny_project, tiny_bundle, tmp_path, capsys):
    wrong = write_bit(tmp_path / "z7010.bit", part="7z010clg400")      # PYNQ-Z1's smaller sibling part
    write_hwh(tmp_path / "z7010.hwh", device="7z010")
    with pytest.raises(ArtifactError, match="built for part 7z010clg400, but pynq-z2 has xc7z020clg400-1"):
        make_bundle(tiny_project[1], tmp_path / "refused", wrong)
    # a hand-assembled bundle whose hashes are consistent but whose bitstream is for the other part
    out = _copy(tiny_bundle, tmp_path)
    shutil.copyfile(wrong, out / "edgevit.bit")
    cfg = json.loads((out / "bundle.json").read_text())
    cfg["files"]["edgevit.bit"] = flash_mod.manifest.sha256(out / "edgevit.bit")
    (out / "bundle.json").write_text(json.dumps(cfg))
    code, _, err = _edgevit(["flash", out, "--board", "pynq-z2", "--host", "xilinx@pynq.invalid", "--dry-run"], capsys)
    assert code == ArtifactError.exit_code and "built for part 7z010clg400" in _one_line_error(err)
    # a right bitstream with the hardware handoff of another build
    with pytest.raises(ArtifactError, match="z7010.hwh describes part 7z010clg400"):
        make_bundle(tiny_project[1], tmp_path / "refused2", tiny_bundle / "edgevit.bit", tmp_path / "z7010.hwh")
    shutil.copyfile(tiny_bundle / "edgevit.bit", out / "edgevit.bit")
    shutil.copyfile(tmp_path / "z7010.hwh", out / "edgevit.hwh")
    cfg["files"].update({k: flash_mod.manifest.sha256(out / k) for k in ("edgevit.bit", "edgevit.hwh")})
    (out / "bundle.json").write_text(json.dumps(cfg))
    code, _, err = _edgevit(["flash", out, "--board", "pynq-z2", "--host", "xilinx@pynq.invalid"], capsys)
    assert code == ArtifactError.exit_code and "edgevit.hwh describes part 7z010clg400" in _one_line_error(err)
    code, _, err = _edgevit(["flash", tiny_bundle, "--board", "zcu102", "--host", "x@pynq.invalid"], capsys)
    assert code == ArtifactError.exit_code and "made for pynq-z2, not zcu102" in _one_line_error(err)


def test_missing_hwh(tiny_project, tmp_path, capsys):
    bit = write_bit(tmp_path / "edgevit_wrapper.bit")     # no .hwh beside it
    out = tmp_path / "no_hwh"
    code, text, _ = _edgevit(["bundle", tiny_project[1], "-o", out, "--bitstream", bit], capsys)
    assert code == 0 and "no .hwh" in text
    code, _, err = _edgevit(["flash", out, "--board", "pynq-z2", "--host", "xilinx@pynq.invalid"], capsys)
    assert code == ArtifactError.exit_code and "no .hwh" in _one_line_error(err)


@pytest.mark.parametrize("fault,code,message", [("corrupt", 8, "differ from the golden model"),
                                                ("hang", 9, "no ap_done")])
def test_failed_self_test(fault, code, message, tiny_bundle, sim_board, monkeypatch, capsys):
    home, host = sim_board
    monkeypatch.setenv("EDGEVIT_PYNQ_SIM_FAULT", fault)
    got, _, err = _edgevit(["flash", tiny_bundle, "--board", "pynq-z2", *host, "--timeout", "0.2", "--count", "3"],
                           capsys)
    line = _one_line_error(err)
    assert got == code and "self-test on pynq-z2 failed" in line and message in line


def test_tampered_bundle(tiny_bundle, tmp_path, capsys):
    out = _copy(tiny_bundle, tmp_path)
    data = bytearray((out / "params.bin").read_bytes())
    data[100] ^= 0x40
    (out / "params.bin").write_bytes(bytes(data))
    code, _, err = _edgevit(["flash", out, "--board", "pynq-z2", "--host", "xilinx@pynq.invalid", "--dry-run"], capsys)
    assert code == ArtifactError.exit_code and "params.bin does not match its sha256" in _one_line_error(err)
    (out / "params.bin").unlink()
    code, _, err = _edgevit(["flash", out, "--board", "pynq-z2", "--host", "xilinx@pynq.invalid"], capsys)
    assert code == ArtifactError.exit_code and "params.bin is missing" in _one_line_error(err)


class DamagingTransport(LocalTransport):
    """Copies like LocalTransport, then damages the weights on the "board" (a bad transfer or SD card)."""

    def put(self, local, remote_parent):
        super().put(local, remote_parent)
        params = self.root / remote_parent / Path(local).name / "params.bin"
        params.write_bytes(params.read_bytes()[:-2])


def test_damage_after_copying_is_caught_on_the_board(tiny_bundle, sim_board, pynq_python):
    home, _ = sim_board
    with pytest.raises(ArtifactError, match="self-test on pynq-z2 failed: bundle . was modified or damaged"):
        flash_mod.flash(tiny_bundle, "pynq-z2", DamagingTransport(home), remote_python=pynq_python, echo=lambda s: 0)


def test_board_side_imports_nothing_of_the_compiler_side():
    allowed = set(sys.stdlib_module_names) | {"numpy", "pynq"}
    for rel in flash_mod.BOARD_FILES:
        path = flash_mod.PACKAGE / rel
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.ImportFrom):    # relative: must stay inside what is copied to the board
                base = Path(rel).parent.parts[:len(Path(rel).parent.parts) - (node.level - 1)]
                target = "/".join([*base, *(node.module or "").split(".")]).strip("/")
                modules = [f"{target}/{a.name}" for a in node.names] if not node.module else [target]
                assert any(f"{m}.py" in flash_mod.BOARD_FILES or f"{m}/__init__.py" in flash_mod.BOARD_FILES
                           for m in modules), f"{rel} imports {target}, which is not copied to the board"
                continue
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{rel} imports {name}"
