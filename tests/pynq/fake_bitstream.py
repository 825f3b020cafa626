"""Stand-ins for Vivado's outputs (no Vivado here): a ``.bit`` with a real header and no configuration data, and
a minimal ``.hwh`` naming the part. Enough for edgevit's checks and the simulated device; no FPGA would load them.
"""

from __future__ import annotations

import struct
from pathlib import Path

SYNC = b"\x0f\xf0\x0f\xf0\x0f\xf0\x0f\xf0\x00"


def _field(tag: bytes, text: str) -> bytes:
    data = text.encode() + b"\0"
    return tag + struct.pack(">H", len(data)) + data


def write_bit(path: Path, part: str = "7z020clg400") -> Path:
    """A ``.bit`` whose header says ``part`` (Zynq-7000 headers spell it like ``7z020clg400``)."""
    payload = b"\xff" * 64    # not a configuration stream: only the header matters here
    header = struct.pack(">H", len(SYNC)) + SYNC + struct.pack(">H", 1)
    header += _field(b"a", "edgevit_wrapper;UserID=0XFFFFFFFF;Version=2024.1") + _field(b"b", part)
    header += _field(b"c", "2026/12/01") + _field(b"d", "12:00:00") + b"e" + struct.pack(">I", len(payload))
    Path(path).write_bytes(header + payload)
    return Path(path)


def write_hwh(path: Path, device: str = "7z020", package: str = "clg400") -> Path:
    """A hardware handoff with only the ``SYSTEMINFO`` element (Vivado's has the whole block design)."""
    Path(path).write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<EDKSYSTEM>\n  <SYSTEMINFO ARCH="zynq" '
                          f'DEVICE="{device}" PACKAGE="{package}" SPEEDGRADE="-1"/>\n</EDKSYSTEM>\n')
    return Path(path)
