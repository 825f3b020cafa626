"""Host side: an ``edgevit hls`` project (+ the bitstream and ``.hwh`` Vivado made from it) -> a PYNQ bundle.

A bundle is a directory that ``edgevit flash`` copies to the board as it is::

    bundle.json                   driver configuration: board, part, IP, register map, buffers, sha256 of all below
    edgevit.bit, edgevit.hwh      from Vivado (absent until someone runs it: no Vivado here)
    program.bin, params.bin       the layer program and the weights the driver loads into DDR
    regmap.json, program.json     the generated register map and readable program
    top.cpp, config.h, ...        the HLS sources and Tcl (to run Vitis HLS / Vivado, or the off-board C-sim)
    testdata/inputs.bin, golden.bin   the self-test: inputs and the golden model's raw outputs
    cpu_tail.json, cpu_tail.npz   the model's part after the accelerator's, for the board's CPU (if any)

``bundle.json`` also carries the estimator's latency of the accelerator part (``estimate``), the cost a
pipeline plan gives an FPGA node that runs this bundle.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .. import __version__
from ..errors import ArtifactError, InputError
from ..hls.layer_table import HEADER
from ..targets import get_target
from . import cpu_tail, manifest

MEMBERS = ("program.bin", "params.bin", "regmap.json", "regmap.h", "program.json", "top.cpp", "config.h", "tb.cpp",
           "hls.tcl", "vivado_bd.tcl", "testdata/inputs.bin", "testdata/golden.bin")
REQUIRED = ("program.bin", "params.bin", "regmap.json", "program.json", "top.cpp", "config.h",
            "testdata/inputs.bin", "testdata/golden.bin")


def check_part(bitstream: Path, board: str, hwh: Path | None = None) -> str:
    """The part of ``bitstream``; raises ArtifactError unless it (and ``hwh``, if given) is ``board``'s part."""
    want = get_target(board).require_fpga().part
    got = manifest.bitstream_part(bitstream)
    if manifest.normalize_part(got) != manifest.normalize_part(want):
        raise ArtifactError(f"{bitstream.name} was built for part {got}, but {board} has {want}: rebuild it with "
                            f"vivado_bd.tcl for {board}")
    described = manifest.hwh_part(hwh) if hwh is not None else None
    if described is not None and manifest.normalize_part(described) != manifest.normalize_part(want):
        raise ArtifactError(f"{hwh.name} describes part {described}, but {board} has {want}: use the .hwh Vivado "
                            f"wrote with this bitstream")
    return got


def _source_model(doc: dict, model, input_shape):
    """The torch model a project was generated from: given, or rebuilt from the zoo name it records."""
    if model is not None:
        if input_shape is None:
            raise InputError("make_bundle(model=...) needs input_shape too")
        return model, tuple(input_shape)
    from .. import zoo

    name = doc.get("meta", {}).get("model", "")
    if name not in zoo.ZOO:
        raise InputError(f"this model continues on the CPU after the accelerator, and its torch model is needed to "
                         f"cut that part out: '{name}' is no zoo model, so pass make_bundle(model=..., input_shape=...)")
    return zoo.build(name), zoo.get_entry(name).input_shape


def _tail(project: Path, out: Path, doc: dict, model, input_shape) -> dict:
    """The CPU part of the model: the project's own (``edgevit hls FILE.onnx`` writes it, checked against
    onnxruntime) unless a torch ``model`` is given, else cut from the torch model."""
    import numpy as np

    from ..hls.codegen import load_program

    if model is None and (project / manifest.TAIL_JSON).is_file() and (project / manifest.TAIL_NPZ).is_file():
        for name in (manifest.TAIL_JSON, manifest.TAIL_NPZ):
            shutil.copyfile(project / name, out / name)
        return json.loads((out / manifest.TAIL_JSON).read_text())
    model, input_shape = _source_model(doc, model, input_shape)
    prog, _ = load_program(project)
    x = np.load(project / "testdata" / "samples.npy")[0]       # the first self-test input, channels-last
    x = x.transpose(2, 0, 1)[None] if len(input_shape) == 4 else x.reshape(input_shape)
    return cpu_tail.export(model, input_shape, prog, x, out)


