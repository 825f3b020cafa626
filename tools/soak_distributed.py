"""Soak: many requests across several nodes of one key while nodes are killed and restarted.

    .venv/bin/python tools/soak_distributed.py [--requests 1000] [--nodes 3] [--kill-every 100]
                                               [--max-minutes 15] [--json results/distributed_soak.json]

Starts a TVM tracker and ``--nodes`` edgevit nodes (x86, loopback, random free ports), compiles a small CNN,
and sends ``--requests`` requests round-robin through a ``SlotPool`` (failover to another node of the key).
A killer thread kills one node's whole process group (node and session) whenever the request counter
passes a multiple of ``--kill-every`` -- usually while a request is in flight -- and starts a fresh node
with the same key. Every answer is checked against onnxruntime on the same input. Reports lost,
duplicated and wrong answers (all must be 0) and latency percentiles; stops by itself after
``--max-minutes``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` kills the nodes on `timeout`
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--kill-every", type=int, default=100)
    parser.add_argument("--max-minutes", type=float, default=15.0)
    parser.add_argument("--json", default=str(ROOT / "results" / "distributed_soak.json"))
    args = parser.parse_args()

    from conftest import tiny_cnn_onnx

    from edgevit.compiler import compile_for_target
    from edgevit.distributed.client import Tracker, artifact_digest
    from edgevit.distributed.infer import Slot, SlotPool
    from edgevit.errors import EdgevitError
    from edgevit.frontend import load_model
    from edgevit.reference import onnxruntime_session
    from edgevit.targets import get_target

    work = Path(tempfile.mkdtemp(prefix="edgevit-soak-"))
    onnx_path = tiny_cnn_onnx(work / "tiny.onnx")
    artifact = work / "tiny.tar"
    compile_for_target(load_model(str(onnx_path)), get_target("host"), artifact, command="soak")
    digest = artifact_digest(artifact)
    reference = onnxruntime_session(onnx_path)

    port = free_port()
    tracker = start(["-m", "edgevit.distributed", "tracker", "--port", str(port)])
    node_args = lambda: ["-m", "edgevit.distributed.node", "--tracker", f"127.0.0.1:{port}", "--key", "soak",
                         "--port", str(free_port())]
    nodes = [start(node_args()) for _ in range(args.nodes)]
    answers: dict[int, list] = {}
    latencies, wrong, failed, kills = [], [], [], []
    deadline = time.monotonic() + args.max_minutes * 60
    pool = None
    try:
        client = Tracker("127.0.0.1", port, timeout=10.0)
        pool = SlotPool(client, [Slot(f"soak#{i}", "soak", {digest: artifact}) for i in range(args.nodes)])
        pool.open(wait=120)
        counter = {"done": 0}
        lock = threading.Lock()

        def killer():
            victim_index, next_kill = 0, args.kill_every
            while counter["done"] < args.requests and time.monotonic() < deadline:
                if counter["done"] >= next_kill:
                    time.sleep(0.001 * (next_kill % 7))  # land at varying points of a request
                    with lock:
                        kill(nodes[victim_index])
                        nodes[victim_index] = start(node_args())
                    kills.append({"after_request": counter["done"], "node": victim_index})
                    victim_index = (victim_index + 1) % args.nodes
                    next_kill += args.kill_every
                time.sleep(0.0005)

        killer_thread = threading.Thread(target=killer, daemon=True)
        killer_thread.start()
        for request in range(args.requests):
            if time.monotonic() > deadline:
                break
            x = np.random.default_rng(request).standard_normal((1, 3, 16, 16)).astype(np.float32)
            start_time = time.perf_counter()
            try:
                (y,), _ = pool.run(pool.slots[request % args.nodes], digest, [x], wait=60.0)
            except EdgevitError as exc:
                failed.append({"request": request, "error": str(exc)})
                y = None
            latencies.append((time.perf_counter() - start_time) * 1e3)
            answers.setdefault(request, []).append(y)
            if y is not None:
                expected = reference.run(None, {reference.get_inputs()[0].name: x})[0]
                if not np.allclose(y, expected, rtol=1e-4, atol=1e-5):
                    wrong.append(request)
            counter["done"] = request + 1
            if counter["done"] % 50 == 0:
                print(f"{counter['done']} requests, {len(kills)} kills, {pool.retries} retries, "
                      f"{len(failed)} failed, last {latencies[-1]:.1f} ms", flush=True)
        killer_thread.join(timeout=30)
    finally:
        if pool:
            pool.close()
        for proc in [*nodes, tracker]:
            kill(proc)

    lost = [r for r in range(args.requests) if r not in answers or all(a is None for a in answers[r])]
    duplicated = [r for r, a in answers.items() if len(a) > 1]
    lat = np.array(latencies)
    report = {"requests": args.requests, "nodes": args.nodes, "kills": len(kills), "kill_log": kills,
              "answered": len(answers), "lost": len(lost), "duplicated": len(duplicated), "wrong": len(wrong),
              "failed_requests": failed, "retries": pool.retries if pool else None,
              "latency_ms": {p: float(np.percentile(lat, q)) for p, q in
                             [("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)]} if len(lat) else {}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"{report['answered']}/{args.requests} requests on {args.nodes} nodes, {len(kills)} kills+restarts, "
          f"{report['retries']} retried attempts")
    print(f"lost {report['lost']}, duplicated {report['duplicated']}, wrong {report['wrong']}")
    print("latency ms: " + ", ".join(f"{k} {v:.2f}" for k, v in report["latency_ms"].items()))
    ok = report["answered"] == args.requests and not (lost or duplicated or wrong)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
