"""The issue's bad inputs (and their neighbours), one table row each: command line, documented exit code, words
the one error line must contain, files that must not be opened.

Exit codes (docs/security.md): 2 usage, 3 unknown name, 4 model import, 5 input, 6 tool missing, 7 artifact,
8 verification, 9 execution, 10 target, 11 output, 12 memory.
"""

from __future__ import annotations

import pytest

from bad_input_harness import assert_refused

USAGE, UNKNOWN, MODEL, INPUT, ARTIFACT, TARGET, OUTPUT, MEMORY = 2, 3, 4, 5, 7, 10, 11, 12

CASES = [
    # --- command line (argparse): one line, exit 2
    ("no-command", [], USAGE, ["required"]),
    ("unknown-command", ["frobnicate"], USAGE, ["invalid choice"]),
    ("compile-no-model", ["compile"], USAGE, ["model"]),
    ("compile-unknown-option", ["compile", "{onnx}", "--bogus"], USAGE, ["--bogus"]),
    ("run-no-artifact", ["run"], USAGE, ["artifact"]),
    ("run-repeat-0", ["run", "{art}", "--repeat", "0"], USAGE, ["--repeat"]),
    ("run-repeat-word", ["run", "{art}", "--repeat", "x"], USAGE, ["--repeat"]),
    ("run-rtol-negative", ["run", "{art}", "--rtol", "-1"], USAGE, ["--rtol"]),
    ("run-rtol-nan", ["run", "{art}", "--rtol", "nan"], USAGE, ["--rtol"]),
    ("run-rtol-inf", ["run", "{art}", "--rtol", "inf"], USAGE, ["--rtol"]),
    ("run-device-gpu", ["run", "{art}", "--device", "gpu"], USAGE, ["--device"]),
    ("bench-runs-0", ["bench", "{onnx}", "--runs", "0"], USAGE, ["--runs"]),
    ("bench-warmup-negative", ["bench", "{onnx}", "--warmup", "-1"], USAGE, ["--warmup"]),
    ("bench-threads-words", ["bench", "{onnx}", "--threads", "a,b"], INPUT, ["--threads"]),
    ("bench-quantize-no-calibration", ["bench", "{onnx}", "--quantize", "int8"], USAGE, ["--calibration"]),
    ("bench-calibration-no-quantize", ["bench", "{onnx}", "--calibration", "fashion-mnist"], USAGE,
     ["--quantize int8"]),
    ("bench-quantize-artifact", ["bench", "{art}", "--quantize", "int8", "--calibration", "fashion-mnist"], USAGE,
     ["artifact", "float .onnx"]),
    ("bench-quantize-threads-list", ["bench", "{onnx}", "--quantize", "int8", "--calibration", "fashion-mnist",
                                     "--threads", "1,2"], USAGE, ["one thread count"]),
    ("tune-trials-negative", ["tune", "{onnx}", "--trials", "-5"], USAGE, ["--trials"]),
    ("tune-threads-0", ["tune", "{onnx}", "--threads", "0"], USAGE, ["--threads"]),
    ("tune-tracker-no-port", ["tune", "{onnx}", "--rpc-tracker", "nohost"], INPUT, ["--rpc-tracker"]),
    ("prepare-riscv", ["prepare", "riscv"], USAGE, ["riscv"]),
    ("hls-nothing", ["hls"], USAGE, ["what"]),
    ("flash-port-word", ["flash", "{tmp}", "--board", "pynq-z2", "--host", "x@y", "--port", "abc"], USAGE,
     ["--port"]),
    # --- compile: the model
    ("compile-unknown-model", ["compile", "mobilevit_huge", "-o", "{tmp}/o.tar"], UNKNOWN, ["unknown model"]),
    ("compile-missing-file", ["compile", "{tmp}/nope.onnx", "-o", "{tmp}/o.tar"], MODEL, ["not found"]),
    ("compile-directory-model", ["compile", "{dir_onnx}", "-o", "{tmp}/o.tar"], MODEL, ["directory"]),
    ("compile-empty-onnx", ["compile", "{empty_onnx}", "-o", "{tmp}/o.tar"], MODEL, ["not a valid ONNX"]),
    ("compile-garbage-onnx", ["compile", "{garbage_onnx}", "-o", "{tmp}/o.tar"], MODEL, ["not a valid ONNX"]),
    ("compile-text-onnx", ["compile", "{text_onnx}", "-o", "{tmp}/o.tar"], MODEL, ["not a valid ONNX"]),
    ("compile-nms", ["compile", "{nms}", "-o", "{tmp}/o.tar"], MODEL, ["NonMaxSuppression", "node 0 'nms'",
                                                                      "edgevit ops"]),
    ("compile-bf16-input", ["compile", "{bf16}", "-o", "{tmp}/o.tar"], MODEL, ["element type 16"]),
    ("compile-external-missing", ["compile", "{ext_missing}", "-o", "{tmp}/o.tar"], MODEL, ["missing.data"]),
    ("compile-external-climb", ["compile", "{ext_climb}", "-o", "{tmp}/o.tar"], MODEL, ["outside"], ["{secret}"]),
    ("compile-external-absolute", ["compile", "{ext_absolute}", "-o", "{tmp}/o.tar"], MODEL, ["outside"],
     ["{secret}"]),
    ("compile-external-symlink", ["compile", "{ext_link}", "-o", "{tmp}/o.tar"], MODEL, ["outside"], ["{secret}"]),
    ("compile-external-too-long", ["compile", "{ext_short}", "-o", "{tmp}/o.tar"], MODEL, ["past the end"]),
    # --- compile: shapes and memory
    ("shape-words", ["compile", "{dyn}", "--input-shape", "abc", "-o", "{tmp}/o.tar"], INPUT, ["abc"]),
    ("shape-negative", ["compile", "{dyn}", "--input-shape", "1,3,-16,16", "-o", "{tmp}/o.tar"], INPUT, ["1 to"]),
    ("shape-zero", ["compile", "{dyn}", "--input-shape", "0,3,16,16", "-o", "{tmp}/o.tar"], INPUT, ["1 to"]),
    ("shape-huge-dim", ["compile", "{dyn}", "--input-shape", "99999999999,3,16,16", "-o", "{tmp}/o.tar"], INPUT,
     ["1 to"]),
    ("shape-rank-17", ["compile", "{dyn}", "--input-shape", ",".join(["1"] * 17), "-o", "{tmp}/o.tar"], INPUT,
     ["dimensions"]),
    ("shape-unknown-input", ["compile", "{dyn}", "--input-shape", "y:1,3,16,16", "-o", "{tmp}/o.tar"], INPUT,
     ["unknown input"]),
    ("shape-wrong-rank", ["compile", "{dyn}", "--input-shape", "1,3,16", "-o", "{tmp}/o.tar"], INPUT,
     ["does not fit"]),
    ("shape-symbolic-missing", ["compile", "{dyn}", "-o", "{tmp}/o.tar"], INPUT, ["--input-shape"]),
    ("shape-zoo-model", ["compile", "mobilevit_xxs", "--input-shape", "1,3,8,8", "-o", "{tmp}/o.tar"], INPUT,
     ["fixed input size 1x3x256x256"]),
    ("memory-224gib-host", ["compile", "{dyn}", "--input-shape", "x:100000000,3,16,16", "-o", "{tmp}/o.tar"],
     MEMORY, ["needs at least", "TiB", "of target host"]),
    ("memory-rpi4", ["compile", "{dyn}", "--input-shape", "x:2000000,3,16,16", "--target", "rpi4", "-o",
                     "{tmp}/o.tar"], MEMORY, ["4 GiB of target rpi4"]),
    # --- compile: the output
    ("out-trailing-slash", ["compile", "{onnx}", "-o", "{outdir}/"], OUTPUT, ["is a directory"]),
    ("out-existing-dir", ["compile", "{onnx}", "-o", "{outdir}"], OUTPUT, ["is a directory"]),
    ("out-proc", ["compile", "{onnx}", "-o", "/proc/edgevit.tar"], OUTPUT, ["/proc"]),
    ("out-proc-self", ["compile", "{onnx}", "-o", "/proc/self/environ"], OUTPUT, ["/proc"]),
    ("out-sys", ["compile", "{onnx}", "-o", "/sys/edgevit.tar"], OUTPUT, ["/sys"]),
    ("out-dev-null", ["compile", "{onnx}", "-o", "/dev/null"], OUTPUT, ["/dev"]),
    ("out-empty", ["compile", "{onnx}", "-o", ""], OUTPUT, ["directory"]),
    ("out-is-input", ["compile", "{onnx}", "-o", "{onnx}"], OUTPUT, ["destroy the input"]),
    ("out-is-input-via-dotdot", ["compile", "{onnx}", "-o", "{onnx_dotdot}"], OUTPUT, ["destroy the input"]),
    ("out-under-a-file", ["compile", "{onnx}", "-o", "{x_npy}/o.tar"], OUTPUT, ["not a directory"]),
    # --- targets
    ("target-climb", ["compile", "{onnx}", "--target", "../../etc/passwd", "-o", "{tmp}/o.tar"], UNKNOWN,
     ["unknown target"]),
    ("target-climb-to-registry", ["compile", "{onnx}", "--target", "../targets/rpi4", "-o", "{tmp}/o.tar"],
     UNKNOWN, ["unknown target"]),
    ("target-absolute-no-toml", ["compile", "{onnx}", "--target", "/etc/passwd", "-o", "{tmp}/o.tar"], UNKNOWN,
     ["unknown target"], ["/etc/passwd"]),
    ("target-missing-toml", ["compile", "{onnx}", "--target", "{tmp}/missing.toml", "-o", "{tmp}/o.tar"], UNKNOWN,
     ["not found"]),
    ("target-empty", ["compile", "{onnx}", "--target", "", "-o", "{tmp}/o.tar"], UNKNOWN, ["unknown target"]),
    ("target-upper-case", ["compile", "{onnx}", "--target", "RPI4", "-o", "{tmp}/o.tar"], UNKNOWN,
     ["unknown target"]),
    ("target-garbage-toml", ["compile", "{onnx}", "--target", "{target_garbage}", "-o", "{tmp}/o.tar"], TARGET,
     ["not valid TOML"]),
    ("target-binary-toml", ["compile", "{onnx}", "--target", "{target_binary}", "-o", "{tmp}/o.tar"], TARGET,
     ["cannot read"]),
    ("target-fpga-only", ["compile", "{onnx}", "--target", "pynq-z2", "-o", "{tmp}/o.tar"], TARGET, ["no [cpu]"]),
    # --- run: the artifact
    ("art-missing", ["run", "{tmp}/nope.tar"], ARTIFACT, ["not found"]),
    ("art-directory", ["run", "{tmp}"], ARTIFACT, ["directory"]),
    ("art-garbage", ["run", "{art_garbage}"], ARTIFACT, []),
    ("art-empty", ["run", "{art_empty}"], ARTIFACT, []),
    ("art-truncated", ["run", "{art_half}"], ARTIFACT, []),
    ("art-no-metadata", ["run", "{art_nometa}"], ARTIFACT, ["metadata.json"]),
    ("art-metadata-not-json", ["run", "{art_notjson}"], ARTIFACT, ["unreadable metadata.json"]),
    ("art-metadata-deep-json", ["run", "{art_deepjson}"], ARTIFACT, ["unreadable metadata.json"]),
    ("art-metadata-list", ["run", "{art_list}"], ARTIFACT, ["not an edgevit artifact"]),
    ("art-members-absolute", ["run", "{art_members_absolute}"], ARTIFACT, ["members"], ["{secret}"]),
    ("art-members-climb", ["run", "{art_members_climb}"], ARTIFACT, ["members"], ["{secret}"]),
    ("art-library-absolute", ["run", "{art_library_absolute}"], ARTIFACT, ["library"], ["{secret}"]),
    ("art-library-unhashed", ["run", "{art_library_unhashed}"], ARTIFACT, ["library", "hashed"]),
    ("art-reference-climb", ["run", "{art_reference_climb}"], ARTIFACT, ["reference"]),
    ("art-version-future", ["run", "{art_version_future}"], ARTIFACT, ["upgrade edgevit"]),
    ("art-huge-input-shape", ["run", "{art_huge_input}"], MEMORY, ["available"]),
    ("art-edited-input-shape", ["run", "{art_smaller_input}"], 9, ["compiled model failed"]),
    ("art-symlink-member", ["run", "{art_symlink_member}"], ARTIFACT, ["symbolic link"], ["{secret}"]),
    ("art-hardlink-member", ["run", "{art_hardlink_member}"], ARTIFACT, ["hard link"]),
    ("art-device-member", ["run", "{art_device_member}"], ARTIFACT, ["device file"]),
    ("art-directory-member", ["run", "{art_directory_member}"], ARTIFACT, ["directory"]),
    ("art-absolute-member", ["run", "{art_absolute_member}"], ARTIFACT, ["unsafe member name"]),
    ("art-climbing-member", ["run", "{art_climb_member}"], ARTIFACT, ["unsafe member name"]),
    ("art-duplicate-member", ["run", "{art_duplicate_member}"], ARTIFACT, ["twice"]),
    ("art-unlisted-member", ["run", "{art_unlisted_member}"], ARTIFACT, ["does not list"]),
    ("art-run-on-qemu", ["run", "{art}", "--device", "qemu"], ARTIFACT, ["--device local"]),
    # --- run: inputs and outputs
    ("in-npz", ["run", "{art}", "-i", "{x_npz}"], INPUT, [".npz"]),
    ("in-missing", ["run", "{art}", "-i", "{tmp}/nope.npy"], INPUT, ["cannot read input"]),
    ("in-directory", ["run", "{art}", "-i", "{tmp}"], INPUT, ["directory"]),
    ("in-int64", ["run", "{art}", "-i", "{x_int64}"], INPUT, ["float32[1, 3, 16, 16]", "int64"]),
    ("in-float64", ["run", "{art}", "-i", "{x_float64}"], INPUT, ["float64"]),
    ("in-wrong-shape", ["run", "{art}", "-i", "{x_shape}"], INPUT, ["[1, 3, 8, 16]"]),
    ("in-scalar", ["run", "{art}", "-i", "{x_scalar}"], INPUT, ["float32[]"]),
    ("in-strings", ["run", "{art}", "-i", "{x_strings}"], INPUT, ["<U1"]),
    ("in-pickled-object", ["run", "{art}", "-i", "{x_object}"], INPUT, ["cannot read input"]),
    ("in-text", ["run", "{art}", "-i", "{x_text}"], INPUT, ["cannot read input"]),
    ("in-empty-file", ["run", "{art}", "-i", "{empty_onnx}"], INPUT, ["cannot read input"]),
    ("in-two-for-one", ["run", "{art}", "-i", "{x_npy}", "-i", "{x_npy}"], INPUT, ["1 input(s)"]),
    ("runout-trailing-slash", ["run", "{art}", "--output", "{outdir}/"], OUTPUT, ["directory"]),
    ("runout-existing-dir", ["run", "{art}", "--output", "{outdir}"], OUTPUT, ["directory"]),
    ("runout-proc", ["run", "{art}", "--output", "/proc/out.npy"], OUTPUT, ["/proc"]),
    ("runout-is-artifact", ["run", "{art}", "--output", "{art}"], OUTPUT, ["destroy the input"]),
    ("runout-is-input", ["run", "{art}", "-i", "{x_npy}", "--output", "{x_npy}"], OUTPUT, ["destroy the input"]),
    ("bench-json-dir", ["bench", "{art}", "--json", "{outdir}/"], OUTPUT, ["directory"]),
    # --- hls
    ("hls-format-width-0", ["hls", "tiny_mobilevit", "-o", "{tmp}/h", "--format", "input=0,0"], INPUT, ["--format"]),
    ("hls-format-unknown-tensor", ["hls", "tiny_mobilevit", "-o", "{tmp}/h", "--format", "l99.out=16,6"], INPUT,
     ["'l99.out'", "not a tensor"]),
    ("hls-format-nonsense", ["hls", "tiny_mobilevit", "-o", "{tmp}/h", "--format", "nonsense"], INPUT, ["--format"]),
    ("hls-calib-0", ["hls", "tiny_mobilevit", "-o", "{tmp}/h", "--calib", "0"], INPUT, ["--calib"]),
    ("hls-cpu-board", ["hls", "tiny_mobilevit", "-o", "{tmp}/h", "--board", "rpi4"], TARGET, ["no [fpga]"]),
    ("hls-board-climb", ["hls", "tiny_mobilevit", "-o", "{tmp}/h", "--board", "../../x"], UNKNOWN,
     ["unknown target"]),
    ("hls-output-is-file", ["hls", "tiny_mobilevit", "-o", "{x_npy}"], INPUT, ["is a file"]),
    ("hls-no-output", ["hls", "tiny_mobilevit"], INPUT, ["-o DIR"]),
    ("hls-unknown-model", ["hls", "mobilevit_huge", "-o", "{tmp}/h"], UNKNOWN, ["unknown model"]),
    ("hls-report-not-project", ["hls", "report", "{tmp}"], INPUT, ["not an edgevit HLS project"]),
    ("hls-report-broken-project", ["hls", "report", "{hls_broken}"], ARTIFACT, ["not a readable"]),
    ("hls-report-csim", ["hls", "report", "{hls_broken}", "--csim"], INPUT, ["--csim does not apply"]),
    ("hls-build-format", ["hls", "build", "{hls_broken}", "--format", "a=16,6"], INPUT, ["--format does not apply"]),
    # --- flash: options and bundles (--dry-run: nothing would run anyway; the checks come first)
    ("flash-no-bundle", ["flash", "{tmp}/nope", "--board", "pynq-z2", "--host", "x@y", "--dry-run"], INPUT,
     ["no bundle"]),
    ("flash-cpu-board", ["flash", "{bundle_climb}", "--board", "rpi4", "--host", "x@y", "--dry-run"], TARGET,
     ["no [fpga]"]),
    ("flash-board-climb", ["flash", "{bundle_climb}", "--board", "../x", "--host", "x@y", "--dry-run"], UNKNOWN,
     ["unknown target"]),
    ("flash-port-0", ["flash", "{bundle_climb}", "--board", "pynq-z2", "--host", "x@y", "--port", "0"], INPUT,
     ["--port"]),
    ("flash-port-70000", ["flash", "{bundle_climb}", "--board", "pynq-z2", "--host", "x@y", "--port", "70000"],
     INPUT, ["--port"]),
    ("flash-timeout-0", ["flash", "{bundle_climb}", "--board", "pynq-z2", "--host", "x@y", "--timeout", "0"],
     INPUT, ["--timeout"]),
    ("flash-timeout-nan", ["flash", "{bundle_climb}", "--board", "pynq-z2", "--host", "x@y", "--timeout", "nan"],
     INPUT, ["--timeout"]),
    ("flash-count-0", ["flash", "{bundle_climb}", "--board", "pynq-z2", "--host", "x@y", "--count", "0"], INPUT,
     ["--count"]),
    ("flash-local-empty", ["flash", "{bundle_climb}", "--board", "pynq-z2", "--host", "local:"], INPUT,
     ["local:DIR"]),
    ("flash-proxycommand", ["flash", "{bundle_climb}", "--board", "pynq-z2", "--host=-oProxyCommand=id"], INPUT,
     ["--host"]),
    ("bundle-names-climb", ["flash", "{bundle_climb}", "--board", "pynq-z2", "--host", "x@y", "--dry-run"],
     ARTIFACT, ["not a file inside"], ["{secret}"]),
    ("bundle-names-absolute", ["flash", "{bundle_absolute}", "--board", "pynq-z2", "--host", "x@y", "--dry-run"],
     ARTIFACT, ["not a file inside"], ["{secret}"]),
    ("bundle-bitstream-absolute", ["flash", "{bundle_bit_absolute}", "--board", "pynq-z2", "--host", "x@y",
                                   "--dry-run"], ARTIFACT, ["not a file inside"], ["{secret}"]),
    ("bundle-json-list", ["flash", "{bundle_list}", "--board", "pynq-z2", "--host", "x@y", "--dry-run"], ARTIFACT,
     ["bundle.json"]),
    ("bundle-no-selftest", ["flash", "{bundle_no_selftest}", "--board", "pynq-z2", "--host", "x@y", "--dry-run"],
     ARTIFACT, ["selftest"]),
    ("bundle-count-string", ["flash", "{bundle_count_string}", "--board", "pynq-z2", "--host", "x@y", "--dry-run"],
     ARTIFACT, ["count"]),
    ("bundle-json-garbage", ["flash", "{bundle_garbage}", "--board", "pynq-z2", "--host", "x@y", "--dry-run"],
     ARTIFACT, ["bundle.json"]),
]


@pytest.mark.parametrize("case, argv, code, needles, forbidden",
                         [(c[0], c[1], c[2], c[3], c[4] if len(c) > 4 else []) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_refused_cleanly(ws, protect, case, argv, code, needles, forbidden):
    fill = {**ws, "onnx_dotdot": f"{ws['onnx'].parent}/../{ws['onnx'].parent.name}/{ws['onnx'].name}"}
    argv = [a.format(**fill) for a in argv]
    assert_refused(case, argv, code, needles, protect, [f.format(**fill) for f in forbidden])


def test_nothing_is_left_behind_by_refused_compiles(ws):
    assert not (ws["tmp"] / "o.tar").exists() and not (ws["tmp"] / "o.tar.partial").exists()
    assert not (ws["tmp"].parent / "written-by-tar").exists() and not (ws["tmp"] / "written-by-tar").exists()


def test_debug_shows_the_traceback_too(ws):
    from bad_input_harness import run_cli

    outcome = run_cli(["--debug", "run", ws["art_notjson"]])
    assert outcome.code == ARTIFACT and "Traceback" in outcome.stderr
    assert outcome.stderr.strip().splitlines()[-1].startswith("edgevit: error: ")
