"""Generated bad inputs (hypothesis, bounded and derandomized so CI repeats them): mutated artifact metadata,
target files, artifact and ONNX bytes, and option values. Each mutation is wrong by construction, so the test
knows the answer without asking edgevit's own validators: the documented exit code and the field named.
"""

from __future__ import annotations

import copy
import itertools
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bad_input_files import VALID_TARGET, rewrite_artifact, to_toml
from bad_input_harness import assert_refused

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
_serial = itertools.count()


def _fresh(ws, suffix: str):
    path = ws["tmp"] / "generated" / f"{next(_serial)}{suffix}"
    path.parent.mkdir(exist_ok=True)
    return path


def _protect(ws):
    return [ws["onnx"], ws["art"], ws["secret"], ws["target_good"]]


# --- artifact metadata: a required field removed, or a value of the wrong type
REQUIRED_METADATA = [("format",), ("model",), ("model", "name"), ("inputs",), ("outputs",), ("target",),
                     ("target", "name"), ("target", "arch"), ("target", "tvm"), ("target", "tvm", "kind"),
                     ("library",), ("members",), ("inputs", 0, "name"), ("inputs", 0, "shape"),
                     ("inputs", 0, "dtype"), ("outputs", 0, "shape")]
WRONG = {  # values no field of that kind accepts
    "text": [5, None, ["x"], {"a": 1}, True, "two\nlines"],
    "shape": ["1,3,16,16", None, [1.5, 3], [-1, 3], [0], [True], ["1"], [2 ** 40], {"a": 1}],
    "dtype": ["float", "float128", 3, None, "object"],
    "record": ["x", [], 5, None],
    "list": ["x", {}, 5, None, []],
    "member": ["/etc/passwd", "../x", "a/../../b", "", 5, None, "a\\b", "/"],
    "members": [[], "x", {"model.so": "nothex"}, {"/etc/passwd": "0" * 64}, {"../x": "0" * 64}, None],
    "format": ["edgevit-artefact", None, 1],
    "version": ["1", 1.5, True, 0, -3, None],
    "bool": ["yes", 1, None],
}
FIELD_KIND = {("format",): "format", ("model",): "record", ("model", "name"): "text", ("inputs",): "list",
              ("outputs",): "list", ("target",): "record", ("target", "name"): "text",
              ("target", "arch"): "text", ("target", "tvm"): "record", ("target", "tvm", "kind"): "text",
              ("library",): "member", ("members",): "members", ("inputs", 0, "name"): "text",
              ("inputs", 0, "shape"): "shape", ("inputs", 0, "dtype"): "dtype", ("outputs", 0, "shape"): "shape",
              ("format_version",): "version", ("tuned",): "bool", ("reference",): "member"}


def _set(doc, path, value=None, delete=False):
    for key in path[:-1]:
        doc = doc[key]
    if delete:
        del doc[path[-1]]
    else:
        doc[path[-1]] = value


@st.composite
def metadata_mutations(draw):
    path = draw(st.sampled_from(sorted(FIELD_KIND, key=str)))
    if path in REQUIRED_METADATA and draw(st.booleans()):
        return path, None, True
    return path, draw(st.sampled_from(WRONG[FIELD_KIND[path]])), False


@settings(max_examples=40, **SETTINGS)
@given(mutation=metadata_mutations())
def test_mutated_metadata_names_the_field(ws, mutation):
    path, value, delete = mutation
    meta = copy.deepcopy(ws["meta"])
    _set(meta, path, value, delete)
    artifact = rewrite_artifact(ws["art"], _fresh(ws, ".tar"), meta)
    name = "format" if path == ("format",) else str(path[-1]) if isinstance(path[-1], str) else str(path[-2])
    assert_refused(f"metadata {'-'.join(map(str, path))} {'deleted' if delete else repr(value)}",
                   ["run", artifact], 7, [name], _protect(ws), [ws["secret"], "/etc/passwd"])


