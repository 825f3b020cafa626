import pytest

from edgevit.errors import EdgevitError, UnknownNameError
from edgevit.runtime import host_arch
from edgevit.targets import all_targets, get_target


def test_every_target_file_parses_and_required_boards_exist():
    names = {t.name for t in all_targets()}
    assert {"host", "rpi4", "rpi5", "jetson-nano", "zcu102", "pynq-z2"} <= names


def test_host_cpu_is_detected_not_generic():
    from edgevit.backends.tvm_compiler import target_dict

    host = get_target("host")
    assert host.cpu.arch == host_arch()
    assert host.cpu.tvm["mcpu"] == "detect"   # data; the build asks LLVM
    assert target_dict(host.cpu.tvm)["mcpu"] not in ("detect", "generic", "")
    assert not host.cpu.is_cross


def test_rpi4_is_cortex_a72_neon_cross_compiled_and_emulated():
    cpu = get_target("rpi4").cpu
    assert cpu.arch == "aarch64"
    assert cpu.tvm == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"],
                       "num-cores": 4}
    assert cpu.cross_compiler.command == "aarch64-linux-gnu-g++"
    assert cpu.emulator.command == "qemu-aarch64-static"


@pytest.mark.parametrize("name, part, dsp, bram, lut", [
    ("pynq-z2", "xc7z020clg400-1", 220, 140, 53200),
    ("zcu102", "xczu9eg-ffvb1156-2-e", 2520, 912, 274080),
])
def test_fpga_boards_carry_their_resources(name, part, dsp, bram, lut):
    fpga = get_target(name).require_fpga()
    assert (fpga.part, fpga.dsp, fpga.bram36, fpga.lut) == (part, dsp, bram, lut)


def test_unknown_target_lists_known_ones():
    with pytest.raises(UnknownNameError, match="rpi4"):
        get_target("rpi9")


def test_fpga_only_board_refuses_cpu_compile():
    with pytest.raises(EdgevitError, match="edgevit hls"):
        get_target("pynq-z2").require_cpu()


def test_a_target_is_a_registry_name_or_a_toml_path(tmp_path):
    for spec in ("../targets/rpi4", "../../etc/passwd", "rpi4/", "RPI4", ""):
        with pytest.raises(UnknownNameError):
            get_target(spec)
    path = tmp_path / "myboard.toml"
    path.write_text('name = "myboard"\n[cpu]\narch = "aarch64"\ntvm = { kind = "llvm" }\nmemory_mib = 512\n')
    target = get_target(str(path))
    assert (target.name, target.cpu.arch, target.cpu.memory_bytes) == ("myboard", "aarch64", 512 << 20)


def test_boards_carry_their_memory():
    assert get_target("rpi4").cpu.memory_bytes == 4 << 30
    assert get_target("host").cpu.memory_bytes > 0


@pytest.mark.parametrize("text, field", [
    ('name = "b"\n[cpu]\narch = "aarch64"\n', "cpu.tvm"),
    ('name = "b"\n[cpu]\narch = "aarch64"\ntvm = { kind = "llvm" }\nmemory_mib = "4G"\n', "cpu.memory_mib"),
    ('name = "b"\n[fpga]\npart = "x"\nfamily = "z"\nclock_mhz = 100\ndsp = "220"\nbram36 = 1\nlut = 1\n'
     'ff = 1\naxi_bits = 64\n', "fpga.dsp"),
    ('name = "b"\n[cpux]\n', "cpux"),
])
def test_broken_target_files_name_the_field(tmp_path, text, field):
    from edgevit.errors import TargetError

    path = tmp_path / "b.toml"
    path.write_text(text)
    with pytest.raises(TargetError, match=f"field '{field}'"):
        get_target(str(path))
