"""Fashion-MNIST class split, end to end: train the ViT, split it K=2 and K=5, compile the sub-models, run
them on K local nodes through TVM RPC and compare accuracy and size with the unsplit model.

    .venv/bin/python tools/distributed_fashion.py [--ks 2 5] [--images 10000]
                                                  [--json results/distributed_fashion.json]

The unsplit model's accuracy is measured with its compiled artifact on this CPU; the split ones through the
nodes (``LocalCluster``: tracker + K x86 nodes on loopback, CURVE data plane, all killed at the end). The
plan is made against the nodes (``--tracker``), so its predicted latency is measured at plan time.
``--model fashion-mobilevit`` runs the MobileViT; tools/classsplit_report.py reports sizes without nodes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def main() -> int:
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `with LocalCluster()` kills the nodes on `timeout`
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--model", default="fashion-vit")
    parser.add_argument("--json", default=str(ROOT / "results" / "distributed_fashion.json"))
    args = parser.parse_args()

    from edgevit import datasets
    from edgevit.distributed import classsplit as cs
    from edgevit.distributed.client import Tracker
    from edgevit.distributed.local_cluster import LocalCluster
    from edgevit.distributed.infer import ClassSplitRunner
    from edgevit.distributed.plan import load_nodes, read_plan
    from edgevit.distributed.planner import build_class_plan, model_configs
    from edgevit.runtime.artifact import Artifact
    from edgevit.runtime.tvm_runtime import CompiledModel
    from edgevit.zoo.fashion_models import train_full

    x, y = datasets.fashion_mnist("test", args.images)
    vit, cfg = model_configs(args.model)
    work = Path(tempfile.mkdtemp(prefix="edgevit-fashion-"))
    report = {"model": args.model, "arch": {"family": type(vit).__name__, **asdict(vit)}, "train": asdict(cfg),
              "test_images": len(x), "splits": []}
    for k in args.ks:
        (work / f"nodes{k}.yaml").write_text(f"nodes:\n  - {{key: fmnist, count: {k}, target: host, memory_mib: 64}}\n")
        plan_path = work / f"plan-k{k}.json"
        if "unsplit" not in report:
            build_class_plan(args.model, load_nodes(work / f"nodes{k}.yaml"), k, plan_path)
            plan = read_plan(plan_path)
            with Artifact.open(Path(plan["full"]["artifact"])) as art:
                model = CompiledModel(art.library)
                preds = [int(model([img[None]])[0].argmax()) for img in x]
            torch_full = cs.predict(train_full(vit, cfg), x).argmax(1)
            report["unsplit"] = {"accuracy_tvm": float(np.mean(np.array(preds) == y)),
                                 "accuracy_torch": float(np.mean(torch_full == y)),
                                 "params": plan["full"]["params"], "artifact_bytes": plan["full"]["bytes"]}
        split = cs.train_split(train_full(vit, cfg), vit, cfg, k)
        local = split.fuse([cs.predict(m, x) for m in split.submodels]).argmax(1)

        with LocalCluster() as cluster:
            for _ in range(k):
                cluster.add_node("fmnist")
            tracker = Tracker("127.0.0.1", cluster.port, timeout=30.0, security=cluster.security)
            build_class_plan(args.model, load_nodes(work / f"nodes{k}.yaml"), k, plan_path, tracker=tracker)
            plan = read_plan(plan_path)
            runner = ClassSplitRunner(plan, tracker)
            try:
                runner.open(wait=120)
                start_time = time.perf_counter()
                answers = [runner.infer(img[None]) for img in x]
                wall = time.perf_counter() - start_time
                breakdown = runner.breakdown()
            finally:
                runner.close()
        preds = np.array([a.prediction for a in answers])
        lat = np.array([a.latency_ms for a in answers])
        entry = {"k": k, "groups": [s["classes"] for s in plan["submodels"]],
                 "accuracy_distributed": float(np.mean(preds == y)), "accuracy_torch": float(np.mean(local == y)),
                 "agreement_with_torch_split": float(np.mean(preds == local)),
                 "degraded": sum(a.degraded for a in answers),
                 "submodel_params": [s["params"] for s in plan["submodels"]],
                 "submodel_artifact_bytes": [s["bytes"] for s in plan["submodels"]],
                 "size_ratio_params": report["unsplit"]["params"] / max(s["params"] for s in plan["submodels"]),
                 "size_ratio_artifact": report["unsplit"]["artifact_bytes"] / max(s["bytes"] for s in plan["submodels"]),
                 "latency_ms": {"p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)),
                                "p99": float(np.percentile(lat, 99))},
                 "predicted_latency_ms": plan["predicted_latency_ms"],
                 "predicted_source": plan["predicted_source"], "images_per_s": len(x) / wall,
                 "nodes": breakdown}
        report["splits"].append(entry)
        print(f"K={k}: accuracy {entry['accuracy_distributed'] * 100:.2f} % on nodes "
              f"(torch split {entry['accuracy_torch'] * 100:.2f} %, unsplit {report['unsplit']['accuracy_tvm'] * 100:.2f} %); "
              f"sub-model {min(entry['submodel_params']):,} params = {entry['size_ratio_params']:.1f}x smaller "
              f"({entry['size_ratio_artifact']:.1f}x by artifact); p50 {entry['latency_ms']['p50']:.2f} ms "
              f"(predicted {entry['predicted_latency_ms']:.2f}); degraded {entry['degraded']}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
