"""Build and run C-simulations with g++, caching binaries by a hash of their sources and flags."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..errors import EdgevitError, ExecutionError, ToolMissingError
from ..settings import cache_dir, data_path

HW_INCLUDE = data_path("hw", "include")
HW_TEMPLATES = HW_INCLUDE.parent / "templates"   # the generated project's files, with placeholders
CXXFLAGS = ["-std=c++14", "-O2"]


def ap_types_dir() -> Path:
    """The Apache-2.0 ``ap_int``/``ap_fixed`` headers shipped in the hls4ml wheel (found without importing hls4ml)."""
    spec = importlib.util.find_spec("hls4ml")
    if spec is None or not spec.submodule_search_locations:
        raise ToolMissingError("the ap_fixed headers come from hls4ml: pip install --no-deps hls4ml==1.3.0")
    return Path(list(spec.submodule_search_locations)[0]) / "templates" / "vivado" / "ap_types"


def compiler() -> str:
    gxx = shutil.which("g++")
    if gxx is None:
        raise ToolMissingError("g++ is needed for HLS C-simulation: apt-get install g++")
    return gxx


def build(sources: list[Path], include_dirs: list[Path], headers: list[Path] = ()) -> Path:
    """Compile ``sources`` into an executable, reusing a cached binary when nothing changed.

    The cache key covers the sources, the unit library and ``headers`` (the project's own, e.g. ``config.h``).
    """
    includes = [ap_types_dir(), HW_INCLUDE, *include_dirs]
    digest = hashlib.sha256(" ".join(CXXFLAGS).encode())
    for src in [*sorted(sources), *headers]:
        digest.update(Path(src).read_bytes())
    for header in sorted(HW_INCLUDE.rglob("*.h")):
        digest.update(header.name.encode() + header.read_bytes())
    exe = cache_dir("hls") / f"csim-{digest.hexdigest()[:20]}"
    if exe.exists():
        return exe
    cmd = [compiler(), *CXXFLAGS, *(f"-I{d}" for d in includes), *map(str, sources), "-o", str(exe) + ".tmp"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EdgevitError(f"g++ failed on the generated C-simulation ({sources[0]}):\n{proc.stderr[-3000:]}")
    Path(str(exe) + ".tmp").rename(exe)
    return exe


def simulate_project(project: Path, probes: bool = False) -> tuple[list, list]:
    """Build and run a generated project's testbench on ``testdata/inputs.bin``.

    Returns the raw outputs, one array per input, and (if ``probes``) per input a dict of every tensor's raw
    values (read from the arena after the run) plus ``"trace"``, the attention units' row completion steps,
    ``"moe_reads"``, the expert weight words each MoE layer read per expert (layers in program order), and
    ``"unit_loops"``, per linear_unit, depthwise_unit, im2col, unfold_fold, concat, attention_unit, layernorm_unit,
    l2_normalize, additive_attention and qgemm_unit call in call order a row (iterations of its
    pipelined loops, loops run).
    A mismatch against ``testdata/golden.bin`` is not an error here: the caller compares tensor by tensor.
    """
    project = Path(project)
    data = project / "testdata"
    for stale in ("outputs.bin", "arenas.bin", "trace.bin", "moe_reads.bin", "unit_loops.bin"):
        (data / stale).unlink(missing_ok=True)
    exe = build([project / "top.cpp", project / "tb.cpp"], [project], [project / "config.h"])
    proc = subprocess.run([str(exe), *(["dump"] if probes else [])], cwd=project, capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise ExecutionError(f"C-simulation of {project} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    table = json.loads((project / "program.json").read_text())["table"]
    head = table["header"]
    outputs = list(np.fromfile(data / "outputs.bin", "<i2").astype(np.int64).reshape(-1, head["output_words"]))
    dumps = []
    if probes:
        arenas = np.fromfile(data / "arenas.bin", "<i2").astype(np.int64).reshape(len(outputs), -1)
        traces = np.fromfile(data / "trace.bin", "<i4").astype(np.int64).reshape(len(outputs), -1)
        reads = np.fromfile(data / "moe_reads.bin", "<i8").reshape(len(outputs), -1)
        loops = np.fromfile(data / "unit_loops.bin", "<i8").reshape(len(outputs), -1, 2)
        for arena, trace, read, loop in zip(arenas, traces, reads, loops):
            dumps.append({**{name: arena[off:off + n] for name, (off, n) in table["tensors"].items()},
                          "trace": trace, "moe_reads": read, "unit_loops": loop[loop[:, 1] > 0]})
    return outputs, dumps
