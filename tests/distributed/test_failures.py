"""Failures: a node killed mid-inference, calls that time out, a key with no node left (degraded answer),
and a tracker restart. Each test builds its own small x86 cluster and kills it afterwards."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edgevit.distributed.client import artifact_digest
from edgevit.distributed.infer import ClassSplitRunner, Slot, SlotPool
from edgevit.errors import ExecutionError


def _expected(artifact, x):
    from edgevit.reference import run_onnxruntime
    from edgevit.runtime.artifact import Artifact

    with Artifact.open(artifact) as art:
        return run_onnxruntime(art.reference, [x])[0]


def _pool(cluster, artifact, n: int, timeout: float = 30.0) -> tuple[SlotPool, str]:
    digest = artifact_digest(artifact)
    pool = SlotPool(cluster.client(timeout), [Slot(f"x86#{i}", "x86", {digest: artifact}) for i in range(n)])
    pool.open(wait=60)
    return pool, digest


def _node_of(cluster, slot):
    return next(p for p in cluster.procs if p.popen.pid == slot.session.info["node_pid"])


def test_node_killed_mid_inference_is_retried_on_same_key(cluster, tiny_host_artifact):
    for _ in range(2):
        cluster.add_node("x86", run_delay=1.0)
    cluster.wait_for("x86", 2)
    pool, digest = _pool(cluster, tiny_host_artifact, 2)
    try:
        victim = _node_of(cluster, pool.slots[0])
        x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
        threading.Timer(0.4, victim.kill).start()  # during the node's 1 s run
        (y,), used = pool.run(pool.slots[0], digest, [x])
        assert used is pool.slots[1] and pool.retries == 1
        np.testing.assert_allclose(y, _expected(tiny_host_artifact, x), rtol=1e-4, atol=1e-5)
    finally:
        pool.close()


def test_call_timeout_fails_over(cluster, tiny_host_artifact):
    cluster.add_node("x86", run_delay=30.0)  # hangs far longer than the host waits
    cluster.wait_for("x86", 1)
    pool, digest = _pool(cluster, tiny_host_artifact, 1, timeout=2.0)
    try:
        cluster.add_node("x86")
        cluster.wait_for("x86", 1)
        x = np.ones((1, 3, 16, 16), np.float32)
        (y,), _ = pool.run(pool.slots[0], digest, [x], wait=20)  # times out, reconnects to the healthy node
        np.testing.assert_allclose(y, _expected(tiny_host_artifact, x), rtol=1e-4, atol=1e-5)
        assert pool.retries >= 1
    finally:
        pool.close()


def test_missing_key_gives_degraded_answer(cluster, tmp_path):
    from edgevit.distributed.plan import load_nodes, read_plan
    from edgevit.distributed.planner import build_class_plan

    (tmp_path / "nodes.yaml").write_text("nodes:\n  - {key: a, target: host}\n  - {key: b, target: host}\n")
    build_class_plan("fashion-vit-tiny", load_nodes(tmp_path / "nodes.yaml"), 2, tmp_path / "plan.json")
    plan = read_plan(tmp_path / "plan.json")
    cluster.add_node("a")
    node_b = cluster.add_node("b")
    cluster.wait_for("a", 1)
    cluster.wait_for("b", 1)
    runner = ClassSplitRunner(plan, cluster.client(10.0))
    try:
        runner.open(wait=60)
        x = np.zeros(plan["input"]["shape"], np.float32)
        healthy = runner.infer(x)
        assert not healthy.degraded
        node_b.kill()
        broken = runner.infer(x)
        lost = [s["name"] for s in plan["submodels"] if s["node_key"] == "b"]
        assert broken.degraded and broken.missing == lost
    finally:
        runner.close()


def test_tracker_restart_nodes_reregister(cluster, tiny_host_artifact):
    cluster.add_node("x86")
    cluster.wait_for("x86", 1)
    cluster.restart_tracker()
    cluster.wait_for("x86", 1, timeout=90)  # TVM's server loop reconnects (retry period 5 s)
    # edgevit's description is re-published too, by its own connection (which may come a moment later)
    deadline = time.monotonic() + 30
    while True:
        rows = {r["key"]: r for r in cluster.client().nodes()}
        if rows["x86"]["servers"][0].get("arch") == "x86_64" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert rows["x86"]["servers"][0].get("arch") == "x86_64"
    pool, digest = _pool(cluster, tiny_host_artifact, 1)
    try:
        x = np.ones((1, 3, 16, 16), np.float32)
        (y,), _ = pool.run(pool.slots[0], digest, [x])
        np.testing.assert_allclose(y, _expected(tiny_host_artifact, x), rtol=1e-4, atol=1e-5)
    finally:
        pool.close()


def test_request_without_nodes_times_out(cluster):
    start = time.monotonic()
    with pytest.raises(ExecutionError, match="timed out"):
        cluster.client(1.0).request("nobody")
    assert time.monotonic() - start < 30
