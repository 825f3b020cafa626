"""The ``edgevit`` command: thin argparse wrappers around the library.

User errors (``edgevit.errors``, command-line mistakes included) print one line ``edgevit: error: ...`` and exit
with the error's code (the traceback too with ``--debug``); anything else is a bug in edgevit and shows a
traceback with exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from . import __version__
from .argtypes import count, nonnegative_float
from .errors import EdgevitError, InputError, OutputError, UsageError, VerificationError
from .tables import format_table


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are edgevit errors: one line and exit code 2, no usage dump."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")

    def _get_values(self, action, arg_strings):
        # argparse drops a "--" value (--host=--) and hands the option an empty list instead of a string
        if action.nargs is None and arg_strings == ["--"]:
            self.error(f"argument {'/'.join(action.option_strings)}: expected a value, not '--'")
        return super()._get_values(action, arg_strings)


def _print_json(data, path: str | None) -> None:
    text = json.dumps(data, indent=1)
    if path in (None, "-"):
        print(text)
    else:
        from .outputs import check_output

        try:
            check_output(path, what="--json").write_text(text + "\n")
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
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
        trained = [{"name": t.name, "family": t.family, "trained_on": t.data, "input_shape": list(t.input_shape)}
                   for t in zoo.TRAINED.values()]
        _print_json(rows + trained + moe_rows, "-")
        return 0
    print(format_table([[r["name"], r["family"], f"{r['params'] / 1e6:.2f}", f"{r['macs'] / 1e6:.0f}",
                   "x".join(map(str, r["input_shape"][1:]))] for r in rows],
                 ["model", "family", "params (M)", "MACs (M)", "input"]))
    print("\nWeights are random (timm, pretrained=False, seeded): no model hub here. Any .onnx file works too.")
    print("\nTrained here (seeded, cached after the first use):\n" + format_table(
        [[t.name, t.family, t.data, "x".join(map(str, t.input_shape[1:]))] for t in zoo.TRAINED.values()],
        ["model", "family", "trained on", "input"]))
    print(f"\nMixture-of-experts ViTs (models/moe_vit.py, trained on digits), one build per task:\n"
          f"{format_task_builds(moe_rows)}")
    return 0


def cmd_targets(args) -> int:
    from .backends.tvm_compiler import target_dict
    from .targets import all_targets

    targets = all_targets()
    if args.json:
        _print_json([{"name": t.name, "description": t.description,
                      "cpu": t.cpu and {"arch": t.cpu.arch, "tvm": target_dict(t.cpu.tvm)},
                      "fpga": t.fpga and t.fpga.__dict__} for t in targets], "-")
        return 0
    rows = []
    for t in targets:
        cpu = f"{t.cpu.arch} {target_dict(t.cpu.tvm).get('mcpu', '')}".strip() if t.cpu else "-"
        fpga = f"{t.fpga.part} ({t.fpga.dsp} DSP, {t.fpga.bram36} BRAM36, {t.fpga.lut} LUT)" if t.fpga else "-"
        runs = "natively" if t.cpu and not t.cpu.is_cross else (
            f"under {t.cpu.emulator.command}" if t.cpu and t.cpu.emulator else "-")
        rows.append([t.name, cpu, runs, fpga, t.description])
    print(format_table(rows, ["target", "cpu (tvm)", "runs here", "fpga", "description"]))
    return 0


def cmd_ops(args) -> int:
    from .backends.tvm_compiler import supported_onnx_ops
    from .frontend import BUILD_FAILS

    ops = sorted(supported_onnx_ops() - set(BUILD_FAILS))
    if args.json:
        _print_json(ops, "-")
        return 0
    print(f"{len(ops)} ONNX operators edgevit compiles (TVM 0.27's Relax ONNX frontend):")
    print(format_table([ops[i:i + 6] + [""] * (6 - len(ops[i:i + 6])) for i in range(0, len(ops), 6)],
                       [""] * 6))
    for op, why in sorted(BUILD_FAILS.items()):
        print(f"not supported although TVM converts it: {op} ({why})")
    return 0


def cmd_compile(args) -> int:
    from .compiler import compile_for_target
    from .frontend import load_model
    from .frontend_tflite import from_tflite_file, is_tflite_path
    from .outputs import check_output
    from .targets import get_target

    target = get_target(args.target)
    target.require_cpu()
    if args.output is not None:  # checked before the model is read, so a bad -o costs nothing
        check_output(args.output, [Path(args.model)], "-o")
    quantize = _quantize_settings(args, "compile")
    if is_tflite_path(args.model):  # compiled as it is, verified against LiteRT on the same file
        if quantize:
            raise UsageError("--quantize applies to ONNX files and zoo models; a .tflite file is compiled as it is "
                             "(give an int8 .tflite, e.g. from ai-edge-quantizer)")
        model = from_tflite_file(Path(args.model), args.input_shape)
    else:
        model = load_model(args.model, args.input_shape)
    if quantize:
        from .quantize import quantize_cached

        model = quantize_cached(model, quantize)
    output = Path(args.output or f"{model.name}-{target.name}.tar")
    metadata = compile_for_target(model, target, output, tuning_db=args.tuning_db)
    if args.json:
        _print_json(metadata, "-")
    else:
        shapes = ", ".join(f"{s['name']} {s['dtype']}{s['shape']}" for s in metadata["inputs"])
        kind = f"tuned build (database {args.tuning_db})" if args.tuning_db else "default schedules, untuned"
        print(f"{output}: {model.name} for {target.name} ({metadata['target']['arch']}), inputs {shapes}; "
              f"{kind} ({sum(metadata['timings'].values()):.1f} s)")
        _print_kept_float(metadata["model"].get("quantization"))
        moe = metadata["model"].get("moe")
        if moe:
            print(f"task build {moe['name']}: experts per MoE layer {moe['experts']} of {moe['experts_total']}, "
                  f"{moe['params']:,} parameters ({moe['params_all_tasks']:,} for all tasks)")
    return 0


def cmd_quantize(args) -> int:
    from .frontend import load_model
    from .outputs import check_output
    from .quantize import QuantizeSettings, quantize_model

    output = check_output(args.output, [Path(args.model)], "-o")
    if not output.resolve().parent.is_dir():
        raise OutputError(f"-o '{args.output}': folder {output.parent} does not exist; create it first")
    model = load_model(args.model, args.input_shape)
    summary = quantize_model(model, QuantizeSettings(args.calibration, args.calib_count, args.per_channel,
                                                     args.method, args.keep_float), output)
    if args.json:
        _print_json(summary, "-")
        return 0
    ops = ", ".join(f"{op} {n}" for op, n in summary["quantized_ops"].items())
    print(f"{output}: {model.name} in int8 QDQ form ({'per-channel' if args.per_channel else 'per-tensor'} weights, "
          f"{summary['method']} ranges from {summary['samples']} {args.calibration} samples, "
          f"{summary['seconds']:.1f} s); int8 inputs of: {ops}")
    _print_kept_float(summary)
    print(f"build it: edgevit compile {output} --target host|rpi4")
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
    from .frontend import check_operators

    onnx_model = model.load()
    check_operators(onnx_model, tvm_compiler.supported_onnx_ops())
    mod = tvm_compiler.import_onnx(onnx_model, model.inputs)
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


def cmd_run(args) -> int:
    import numpy as np

    from .execute import check_verified, run
    from .outputs import check_output

    if args.output is not None:
        check_output(args.output, [Path(args.artifact), *map(Path, args.input or [])], "--output")
    ran = run(Path(args.artifact), args.input, args.device, args.repeat, args.verify, args.rtol)
    if args.output is not None:
        try:
            with open(args.output, "wb") as f:  # the exact name given (np.save would append .npy)
                np.save(f, ran.outputs[0])
        except OSError as exc:
            raise OutputError(f"cannot write --output {args.output}: {exc.strerror or exc}") from None
    result = ran.to_json(args.artifact)
    if args.json:
        _print_json(result, "-")
    else:
        ms = sorted(s * 1e3 for s in ran.seconds)
        print(f"{ran.model} ({ran.target}) on {ran.device}: outputs "
              f"{', '.join(str(o['shape']) for o in result['outputs'])}; "
              f"{ms[len(ms) // 2]:.1f} ms median of {len(ms)}" + (" (emulated)" if ran.device != "local" else ""))
        if "top5" in result:
            print(f"top-5 classes: {result['top5']}")
        if ran.comparison:
            for group in getattr(ran.comparison, "failing", []):
                print(group.line())
            print(f"verify vs {ran.reference_engine}: {ran.comparison.summary()}")
    check_verified(ran.comparison)
    return 0


def cmd_bench(args) -> int:
    from . import zoo
    from .bench import bench, bench_all
    from .bench_report import format_all, format_report

    try:
        threads = [int(t) for t in str(args.threads).split(",")]
    except ValueError:
        raise InputError(f"--threads takes a count or a list like 1,2, not '{args.threads}'") from None
    quantize = _quantize_settings(args, "bench")
    if quantize and (args.model == "all" or len(threads) > 1):
        raise UsageError("--quantize int8 benches one model at one thread count, not 'all' or a list of --threads")
    if args.model == "all" or len(threads) > 1:
        models = list(zoo.ZOO) if args.model == "all" else [args.model]
        result = bench_all(models, threads, runs=args.runs, warmup=args.warmup, tuning_db=args.tuning_db,
                           out_dir=Path(args.results), name=args.name)
        print(format_all(result))
        print(f"\nwrote {args.results}/{args.name}.json, .md and .png")
        return 0
    os.environ["TVM_NUM_THREADS"] = str(threads[0])  # read once, when TVM's thread pool starts
    report = bench(args.model, args.target, runs=args.runs, warmup=args.warmup, threads=threads[0],
                   input_shape=args.input_shape, tuning_db=args.tuning_db, profile=args.profile,
                   quantize=quantize)
    print(format_report(report))
    _print_kept_float(report.get("quantization"))
    if args.json:
        _print_json(report, args.json)
    if quantize and not report["agreement"]["ok"]:   # the int8 rule of run --verify, same exit code
        raise VerificationError(f"verification failed (int8 rule): {report['agreement']['summary']}")
    return 0


def cmd_prepare(args) -> int:
    from . import emulation

    python = emulation.prepare(args.arch)
    print(f"{args.arch} Python under qemu ready: root {python.root}, packages {python.site}")
    return 0


def _quantize_settings(args, command: str):
    """The ``QuantizeSettings`` of ``--quantize int8`` and its options, or None without ``--quantize``."""
    if args.quantize and args.calibration is None:
        raise UsageError(f"--quantize int8 needs --calibration DATA (see `edgevit {command} --help`)")
    if not args.quantize:
        if args.calibration is not None or args.per_channel or args.keep_float:
            raise UsageError("--calibration, --per-channel and --keep-float apply with --quantize int8")
        return None
    from .quantize import QuantizeSettings

    return QuantizeSettings(args.calibration, args.calib_count, args.per_channel, keep_float=args.keep_float)


def _print_kept_float(summary: dict | None) -> None:
    """The nodes ``--keep-float`` kept in float, with their measured error, and the outputs' SQNR."""
    if not summary or not summary.get("kept_float"):
        return
    rows = [[k["node"], k["op"], "exact" if k["sqnr_db"] is None else f"{k['sqnr_db']:.1f}"]
            for k in summary["kept_float"]]
    print(f"kept in float ({len(rows)} of {summary['measured_nodes']} quantized nodes, lowest SQNR of their "
          f"output vs float first):")
    print(format_table(rows, ["node", "op", "SQNR dB"]))
    sqnr = summary["output_sqnr_db"]
    print(f"model outputs vs float ({summary['samples']} calibration samples, onnxruntime): SQNR "
          f"{sqnr['all_int8']:.1f} dB all int8 -> {sqnr['with_float_fallback']:.1f} dB with these in float")


