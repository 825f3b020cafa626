"""Board-side self-test of a bundle: run its test inputs on the accelerator and compare bit for bit.

    python -m edgevit.pynq.selftest BUNDLE [--count N] [--timeout S]

Prints one line ``EDGEVIT_SELFTEST {json}`` (what ``edgevit flash`` reads) and exits 0 when every output
equals the golden model's, else with edgevit's exit code (8: mismatches). With ``EDGEVIT_PYNQ_SIM_LIB`` set
it runs on :class:`~edgevit.pynq.sim_device.SimDevice` instead of the board's programmable logic.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import EdgevitError, ExecutionError, VerificationError
from . import manifest
from .driver import Accelerator

MARK = "EDGEVIT_SELFTEST"



def selftest_data(bundle: Path, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's self-test inputs and golden outputs, raw 16-bit words, one row per input."""
    n_in, n_out = cfg["buffers"]["input"]["elements"], cfg["buffers"]["output"]["elements"]
    return (np.fromfile(bundle / cfg["selftest"]["inputs"], "<i2").reshape(-1, n_in),
            np.fromfile(bundle / cfg["selftest"]["golden"], "<i2").reshape(-1, n_out))

def run(bundle: Path, count: int | None = None, timeout_s: float = 10.0, device=None,
        bitstream: Path | None = None) -> dict:
    """Run the bundle's self-test inputs through :class:`~edgevit.pynq.driver.Accelerator`.

    Returns
    -------
    dict
        ``inputs``, ``mismatches`` (output words that differ from the golden model), ``first_argmax`` (of the
        model's output, CPU part included), ``device`` and ``ms_per_inference`` (informational); with a CPU
        part, ``cpu_tail_error`` and ``cpu_tail_argmax_agrees`` against the float model on input 0.

    Raises
    ------
    VerificationError
        If any output word differs from the golden model.
    """
    bundle = Path(bundle)
    cfg = manifest.load(bundle)
    if device is None:
        from .sim_device import from_env

        device = from_env(cfg)  # None on a board: pynq's own device
    acc = Accelerator(bundle, device, timeout_s, config=cfg, bitstream=bitstream)
    inputs, golden = selftest_data(bundle, cfg)
    count = len(inputs) if count is None else min(count, len(inputs))
    mismatches, first = 0, None
    start = time.perf_counter()
    for x, want in zip(inputs[:count], golden[:count]):
        got = acc.run_raw(x)
        mismatches += int((got != want).sum())
        first = acc.finish(got) if first is None else first
    result = {"inputs": count, "mismatches": mismatches, "first_argmax": int(np.argmax(first)),
              "device": "simulated (g++ C-simulation)" if device is not None else f"{cfg['board']} PL",
              "ms_per_inference": 1e3 * (time.perf_counter() - start) / max(count, 1)}
    if acc.tail is not None:    # the CPU part too: the float model's output for input 0 (quantisation differs)
        ref = np.asarray(acc.tail[0]["sample_output"])
        result["cpu_tail_error"] = float(np.abs(first.ravel() - ref).max())
        result["cpu_tail_argmax_agrees"] = bool(np.argmax(ref) == result["first_argmax"])
    if mismatches:
        raise VerificationError(f"self-test failed: {mismatches} output words of {count} inputs differ from the "
                                f"golden model")
    return result


def main(argv=None) -> int:
    """Command-line entry point; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m edgevit.pynq.selftest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--count", type=int, help="run only the first N self-test inputs")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for ap_done per inference")
    args = p.parse_args(argv)
    try:
        result, code = {"ok": True, **run(Path(args.bundle), args.count, args.timeout)}, 0
    except EdgevitError as e:
        result, code = {"ok": False, "error": str(e), "error_type": type(e).__name__}, e.exit_code
    except (RuntimeError, OSError) as e:    # pynq's own errors (no device, unreadable metadata)
        result, code = {"ok": False, "error": f"pynq: {e}", "error_type": "ExecutionError"}, ExecutionError.exit_code
    print(f"{MARK} {json.dumps(result)}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
