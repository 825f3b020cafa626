"""``edgevit hls``: generate an HLS project, C-simulate it, report resources and cycles.

    edgevit hls MODEL --board zcu102 -o build/mvit_hls   # MODEL: a name `edgevit models` lists (zoo, trained
                                                         # here, MoE-ViT task builds such as moe_vit_tiny:parity)
    edgevit hls model.onnx -o build/my_hls               # any ONNX file: its supported ops run on the
                                                         # accelerator, the rest on the CPU (cpu_tail.json)
    edgevit hls model_int8.onnx -o build/q_hls           # a QDQ file (edgevit quantize): int8 units with the
                                                         # model's own scales (docs/fpga-int8.md)
    edgevit hls build build/mvit_hls --csim
    edgevit hls report build/mvit_hls [--json]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from ..errors import ArtifactError, EdgevitError, InputError
from ..targets import get_target

MAX_LISTED = 12   # CPU-part entries printed by `edgevit hls MODEL`
# ap_fixed<W,I> the kernels handle: accumulators add two widths plus guard bits inside 64-bit integers.
FORMAT_SPEC = r"([A-Za-z0-9_.]+)=(\d{1,3}),(\d{1,3})"
WIDTHS = (2, 32)


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``hls`` subcommand to an argparse ``subparsers`` object; ``args.func(args)`` runs it."""
    p = subparsers.add_parser("hls", help="FPGA backend: HLS project, C-simulation, resource report",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", help="MODEL (zoo name, tiny_mobilevit, PRESET:TASK of an MoE-ViT or an .onnx file), or "
                   "'build' / 'report'")
    p.add_argument("project", nargs="?", help="project directory (for build / report)")
    p.add_argument("--board", default="zcu102", help="FPGA target (targets/*.toml with [fpga]); default zcu102")
    p.add_argument("-o", "--output", help="project directory to write (MODEL mode)")
    p.add_argument("--input-shape", help="static input shape for an ONNX file with symbolic dimensions, e.g. "
                   "1,3,224,224")
    p.add_argument("--calib", type=int, default=4, help="calibration inputs (zoo models: seeded random images, "
                   "1-1000)")
    p.add_argument("--format", action="append", metavar="TENSOR=W,I", help="override a tensor's fixed-point format "
                   f"(ap_fixed<W,I>: W from {WIDTHS[0]} to {WIDTHS[1]}, I from 1 to W)")
    p.add_argument("--csim", action="store_true", help="build: run the g++ C-simulation and check it")
    p.add_argument("--json", action="store_true", help="report: print JSON")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    _check_options(args)
    if args.what == "build":
        return _build(args)
    if args.what == "report":
        return _report(args)
    return _generate(args)


def _check_options(args) -> None:
    """Refuse options the chosen mode would ignore and values out of range, before any work."""
    mode = args.what if args.what in ("build", "report") else "MODEL"
    used = {"MODEL": {"output", "calib", "format", "board", "input_shape"}, "build": {"csim"},
            "report": {"json"}}[mode]
    given = {"output": args.output is not None, "calib": args.calib != 4, "format": bool(args.format),
             "input_shape": args.input_shape is not None,
             "board": args.board != "zcu102", "csim": args.csim, "json": args.json}
    ignored = sorted(k for k, on in given.items() if on and k not in used)
    if ignored:
        option = ignored[0].replace("_", "-")
        raise InputError(f"--{option} does not apply to `edgevit hls {'MODEL' if mode == 'MODEL' else mode}`")
    if not 1 <= args.calib <= 1000:
        raise InputError(f"--calib {args.calib} must be from 1 to 1000")
    for spec in args.format or []:
        match = re.fullmatch(FORMAT_SPEC, spec)
        if not match:
            raise InputError(f"bad --format '{spec}': expected TENSOR=W,I such as l3_linear.out=16,6")
        w, i = int(match[2]), int(match[3])
        if not (WIDTHS[0] <= w <= WIDTHS[1] and 1 <= i <= w):
            raise InputError(f"bad --format '{spec}': width W must be {WIDTHS[0]}-{WIDTHS[1]} and integer bits I "
                             "1-W (sign included)")
    if mode == "MODEL":
        get_target(args.board).require_fpga()
        if args.output and Path(args.output).exists() and not Path(args.output).is_dir():
            raise InputError(f"-o {args.output} is a file: name a project directory")


def _onnx_summary(result) -> str:
    line = (f"ONNX ops on the accelerator: {result.accel_nodes} of {result.total_nodes} nodes, "
            f"{100 * result.accel_macs / max(result.total_macs, 1):.1f} % of the Conv/MatMul/Gemm MACs")
    if result.unsupported:
        op, name, why = result.unsupported
        line += f"; stops at {op} node '{name}' ({why}); the rest runs on the CPU from tensor '{result.cut}'"
    return line