def _estimate(project: Path, fpga) -> dict:
    """The HLS estimator's latency of the accelerator part at the board's clock (what a pipeline plan uses as
    an FPGA node's stage cost: the C-simulation's speed says nothing about the PL's)."""
    from ..hls import estimator
    from ..hls.codegen import load_program

    report = estimator.report(load_program(project)[0], fpga)
    return {"latency_ms": report["latency_ms"], "cycles": report["cycles"], "clock_mhz": report["clock_mhz"],
            "fits": report["fits"], "source": "edgevit HLS estimator (analytic; Vitis HLS did not run)"}


def make_bundle(project: Path, out: Path, bitstream: Path | None = None, hwh: Path | None = None, model=None,
                input_shape: tuple | None = None) -> dict:
    """Write a bundle for ``project`` (an ``edgevit hls`` directory) into ``out``; returns its configuration.

    ``hwh`` defaults to the ``.hwh`` beside ``bitstream`` with the same stem, if there is one. If the model
    continues after the accelerator's part, that part is cut out of the model's ONNX graph for the board's CPU
    (:mod:`.cpu_tail`); ``model`` and ``input_shape`` give the torch model (default: the zoo model the project
    names).

    Raises
    ------
    InputError
        If ``project`` is not a complete HLS project (made with samples, so it has a self-test).
    ArtifactError
        If ``bitstream`` is not a ``.bit`` for the project's board.
    """
    project, out = Path(project), Path(out)
    missing = [m for m in REQUIRED if not (project / m).is_file()]
    if not missing:
        doc = json.loads((project / "program.json").read_text())
        # the CPU part is exported and checked on the first sample input
        missing = [m for m in ("testdata/samples.npy",) if doc.get("cpu_layers") and not (project / m).is_file()]
    if missing:
        raise InputError(f"{project} is not a complete edgevit HLS project (missing {', '.join(missing)}); "
                         f"create it with `edgevit hls MODEL --board pynq-z2 -o {project}`")
    regmap = json.loads((project / "regmap.json").read_text())
    board = doc["board"]
    fpga = get_target(board).require_fpga()
    if hwh is None and bitstream is not None and Path(bitstream).with_suffix(".hwh").is_file():
        hwh = Path(bitstream).with_suffix(".hwh")
    if bitstream is not None:
        check_part(Path(bitstream), board, hwh and Path(hwh))
    if out.exists():
        if not (out / manifest.CONFIG).is_file():
            raise InputError(f"{out} exists and is not a bundle: choose another directory")
        shutil.rmtree(out)
    (out / "testdata").mkdir(parents=True)
    for member in MEMBERS:
        if (project / member).is_file():
            shutil.copyfile(project / member, out / member)
    if bitstream is not None:
        shutil.copyfile(bitstream, out / manifest.BITSTREAM)
    if hwh is not None:
        shutil.copyfile(hwh, out / manifest.HWH)
    tail = _tail(project, out, doc, model, input_shape) if doc.get("cpu_layers") else None
    estimate = _estimate(project, fpga)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    inputs = regmap["buffers"]["input"]["elements"]
    cfg = {"format": manifest.FORMAT, "version": manifest.VERSION, "created_by": f"edgevit {__version__}",
           "model": doc.get("meta", {}).get("model", ""), "board": board, "part": fpga.part,
           "bitstream": manifest.BITSTREAM if bitstream is not None else None,
           "hwh": manifest.HWH if hwh is not None else None,
           "ip": regmap["ip"], "registers": {r["name"]: r["offset"] for r in regmap["registers"]},
           "buffers": regmap["buffers"], "program_header": list(HEADER), "cpu_layers": doc.get("cpu_layers", []),
           "cpu_tail": manifest.TAIL_JSON if tail else None, "estimate": estimate,
           "selftest": {"inputs": "testdata/inputs.bin", "golden": "testdata/golden.bin",
                        "count": (out / "testdata/inputs.bin").stat().st_size // (2 * inputs)},
           "files": {name: manifest.sha256(out / name) for name in files}}
    (out / manifest.CONFIG).write_text(json.dumps(cfg, indent=1) + "\n")
    return cfg
