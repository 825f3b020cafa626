"""The ``edgevit`` command: thin argparse wrappers around the library.

User errors (``edgevit.errors``) print one line and exit with the error's code; anything else is a bug in
edgevit and shows a traceback with exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .errors import EdgevitError, InputError
from .tables import format_table


def _print_json(data, path: str | None) -> None:
    text = json.dumps(data, indent=1)
    if path in (None, "-"):
        print(text)
    else:
        Path(path).write_text(text + "\n")
        print(f"wrote {path}", file=sys.stderr)


def cmd_models(args) -> int:
    from . import zoo

    rows = []
    progress = sys.stderr.isatty()  # counted once per torch/timm version, then cached
    for i, entry in enumerate(zoo.ZOO.values()):
        if progress:
            print(f"\r[edgevit] measuring {entry.name} ({i + 1}/{len(zoo.ZOO)})".ljust(60), end="", file=sys.stderr)
        stats = zoo.stats(entry.name)
        rows.append({"name": entry.name, "family": entry.family, "params": stats["params"],
                     "macs": stats["macs"], "input_shape": list(entry.input_shape)})
    if progress:
        print("\r".ljust(60) + "\r", end="", file=sys.stderr)
    if args.json:
        _print_json(rows, "-")
        return 0
    print(format_table([[r["name"], r["family"], f"{r['params'] / 1e6:.2f}", f"{r['macs'] / 1e6:.0f}",
                   "x".join(map(str, r["input_shape"][1:]))] for r in rows],
                 ["model", "family", "params (M)", "MACs (M)", "input"]))
    print("\nWeights are random (timm, pretrained=False, seeded): no model hub here. Any .onnx file works too.")
    return 0


def cmd_targets(args) -> int:
    from .targets import all_targets

    targets = all_targets()
    if args.json:
        _print_json([{"name": t.name, "description": t.description,
                      "cpu": t.cpu and {"arch": t.cpu.arch, "tvm": t.cpu.tvm},
                      "fpga": t.fpga and t.fpga.__dict__} for t in targets], "-")
        return 0
    rows = []
    for t in targets:
        cpu = f"{t.cpu.arch} {t.cpu.tvm.get('mcpu', '')}".strip() if t.cpu else "-"
        fpga = f"{t.fpga.part} ({t.fpga.dsp} DSP, {t.fpga.bram36} BRAM36, {t.fpga.lut} LUT)" if t.fpga else "-"
        runs = "natively" if t.cpu and not t.cpu.is_cross else (
            f"under {t.cpu.emulator.command}" if t.cpu and t.cpu.emulator else "-")
        rows.append([t.name, cpu, runs, fpga, t.description])
    print(format_table(rows, ["target", "cpu (tvm)", "runs here", "fpga", "description"]))
    return 0


def cmd_compile(args) -> int:
    from .compiler import compile_for_target
    from .frontend import load_model
    from .targets import get_target

    target = get_target(args.target)
    target.require_cpu()
    model = load_model(args.model, args.input_shape)
    output = Path(args.output or f"{model.name}-{target.name}.tar")
    metadata = compile_for_target(model, target, output)
    if args.json:
        _print_json(metadata, "-")
    else:
        shapes = ", ".join(f"{s['name']} {s['dtype']}{s['shape']}" for s in metadata["inputs"])
        print(f"{output}: {model.name} for {target.name} ({metadata['target']['arch']}), inputs {shapes}; "
              f"untuned TVM build ({sum(metadata['timings'].values()):.1f} s)")
    return 0


def _load_inputs(paths: list[str] | None, specs, seed: int):
    import numpy as np

    from .reference import random_inputs

    if not paths:
        return random_inputs(specs, seed)
    arrays = []
    for path in paths:
        try:
            arrays.append(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read input {path}: {exc}") from None
    return arrays


def cmd_run(args) -> int:
    import numpy as np

    from . import emulation
    from .errors import ArtifactError
    from .reference import compare, run_onnxruntime
    from .runtime import host_arch
    from .runtime.artifact import Artifact
    from .runtime.runner import check_inputs, run_artifact
    from .settings import seed
    from .frontend import TensorSpec

    with Artifact.open(Path(args.artifact)) as artifact:
        meta = artifact.metadata
        specs = [TensorSpec.from_json(s) for s in meta["inputs"]]
        inputs = _load_inputs(args.input, specs, seed())
        check_inputs(meta, inputs)
        device = args.device
        if device == "auto":
            device = "local" if artifact.arch == host_arch() else "qemu"
        if device == "qemu":
            if artifact.arch == host_arch():
                raise ArtifactError(f"artifact is for {artifact.arch}, this machine's own architecture: "
                                    "run it with --device local")
            python = emulation.prepare(artifact.arch)
            print(f"[edgevit] running the {artifact.arch} build under {Path(python.qemu).name} "
                  "(emulated: for correctness, not speed)", file=sys.stderr)
            outputs, seconds = emulation.run_artifact(python, artifact.dir, inputs, args.repeat)
        else:
            outputs, seconds = run_artifact(artifact, inputs, args.repeat)
        result = {"artifact": args.artifact, "model": meta["model"]["name"], "target": meta["target"]["name"],
                  "device": device if device == "local" else f"qemu-{artifact.arch}",
                  "outputs": [{"shape": list(o.shape), "dtype": str(o.dtype)} for o in outputs],
                  "seconds": seconds}
        if outputs and outputs[0].ndim == 2:
            result["top5"] = np.argsort(-outputs[0][0])[:5].tolist()
        comparison = None
        if args.verify:
            reference = run_onnxruntime(artifact.reference, inputs)
            comparison = compare(outputs, reference, args.rtol)
            result["verify"] = comparison.to_json()
        if args.output:
            np.save(args.output, outputs[0])
    if args.json:
        _print_json(result, "-")
    else:
        ms = sorted(s * 1e3 for s in seconds)
        print(f"{result['model']} ({result['target']}) on {result['device']}: outputs "
              f"{', '.join(str(o['shape']) for o in result['outputs'])}; "
              f"{ms[len(ms) // 2]:.1f} ms median of {len(ms)}" + (" (emulated)" if device == "qemu" else ""))
        if "top5" in result:
            print(f"top-5 classes: {result['top5']}")
        if comparison:
            print(f"verify vs onnxruntime: max abs error {comparison.max_abs_error:.3g}, max rel error "
                  f"{comparison.max_rel_error:.3g} (tolerance {comparison.rtol:g}), top-1 "
                  f"{'agrees' if comparison.top1_agree else 'DIFFERS'} -> {'PASS' if comparison.ok else 'FAIL'}")
    if comparison and not comparison.ok:
        from .errors import VerificationError

        raise VerificationError(f"verification failed: max rel error {comparison.max_rel_error:.3g} > "
                                f"{comparison.rtol:g} or top-1 differs")
    return 0


def cmd_bench(args) -> int:
    from .bench import bench, format_report

    report = bench(args.model, args.target, runs=args.runs, warmup=args.warmup, threads=args.threads,
                   input_shape=args.input_shape)
    print(format_report(report))
    if args.json:
        _print_json(report, args.json)
    return 0


def cmd_prepare(args) -> int:
    from . import emulation

    python = emulation.prepare(args.arch)
    print(f"{args.arch} Python under qemu ready: root {python.root}, packages {python.site}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgevit", description="Compile and run lightweight hybrid vision "
                                     "transformers on edge CPUs (TVM) and FPGAs (HLS).")
    parser.add_argument("--version", action="version", version=f"edgevit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list the model zoo (name, family, params, MACs, input size)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("targets", help="list the boards described in targets/")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_targets)

    p = sub.add_parser("compile", help="compile a zoo model or ONNX file for a target into an artifact .tar")
    p.add_argument("model", help="zoo name (see `edgevit models`) or path to an .onnx file")
    p.add_argument("--target", "-t", default="host", help="target name (see `edgevit targets`); default host")
    p.add_argument("--output", "-o", help="artifact to write (default MODEL-TARGET.tar)")
    p.add_argument("--input-shape", help="static input shape for ONNX files with symbolic dims: "
                   "1,3,224,224 or NAME:1,3,224,224[;NAME2:...]")
    p.add_argument("--json", action="store_true", help="print the artifact metadata as JSON")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run an artifact (aarch64 ones under qemu here) and optionally verify it")
    p.add_argument("artifact", help="an artifact .tar from `edgevit compile`")
    p.add_argument("--input", "-i", action="append", help=".npy input (repeat for several inputs); "
                   "default: seeded random input")
    p.add_argument("--output", help="save the first output as .npy")
    p.add_argument("--device", choices=["auto", "local", "qemu"], default="auto",
                   help="where to run: this CPU, or qemu user-mode emulation (auto: by the artifact's arch)")
    p.add_argument("--verify", action="store_true", help="compare with onnxruntime on the same input")
    p.add_argument("--rtol", type=float, default=1e-5, help="max relative error for --verify (default 1e-5)")
    p.add_argument("--repeat", type=int, default=1, help="runs to time (default 1)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="benchmark a model's edgevit build against onnxruntime on this CPU")
    p.add_argument("model", help="zoo name, .onnx file or artifact .tar built for host")
    p.add_argument("--target", "-t", default="host", help="only 'host' can be timed here (default host)")
    p.add_argument("--runs", type=int, default=30, help="timed runs per engine (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--threads", type=int, default=1, help="threads for every engine (default 1)")
    p.add_argument("--input-shape", help="as for compile")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON ('-' for stdout)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("prepare", help="prepare, once, what running foreign-architecture builds needs (qemu)")
    p.add_argument("arch", nargs="?", default="aarch64", choices=["aarch64"])
    p.set_defaults(func=cmd_prepare)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None):
        os.environ["TVM_NUM_THREADS"] = str(args.threads)  # read once, when TVM's thread pool starts
    try:
        return args.func(args)
    except EdgevitError as exc:
        print(f"edgevit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgevit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
