"""``edgevit bundle`` and ``edgevit flash``: package an HLS project for a PYNQ board and flash it.

    edgevit bundle build/tiny_hls -o build/tiny_bundle [--bitstream F.bit --hwh F.hwh]
    edgevit flash build/tiny_bundle --board pynq-z2 --host xilinx@pynq [--dry-run]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import InputError


def register(subparsers) -> None:
    """Add the ``bundle`` and ``flash`` subcommands to an argparse ``subparsers`` object."""
    p = subparsers.add_parser("bundle", help="PYNQ: package an HLS project (+ Vivado bitstream) for flashing",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("project", help="an `edgevit hls` project directory")
    p.add_argument("-o", "--output", required=True, help="bundle directory to write")
    p.add_argument("--bitstream", help="the .bit Vivado made from the project's vivado_bd.tcl")
    p.add_argument("--hwh", help="its hardware handoff (default: the .hwh beside the .bit)")
    p.set_defaults(func=run_bundle)
    f = subparsers.add_parser("flash", help="PYNQ: copy a bundle to a board, load it and run the self-test",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("bundle", help="bundle directory (`edgevit bundle`)")
    f.add_argument("--board", required=True, help="FPGA board (targets/*.toml), e.g. pynq-z2")
    f.add_argument("--host", required=True, help="user@address of the board (ssh with keys, no password); "
                   "local:DIR makes DIR on this machine stand in for the board (tests, with the simulated device)")
    f.add_argument("--port", type=int, help="ssh port")
    f.add_argument("--dry-run", action="store_true", help="check the bundle and print what would be done")
    f.add_argument("--remote-python", help="command that runs pynq's Python on the board (default: sudo, then the PYNQ image's venv)")
    f.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the accelerator per inference")
    f.add_argument("--count", type=int, help="self-test only the first N inputs")
    f.set_defaults(func=run_flash)


def run_bundle(args) -> int:
    """``edgevit bundle``: write the bundle and say what it still lacks."""
    from .bundle import make_bundle

    cfg = make_bundle(Path(args.project), Path(args.output), args.bitstream and Path(args.bitstream),
                      args.hwh and Path(args.hwh))
    print(f"wrote {args.output}: {len(cfg['files'])} members for {cfg['board']} ({cfg['part']})")
    if not cfg["bitstream"]:
        print("no bitstream yet: Vivado is needed (see `edgevit flash --dry-run`); flash --dry-run works already")
    elif not cfg["hwh"]:
        print("WARNING: no .hwh found beside the bitstream: pynq needs it, so flash will refuse this bundle")
    return 0


def run_flash(args) -> int:
    """``edgevit flash``: over SSH, or to a local directory standing in for the board (``--host local:DIR``)."""
    from .flash import DEFAULT_PYTHON, flash
    from .transport import LocalTransport, SSHTransport

    if not (math.isfinite(args.timeout) and 0 < args.timeout <= 86400):
        raise InputError(f"--timeout {args.timeout} must be a number of seconds from 0 to 86400")
    if args.count is not None and args.count < 1:
        raise InputError(f"--count {args.count} must be at least 1")
    local = args.host.startswith("local:")
    if local and not args.host[6:]:
        raise InputError("--host local:DIR needs a directory")
    transport = LocalTransport(Path(args.host[6:])) if local else SSHTransport(args.host, args.port)
    flash(Path(args.bundle), args.board, transport, args.dry_run,
          args.remote_python or DEFAULT_PYTHON, args.timeout, args.count)
    return 0
