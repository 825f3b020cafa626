"""This machine's memory, as Linux reports it, and byte counts for messages (standard library only)."""

from __future__ import annotations

from pathlib import Path


def meminfo(field: str = "MemTotal") -> int | None:
    """A ``/proc/meminfo`` field in bytes (``MemTotal``, ``MemAvailable``), or None where there is none."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == field:
                return int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def format_bytes(count: float) -> str:
    """``1536`` -> ``1.5 KiB``: binary units, three significant digits."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    step = 0
    while abs(count) >= 1024 and step < len(units) - 1:
        count /= 1024
        step += 1
    return f"{int(count)} B" if step == 0 else f"{count:.3g} {units[step]}"