def _generate(args) -> int:
    from . import estimator, project
    from .codegen import NOTICE
    from .generate import generate

    if args.project or not args.output:
        raise InputError(f"usage: edgevit hls {args.what} --board BOARD -o DIR")
    made = generate(args.what, args.board, Path(args.output), args.calib, args.input_shape,
                    project.parse_formats(args.format))
    prog, out, tests, result = made.program, made.path, made.tests, made.onnx

    rep = estimator.report(prog, get_target(args.board).require_fpga())
    print(f"wrote {out}: {len(prog.layers)} accelerator layers, {len(tests)} testbench inputs")
    if result is not None:
        print(_onnx_summary(result))
        if result.tail_error:
            print(f"WARNING: no cpu_tail.json written ({result.tail_error}); the accelerator project is complete")
    for entry in prog.cpu_layers[:MAX_LISTED]:
        print(f"  runs on the ARM CPU: {entry}")
    if len(prog.cpu_layers) > MAX_LISTED:
        print(f"  ... and {len(prog.cpu_layers) - MAX_LISTED} more (`edgevit hls report` lists them all)")
    print(f"lanes {rep['lanes']}: estimated {_usage(rep)}, {rep['latency_ms']:.3f} ms "
          f"({100 * rep['memory_bound_share']:.0f} % of it in memory-bound layers; `edgevit hls report` per layer)")
    if any(layer.kind == "moe_experts" for layer in prog.layers):
        from .torch_import import to_accel_layout

        routes = [prog.run_fixed(prog.quantize_input(to_accel_layout(x))) for x in tests]
        t = estimator.moe_weight_traffic(prog, routes)
        print(f"MoE expert weights per image ({len(tests)} test inputs): {t['reordered'] / 1024:.1f} KiB with patch "
              f"reordering, {t['per_patch'] / 1024:.1f} KiB without ({t['reduction_vs_per_patch']:.1f}x), "
              f"{t['all_experts'] / 1024:.1f} KiB for every expert of the build")
    if not rep["fits"]:
        print(f"WARNING: even the smallest lane choice does not fit {args.board}; the project was written, but "
              f"`edgevit hls report` will refuse it")
    print(NOTICE)
    return 0


def _usage(rep: dict) -> str:
    res, av = rep["resources"], rep["available"]
    return "  ".join(f"{k.upper()} {res[k]}/{av[k]} ({100 * res[k] / av[k]:.0f} %)" for k in res)


def _project_dir(args) -> Path:
    if not args.project:
        raise InputError(f"usage: edgevit hls {args.what} DIR")
    path = Path(args.project)
    if not (path / "program.json").exists():
        raise InputError(f"{path} is not an edgevit HLS project; create one with `edgevit hls MODEL -o {path}`")
    return path


def _build(args) -> int:
    from .project import run_csim

    path = _project_dir(args)
    if not args.csim:
        raise EdgevitError("only --csim builds are possible here: synthesis needs Vitis HLS (see hls.tcl)")
    r = run_csim(path)
    print("g++ C-simulation only: csynth/cosim need Vitis HLS, which did not run here.")
    print(f"C-simulation of {r['inputs']} inputs: {r['mismatches']} mismatches against the golden model; "
          f"max |error| vs float64 {r['max_abs_error_vs_float']:.3g} ({r['output_format']} output); "
          f"argmax agreement {100 * r['argmax_agreement']:.1f} %")
    return 0


def _report(args) -> int:
    from . import estimator
    from .codegen import load_program

    path = _project_dir(args)
    try:
        prog, doc = load_program(path)
        board = doc["board"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"{path} is not a readable edgevit HLS project ({type(exc).__name__}: {exc}); "
                            f"regenerate it with `edgevit hls MODEL -o {path}`") from None
    fpga = get_target(str(board)).require_fpga()
    rep = estimator.report(prog, fpga)
    rep["cpu_layers"] = prog.cpu_layers
    if args.json:
        print(json.dumps(rep, indent=1))
        return 0
    name_w = max([22, *(len(r["layer"]) + 2 for r in rep["layers"])])
    kind_w = max([11, *(len(r["kind"]) + 2 for r in rep["layers"])])
    print(f"{'layer':<{name_w}}{'kind':<{kind_w}}{'MACs':>11}{'cycles':>11}{'ms':>9}{'compute':>11}{'DDR':>11}"
          f"  {'bound':<8}source")
    for r in rep["layers"]:
        print(f"{r['layer']:<{name_w}}{r['kind']:<{kind_w}}{r['macs']:>11}{r['cycles']:>11}{r['ms']:>9.3f}"
              f"{r['compute']:>11}{r['ddr_cycles']:>11}  {r['bound']:<8}{r['source']}")
    print(f"lanes {rep['lanes']}")
    print(_usage(rep))
    print(f"total {rep['cycles']} cycles = {rep['latency_ms']:.3f} ms at {rep['clock_mhz']} MHz; "
          f"{'fits' if rep['fits'] else 'DOES NOT FIT'} {board} (limit 80 % per resource)")
    print(f"{100 * rep['memory_bound_share']:.0f} % of the cycles are in memory-bound layers (loads, write-back and "
          f"m_axi latency on the board's AXI ports beyond what overlaps the MAC steps); there more lanes do not help. "
          f"MACs in "
          f"{100 * rep['compute_cycles'] / rep['cycles']:.1f} % of the cycles; linear unit at "
          f"{100 * rep['linear_mac_efficiency']:.1f} % of its LI x LO peak.")
    share = 100 * rep["ddr_cycles"] / rep["cycles"]
    print(f"DDR {rep['ddr_gbps']} GB/s ({estimator.ddr_bytes_per_cycle(fpga):.1f} bytes a cycle, all ports "
          f"together): the layers' traffic needs at least {rep['ddr_cycles']} cycles ({share:.0f} % of the total); "
          f"{100 * rep['ddr_bound_share']:.0f} % of the cycles are in layers the DDR bounds (bound ddr).")
    for entry in prog.cpu_layers:
        print(f"runs on the ARM CPU: {entry}")
    print("Estimate only: synthesis needs Vitis HLS / Vivado, which did not run here.")
    if not rep["fits"]:
        raise EdgevitError(f"the design does not fit {board}: use a bigger board or fewer lanes")
    return 0