def _quantize_options(p, required: bool = False) -> None:
    p.add_argument("--calibration", required=required, metavar="DATA", help="calibration data: 'fashion-mnist' "
                   "or a folder of .npy samples (resized to the model's input)")
    p.add_argument("--calib-count", type=count(1, 100000), default=32, metavar="N",
                   help="calibration samples to use (default 32)")
    p.add_argument("--per-channel", action="store_true", help="one scale per output channel of each weight")
    p.add_argument("--keep-float", type=count(0, 100000), default=0, metavar="N",
                   help="keep in float the N quantized nodes whose output is furthest from float (lowest SQNR, "
                   "measured on the calibration samples); onnxruntime's nodes_to_exclude (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgevit", description="Compile and run lightweight hybrid vision "
                     "transformers on edge CPUs (TVM) and FPGAs (HLS).")
    parser.add_argument("--version", action="version", version=f"edgevit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors too")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list the model zoo (name, family, params, MACs, input size)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("targets", help="list the boards described in targets/")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_targets)

    p = sub.add_parser("ops", help="list the ONNX operators edgevit compiles")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_ops)

    p = sub.add_parser("compile", help="compile a zoo model or ONNX file for a target into an artifact .tar")
    p.add_argument("model", help="zoo name (see `edgevit models`), or path to an .onnx or .tflite (fp32 or int8) "
                   "file")
    p.add_argument("--target", "-t", default="host", help="target name (see `edgevit targets`); default host")
    p.add_argument("--output", "-o", help="artifact to write (default MODEL-TARGET.tar)")
    p.add_argument("--input-shape", help="static input shape for ONNX/TFLite files with symbolic (dynamic) dims: "
                   "1,3,224,224 or NAME:1,3,224,224[;NAME2:...]")
    p.add_argument("--tuning-db", metavar="DIR", help="apply kernels from an `edgevit tune` database")
    p.add_argument("--quantize", choices=["int8"], help="quantize first (as `edgevit quantize`; needs "
                   "--calibration)")
    _quantize_options(p)
    p.add_argument("--json", action="store_true", help="print the artifact metadata as JSON")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("quantize", help="quantize a zoo model or float ONNX file to int8 (QDQ ONNX, calibrated)")
    p.add_argument("model", help="zoo name (see `edgevit models`) or path to a float .onnx file")
    p.add_argument("--output", "-o", required=True, help="the QDQ .onnx file to write (its folder must exist)")
    _quantize_options(p, required=True)
    p.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="minmax",
                   help="onnxruntime calibrator for activation ranges (default minmax)")
    p.add_argument("--input-shape", help="as for compile")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("tune", help="measure the rules' tile choices and search with MetaSchedule (default "
                                    "schedules as baseline)")
    p.add_argument("model", help="zoo name or .onnx file")
    p.add_argument("--target", "-t", default="host", help="target name (default host)")
    p.add_argument("--trials", type=count(0, 100000), default=32, help="MetaSchedule random-search trials per kernel after the "
                   "rules' tile variants; 0 = variants only (default 32)")
    p.add_argument("--db", metavar="DIR", help="database directory to write (default MODEL-TARGET.tuning)")
    p.add_argument("--threads", type=count(1, 1024), help="TVM threads to tune for (default: every core)")
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
    p.add_argument("--verify", action="store_true", help="compare with onnxruntime (LiteRT for .tflite builds) on "
                   "the same input")
    p.add_argument("--rtol", type=nonnegative_float, default=1e-5, help="max relative error for --verify (default 1e-5)")
    p.add_argument("--repeat", type=count(1, 1000000), default=1, help="runs to time (default 1)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="benchmark a model's edgevit build against onnxruntime (and LiteRT) "
                       "on this CPU")
    p.add_argument("model", help="zoo name, .onnx file, artifact .tar built for host, or 'all' (whole zoo)")
    p.add_argument("--target", "-t", default="host", help="only 'host' can be timed here (default host)")
    p.add_argument("--runs", type=count(1, 1000000), default=30, help="timed runs per engine (default 30)")
    p.add_argument("--warmup", type=count(0, 1000000), default=3, help="untimed runs first (default 3)")
    p.add_argument("--threads", default="1", help="threads for every engine: a count or a list like 1,2 "
                   "(default 1)")
    p.add_argument("--tuning-db", metavar="DIR", help="compile with an `edgevit tune` database")
    p.add_argument("--profile", action="store_true", help="also print edgevit's time per kernel")
    p.add_argument("--results", default="results", help="folder for JSON/PNG/markdown of 'all' or several "
                   "thread counts (default results)")
    p.add_argument("--name", default="bench_zoo", help="file name stem under --results (default bench_zoo)")
    p.add_argument("--input-shape", help="as for compile")
    p.add_argument("--quantize", choices=["int8"], help="bench the model's int8 QDQ form: edgevit int8 against "
                   "onnxruntime int8 on the same file (needs --calibration; one model, one thread count)")
    _quantize_options(p)
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
    """Run the ``edgevit`` command; returns the exit code (see ``edgevit.errors``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv[:argv.index("--")] if "--" in argv else "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except EdgevitError as exc:
        if debug:
            traceback.print_exc()
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"edgevit: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgevit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
