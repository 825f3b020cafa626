"""The instruction-counting qemu plugin (tools/qemu_plugin) on small aarch64 programs: counts are exact, grow by
the loop body per iteration, classes are decoded right, and the marked region holds only the marked work."""

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
pytestmark = [pytest.mark.qemu, pytest.mark.skipif(
    not (shutil.which("qemu-aarch64") and shutil.which("aarch64-linux-gnu-gcc")),
    reason="needs qemu-user (dynamic qemu-aarch64) and gcc-aarch64-linux-gnu (tools/setup.sh)")]

LOOP = r"""
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    volatile long sum = 0;
    for (long i = 0; i < n; i++) sum += i;
    printf("%ld\n", sum);
    return 0;
}
"""


def load_tool():
    spec = importlib.util.spec_from_file_location("count_instructions", TOOLS / "count_instructions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counts_grow_by_the_loop_body(tmp_path):
    plugin = load_tool().build_plugin()
    (tmp_path / "loop.c").write_text(LOOP)
    subprocess.run(["aarch64-linux-gnu-gcc", "-O1", "-o", str(tmp_path / "loop"), str(tmp_path / "loop.c")],
                   check=True)

    def count(n, cpu="cortex-a72"):
        out = tmp_path / f"{cpu}-{n}.txt"
        subprocess.run(["qemu-aarch64", "-cpu", cpu, "-plugin", f"{plugin},out={out}", "-L",
                        "/usr/aarch64-linux-gnu", str(tmp_path / "loop"), str(n)], check=True, capture_output=True)
        whole, region = load_tool().read_counts(out)
        assert region["total"] == 0  # no markers in this program
        return whole["total"]

    base, more, most = count(1000), count(3000), count(5000)
    per_iteration = (more - base) / 2000
    # the loop body (a few instructions) per iteration; printing a longer sum adds a few in total
    assert (most - more) / 2000 == pytest.approx(per_iteration, abs=0.05)
    assert 3 <= per_iteration <= 10
    assert count(1000) == base  # deterministic: the same run counts the same
    # on another core model libc picks other string routines (start-up differs), the loop body does not
    assert (count(3000, "cortex-a76") - count(1000, "cortex-a76")) / 2000 == per_iteration


# One of each class per iteration (see the plugin's header), plus stores and integer work that are "other".
CLASSES = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
float buf[64] __attribute__((aligned(16)));
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    float *p = buf;
    lseek(-1, 0x45564954, SEEK_SET);
    for (long i = 0; i < n; i++) {
        __asm__ volatile(
            "fmla v0.4s, v1.4s, v2.4s\n fmla v0.4s, v1.4s, v2.s[1]\n fmla v3.2d, v4.2d, v5.2d\n"
            "fmadd s0, s1, s2, s3\n"
            "sdot v6.4s, v7.16b, v8.16b\n sdot v6.4s, v7.16b, v8.4b[2]\n"
            "smlal v9.4s, v10.4h, v11.4h\n smlal2 v9.4s, v10.8h, v11.8h\n sadalp v12.4s, v13.8h\n"
            "smull v14.8h, v15.8b, v16.8b\n"
            "ldr q20, [%0]\n ldur q21, [%0, #4]\n ldp q22, q23, [%0]\n ld1 {v24.4s}, [%0]\n"
            "ld1 {v24.4s, v25.4s}, [%0]\n"
            "ldr d26, [%0]\n ld1 {v27.2s}, [%0]\n"
            "ldr s28, [%0]\n ldp s28, s29, [%0]\n ldr s28, [%0, #8]!\n sub %0, %0, #8\n ldr h30, [%0]\n"
            "ld1r {v31.4s}, [%0]\n ld1 {v31.s}[1], [%0]\n"
            "str q20, [%0, #128]\n stp s0, s1, [%0, #128]\n"
            : "+r"(p) : : "memory", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10", "v11", "v12",
              "v13", "v14", "v15", "v16", "v20", "v21", "v22", "v23", "v24", "v25", "v26", "v27", "v28", "v29", "v30",
              "v31");
    }
    lseek(-1, 0x45564955, SEEK_SET);
    printf("%f\n", buf[0]);
    return 0;
}
"""


def test_classes_and_the_marked_region(tmp_path):
    tool = load_tool()
    plugin = tool.build_plugin()
    (tmp_path / "classes.c").write_text(CLASSES)
    subprocess.run(["aarch64-linux-gnu-gcc", "-O1", "-march=armv8.2-a+dotprod", "-o", str(tmp_path / "classes"),
                    str(tmp_path / "classes.c")], check=True)

    def region(n):
        out = tmp_path / f"{n}.txt"
        subprocess.run(["qemu-aarch64", "-cpu", "cortex-a76", "-plugin", f"{plugin},out={out}", "-L",
                        "/usr/aarch64-linux-gnu", str(tmp_path / "classes"), str(n)], check=True, capture_output=True)
        whole, marked = tool.read_counts(out)
        assert whole["total"] > marked["total"]  # start-up and printing are outside the region
        return marked

    small, large = region(1000), region(3000)
    per_iteration = {k: (large[k] - small[k]) / 2000 for k in small}
    assert per_iteration == {"total": 29, "fmla": 3, "fmadd": 1, "dot": 2, "int_mac": 4, "load_q": 5, "load_d": 2,
                             "load_s": 4, "load_lane": 1, "load_dup": 1, "other": 6}
    # the region holds the loop and the call that ends it, nothing that scales otherwise
    assert small["fmla"] == 3000 and large["load_dup"] == 3000
    assert abs(small["total"] - 29 * 1000) < 100


def test_plugin_refuses_unknown_arguments(tmp_path):
    plugin = load_tool().build_plugin()
    proc = subprocess.run(["qemu-aarch64", "-plugin", f"{plugin},bogus=1", "-L", "/usr/aarch64-linux-gnu",
                           "/bin/true"], capture_output=True, text=True)
    assert proc.returncode != 0 and "insn_count: unknown" in proc.stderr


def test_onnxruntime_aarch64_is_counted_with_an_arm_cpuinfo(tmp_path):
    """onnxruntime's aarch64 wheel imports under qemu only with an ARM /proc/cpuinfo; then it is counted."""
    from tiny_onnx_models import tiny_cnn_onnx

    tool = load_tool()
    rows = tool.count_onnxruntime(tiny_cnn_onnx(tmp_path / "cnn.onnx"), ["cortex-a72"], warm=1, runs=2)
    assert len(rows) == 1 and 1e4 < rows[0]["instructions_per_inference"] < 1e8
    assert rows[0]["per_inference"]["fmla"] > 0  # its convolution runs on vector multiply-adds
    root = tool.cache_dir("emulation", "root-cortex-a72")
    assert "CPU part\t: 0xd08" in (root / "proc" / "cpuinfo").read_text()


