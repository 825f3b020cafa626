"""Stand-ins for Vivado's outputs (no Vivado here), with the PYNQ-Z2's part as default: a ``.bit`` with a real
header and no configuration data, and a minimal ``.hwh`` naming the part (``edgevit.pynq.manifest``'s writers).
Enough for edgevit's checks and the simulated device; no FPGA would load them.
"""

from __future__ import annotations

from pathlib import Path

from edgevit.pynq.manifest import write_stand_in_bit, write_stand_in_hwh


def write_bit(path: Path, part: str = "7z020clg400") -> Path:
    """A ``.bit`` whose header says ``part`` (Zynq-7000 headers spell it like ``7z020clg400``)."""
    return write_stand_in_bit(path, part)


def write_hwh(path: Path, device: str = "7z020", package: str = "clg400") -> Path:
    """A hardware handoff naming ``device`` and ``package``."""
    return write_stand_in_hwh(path, device, package)
