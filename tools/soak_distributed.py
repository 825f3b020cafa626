"""Soak: a pipeline streams many images across several nodes while the nodes serving its stages are killed.

    .venv/bin/python tools/soak_distributed.py [--model mobilevit_xxs] [--images 1000] [--nodes 3] [--stages 2]
                                               [--kill-every 100] [--max-minutes 30] [--json results/...]

Starts a TVM tracker and ``--nodes`` edgevit nodes (``LocalCluster``: x86, loopback, CURVE keys), plans the
model as a ``--stages`` pipeline (MAC estimates: the plan is not what is tested), and streams ``--images``
inputs node to node. Whenever ``--kill-every`` more results have arrived, the node serving one stage (in turn)
is killed with its whole process group (usually with inputs in flight) and a fresh node of the same key is
started, so a spare is always there. Every answer is checked against onnxruntime on the whole model. Reports
lost, duplicated and wrong answers (all must be 0), inputs resent, nodes replaced and latency; stops by itself
after ``--max-minutes``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` kills the nodes on `timeout`
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilevit_xxs")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--kill-every", type=int, default=100)
    parser.add_argument("--max-minutes", type=float, default=30.0)
    parser.add_argument("--json", default=str(ROOT / "results" / "distributed_soak_pipeline.json"))
    args = parser.parse_args()

    from edgevit.distributed.client import Tracker
    from edgevit.distributed.local_cluster import LocalCluster
    from edgevit.distributed.pipeline import build_pipeline_plan
    from edgevit.distributed.pipeline_runner import PipelineRunner
    from edgevit.distributed.plan import NodeSlot, read_plan
    from edgevit.frontend import TensorSpec
    from edgevit.reference import random_inputs, run_onnxruntime

    work = Path(tempfile.mkdtemp(prefix="edgevit-soak-"))
    slots = [NodeSlot("soak", i, "host", 4096) for i in range(args.nodes)]
    build_pipeline_plan(args.model, slots, None, work / "plan", "throughput", stages=args.stages)
    plan = read_plan(work / "plan")
    specs = [TensorSpec.from_json(s) for s in plan["inputs"]]
    distinct = [random_inputs(specs, seed) for seed in range(16)]
    expected = [run_onnxruntime(work / "plan" / "model.onnx", x) for x in distinct]
    items = [distinct[i % len(distinct)] for i in range(args.images)]

    cluster = LocalCluster(members=args.nodes + args.images // max(1, args.kill_every) + 1)
    nodes = {}
    for _ in range(args.nodes):
        proc = cluster.add_node("soak")
        nodes[proc.pid] = proc
    kills: list[dict] = []
    runner = None
    deadline = time.monotonic() + args.max_minutes * 60
    try:
        runner = PipelineRunner(plan, Tracker("127.0.0.1", cluster.port, 10.0, cluster.security), stall_timeout=3.0)
        runner.open(wait=180)
        finished = {"count": 0}

        def on_result(_seq):
            finished["count"] += 1
            if finished["count"] % args.kill_every == 0 and finished["count"] < args.images:
                stage = runner.stages[len(kills) % len(runner.stages)]
                pid = stage.session.info["node_pid"] if stage.session else None
                if pid in nodes:
                    nodes.pop(pid).kill()
                    proc = cluster.add_node("soak", wait=0)   # a spare: the runner takes it from the tracker
                    nodes[proc.pid] = proc
                    kills.append({"after_results": finished["count"], "stage": stage.spec["name"]})
            if finished["count"] % 100 == 0:
                print(f"{finished['count']} results, {len(kills)} kills, {runner.counters}", flush=True)
            if time.monotonic() > deadline:
                raise TimeoutError("soak exceeded --max-minutes")

        start_time = time.perf_counter()
        results = runner.stream(items, wait=180, on_result=on_result)
        wall = time.perf_counter() - start_time
    finally:
        if runner:
            runner.close()
        cluster.close()

    wrong, lost = [], []
    for i, result in enumerate(results):
        if result["outputs"] is None:
            lost.append({"image": i, "error": result["error"]})
            continue
        want = expected[i % len(distinct)]
        if not all(np.allclose(g, w, rtol=1e-4, atol=1e-5) for g, w in zip(result["outputs"], want)):
            wrong.append(i)
    latencies = np.array([r["latency_ms"] for r in results if r["latency_ms"] is not None])
    report = {"model": plan["model"], "images": args.images, "nodes": args.nodes, "stages": len(plan["stages"]),
              "kills": len(kills), "kill_log": kills, "answered": len(results) - len(lost), "lost": len(lost),
              "lost_detail": lost[:10], "wrong": len(wrong), "counters": runner.counters, "wall_s": wall,
              "images_per_s": args.images / wall,
              "latency_ms": {p: float(np.percentile(latencies, q)) for p, q in
                             [("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)]} if len(latencies) else {}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"{report['answered']}/{args.images} images of {plan['model']} through {report['stages']} stages on "
          f"{args.nodes} nodes, {len(kills)} kills+restarts; {runner.counters}")
    print(f"lost {report['lost']}, wrong {report['wrong']} (each input answered at most once by construction: "
          f"{runner.counters['duplicate_results']} late duplicates and {runner.counters['stale_results']} results "
          "of abandoned epochs dropped)")
    print("latency ms: " + ", ".join(f"{k} {v:.2f}" for k, v in report["latency_ms"].items()))
    ok = report["answered"] == args.images and not (lost or wrong)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
