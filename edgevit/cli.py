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
    from .moe.models import format_task_builds, task_build_rows

    moe_rows = task_build_rows()
    if args.json:
        _print_json(rows + moe_rows, "-")
        return 0
    print(format_table([[r["name"], r["family"], f"{r['params'] / 1e6:.2f}", f"{r['macs'] / 1e6:.0f}",
                   "x".join(map(str, r["input_shape"][1:]))] for r in rows],
                 ["model", "family", "params (M)", "MACs (M)", "input"]))
    print("\nWeights are random (timm, pretrained=False, seeded): no model hub here. Any .onnx file works too.")
    print(f"\nMixture-of-experts ViTs (models/moe_vit.py, trained on digits), one build per task:\n"
          f"{format_task_builds(moe_rows)}")
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
    metadata = compile_for_target(model, target, output, tuning_db=args.tuning_db)
    if args.json:
        _print_json(metadata, "-")
    else:
        shapes = ", ".join(f"{s['name']} {s['dtype']}{s['shape']}" for s in metadata["inputs"])
        kind = f"tuned build (database {args.tuning_db})" if args.tuning_db else "default schedules, untuned"
        print(f"{output}: {model.name} for {target.name} ({metadata['target']['arch']}), inputs {shapes}; "
              f"{kind} ({sum(metadata['timings'].values()):.1f} s)")
        moe = metadata["model"].get("moe")
        if moe:
            print(f"task build {moe['name']}: experts per MoE layer {moe['experts']} of {moe['experts_total']}, "
                  f"{moe['params']:,} parameters ({moe['params_all_tasks']:,} for all tasks)")
    return 0


def cmd_tune(args) -> int:
    from .backends import tuning, tvm_compiler
    from .frontend import load_model
    from .targets import get_target

    target = get_target(args.target)
    target.require_cpu()
    rpc = None
    if args.rpc_tracker:
        host, _, port = args.rpc_tracker.rpartition(":")
        if not host or not port.isdigit() or not args.rpc_key:
            raise InputError("--rpc-tracker takes HOST:PORT and needs --rpc-key KEY")
        rpc = tuning.RpcSettings(host, int(port), args.rpc_key)
    model = load_model(args.model, args.input_shape)
    database = Path(args.db or f"{model.name}-{target.name}.tuning")
    mod = tvm_compiler.import_onnx(model.load(), model.inputs)
    summary = tuning.tune(mod, target, database, trials=args.trials, rpc=rpc, threads=args.threads)

    def ms(seconds):
        return f"{seconds * 1e3:.3f}" if seconds else "-"

    def in_model(value):
        return f"{value:.3f}" if value is not None else "-"

    rows = [[k["kernel"], k["calls"], ms(k["baseline_s"]), ms(k["variant_s"]), ms(k["tuned_s"]),
             in_model(k.get("in_model_default_ms")), in_model(k.get("in_model_ms")), k["uses"]]
            for k in summary["kernels"]]
    print(format_table(rows, ["kernel", "calls", "default ms", "best tile variant ms", "best searched ms",
                              "in model: default ms", "in model: chosen ms", "database uses"]))
    print("(alone: per call; in model: per inference, all calls)")
    changed = sum(k["uses"] != "default" for k in summary["kernels"])
    model = summary.get("model_ms")
    result = (f"whole model {model['default']:.2f} -> {model['chosen']:.2f} ms" if model else
              "chosen by kernel times alone (the model cannot be profiled through RPC)")
    print(f"\n{database}: {changed} of {len(rows)} kernels use a tuned schedule, chosen by {summary['selected_by']}; "
          f"{result} ({args.trials} search trials per kernel, {summary['seconds']:.0f} s). Use it: edgevit compile "
          f"{args.model} --target {target.name} --tuning-db {database}")
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
    from . import zoo
    from .bench import bench, bench_all, format_all, format_report

    try:
        threads = [int(t) for t in str(args.threads).split(",")]
    except ValueError:
        raise InputError(f"--threads takes a count or a list like 1,2, not '{args.threads}'") from None
    if args.model == "all" or len(threads) > 1:
        models = list(zoo.ZOO) if args.model == "all" else [args.model]
        result = bench_all(models, threads, runs=args.runs, warmup=args.warmup, tuning_db=args.tuning_db,
                           out_dir=Path(args.results), name=args.name)
        print(format_all(result))
        print(f"\nwrote {args.results}/{args.name}.json, .md and .png")
        return 0
    os.environ["TVM_NUM_THREADS"] = str(threads[0])  # read once, when TVM's thread pool starts
    report = bench(args.model, args.target, runs=args.runs, warmup=args.warmup, threads=threads[0],
                   input_shape=args.input_shape, tuning_db=args.tuning_db, profile=args.profile)
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
    p.add_argument("--tuning-db", metavar="DIR", help="apply kernels from an `edgevit tune` database")
    p.add_argument("--json", action="store_true", help="print the artifact metadata as JSON")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("tune", help="measure the rules' tile choices and search with MetaSchedule (default "
                                    "schedules as baseline)")
    p.add_argument("model", help="zoo name or .onnx file")
    p.add_argument("--target", "-t", default="host", help="target name (default host)")
    p.add_argument("--trials", type=int, default=32, help="MetaSchedule random-search trials per kernel after the "
                   "rules' tile variants; 0 = variants only (default 32)")
    p.add_argument("--db", metavar="DIR", help="database directory to write (default MODEL-TARGET.tuning)")
    p.add_argument("--threads", type=int, help="TVM threads to tune for (default: every core)")
    p.add_argument("--rpc-tracker", metavar="HOST:PORT", help="measure on a board registered with this tracker")
    p.add_argument("--rpc-key", metavar="KEY", help="the board's key at the tracker")
    p.add_argument("--input-shape", help="as for compile")
    p.set_defaults(func=cmd_tune)

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

    p = sub.add_parser("bench", help="benchmark a model's edgevit build against onnxruntime (and LiteRT) "
                       "on this CPU")
    p.add_argument("model", help="zoo name, .onnx file, artifact .tar built for host, or 'all' (whole zoo)")
    p.add_argument("--target", "-t", default="host", help="only 'host' can be timed here (default host)")
    p.add_argument("--runs", type=int, default=30, help="timed runs per engine (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--threads", default="1", help="threads for every engine: a count or a list like 1,2 "
                   "(default 1)")
    p.add_argument("--tuning-db", metavar="DIR", help="compile with an `edgevit tune` database")
    p.add_argument("--profile", action="store_true", help="also print edgevit's time per kernel")
    p.add_argument("--results", default="results", help="folder for JSON/PNG/markdown of 'all' or several "
                   "thread counts (default results)")
    p.add_argument("--name", default="bench_zoo", help="file name stem under --results (default bench_zoo)")
    p.add_argument("--input-shape", help="as for compile")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON ('-' for stdout)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("prepare", help="prepare, once, what running foreign-architecture builds needs (qemu)")
    p.add_argument("arch", nargs="?", default="aarch64", choices=["aarch64"])
    p.set_defaults(func=cmd_prepare)

    from .distributed import cli as distributed_cli
    from .hls import cli as hls_cli
    from .pynq import cli as pynq_cli

    hls_cli.register(sub)
    pynq_cli.register(sub)
    distributed_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
