"""``edgevit tracker|node|nodes|plan|infer``: thin argparse wrappers around the distributed library.

``register(subparsers)`` adds the subcommands to the top-level CLI's subparsers; each handler returns an exit
code and raises ``edgevit.errors`` classes for problems the user can fix.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import EdgevitError, InputError
from ..tables import format_table
from . import node as node_agent


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
    from tvm.rpc.tracker import Tracker

    try:
        tracker = Tracker(args.host, args.port, args.port + 1, silent=True)
    except (ValueError, OSError) as exc:
        raise EdgevitError(f"cannot start a tracker on {args.host}:{args.port}: {exc}") from None
    print(f"TVM RPC tracker listening on {args.host}:{tracker.port} (no authentication: trusted network only)",
          flush=True)
    try:
        tracker.proc.join()
    finally:
        tracker.terminate()
    return 0


def cmd_node(args) -> int:
    node_agent.serve(node_agent.parse_address(args.tracker), args.key, args.host, args.port, args.port_end,
                     args.cache, args.run_delay, silent=True)
    return 0


def _tracker(address: str, timeout: float = 20.0):
    from .client import Tracker

    host, port = node_agent.parse_address(address)
    return Tracker(host, port, timeout)


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
    plan = build_class_plan(args.model, slots, args.k or len(slots), Path(args.output), args.assign)
    full = plan["full"]
    print(f"{args.output}: class split of {plan['model']} into {plan['k']} sub-models "
          f"(assignment {plan['assignment']}); full model {full['params']:,} params, {full['bytes'] / 1024:.0f} KiB")
    print(f"{'sub-model':<9} {'classes':<16} {'params':>8} {'vs full':>7} {'artifact':>10}  node")
    for s in plan["submodels"]:
        print(f"{s['name']:<9} {str(s['classes']):<16} {s['params']:>8,} {full['params'] / s['params']:>6.1f}x "
              f"{s['bytes'] / 1024:>7.0f} KiB  {s['slot']} ({s['target']}, ~{s['memory_mib']:.1f} MiB)")
    print(f"predicted latency per image: {plan['predicted_latency_ms']:.2f} ms (host-profiled compute + "
          "RPC overhead; slots in parallel)")
    return 0


def _plan_pipeline(args, slots) -> int:
    from .pipeline import build_pipeline_plan

    tracker = _tracker(args.tracker, 120.0) if args.tracker else None
    plan = build_pipeline_plan(args.model, slots, tracker, Path(args.output), args.objective,
                               Path(args.profile) if args.profile else None)
    print(f"{args.output}: pipeline of {plan['model']} in {len(plan['stages'])} stage(s), objective "
          f"{plan['objective']}")
    print(f"{'stage':<7} {'layers':<8} {'node':<10} {'predicted ms':>12} {'artifact':>10}")
    for st in plan["stages"]:
        print(f"{st['name']:<7} {st['layers'][0]}-{st['layers'][1] - 1:<6} {st['slot']:<10} {st['predicted_ms']:>12.3f} "
              f"{st['bytes'] / 1024:>6.0f} KiB")
    print(f"predicted latency {plan['predicted_latency_ms']:.2f} ms, bottleneck stage {plan['predicted_bottleneck_ms']:.2f} ms"
          " (profile: per-layer node compute through RPC, output sizes, measured bandwidth)")
    return 0


def _inputs(args, plan: dict):
    import numpy as np

    if args.dataset:
        from . import fashion

        if args.dataset != "fashion-mnist":
            raise InputError(f"unknown dataset '{args.dataset}'; known: fashion-mnist")
        x, y = fashion.load("test", args.stream or 100)
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
    x, labels = _inputs(args, plan)
    if plan["strategy"] == "pipeline":
        return _infer_pipeline(args, plan, x, labels)
    runner = ClassSplitRunner(plan, _tracker(args.tracker, args.timeout))
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


def _infer_pipeline(args, plan: dict, x, labels) -> int:
    import numpy as np

    from .pipeline import PipelineRunner

    runner = PipelineRunner(plan, _tracker(args.tracker, args.timeout))
    try:
        runner.open(wait=args.wait)
        single = runner.stream(list(x[:1]))[0]  # one image alone: the pipeline's latency
        start = time.perf_counter()
        results = runner.stream(list(x))
        wall = time.perf_counter() - start
        breakdown = runner.breakdown()
    finally:
        runner.close()
    failed = [i for i, r in enumerate(results) if r["error"]]
    report = {"plan": args.plan, "images": len(results), "failed": len(failed),
              "errors": [results[i]["error"] for i in failed][:10],
              "latency_ms": single["latency_ms"], "images_per_s": len(results) / wall,
              "predicted_latency_ms": plan["predicted_latency_ms"],
              "predicted_images_per_s": 1e3 / plan["predicted_bottleneck_ms"],
              "nodes": breakdown, "retries": runner.pool.retries,
              "predictions": [r["prediction"] for r in results]}
    if labels is not None:
        report["accuracy"] = float(np.mean([r["prediction"] == y for r, y in zip(results, labels)]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"{len(results)} image(s) streamed through {len(plan['stages'])} stage(s); failed: {len(failed)}; "
          f"retries: {runner.pool.retries}")
    if labels is not None:
        print(f"accuracy: {report['accuracy'] * 100:.2f} %")
    print(f"latency {report['latency_ms']:.2f} ms (predicted {report['predicted_latency_ms']:.2f}); throughput "
          f"{report['images_per_s']:.1f} images/s (predicted {report['predicted_images_per_s']:.1f})")
    _print_breakdown(breakdown)
    return 1 if failed else 0


def register(subparsers) -> None:
    """Add ``tracker``, ``node``, ``nodes``, ``plan`` and ``infer`` to an argparse subparsers object."""
    p = subparsers.add_parser("tracker", help="run TVM's RPC tracker (where nodes register)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; no auth)")
    p.add_argument("--port", type=int, default=9190, help="port (default 9190)")
    p.set_defaults(func=cmd_tracker)

    p = subparsers.add_parser("node", help="run a node agent: TVM RPC server + edgevit's functions")
    node_agent.add_arguments(p)
    p.set_defaults(func=cmd_node)

    p = subparsers.add_parser("nodes", help="list nodes per key: free/busy/queued, arch, memory, versions")
    p.add_argument("--tracker", required=True, help="tracker HOST:PORT")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_nodes)

    p = subparsers.add_parser("plan", help="split a model across nodes and compile the parts (plan.json)")
    p.add_argument("model", help="fashion-vit (ViT trained here on Fashion-MNIST) or fashion-vit-tiny")
    p.add_argument("--strategy", choices=["class", "pipeline"], default="class",
                   help="class: ED-ViT class-wise split; pipeline: consecutive stages chosen by a DP")
    p.add_argument("--nodes", required=True, help="nodes.yaml: key, count, target, memory_mib per entry")
    p.add_argument("--objective", choices=["latency", "throughput"], default="latency",
                   help="pipeline: minimise one image's latency or the slowest stage (default latency)")
    p.add_argument("--tracker", help="pipeline: tracker HOST:PORT, to profile layers on the nodes")
    p.add_argument("--profile", help="pipeline: profile JSON to read (editable) or to write")
    p.add_argument("--k", type=int, help="number of sub-models (default: number of nodes)")
    p.add_argument("--assign", choices=["confusion", "random"], default="confusion",
                   help="class assignment: balanced by confusion (default) or seeded random")
    p.add_argument("-o", "--output", default="plan.json", help="plan to write (default plan.json)")
    p.set_defaults(func=cmd_plan)

    p = subparsers.add_parser("infer", help="run a plan on the nodes of a tracker")
    p.add_argument("plan", help="plan.json from `edgevit plan`")
    p.add_argument("--tracker", required=True, help="tracker HOST:PORT")
    p.add_argument("--input", help=".npy image (or stack of images)")
    p.add_argument("--dataset", help="fashion-mnist: run test images and report accuracy")
    p.add_argument("--stream", type=int, help="number of images to stream (default: all given / 100)")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per remote call (default 20)")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for nodes to appear (default 60)")
    p.add_argument("--json", help="also write the report as JSON")
    p.set_defaults(func=cmd_infer)
