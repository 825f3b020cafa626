"""Host side of FPGA nodes in a pipeline plan: which part of the model a bundle's accelerator runs, what it
costs, and how far its fixed-point result is from the float model.

A bundle's accelerator runs the model from its input up to one tensor of the model's ONNX graph (the input of
``cpu_tail.json``, found when the bundle was made) or to its output. A plan with an FPGA node makes that
tensor a cut, gives the FPGA kind exactly the units before it (``cost.accelerator_kind``, timed by the HLS
estimator), and lets the DP place the rest on the other nodes. The fixed-point error is measured here, on the
bundle's own self-test inputs: their golden accelerator outputs (bit-exact with the C-simulation and the PL) goes
through the float stages that follow, and the result is compared with onnxruntime on the whole model. That
measured error sets the plan's ``--verify`` tolerance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .accelerator_stage import bundle_digest
from .plan import NodeSlot

# --verify on an FPGA plan allows this many times the worst error measured on the self-test inputs (fixed-point
# error varies from input to input; the factor is a stated margin, and top-1 must still agree).
VERIFY_MARGIN = 4.0


@dataclass(frozen=True)
class AcceleratorPart:
    """The accelerator part of the FPGA nodes' bundle."""

    key: str
    board: str
    bundle: Path
    digest: str
    model: str
    stops_at: str | None     # the ONNX tensor the accelerator's output equals; None: the model's output
    estimate: dict
    config: dict


def find(slots: list[NodeSlot]) -> AcceleratorPart | None:
    """The accelerator part of the slots that name a bundle (``bundle:`` in nodes.yaml), or None.

    Raises
    ------
    InputError
        Two FPGA kinds, a target without ``[fpga]``, a bundle for another board or without an estimate.
    ArtifactError
        A damaged bundle (a member differs from its sha256).
    """
    from ..pynq import manifest
    from ..targets import get_target

    fpga = [s for s in slots if s.bundle]
    if not fpga:
        return None
    if len({s.key for s in fpga}) > 1:
        raise InputError("a plan takes one FPGA node kind (its accelerator part is the model's first stage); "
                         f"got {sorted({s.key for s in fpga})}")
    slot = fpga[0]
    get_target(slot.target).require_fpga()
    bundle = Path(slot.bundle)
    if not (bundle / manifest.CONFIG).is_file():
        raise InputError(f"bundle {bundle} (node kind '{slot.key}') is not a bundle folder: make it with "
                         "`edgevit bundle`")
    cfg = manifest.load(bundle)
    if cfg["board"] != slot.target:
        raise InputError(f"bundle {bundle} was made for {cfg['board']}, but node kind '{slot.key}' has target "
                         f"{slot.target}")
    if not cfg.get("estimate"):
        raise InputError(f"bundle {bundle} has no latency estimate (made by an older edgevit): make it again with "
                         "`edgevit bundle`")
    stops_at = None
    if cfg.get("cpu_tail"):
        stops_at = json.loads((bundle / cfg["cpu_tail"]).read_text())["input"]
    return AcceleratorPart(slot.key, cfg["board"], bundle, bundle_digest(bundle), cfg.get("model", ""), stops_at,
                           cfg["estimate"], cfg)


def cut_index(part: AcceleratorPart, candidates: list, cuts: list) -> tuple[list, int]:
    """``cuts`` with the accelerator's stopping tensor among them, and its index (the FPGA stage's end unit).

    Raises
    ------
    InputError
        The stopping tensor is no cut point of the graph (other tensors are live there).
    """
    if part.stops_at is None:
        return cuts, len(cuts) - 1
    match = [c for c in candidates if tuple(c.tensors) == (part.stops_at,)]
    if not match:
        raise InputError(f"the accelerator stops at tensor '{part.stops_at}', where other tensors are live too: "
                         "the graph cannot be cut there (raise --max-live)")
    merged = sorted({c.position: c for c in [*cuts, match[0]]}.values(), key=lambda c: c.position)
    return merged, [c.position for c in merged].index(match[0].position)


def selftest_inputs(part: AcceleratorPart) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every self-test input of the bundle as the model's float NCHW input, with the golden accelerator output for
    it in the layout of the tensor it stops at."""
    from ..pynq.driver import part_output
    from ..pynq.selftest import selftest_data

    cfg, bundle = part.config, part.bundle
    spec_in, spec_out = cfg["buffers"]["input"], cfg["buffers"]["output"]
    tail = json.loads((bundle / cfg["cpu_tail"]).read_text()) if cfg.get("cpu_tail") else None
    w, i = spec_in["format"]
    pairs = []
    for raw_in, raw_out in zip(*selftest_data(bundle, cfg)):
        x = raw_in.astype(np.float64).reshape(spec_in["shape"]) / 2.0 ** (w - i)
        x = (x.transpose(2, 0, 1)[None] if len(spec_in["shape"]) == 3 else x).astype(np.float32)  # to NCHW
        pairs.append((x, part_output(raw_out, spec_out, tail).astype(np.float32)))
    return pairs


def fixed_point_check(part: AcceleratorPart, model, stage_paths: list[Path], outputs: list[str]) -> dict:
    """The model's output with the accelerator's golden fixed-point result and the float stages after it,
    against onnxruntime on the whole model, on every self-test input of the bundle (the worst one counts).

    Returns
    -------
    dict
        ``max_rel_error``, ``top1_agree``, ``verify_rtol`` (the tolerance ``infer --verify`` uses by default).
    """
    from ..reference import compare, run_onnxruntime
    from .graph_split import run_chain

    worst, agree, pairs = 0.0, True, selftest_inputs(part)
    for x, acc_out in pairs:
        expected = run_onnxruntime(model.onnx_path, [x])
        if stage_paths:
            values = run_chain(stage_paths, {part.stops_at: acc_out})
            got = [values[name] for name in outputs]
        else:
            got = [acc_out.reshape(expected[0].shape)]
        result = compare(got, expected, 1.0)
        worst, agree = max(worst, result.max_rel_error), agree and bool(result.top1_agree)
    return {"max_rel_error": worst, "top1_agree": agree,
            "verify_rtol": max(1e-5, VERIFY_MARGIN * worst), "input": f"the bundle's {len(pairs)} self-test input(s)",
            "rule": f"--verify allows {VERIFY_MARGIN:g}x the worst fixed-point error measured here; top-1 must agree"}
