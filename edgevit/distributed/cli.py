"""``edgevit tracker|node|nodes|plan|infer``: thin argparse wrappers around the distributed library.

``register(subparsers)`` adds the subcommands to the top-level CLI's subparsers; each handler returns an exit
code and raises ``edgevit.errors`` classes for problems the user can fix.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..argtypes import count, nonnegative_float
from ..errors import EdgevitError, InputError, VerificationError
from ..tables import format_table
from . import keys_cli, pipeline_verify
from . import node as node_agent
from .keys_cli import add_security_arguments, security_from_args


def _print_breakdown(breakdown: list[dict]) -> None:
    """The per-node table of an inference run: compute and transfer per call, bytes in total."""
    rows = []
    for n in breakdown:
        calls = max(1, n["calls"])
        rows.append([n["slot"], n["calls"], f"{n['compute_ms'] / calls:.3f}", f"{n['transfer_ms'] / calls:.3f}",
                     f"{n['bytes_sent'] / 1024:.1f}", f"{n['bytes_received'] / 1024:.1f}", n["failures"]])
    print(format_table(rows, ["node", "calls", "compute ms", "transfer ms", "sent KiB", "recv KiB", "fail"]))
    print("(compute and transfer are per call; KiB are totals)")


def cmd_tracker(args) -> int:
    from .rpc_listener import TrackerServer

    try:
        tracker = TrackerServer(args.host, args.port)
    except OSError as exc:
        raise EdgevitError(f"cannot start a tracker on {args.host}:{args.port}: {exc}") from None
    print(f"TVM RPC tracker listening on {args.host}:{tracker.port} (no authentication: trusted network only)",
          flush=True)
    tracker.serve_until_signal()  # in this process: nothing is left listening after SIGTERM
    return 0


def cmd_node(args) -> int:
    node_agent.serve(node_agent.parse_address(args.tracker), args.key, args.host, args.port, args.port_end,
                     args.cache, args.run_delay, silent=True, security=security_from_args(args, args.key),
                     accelerator=node_agent.accelerator_from_args(args))
    return 0


def _tracker(address: str, timeout: float = 20.0, security=None):
    from .client import Tracker

    host, port = node_agent.parse_address(address)
    return Tracker(host, port, timeout, security)


def cmd_nodes(args) -> int:
    rows = _tracker(args.tracker).nodes()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"no nodes registered with {args.tracker}")
        return 0
    print(f"{'key':<12} {'total':>5} {'free':>4} {'busy':>4} {'queued':>6}  servers")
    for row in rows:
        servers = []
        for s in row["servers"]:
            mem = s.get("memory", {})
            servers.append(f"{s['addr'][0]}:{s['addr'][1]} {s.get('arch', '?')} "
                           f"{mem.get('available_mib', '?')}/{mem.get('total_mib', '?')} MiB "
                           f"tvm {s.get('versions', {}).get('tvm', '?')} edgevit {s.get('versions', {}).get('edgevit', '?')}")
        print(f"{row['key']:<12} {row['total']:>5} {row['free']:>4} {row['busy']:>4} {row['queued']:>6}  "
              + ("; ".join(servers) or "-"))
    return 0


def cmd_plan(args) -> int:
    from .plan import load_nodes
    from .planner import build_class_plan

    slots = load_nodes(Path(args.nodes))
    if args.strategy == "pipeline":
        return _plan_pipeline(args, slots)
    tracker = _tracker(args.tracker, 120.0, security_from_args(args, "host")) if args.tracker else None
    plan = build_class_plan(args.model, slots, args.k if args.k is not None else max(2, len(slots)), Path(args.output),
                            args.assign, tracker=tracker)
    full = plan["full"]
    print(f"{args.output}: class split of {plan['model']} into {plan['k']} sub-models "
          f"(assignment {plan['assignment']}); full model {full['params']:,} params, {full['bytes'] / 1024:.0f} KiB")
    print(f"{'sub-model':<9} {'classes':<16} {'params':>8} {'vs full':>7} {'artifact':>10}  node")
    for s in plan["submodels"]:
        print(f"{s['name']:<9} {str(s['classes']):<16} {s['params']:>8,} {full['params'] / s['params']:>6.1f}x "
              f"{s['bytes'] / 1024:>7.0f} KiB  {s['slot']} ({s['target']}, ~{s['memory_mib']:.1f} MiB)")
    print(f"predicted latency per image: {plan['predicted_latency_ms']:.2f} ms (nodes in parallel; "
          f"{plan['predicted_source']})")
    return 0


def _plan_pipeline(args, slots) -> int:
    from .pipeline import build_pipeline_plan

    tracker = _tracker(args.tracker, 120.0, security_from_args(args, "host")) if args.tracker else None
    out_dir = Path(args.output if args.output != "plan.json" else "plan")
    plan = build_pipeline_plan(args.model, slots, tracker, out_dir, args.objective,
                               Path(args.profile) if args.profile else None, args.stages, args.max_live,
                               args.units, args.input_shape)
    print(f"{out_dir}/plan.json: pipeline of {plan['model']} in {len(plan['stages'])} stage(s), objective "
          f"{plan['objective']}; chained stages match the whole model in onnxruntime "
          f"(max rel error {plan['chain_check']['max_rel_error']:.2g})")
    rows = []
    for st in plan["stages"]:
        p = st["predicted"]
        rows.append([st["name"], f"{st['units'][0]}-{st['units'][1] - 1}", st["slot"], st["target"],
                     f"{p['compute_ms']:.3f}", f"{p['in_ms']:.3f}", f"{p['in_bytes'] / 1024:.1f}",
                     f"{p['weight_bytes'] / 2**20:.2f}",
                     f"{st['bytes'] / 1024:.0f} KiB" if "bytes" in st else f"bundle {st['sha256'][:12]}",
                     st["cost_source"]])
    print(format_table(rows, ["stage", "units", "node", "target", "compute ms", "in ms", "in KiB", "weights MiB",
                              "runs", "cost from"]))
    fixed = plan["chain_check"].get("fixed_point")
    if fixed:
        print(f"FPGA stage: with the accelerator's fixed-point result ({fixed['input']}) the model's output is off "
              f"by {fixed['max_rel_error']:.3g} (relative), top-1 {'agrees' if fixed['top1_agree'] else 'DIFFERS'}; "
              f"infer --verify allows {plan['verify_rtol']:.3g}")
    pred = plan["predicted"]
    alone = ", ".join(f"{k} {v['latency_ms']:.2f} ms" for k, v in plan["one_node"].items())
    print(f"predicted: latency {pred['latency_ms']:.2f} ms, throughput {pred['images_per_s']:.1f} images/s "
          f"(bottleneck {pred['bottleneck_ms']:.2f} ms); one node alone: {alone}")
    return 0


def _inputs(args, plan: dict):
    import numpy as np

    if args.dataset:
        from ..datasets import fashion_mnist

        if args.dataset != "fashion-mnist":
            raise InputError(f"unknown dataset '{args.dataset}'; known: fashion-mnist")
        x, y = fashion_mnist("test", args.stream or 100)
        return x[:, None].reshape(-1, *plan["input"]["shape"]), y
    if not args.input:
        raise InputError("give --input x.npy or --dataset fashion-mnist")
    try:
        x = np.load(args.input, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {args.input}: {exc}") from None
    shape = tuple(plan["input"]["shape"])
    if x.shape == shape[1:]:
        x = x[None]
    if x.shape[1:] != shape[1:]:
        raise InputError(f"input must be {list(shape)} or a stack of such images, got {list(x.shape)}")
    x = x.reshape(-1, *shape)
    count = args.stream or len(x)
    return np.concatenate([x] * (count // len(x) + 1))[:count], None


def cmd_infer(args) -> int:
    import numpy as np

    from .infer import ClassSplitRunner
    from .plan import read_plan

    plan = read_plan(Path(args.plan))
    if plan["strategy"] == "pipeline":
        return _infer_pipeline(args, plan)
    x, labels = _inputs(args, plan)
    runner = ClassSplitRunner(plan, _tracker(args.tracker, args.timeout, security_from_args(args, "host")))
    answers = []
    try:
        runner.open(wait=args.wait)
        for image in x:
            answers.append(runner.infer(image))
        breakdown = runner.breakdown()
    finally:
        runner.close()
    lat = np.array([a.latency_ms for a in answers])
    degraded = [i for i, a in enumerate(answers) if a.degraded]
    report = {"plan": args.plan, "images": len(answers), "degraded": len(degraded),
              "latency_ms": {"p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)),
                             "p99": float(np.percentile(lat, 99)), "mean": float(lat.mean())},
              "predicted_latency_ms": plan.get("predicted_latency_ms"), "nodes": breakdown,
              "retries": runner.pool.retries, "predictions": [a.prediction for a in answers]}
    if labels is not None:
        report["accuracy"] = float(np.mean([a.prediction == y for a, y in zip(answers, labels)]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"{len(answers)} image(s) through {len(plan['submodels'])} sub-models on {len(breakdown)} node(s); "
          f"degraded answers: {len(degraded)}; retries: {runner.pool.retries}")
    if labels is not None:
        print(f"accuracy: {report['accuracy'] * 100:.2f} %")
    elif len(answers) == 1:
        print(f"prediction: class {answers[0].prediction}" + (f" (DEGRADED, missing {answers[0].missing})"
                                                               if answers[0].degraded else ""))
    print(f"latency per image: p50 {report['latency_ms']['p50']:.2f} ms, p90 {report['latency_ms']['p90']:.2f} ms "
          f"(predicted {report['predicted_latency_ms']:.2f} ms)")
    _print_breakdown(breakdown)
    return 0


def _pipeline_inputs(args, plan: dict) -> tuple[list[list], object]:
    """Each item's model inputs: ``--input`` files (one per model input, a stack allowed for a single-input
    model), a dataset, or seeded random inputs of the plan's shapes; ``--stream N`` repeats them to N items."""
    import numpy as np

    from ..frontend import TensorSpec
    from ..reference import random_inputs

    specs = [TensorSpec.from_json(s) for s in plan["inputs"]]
    labels = None
    if args.dataset or (args.input and len(specs) == 1):
        x, labels = _inputs(args, {"input": {"shape": list(specs[0].shape)}})
        items = [[np.ascontiguousarray(image[None] if image.ndim == len(specs[0].shape) - 1 else image,
                                       specs[0].dtype)] for image in x]
    elif args.input:
        raise InputError(f"the model has {len(specs)} inputs: --input takes one-input models (or use --stream "
                         "with seeded random inputs)")
    else:
        count = args.stream or 1
        items = [random_inputs(specs, seed) for seed in range(min(count, 16))]
        items = [items[i % len(items)] for i in range(count)]
    return items, labels


