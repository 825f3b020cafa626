"""Shared helpers: build one-layer programs, C-simulate them and compare with the golden model."""

from __future__ import annotations

import numpy as np

from edgevit.hls import codegen, csim
from edgevit.hls.fixed import to_float
from edgevit.hls.program import Layer, Program, calibrate
from edgevit.targets import get_target


def program(layers, shapes, lanes=None):
    """A program from (kind, inputs, output, attrs, params) tuples; lanes default to small odd tilings."""
    lanes = {"li": 3, "lo": 5, "ld": 3, "rows": 3, **(lanes or {})}
    built = [Layer(kind, f"k{n}", list(ins), out, {**lanes, **attrs}, params)
             for n, (kind, ins, out, attrs, params) in enumerate(layers)]
    return Program("input", shapes, built)


def csim_vs_golden(prog: Program, samples, tmp_path, overrides=None, fpga=None):
    """Calibrate on the first sample, C-simulate all (the others may be adversarial: out of range, saturating);
    ``fpga`` defaults to the ZCU102 (128-bit ports).

    Returns (mismatch count, max error vs float64 per sample, golden tensors per sample).
    """
    calibrate(prog, samples[:1], overrides)
    out = codegen.write_project(prog, tmp_path / "prj", fpga or get_target("zcu102").require_fpga(), "zcu102",
                                np.asarray(samples))
    _, probes = csim.simulate_project(out, probes=True)
    mismatches, errors, envs = 0, [], []
    for x, probe in zip(samples, probes):
        env = prog.run_fixed(prog.quantize_input(x))
        for name in prog.shapes:
            mismatches += int((probe[name] != env[name].ravel()).sum())
        env["trace"], env["unit_loops"] = probe["trace"], probe["unit_loops"]
        # Error of the kernel alone: float reference on the quantized input.
        xq = to_float(prog.quantize_input(x), prog.formats["input"])
        ref = prog.run_float(xq)[prog.output]
        errors.append(float(np.abs(to_float(env[prog.output], prog.formats[prog.output]) - ref).max()))
        envs.append(env)
    return mismatches, errors, envs