def test_litert_aarch64_is_counted(tmp_path):
    """LiteRT's aarch64 wheel (XNNPACK) on the tiny .tflite fixture; the same count twice (marked region)."""
    tool = load_tool()
    model = Path(__file__).resolve().parents[1] / "backends" / "data" / "tiny.tflite"
    first, second = (tool.count_litert(model, ["cortex-a72"], warm=1, runs=2)[0] for _ in range(2))
    assert 1e3 < first["instructions_per_inference"] < 1e7
    # near-equal, not equal: on a loaded machine two runs differed by 4.5 of ~20,150 instructions (0.02 %; seen
    # 2026-12-06, cause not found: LiteRT's own code, not the counter, which is exact on edgevit's builds)
    for name, value in first["per_inference"].items():
        assert second["per_inference"][name] == pytest.approx(value, rel=1e-3, abs=2), name


def test_profile_names_the_kernels_of_an_aarch64_build(tmp_path):
    """--profile: the model's kernels by name (parallel-loop bodies, which have no symbol, under the kernel that
    launches them), and the per-kernel counts add up to the whole inference's."""
    from tiny_onnx_models import tiny_cnn_onnx

    from edgevit.compiler import compile_for_target
    from edgevit.frontend import load_model
    from edgevit.targets import get_target

    tool = load_tool()
    model = load_model(str(tiny_cnn_onnx(tmp_path / "cnn.onnx")))
    compile_for_target(model, get_target("rpi4"), tmp_path / "cnn.tar")
    rows = tool.profile_artifact(tmp_path / "cnn.tar", "cortex-a72", warm=1, runs=1)
    total = tool.count_artifact(tmp_path / "cnn.tar", ["cortex-a72"], warm=1, runs=1)[0]["instructions_per_inference"]
    # within 2 %: a block that qemu translates again with another length keeps its last length in the profile
    assert sum(r["total"] for r in rows) == pytest.approx(total, rel=0.02)
    kernels = [r for r in rows if "conv2d" in r["function"]]
    assert kernels and kernels[0]["fmla"] > 0
    assert not any(r["function"] == "model.so (no symbol)" for r in rows)


def test_builds_with_dot_products_are_not_counted_on_cores_without_them():
    """An rpi5 build (``+dotprod``: ``sdot``) is counted on the Cortex-A76 only; an rpi4 build on both."""
    from types import SimpleNamespace

    from edgevit.targets import get_target

    tool = load_tool()

    def built_for(target):
        return SimpleNamespace(metadata={"target": {"tvm": get_target(target).require_cpu().tvm}})

    assert tool._missing_features(built_for("rpi5"), "cortex-a72") == ["+dotprod"]
    assert tool._missing_features(built_for("rpi5"), "cortex-a76") == []
    assert tool._missing_features(built_for("rpi4"), "cortex-a72") == []
    assert tool._missing_features(built_for("rpi4"), "cortex-a76") == []
