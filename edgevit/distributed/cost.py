"""The pipeline planner's cost model: what a run of graph units costs on a node kind, and what a tensor costs
on a link.

A *profile* is an editable JSON file (``edgevit plan ... --profile P.json`` writes or reads it)::

    {"format": "edgevit-profile", "model": "...", "model_sha256": "...",
     "input_bytes": 786432,
     "units": [{"start": 0, "end": 26, "macs": 52500000, "ops": 1200000, "out_bytes": 393216,
                "weight_bytes": 24192}, ...],
     "kinds": {"x86":  {"target": "host", "unit_ms": [0.41, ...], "link_mb_s": 900.0, "message_ms": 0.08,
                        "source": "measured on node x86 (127.0.0.1:9091) through RPC"},
               "rpi4": {"target": "rpi4", "unit_ms": [17.5, ...], "link_mb_s": 100.0, "message_ms": 0.3,
                        "source": "estimate: MACs at 3.0 GMAC/s (not measured)"},
               "zcu102": {"target": "zcu102", "only_units": [0, 5], "unit_ms": [9.57, 0, 0, ...], ...,
                          "source": "HLS estimator: 2870000 cycles at 300 MHz (analytic, not measured)"}}}

Per kind: each unit's node-side compute time, the bandwidth into a node of that kind and the fixed cost of one
message. Where the numbers come from is the ``source``: measured through RPC on a node that runs natively,
taken from a file measured on a real board (make one on the board with ``edgevit plan`` against a tracker the
board's node is registered with, then edit or keep it), or estimated from the units' MACs. A node emulated
under qemu is never timed: qemu's speed says nothing about a board's.

An FPGA node (``edgevit node --fpga BUNDLE``) runs exactly one thing, its bundle's accelerator part: the units
``only_units = [0, u]`` (the model's input up to the tensor where the accelerator stops). Its time is the HLS
estimator's latency at the board's clock, on the first unit (the others' entries are unused); the C-simulation
that stands in for the PL off-board is never timed either.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from ..runtime.schema import SchemaViolation, check

PROFILE_FORMAT = "edgevit-profile"
# Sustained fp32 throughput (4 threads) used when a kind is neither measured nor profiled. Rough, labelled as
# estimates in every plan: Pi 4 from EfficientFormer-L1's 1.3 GMACs in ~440 ms (TFLite FP16, 4 threads);
# Pi 5 ~2.5x a Pi 4 (Cortex-A76 at 2.4 GHz); the others by clock and core count relative to the Pi 4.
ESTIMATED_GMACS = {"rpi4": 3.0, "rpi5": 7.5, "jetson-nano": 2.5, "zcu102": 2.0, "host": 20.0}
DEFAULT_GMACS = 2.0
# Links nobody measured: a wired LAN (gigabit, ~100 MB/s of payload) and ZeroMQ's per-message cost on it.
DEFAULT_LINK_MB_S = 100.0
DEFAULT_MESSAGE_MS = 0.3


def estimated_kind(target: str, units: list[dict], gmacs: float | None = None) -> dict:
    """A kind's profile entry estimated from MACs (and other element operations) at a nominal rate."""
    rate = gmacs or ESTIMATED_GMACS.get(target, DEFAULT_GMACS)
    return {"target": target, "unit_ms": [(u["macs"] + u["ops"]) / (rate * 1e9) * 1e3 for u in units],
            "link_mb_s": DEFAULT_LINK_MB_S, "message_ms": DEFAULT_MESSAGE_MS,
            "source": f"estimate: MACs at {rate:g} GMAC/s (not measured)"}


def accelerator_kind(target: str, units: list[dict], end: int, estimate: dict) -> dict:
    """An FPGA node kind: it runs units ``0..end-1`` (its bundle's accelerator part) in the estimator's time."""
    unit_ms = [0.0] * len(units)
    unit_ms[0] = float(estimate["latency_ms"])
    return {"target": target, "only_units": [0, end], "unit_ms": unit_ms, "link_mb_s": DEFAULT_LINK_MB_S,
            "message_ms": DEFAULT_MESSAGE_MS,
            "source": f"HLS estimator: {estimate['cycles']} cycles at {estimate['clock_mhz']:g} MHz (analytic, not "
                      f"measured; the link is a LAN estimate)"}


def read_profile(path: Path) -> dict:
    """Read and check a profile file.

    Raises
    ------
    InputError
        Unreadable, not a profile, or a field of the wrong type or length (the message names it).
    """
    try:
        profile = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read profile {path}: {exc}") from None
    if not isinstance(profile, dict) or profile.get("format") != PROFILE_FORMAT:
        raise InputError(f"{path} is not an edgevit profile (format '{PROFILE_FORMAT}')")
    try:
        check(profile, _profile_schema(profile))
    except SchemaViolation as exc:
        raise InputError(f"{path}: {exc}") from None
    return profile


def _profile_schema(profile: dict):
    """What a profile must hold; every kind lists one time per unit."""
    from ..runtime import schema as s

    count = len(profile["units"]) if isinstance(profile.get("units"), list) else 1
    size = s.number_in(0, 1e18)
    unit = s.Record({name: size for name in ("start", "end", "macs", "ops", "out_bytes", "weight_bytes")},
                    open=True)
    kind = s.Record({"target": s.STRING, "unit_ms": s.ListOf(s.number_in(0, 1e9), count, count),
                     "link_mb_s": s.number_in(1e-6, 1e12), "message_ms": s.number_in(0, 1e9)},
                    {"only_units": s.ListOf(s.int_in(0, count), 2, 2)}, open=True)
    return s.Record({"units": s.ListOf(unit, 1), "input_bytes": size, "kinds": s.MapOf(s.STRING, kind)}, open=True)


def stage_cost(profile: dict, key: str, first: int, end: int) -> dict:
    """Predicted ms of units ``first..end-1`` on a node of ``key``.

    ``compute_ms`` is the units' node-side time; ``in_ms`` is the stage's input crossing the link into the node
    (bandwidth plus one message); ``out_ms`` the last stage's result going back to the host.
    """
    kind = profile["kinds"][key]
    units = profile["units"]
    in_bytes = profile["input_bytes"] if first == 0 else units[first - 1]["out_bytes"]
    out_bytes = units[end - 1]["out_bytes"]
    link = kind["link_mb_s"] * 1e6
    return {"compute_ms": float(sum(kind["unit_ms"][first:end])),
            "in_ms": in_bytes / link * 1e3 + kind["message_ms"],
            "out_ms": out_bytes / link * 1e3 + kind["message_ms"],
            "in_bytes": int(in_bytes), "out_bytes": int(out_bytes),
            "weight_bytes": int(sum(u["weight_bytes"] for u in units[first:end]))}


def stage_memory_mib(cost: dict) -> float:
    """What a stage needs on its node: weights, its input and output, 25 % headroom, 16 MiB of runtime."""
    return 1.25 * (cost["weight_bytes"] + cost["in_bytes"] + cost["out_bytes"]) / 2**20 + 16.0