# --- target files: a required field removed, or a value of the wrong type
FPGA_TARGET = {"name": "myfpga", "fpga": {"part": "xc7z020clg400-1", "family": "zynq", "clock_mhz": 100, "dsp": 220,
                                          "bram36": 140, "lut": 53200, "ff": 106400, "axi_bits": 64,
                                          "ddr_gbps": 2.1}}
TARGET_FIELDS = {  # path -> wrong values (TOML can write them all)
    ("name",): [5, ["rpi4"], "../../etc", "Upper", "", "a b"],
    ("cpu",): ["x", 5, [1]],
    ("cpu", "arch"): [64, "x86 64", "", ["x86_64"]],
    ("cpu", "tvm"): ["llvm", 5, [1]],
    ("cpu", "tvm", "kind"): [5, True, ["llvm"]],
    ("cpu", "memory_mib"): [-1, 0, "4 GiB", 1.5, True],
    ("cpu", "cross_compiler"): ["g++", 5],
    ("cpu", "emulator"): [{"command": "qemu; rm -rf /"}, {"command": ""}, {"apt": "x"}],
    ("cpu", "unknown_field"): [1, "x"],
    ("fpga", "dsp"): ["220", -5, 0, 2.5, True],
    ("fpga", "lut"): ["many", [1]],
    ("fpga", "clock_mhz"): ["100MHz", -1, 0, 1e9],
    ("fpga", "axi_bits"): [63, "64", 0],
    ("fpga", "ddr_gbps"): ["19.2 GB/s", 0, -1, 1e6, [1]],
    ("fpga", "part"): [7, ["a"]],
    ("fpga", "board_part"): [1, ["x"]],
}
REQUIRED_TARGET = [("name",), ("cpu", "arch"), ("cpu", "tvm"), ("cpu", "tvm", "kind"), ("fpga", "part"),
                   ("fpga", "dsp"), ("fpga", "ff"), ("fpga", "axi_bits"), ("fpga", "ddr_gbps")]


@st.composite
def target_mutations(draw):
    path = draw(st.sampled_from(sorted({*TARGET_FIELDS, *REQUIRED_TARGET}, key=str)))
    base = copy.deepcopy(FPGA_TARGET if path[0] == "fpga" else VALID_TARGET)
    if path in REQUIRED_TARGET and (path not in TARGET_FIELDS or draw(st.booleans())):
        _set(base, path, delete=True)
    else:
        _set(base, path, draw(st.sampled_from(TARGET_FIELDS[path])))
    return path, base


@settings(max_examples=30, **SETTINGS)
@given(mutation=target_mutations())
def test_broken_target_file_names_the_field(ws, mutation):
    path, doc = mutation
    toml_file = _fresh(ws, ".toml")
    toml_file.write_text(to_toml(doc))
    assert_refused(f"target {'.'.join(path)} {json.dumps(doc)[:80]}", ["compile", ws["onnx"], "--target", toml_file,
                                                                       "-o", ws["tmp"] / "o.tar"],
                   10, [path[-1] if path[-1] != "unknown_field" else "unknown_field"], _protect(ws))


# --- bytes: truncated or flipped artifacts, truncated ONNX files (a flip may leave a valid file: accepted too)
@settings(max_examples=15, **SETTINGS)
@given(cut=st.floats(0, 0.999), flips=st.lists(st.tuples(st.floats(0, 0.999), st.integers(1, 255)), max_size=3))
def test_damaged_artifact_bytes(ws, cut, flips):
    data = bytearray(ws["art"].read_bytes())
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    if not flips:
        data = data[: int(cut * len(data))]
    artifact = _fresh(ws, ".tar")
    artifact.write_bytes(bytes(data))
    assert_refused(f"artifact bytes cut {cut:.3f} flips {flips}", ["run", artifact], 7, [], _protect(ws),
                   [ws["secret"]], may_accept=bool(flips))


