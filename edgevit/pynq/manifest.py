"""The bundle's driver configuration (``bundle.json``), its hashes, and what a bitstream says about its part.

Board side: standard library only, so the board and the host check a bundle with the same code.
``bundle.json`` holds the register map, the buffers and the sha256 of every other member. The hashes detect
damage and tampering with the members, not a forged ``bundle.json``: bundles are not signed.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

from ..errors import ArtifactError

CONFIG = "bundle.json"
FORMAT = "edgevit-pynq-bundle"
VERSION = 1
BITSTREAM = "edgevit.bit"
HWH = "edgevit.hwh"     # pynq.Overlay wants the .hwh beside the .bit with the same stem
TAIL_JSON, TAIL_NPZ = "cpu_tail.json", "cpu_tail.npz"    # the model's part after the accelerator, if any
CTRL_START, CTRL_DONE, CTRL_IDLE = 0x1, 0x2, 0x4


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load(bundle: Path) -> dict:
    """Read ``bundle.json`` and check every member against its hash.

    Returns
    -------
    dict
        The driver configuration.

    Raises
    ------
    ArtifactError
        If ``bundle.json`` is missing or unreadable, or a member is missing or differs from its hash.
    """
    bundle = Path(bundle)
    try:
        cfg = json.loads((bundle / CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{bundle} is not an edgevit PYNQ bundle ({CONFIG}: {e}); make one with "
                            f"`edgevit bundle PROJECT -o {bundle}`") from None
    if cfg.get("format") != FORMAT or cfg.get("version") != VERSION or not isinstance(cfg.get("files"), dict):
        raise ArtifactError(f"{bundle / CONFIG} is not a version-{VERSION} {FORMAT} configuration")
    for name, digest in cfg["files"].items():
        path = bundle / name
        if not path.is_file():
            raise ArtifactError(f"bundle {bundle} is incomplete: {name} is missing")
        if sha256(path) != digest:
            raise ArtifactError(f"bundle {bundle} was modified or damaged: {name} does not match its sha256")
    return cfg


def normalize_part(part: str) -> str:
    """A part name as the tools spell it in ``.bit`` headers and ``.hwh`` files, reduced to device+package.

    ``xc7z020clg400-1`` (target file), ``7z020clg400`` (Zynq-7000 ``.bit``) and ``xczu9eg-ffvb1156-2-e``
    all reduce to the device and package without the ``xc`` prefix, dashes or speed grade.
    """
    p = part.strip().lower()
    p = re.sub(r"^x[caq]", "", p)
    p = re.sub(r"-\d.*$", "", p)       # speed grade and temperature suffix
    return p.replace("-", "")


def bitstream_part(path: Path) -> str:
    """The part a Xilinx ``.bit`` file was built for (field ``b`` of its header).

    Raises
    ------
    ArtifactError
        If the file is not a ``.bit`` with a readable header.
    """
    data = Path(path).read_bytes()[:4096]
    # Header: a 2-byte length and 9 bytes of sync words, 0x0001, then tagged fields 'a'..'e' (2-byte lengths).
    pos = 2 + struct.unpack(">H", data[:2])[0] + 2 if len(data) > 2 else 0
    fields = {}
    while pos + 3 <= len(data) and data[pos:pos + 1] in (b"a", b"b", b"c", b"d"):
        n = struct.unpack(">H", data[pos + 1:pos + 3])[0]
        fields[data[pos:pos + 1].decode()] = data[pos + 3:pos + 3 + n].rstrip(b"\0").decode("ascii", "replace")
        pos += 3 + n
    if "b" not in fields:
        raise ArtifactError(f"{path} is not a Xilinx .bit file (no part name in its header)")
    return fields["b"]


def hwh_part(path: Path) -> str | None:
    """The part named in a Vivado hardware handoff (``SYSTEMINFO`` element), or None if it names none."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise ArtifactError(f"{path} is not a readable .hwh file: {e}") from None
    info = root.find(".//SYSTEMINFO")
    if info is None or not info.get("DEVICE"):
        return None
    return info.get("DEVICE", "") + info.get("PACKAGE", "")


_SYNC = b"\x0f\xf0\x0f\xf0\x0f\xf0\x0f\xf0\x00"


def write_stand_in_bit(path: Path, part: str) -> Path:
    """A ``.bit`` whose header names ``part`` (what :func:`bitstream_part` reads) and that holds no configuration
    data: a stand-in for Vivado's output, for the simulated device and the tests. No FPGA would load it."""
    def field(tag: bytes, text: str) -> bytes:
        data = text.encode() + b"\0"
        return tag + struct.pack(">H", len(data)) + data

    payload = b"\xff" * 64
    header = struct.pack(">H", len(_SYNC)) + _SYNC + struct.pack(">H", 1)
    header += field(b"a", "edgevit_stand_in;UserID=0XFFFFFFFF;Version=2024.1") + field(b"b", part)
    header += field(b"c", "2026/12/01") + field(b"d", "12:00:00") + b"e" + struct.pack(">I", len(payload))
    Path(path).write_bytes(header + payload)
    return Path(path)


def write_stand_in_hwh(path: Path, device: str, package: str = "") -> Path:
    """A hardware handoff with only the ``SYSTEMINFO`` element (what :func:`hwh_part` reads; Vivado's has the
    whole block design)."""
    Path(path).write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<EDKSYSTEM>\n  <SYSTEMINFO '
                          f'DEVICE="{device}" PACKAGE="{package}" SPEEDGRADE="-1"/>\n</EDKSYSTEM>\n')
    return Path(path)
