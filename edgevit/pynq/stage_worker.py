"""Board side: serve a bundle's accelerator part to the node agent through a pipe (``edgevit node --fpga``).

    python -m edgevit.pynq.stage_worker BUNDLE [--selftest N] [--timeout S]

The node agent (:mod:`edgevit.distributed.accelerator_stage`) starts this in the Python that has pynq: the
board's, or off-board the venv of ``tools/setup_pynq_env.sh`` with ``EDGEVIT_PYNQ_SIM_LIB`` set, where the
g++ C-simulation of the same ``top.cpp`` stands in for the programmable logic
(:class:`~edgevit.pynq.sim_device.SimDevice`). It first runs ``N`` of the bundle's self-test inputs (bit-exact
against the golden model, or it stops with exit code 8), then answers one request at a time.

Frames, on stdin and stdout (binary; anything else the process prints goes to stderr)::

    request:  8-byte little-endian length, then .npy bytes: the model's input, NCHW float32 [1, C, H, W]
    reply:    1 tag byte, 8-byte little-endian length, payload
              b"R" JSON {"device", "input_shape", "output_shape", "output", "selftest"}   once, when ready
              b"A" .npy bytes: the accelerator part's output, float32, in the layout of the ONNX tensor it
                   stops at (``Accelerator.part_output``)
              b"E" JSON {"error", "kind"}: this request failed (the worker goes on)

Imports numpy and edgevit's board side only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np

from ..errors import EdgevitError, InputError
from . import manifest, selftest
from .driver import Accelerator

MAX_REQUEST = 1 << 30   # one image; a larger length is a broken pipe, not an input


def to_accelerator_layout(x: np.ndarray, shape: list) -> np.ndarray:
    """The model's NCHW input -> the accelerator's input layout (channels-last ``[H, W, C]``, or as given)."""
    if x.ndim == 4 and len(shape) == 3:
        if x.shape[0] != 1 or tuple(x.shape[1:]) != (shape[2], shape[0], shape[1]):
            raise InputError(f"the accelerator takes one [1, {shape[2]}, {shape[0]}, {shape[1]}] image, got "
                             f"{list(x.shape)}")
        return x[0].transpose(1, 2, 0)
    if x.size != int(np.prod(shape)):
        raise InputError(f"the accelerator takes {int(np.prod(shape))} input values, got {list(x.shape)}")
    return x.reshape(shape)


def model_input_shape(shape: list) -> list:
    """The model's input shape for an accelerator input of ``shape`` (the inverse of the layout change)."""
    return [1, shape[2], shape[0], shape[1]] if len(shape) == 3 else list(shape)


def _reply(out, tag: bytes, payload: bytes) -> None:
    out.write(tag + struct.pack("<Q", len(payload)) + payload)
    out.flush()


def _read_request(inp) -> np.ndarray | None:
    head = inp.read(8)
    if len(head) < 8:
        return None     # the node closed the pipe: its session ended
    (length,) = struct.unpack("<Q", head)
    if length > MAX_REQUEST:
        raise SystemExit(f"stage worker: request of {length} bytes: the pipe is out of step")
    body = inp.read(length)
    if len(body) < length:
        return None
    return np.load(io.BytesIO(body), allow_pickle=False)


def serve(bundle: Path, checks: int, timeout_s: float, inp, out) -> int:
    """Load the accelerator, self-test it, then answer requests until the pipe closes; returns an exit code."""
    cfg = manifest.load(bundle)
    from .sim_device import from_env

    device = from_env(cfg)   # None on a board: pynq's device, the programmable logic
    bitstream = None
    if device is not None and not cfg.get("bitstream"):   # off-board, a bundle made without Vivado
        import tempfile

        from .sim_device import stand_in_overlay

        bitstream = stand_in_overlay(Path(tempfile.mkdtemp(prefix="edgevit-sim-")), cfg["part"])
    report = selftest.run(bundle, checks, timeout_s, device=device, bitstream=bitstream) if checks else {}
    acc = Accelerator(bundle, device, timeout_s, config=cfg, bitstream=bitstream)
    shape = cfg["buffers"]["input"]["shape"]
    out_shape = list(acc.part_output(np.zeros(cfg["buffers"]["output"]["elements"], np.int64)).shape)
    tail_input = acc.tail[0]["input"] if acc.tail is not None else None
    _reply(out, b"R", json.dumps({
        "device": ("C-simulation of edgevit_top (off-board stand-in, not a board)" if device is not None
                   else f"{cfg['board']} programmable logic"),
        "input_shape": model_input_shape(shape), "output_shape": out_shape, "output": tail_input,
        "selftest": report}).encode())
    while True:
        x = _read_request(inp)
        if x is None:
            return 0
        try:
            y = acc.part_output(acc.run_raw(acc.quantize(to_accelerator_layout(np.asarray(x), shape))))
        except EdgevitError as exc:
            _reply(out, b"E", json.dumps({"error": str(exc), "kind": type(exc).__name__}).encode())
            continue
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(y, dtype=np.float32), allow_pickle=False)
        _reply(out, b"A", buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgevit.pynq.stage_worker", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--selftest", type=int, default=2, help="self-test inputs to check first (default 2)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for ap_done (default 60)")
    args = parser.parse_args(argv)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())   # stray prints (pynq's warnings) must not enter the pipe
    try:
        return serve(args.bundle, args.selftest, args.timeout, sys.stdin.buffer, out)
    except EdgevitError as exc:
        _reply(out, b"E", json.dumps({"error": str(exc), "kind": type(exc).__name__}).encode())
        print(f"edgevit: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
