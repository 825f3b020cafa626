"""Build a generated project's ``edgevit_top`` as a shared library, the accelerator of the off-board board.

Host side. The library is the project's own ``top.cpp`` (the same source Vitis HLS synthesises and the
testbench runs) plus a small C entry point that copies 16-bit words to and from ``ap_int<16>``; g++ and the
flags are those of :mod:`edgevit.hls.csim`. Cached by a hash of the sources under ``cache_dir("hls")``.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from ..errors import EdgevitError
from ..hls import csim
from ..settings import cache_dir

ENTRY_CPP = (csim.HW_TEMPLATES / "simlib_entry.cpp").read_text()


def build(project: Path) -> Path:
    """Compile ``project``'s ``top.cpp`` and the C entry point into a shared library (cached).

    ``project`` is an ``edgevit hls`` project or a bundle (both hold ``top.cpp`` and ``config.h``).

    Raises
    ------
    ToolMissingError
        If g++ or the ap_int headers (hls4ml wheel) are missing.
    """
    project = Path(project)
    sources = [project / "top.cpp", project / "config.h"]
    digest = hashlib.sha256(" ".join(csim.CXXFLAGS).encode() + ENTRY_CPP.encode())
    for src in sources:
        digest.update(src.read_bytes())
    for header in sorted(csim.HW_INCLUDE.rglob("*.h")):
        digest.update(header.name.encode() + header.read_bytes())
    lib = cache_dir("hls") / f"simlib-{digest.hexdigest()[:20]}.so"
    if lib.exists():
        return lib
    entry = lib.with_suffix(".cpp")
    entry.write_text(ENTRY_CPP)
    cmd = [csim.compiler(), *csim.CXXFLAGS, "-shared", "-fPIC", f"-I{csim.ap_types_dir()}", f"-I{csim.HW_INCLUDE}",
           f"-I{project}", str(project / "top.cpp"), str(entry), "-o", str(lib) + ".tmp"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EdgevitError(f"g++ failed on the simulated accelerator of {project}:\n{proc.stderr[-3000:]}")
    Path(str(lib) + ".tmp").rename(lib)
    return lib
