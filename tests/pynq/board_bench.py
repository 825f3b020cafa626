"""Runs in the pynq venv (numpy<2, pynq 4.0): drives a bundle on SimDevice and prints one JSON line.

    python board_bench.py MODE BUNDLE LIBRARY [SAMPLES.npy]

MODE: ``infer`` (all self-test inputs, plus float samples through predict, with the register and cache
logs), ``predict`` (float samples only), ``skip-flush`` / ``skip-invalidate`` (a driver that forgets one cache
operation), ``hang``.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pynq

from edgevit.errors import EdgevitError
from edgevit.pynq import manifest
from edgevit.pynq.driver import PORTS, Accelerator
from edgevit.pynq.sim_device import SimDevice


def self_test_inputs(bundle, cfg):
    return np.fromfile(bundle / "testdata" / "inputs.bin", "<i2").reshape(-1, cfg["buffers"]["input"]["elements"])


def main(mode, bundle, library, samples=None):
    bundle = Path(bundle)
    cfg = manifest.load(bundle)
    dev = SimDevice(cfg, Path(library), fault="hang" if mode == "hang" else None)
    acc = Accelerator(bundle, dev, timeout_s=0.2 if mode == "hang" else 10.0, config=cfg)
    bo = {port: acc.buffers[port].bo for port in PORTS}
    if mode == "predict":
        return {"predicted": [acc.predict(x).ravel().tolist() for x in np.load(samples)]}
    inputs = self_test_inputs(bundle, cfg)
    if mode == "hang":
        errors = []
        for x in inputs[:2]:
            try:
                acc.run_raw(x)
            except EdgevitError as e:
                errors.append(f"{type(e).__name__}: {e}")
        return {"errors": errors}
    if mode == "skip-flush":
        acc.buffers["input"].flush = lambda: None
    if mode == "skip-invalidate":
        acc.buffers["output"].invalidate = lambda: None
    written = {off: value for off, value in dev.writes}      # what program_registers wrote at load time
    setup_writes = list(dev.writes)
    readback = {off: acc.ip.read(off) for off in written}
    outputs = [acc.run_raw(x).tolist() for x in inputs]
    result = {"outputs": outputs, "runs": dev.runs}
    if mode != "infer":
        return result
    xs = np.load(samples)
    result.update(quantized=[acc.quantize(x).tolist() for x in xs],
                  predicted=[acc.predict(x).ravel().tolist() for x in xs])
    result.update(
        overlay_is_pynq=type(acc.overlay) is pynq.Overlay,
        ip_is_pynq=isinstance(acc.ip, pynq.DefaultIP),
        buffers_are_pynq=all(isinstance(b, pynq.buffer.PynqBuffer) for b in acc.buffers.values()),
        numpy=np.__version__, downloads=dev.downloads,
        setup_writes=setup_writes, readback={str(k): v for k, v in readback.items()},
        addresses={p: int(acc.buffers[p].device_address) for p in PORTS},
        buffer_sizes={p: int(acc.buffers[p].size) for p in PORTS},
        ctrl_writes=[v for off, v in dev.writes[len(setup_writes):] if off == acc.regs["CTRL"]],
        flushes={p: sum(1 for b, _, _ in dev.flushes if b == bo[p]) for p in PORTS},
        invalidates={p: sum(1 for b, _, _ in dev.invalidates if b == bo[p]) for p in PORTS})
    try:
        acc.ip.write(0x4C, 1)
        result["outside_write"] = "accepted"
    except EdgevitError as e:
        result["outside_write"] = str(e)
    result["runs"] = dev.runs
    return result


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
