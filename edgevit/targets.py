"""The target registry: one TOML file per board in ``targets/``.

Adding a board is adding a file. A target has a ``[cpu]`` section (compiled with TVM) and/or an ``[fpga]``
section (the HLS backend). Fields set to ``"detect"`` are filled from the machine edgevit runs on: the
architecture and memory here, the CPU name LLVM uses (``mcpu``) by the build, which asks TVM
(``backends.tvm_compiler.target_dict``): targets are data and know nothing of the compiler. Every file
is checked against a schema (``TARGET_SCHEMA``) when read; a target is named either by its registry name
(``rpi4``) or by the explicit path of a ``.toml`` file, nothing else.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TargetError, UnknownNameError
from .runtime import host_arch, schema
from .runtime.memory import meminfo
from .settings import data_path, getenv

TARGETS_DIR = Path(getenv("TARGETS", str(data_path("targets"))))


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
    memory_bytes: int | None = None   # the board's RAM: compile refuses models estimated not to fit

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
    ddr_gbps: float       # the PS DDR's peak bandwidth (GB/s, reads and writes together), which all HP ports share
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
            raise TargetError(
                f"target '{self.name}' has no [cpu] section in {self.source}: it cannot be compiled for with "
                f"TVM. {'Use `edgevit hls` for its FPGA.' if self.fpga else ''}".strip()
            )
        return self.cpu

    def require_fpga(self) -> FpgaTarget:
        """Return the FPGA side or explain that this board has none."""
        if self.fpga is None:
            boards = ", ".join(t.name for t in all_targets() if t.fpga)
            raise TargetError(f"target '{self.name}' has no [fpga] section; FPGA boards: {boards}")
        return self.fpga


# Registry names: what a file name in targets/ can be; never a path.
NAME = r"[a-z0-9][a-z0-9_-]{0,63}"
_TOOL = schema.Record({"command": schema.matching(r"[A-Za-z0-9_.+-]{1,128}", "a command name (no path or spaces)")},
                      {"apt": schema.matching(r"[a-z0-9][a-z0-9.+-]{0,127}", "a Debian package name")})
TARGET_SCHEMA = schema.Record(
    required={"name": schema.matching(NAME, "a lower-case name (letters, digits, '-', '_')")},
    optional={
        "description": schema.TEXT,
        "cpu": schema.Record(
            required={"arch": schema.matching(r"detect|[a-z0-9_]{1,32}", "'detect' or an architecture name"),
                      "tvm": schema.Record({"kind": schema.TEXT}, open=True)},
            optional={"cross_compiler": _TOOL, "emulator": _TOOL,
                      "memory_mib": schema.Either((schema.int_in(1, 1 << 40), schema.one_of("detect")))}),
        "fpga": schema.Record(
            required={"part": schema.TEXT, "family": schema.TEXT,
                      "clock_mhz": schema.number_in(1, 2000), "dsp": schema.int_in(1, 1 << 24),
                      "bram36": schema.int_in(1, 1 << 24), "lut": schema.int_in(1, 1 << 30),
                      "ff": schema.int_in(1, 1 << 30), "axi_bits": schema.one_of(32, 64, 128, 256, 512),
                      "ddr_gbps": schema.number_in(0.1, 10000)},
            optional={"board_part": schema.TEXT}),
    })


def _tool(spec) -> Tool | None:
    return Tool(**spec) if spec else None


def _memory(spec) -> int | None:
    if spec == "detect":
        return meminfo("MemTotal")
    return spec * (1 << 20) if spec is not None else None


def _parse(path: Path) -> Target:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"target file {path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"cannot read target file {path}: {exc}") from None
    try:
        schema.check(data, TARGET_SCHEMA)
    except schema.SchemaViolation as exc:
        raise TargetError(f"target file {path}: {exc}") from None
    if "cpu" not in data and "fpga" not in data:
        raise TargetError(f"target file {path} has neither a [cpu] nor an [fpga] section")
    cpu = fpga = None
    if "cpu" in data:
        c = data["cpu"]
        arch = host_arch() if c["arch"] == "detect" else c["arch"]
        cpu = CpuTarget(arch, dict(c["tvm"]), _tool(c.get("cross_compiler")), _tool(c.get("emulator")),
                        _memory(c.get("memory_mib")))
    if "fpga" in data:
        fpga = FpgaTarget(**data["fpga"])
    return Target(data["name"], data.get("description", ""), cpu, fpga, path)


def all_targets() -> list[Target]:
    """Every target in ``targets/``, sorted by name (CPU names are not detected here)."""
    return sorted((_parse(p) for p in TARGETS_DIR.glob("*.toml")), key=lambda t: t.name)


def _registry_names() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml") if re.fullmatch(NAME, p.stem))


def _resolve(spec: str) -> Path:
    """The file a target argument names: a registry name, or an explicit path ending in ``.toml``."""
    if spec.endswith(".toml"):
        path = Path(spec)
        if not path.is_file():
            raise UnknownNameError(f"target file {spec} not found (a target is a name from `edgevit targets` or "
                                   "the path of a .toml file)")
        return path
    if re.fullmatch(NAME, spec) and spec in _registry_names():
        return TARGETS_DIR / f"{spec}.toml"
    raise UnknownNameError(f"unknown target '{spec}'. Known targets: {', '.join(_registry_names())} "
                           "(or give the path of a .toml file)")


def get_target(name: str) -> Target:
    """Look up a target by registry name (``rpi4``) or by the path of a ``.toml`` file.

    Raises
    ------
    UnknownNameError
        If ``name`` is neither a name in ``targets/`` nor an existing ``.toml`` file; lists the known targets.
    TargetError
        If the file is not valid TOML or does not fit the target schema (the message names the field), or a
        registry file's ``name`` differs from its file name.
    """
    path = _resolve(name)
    target = _parse(path)
    if path.parent == TARGETS_DIR and target.name != path.stem:
        raise TargetError(f"target file {path}: field 'name' is '{target.name}', but the file is {path.name}")
    return target