@settings(max_examples=12, **SETTINGS)
@given(cut=st.floats(0, 0.97))
def test_truncated_onnx(ws, cut):
    data = ws["onnx"].read_bytes()
    model = _fresh(ws, ".onnx")
    model.write_bytes(data[: int(cut * len(data))])
    assert_refused(f"onnx cut at {cut:.3f}", ["compile", model, "-o", _fresh(ws, ".tar")], 4, [], _protect(ws),
                   may_accept=True)


# --- option values
FORMAT_OK = r"[A-Za-z0-9_.]+=\d{1,3},\d{1,3}"
bad_format_text = st.text(alphabet="ab.=,019 -_;", max_size=12).filter(
    lambda s: not __import__("re").fullmatch(FORMAT_OK, s))
bad_format_numbers = st.tuples(st.integers(-5, 200), st.integers(-5, 200)).filter(
    lambda wi: not (2 <= wi[0] <= 32 and 1 <= wi[1] <= wi[0])).map(lambda wi: f"input={wi[0]},{wi[1]}")


@settings(max_examples=25, **SETTINGS)
@given(spec=st.one_of(bad_format_text, bad_format_numbers))
def test_bad_hls_format(ws, spec):
    assert_refused(f"hls --format {spec!r}", ["hls", "tiny_mobilevit", "-o", ws["tmp"] / "hls_out", f"--format={spec}"],
                   2 if spec == "--" else 5, ["--format"], _protect(ws))
    assert not (ws["tmp"] / "hls_out").exists()


SHELL = " ;|&$`'\"()<>\n*?"
bad_hosts = st.one_of(
    st.text(alphabet="abc-=@.:", min_size=1, max_size=12).map(lambda s: "-" + s),         # an option
    st.tuples(st.text(alphabet="ab.", min_size=1, max_size=4), st.sampled_from(SHELL),
              st.text(alphabet="ab", max_size=4)).map("".join),                          # shell characters
    st.sampled_from(["", "@", "x@", "@y", "a@b@c", "-oProxyCommand=touch /tmp/pwned", "x@-oProxyCommand=id",
                     "root@host -oProxyCommand=id", "--", "x@.y", "x@y.", "x@-y"]),
)


@settings(max_examples=30, **SETTINGS)
@given(host=bad_hosts)
def test_bad_flash_host(ws, host):
    # "--" is argparse's own marker: refused as a usage error (2) before flash sees it
    assert_refused(f"flash --host {host!r}", ["flash", ws["tmp"] / "no-bundle", "--board", "pynq-z2", f"--host={host}",
                                              "--dry-run"], 2 if host == "--" else 5, ["--host"], _protect(ws))


bad_shapes = st.one_of(
    st.lists(st.integers(-3, 0), min_size=1, max_size=4).map(lambda d: ",".join(map(str, d))),    # non-positive
    st.text(alphabet="abc,:;.- ", min_size=1, max_size=10).filter(lambda s: any(c in s for c in "abc.- ")
                                                                   and any(c.isdigit() or c in "abc" for c in s)),
    st.integers(2 ** 31, 2 ** 70).map(lambda d: f"1,{d},16,16"),                                # too large
)


@settings(max_examples=25, **SETTINGS)
@given(shape=bad_shapes)
def test_bad_input_shape(ws, shape):
    assert_refused(f"--input-shape {shape!r}", ["compile", ws["dyn"], f"--input-shape={shape}", "-o", ws["tmp"] / "o.tar"],
                   5, [], _protect(ws))


@settings(max_examples=15, **SETTINGS)
@given(value=st.one_of(st.integers(-10 ** 6, 0).map(str), st.integers(10 ** 6 + 1, 10 ** 30).map(str),
                       st.text(alphabet="x.e+-", min_size=1, max_size=5)))
def test_bad_repeat_count(ws, value):
    assert_refused(f"run --repeat {value!r}", ["run", ws["art"], f"--repeat={value}"], 2, ["--repeat"], _protect(ws))
