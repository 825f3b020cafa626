"""Build and run C-simulations with g++, caching binaries by a hash of their sources and flags."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..errors import EdgevitError, ExecutionError, ToolMissingError
from ..settings import cache_dir

HW_INCLUDE = Path(__file__).resolve().parents[2] / "hw" / "include"
CXXFLAGS = ["-std=c++14", "-O2"]


def ap_types_dir() -> Path:
    """The Apache-2.0 ``ap_fixed`` headers shipped in the hls4ml wheel (found without importing hls4ml)."""
    spec = importlib.util.find_spec("hls4ml")
    if spec is None or not spec.submodule_search_locations:
        raise ToolMissingError("the ap_fixed headers come from hls4ml: pip install --no-deps hls4ml==1.3.0")
    return Path(list(spec.submodule_search_locations)[0]) / "templates" / "vivado" / "ap_types"


def compiler() -> str:
    gxx = shutil.which("g++")
    if gxx is None:
        raise ToolMissingError("g++ is needed for HLS C-simulation: apt-get install g++")
    return gxx


def build(sources: list[Path], include_dirs: list[Path]) -> Path:
    """Compile ``sources`` into an executable, reusing a cached binary when nothing changed."""
    includes = [ap_types_dir(), HW_INCLUDE, *include_dirs]
    digest = hashlib.sha256(" ".join(CXXFLAGS).encode())
    for src in sorted(sources):
        digest.update(Path(src).read_bytes())
    for inc in includes[1:]:
        for header in sorted(Path(inc).rglob("*.h")):
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


def write_i64(path: Path, values) -> None:
    np.asarray(values, dtype="<i8").tofile(path)


def read_i64(path: Path) -> np.ndarray:
    return np.fromfile(path, dtype="<i8")


def simulate_project(project: Path, probes: bool = False) -> tuple[list, list]:
    """Build and run a generated project's testbench on its ``input_<k>.bin`` files.

    Returns the raw outputs and (if ``probes``) the raw probe vectors, one per input.
    """
    project = Path(project)
    for stale in list(project.glob("output_*.bin")) + list(project.glob("probes_*.bin")):
        stale.unlink()
    exe = build([project / "top.cpp", project / "tb.cpp"], [project])
    proc = subprocess.run([str(exe), *(["probes"] if probes else [])], cwd=project, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ExecutionError(f"C-simulation of {project} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    count = len(list(project.glob("output_*.bin")))
    outputs = [read_i64(project / f"output_{k}.bin") for k in range(count)]
    probe = [read_i64(project / f"probes_{k}.bin") for k in range(count)] if probes else []
    return outputs, probe
