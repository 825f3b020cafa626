"""The target registry: one TOML file per board in ``targets/``.

Adding a board is adding a file. A target has a ``[cpu]`` section (compiled with TVM) and/or an ``[fpga]``
section (the HLS backend). Fields set to ``"detect"`` are filled from the machine edgevit runs on.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EdgevitError, UnknownNameError
from .runtime import host_arch
from .settings import getenv

TARGETS_DIR = Path(getenv("TARGETS", str(Path(__file__).resolve().parent.parent / "targets")))


@dataclass(frozen=True)
class Tool:
    """An external command and the Debian package that provides it."""

    command: str
    apt: str = ""


@dataclass(frozen=True)
class CpuTarget:
    """The CPU side of a board: what TVM compiles for and how its code is linked and executed here."""

    arch: str
    tvm: dict
    cross_compiler: Tool | None = None
    emulator: Tool | None = None

    @property
    def is_cross(self) -> bool:
        return self.cross_compiler is not None


@dataclass(frozen=True)
class FpgaTarget:
    """The programmable-logic side of a board: part and resources the HLS estimator budgets against."""

    part: str
    family: str
    clock_mhz: float
    dsp: int
    bram36: int
    lut: int
    ff: int
    axi_bits: int
    board_part: str = ""  # Vivado board-file id (its PS presets); needs the board files installed in Vivado


@dataclass(frozen=True)
class Target:
    """A board described by a file in ``targets/``."""

    name: str
    description: str
    cpu: CpuTarget | None = None
    fpga: FpgaTarget | None = None
    source: Path | None = field(default=None, compare=False)

    def require_cpu(self) -> CpuTarget:
        """Return the CPU side or explain that this board has none edgevit can compile for."""
        if self.cpu is None:
            raise EdgevitError(
                f"target '{self.name}' has no [cpu] section in {self.source}: it cannot be compiled for with "
                f"TVM. {'Use `edgevit hls` for its FPGA.' if self.fpga else ''}".strip()
            )
        return self.cpu

    def require_fpga(self) -> FpgaTarget:
        """Return the FPGA side or explain that this board has none."""
        if self.fpga is None:
            boards = ", ".join(t.name for t in all_targets() if t.fpga)
            raise EdgevitError(f"target '{self.name}' has no [fpga] section; FPGA boards: {boards}")
        return self.fpga


def _detect_cpu(tvm: dict) -> dict:
    if tvm.get("mcpu") != "detect":
        return tvm
    from .backends import tvm_compiler  # TVM knows the CPU name LLVM uses; import only when needed.

    return {**tvm, "mcpu": tvm_compiler.host_cpu_name()}


def _tool(spec) -> Tool | None:
    return Tool(**spec) if spec else None


def _parse(path: Path) -> Target:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise EdgevitError(f"target file {path} is not valid TOML: {exc}") from None
    cpu = fpga = None
    if "cpu" in data:
        c = data["cpu"]
        arch = host_arch() if c["arch"] == "detect" else c["arch"]
        cpu = CpuTarget(arch, dict(c["tvm"]), _tool(c.get("cross_compiler")), _tool(c.get("emulator")))
    if "fpga" in data:
        fpga = FpgaTarget(**data["fpga"])
    return Target(data["name"], data.get("description", ""), cpu, fpga, path)


def all_targets() -> list[Target]:
    """Every target in ``targets/``, sorted by name (CPU names are not detected here)."""
    return sorted((_parse(p) for p in TARGETS_DIR.glob("*.toml")), key=lambda t: t.name)


def get_target(name: str) -> Target:
    """Look up a target by name, filling in detected fields.

    Raises
    ------
    UnknownNameError
        If no file in ``targets/`` defines ``name``; the message lists the known targets.
    """
    path = TARGETS_DIR / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(t.name for t in all_targets())
        raise UnknownNameError(f"unknown target '{name}'. Known targets: {known}")
    target = _parse(path)
    if target.cpu is not None:
        target = Target(target.name, target.description,
                        CpuTarget(target.cpu.arch, _detect_cpu(target.cpu.tvm), target.cpu.cross_compiler,
                                  target.cpu.emulator), target.fpga, path)
    return target
