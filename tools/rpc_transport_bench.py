"""Tensor round trips host -> node -> host on loopback: plain TVM RPC vs edgevit's tensor channel.

    .venv/bin/python tools/rpc_transport_bench.py [--repeat 30] [--json results/distributed_transport.json]

Starts a TVM tracker and one edgevit node (both on 127.0.0.1, random free ports), then times, for each size,
(a) plain TVM RPC: ``tvm.runtime.tensor(x, remote.cpu())`` up and ``.numpy()`` down, the way TVM's own
tooling moves tensors, and (b) the tensor channel edgevit uses for bulk data (``put`` + ``get``), both on the
same node session. Prints a table and writes JSON. The bar: <= 0.5 ms for a 588 KiB round trip.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

SIZES = [("1 KiB", 1 << 10), ("64 KiB", 64 << 10), ("588 KiB", 588 << 10), ("4 MiB", 4 << 20)]
BAR_MS = 0.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(fn, repeat: int) -> list[float]:
    fn()  # warm up (allocations, first-touch)
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` kills the nodes on `timeout`
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--json", default=str(ROOT / "results" / "distributed_transport.json"))
    args = parser.parse_args()

    import tvm
    from tvm.rpc.tracker import Tracker as TvmTracker

    from edgevit.distributed.client import Tracker

    port = free_port()
    tracker = TvmTracker("127.0.0.1", port, port + 1, silent=True)
    node = subprocess.Popen([sys.executable, "-m", "edgevit.distributed.node", "--tracker",
                             f"127.0.0.1:{tracker.port}", "--key", "bench", "--port", str(free_port())],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    try:
        node.stdout.readline()
        session = None
        deadline = time.monotonic() + 30
        while session is None:
            try:
                session = Tracker("127.0.0.1", tracker.port, timeout=10).request("bench", session_timeout=300)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        device = session.rpc.cpu()
        rows = []
        for label, nbytes in SIZES:
            x = np.random.default_rng(0).standard_normal(nbytes // 4).astype(np.float32)

            def plain():
                y = tvm.runtime.tensor(x, device).numpy()
                assert y.shape == x.shape

            def channel():
                session.channel.put("x", x)
                y = session.channel.get("x")
                assert y.shape == x.shape

            rpc_ms, chan_ms = timed(plain, args.repeat), timed(channel, args.repeat)
            assert np.array_equal(session.channel.get("x"), x)
            rows.append({"size": label, "bytes": nbytes,
                         "tvm_rpc_ms": {"median": statistics.median(rpc_ms), "min": min(rpc_ms)},
                         "channel_ms": {"median": statistics.median(chan_ms), "min": min(chan_ms)}})
        session.close()
    finally:
        os.killpg(node.pid, signal.SIGKILL)  # the node and its session process
        node.wait()
        tracker.terminate()

    print(f"{'size':>8}  {'TVM RPC median':>15}  {'channel median':>15}  {'speed-up':>8}")
    for r in rows:
        a, b = r["tvm_rpc_ms"]["median"], r["channel_ms"]["median"]
        print(f"{r['size']:>8}  {a:12.3f} ms  {b:12.3f} ms  {a / b:7.0f}x")
    target = next(r for r in rows if r["size"] == "588 KiB")
    ok = target["channel_ms"]["median"] <= BAR_MS
    print(f"588 KiB round trip through the channel: {target['channel_ms']['median']:.3f} ms median "
          f"(bar {BAR_MS} ms): {'PASS' if ok else 'FAIL'}")
    report = {"repeat": args.repeat, "bar_ms": BAR_MS, "pass": ok, "rows": rows,
              "method": "loopback, one tracker + one edgevit node; TVM RPC = tvm.runtime.tensor(x, remote.cpu())"
                        " + .numpy(); channel = put + get on the same session"}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