def _infer_pipeline(args, plan: dict) -> int:
    import numpy as np

    from .pipeline_runner import PipelineRunner, summarize

    items, labels = _pipeline_inputs(args, plan)
    int8 = args.verify and pipeline_verify.is_int8_plan(plan)
    if int8:
        pipeline_verify.check_int8_verifiable(plan)
    tracker = _tracker(args.tracker, args.timeout, security_from_args(args, "host"))
    runner = PipelineRunner(plan, tracker, bind=args.bind, call_timeout=args.timeout,
                            stall_timeout=args.stall_timeout)
    try:
        runner.open(wait=args.wait)
        single = runner.stream(items[:min(len(items), 5)], window=1, wait=args.wait)  # one at a time: latency
        start = time.perf_counter()
        streamed = runner.stream(items, wait=args.wait)
        wall = time.perf_counter() - start
        placement = runner.placement()
        # the int8 rule checks each stage on its node's own inputs and outputs: one input, stage by stage
        stage_runs = runner.run_stages(items[0]) if int8 and streamed[0]["outputs"] is not None else None
        nodes = [s.spec["slot"] if s.session is None else f"{s.session.info.get('host')}:"
                 f"{s.session.info.get('port')}" for s in runner.stages]
    finally:
        runner.close()
    report = {"plan": str(args.plan), "model": plan["model"], "images": len(items),
              **summarize(plan, single, streamed, wall, placement),
              "counters": runner.counters,
              "predictions": [int(np.argmax(r["outputs"][0])) if r["outputs"] is not None else None
                              for r in streamed]}
    if labels is not None:
        report["accuracy"] = float(np.mean([p == y for p, y in zip(report["predictions"], labels)]))
    verdict = None
    if int8:
        verdict = pipeline_verify.verify_int8(plan, items, streamed, stage_runs, nodes)
        report["verify"] = verdict.to_json()
    elif args.verify:
        verdict = pipeline_verify.verify_float(plan, items, streamed,
                                               args.rtol or float(plan.get("verify_rtol", 1e-5)))
        report["verify"] = verdict
    rows = [[s["stage"], s["node"], s["target"], _ms(s["compute_ms"]), _ms(s["streaming_compute_ms"]),
             _ms(s["predicted_compute_ms"]), f"{s['bytes_in'] / 1024:.1f}"] for s in report["stages"]]
    print(format_table(rows, ["stage", "node", "target", "compute ms", "while streaming", "predicted", "in KiB"]))
    rows = [[link["link"], f"{link['bytes'] / 1024:.1f}", _ms(link["transfer_ms"]), _ms(link["predicted_ms"])]
            for link in report["links"]]
    print(format_table(rows, ["link", "KiB", "transfer ms", "predicted"]))
    print("(host links: their time is in the end-to-end latency; node-to-node transfer from the nodes' clocks)")
    shared = (f", bound by the cores of the machine the nodes share: {report['predicted_images_per_s']:.1f}"
              if report["shared_machine_period_ms"] else "")
    print(f"latency {_ms(report['latency_ms'])} ms (predicted {report['predicted_latency_ms']:.2f}); throughput "
          f"{report['images_per_s']:.1f} images/s (predicted "
          f"{report['predicted_images_per_s_separate_machines']:.1f} on separate machines{shared}); "
          f"{len(items)} image(s), failed {report['failed']}; resent {runner.counters['resent']}, nodes replaced "
          f"{runner.counters['nodes_replaced']}")
    if labels is not None:
        print(f"accuracy: {report['accuracy'] * 100:.2f} %")
    if int8:
        for stage in verdict.stages:
            print(f"verify {stage.summary()}")
            for line in stage.failing[1:]:
                print(f"  {line}")
        print(f"verify vs onnxruntime (int8 rule, per stage): {verdict.summary()}")
    elif verdict:
        print(f"verify vs onnxruntime (whole model): max rel error {verdict['max_rel_error']:.3g} over "
              f"{verdict['checked']} result(s) (tolerance {verdict['rtol']:g}) -> "
              f"{'PASS' if verdict['ok'] else 'FAIL'}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if int8 and not verdict.ok:
        raise VerificationError(f"pipeline verification failed (int8 rule): {verdict.failure}")
    if verdict and not int8 and not verdict["ok"]:
        raise VerificationError(f"pipeline results differ from onnxruntime on the whole model: {verdict['why']}")
    return 1 if report["failed"] else 0


def _ms(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def register(subparsers) -> None:
    """Add ``tracker``, ``node``, ``nodes``, ``plan`` and ``infer`` to an argparse subparsers object."""
    p = subparsers.add_parser("tracker", help="run TVM's RPC tracker (where nodes register)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; no auth)")
    p.add_argument("--port", type=int, default=9190, help="port (default 9190)")
    p.set_defaults(func=cmd_tracker)

    p = subparsers.add_parser("node", help="run a node agent: TVM RPC server + edgevit's functions")
    node_agent.add_arguments(p)
    p.set_defaults(func=cmd_node)

    keys_cli.register(subparsers)

    p = subparsers.add_parser("nodes", help="list nodes per key: free/busy/queued, arch, memory, versions")
    p.add_argument("--tracker", required=True, help="tracker HOST:PORT")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_nodes)

    p = subparsers.add_parser("plan", help="split a model across nodes and compile the parts (plan.json)")
    p.add_argument("model", help="pipeline: anything `edgevit compile` takes (zoo name, MoE task build, .onnx file) "
                   "or a model trained here (fashion-vit, fashion-vit-tiny, fashion-mobilevit, fashion-mobilevit-tiny); "
                   "class: a model trained here")
    p.add_argument("--strategy", choices=["class", "pipeline"], default="class",
                   help="class: ED-ViT class-wise split; pipeline: consecutive stages chosen by a DP")
    p.add_argument("--nodes", required=True, help="nodes.yaml: key, count, target, memory_mib per entry")
    p.add_argument("--objective", choices=["latency", "throughput"], default="latency",
                   help="pipeline: minimise one image's latency or the slowest stage (default latency)")
    p.add_argument("--tracker", help="pipeline: tracker HOST:PORT, to profile layers on the nodes")
    p.add_argument("--profile", help="pipeline: cost profile JSON to read (editable; e.g. measured on a real "
                   "board) or to write (default PLAN_DIR/profile.json)")
    p.add_argument("--stages", type=int, help="pipeline: use exactly this many stages (default: the objective's "
                   "choice)")
    p.add_argument("--max-live", type=int, default=1, help="pipeline: most tensors one cut may send (default 1)")
    p.add_argument("--units", type=int, default=12, help="pipeline: graph units the planner chooses among "
                   "(default 12)")
    p.add_argument("--input-shape", help="pipeline: static input shape for ONNX files, as for compile")
    add_security_arguments(p, "the host's member name in the key folder (default host)")
    p.add_argument("--k", type=int, help="class: number of sub-models, 2..number of classes (default: number of nodes, at "
                   "least 2)")
    p.add_argument("--assign", choices=["confusion", "random"], default="confusion",
                   help="class assignment: balanced by confusion (default) or seeded random")
    p.add_argument("-o", "--output", default="plan.json", help="class: plan file to write (default plan.json); "
                   "pipeline: plan folder (default plan/)")
    p.set_defaults(func=cmd_plan)

    p = subparsers.add_parser("infer", help="run a plan on the nodes of a tracker")
    p.add_argument("plan", help="plan.json (class split) or plan folder (pipeline) from `edgevit plan`")
    p.add_argument("--tracker", required=True, help="tracker HOST:PORT")
    p.add_argument("--input", help=".npy image (or stack of images)")
    p.add_argument("--dataset", help="fashion-mnist: run test images and report accuracy")
    p.add_argument("--stream", type=count(1, 10**8), help="number of images to stream (default: all given / 100)")
    p.add_argument("--timeout", type=nonnegative_float, default=20.0, help="seconds per remote call (default 20)")
    p.add_argument("--wait", type=nonnegative_float, default=60.0, help="seconds to wait for nodes to appear (default 60)")
    p.add_argument("--json", help="also write the report as JSON")
    p.add_argument("--verify", action="store_true", help="pipeline: compare every result with onnxruntime "
                   "running the whole model; an int8 (QDQ) plan stage by stage, group by group (docs/int8.md)")
    p.add_argument("--rtol", type=nonnegative_float, help="max relative error for --verify (default: the plan's, 1e-5; "
                   "with an FPGA stage, 4x the fixed-point error measured at plan time)")
    p.add_argument("--bind", default="127.0.0.1", help="pipeline: host address the last stage sends results to "
                   "(must be reachable from the nodes; default 127.0.0.1)")
    p.add_argument("--stall-timeout", type=nonnegative_float, default=10.0, help="pipeline: seconds without a result before "
                   "the host checks the nodes and moves a dead node's stage (default 10)")
    add_security_arguments(p, "the host's member name in the key folder (default host)")
    p.set_defaults(func=cmd_infer)
