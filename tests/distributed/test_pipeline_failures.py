"""A pipeline keeps its promises when things break: a node killed mid-stream hands its stage to a spare node
of the same key with no input lost or answered twice; a dead tracker and a changed artifact are named, not
reported as 'no node'."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from edgevit.distributed.local_cluster import free_port
from edgevit.errors import ArtifactError, ExecutionError


@pytest.fixture(scope="module")
def tiny_plan_dir(tmp_path_factory, tiny_onnx):
    """The tiny CNN in two stages for x86 nodes (MAC estimates: no nodes needed to plan)."""
    from edgevit.distributed.pipeline import build_pipeline_plan
    from edgevit.distributed.plan import NodeSlot

    folder = tmp_path_factory.mktemp("tiny-pipeline") / "plan"
    slots = [NodeSlot("x86", i, "host", 256) for i in range(2)]
    build_pipeline_plan(str(tiny_onnx), slots, None, folder, "throughput", stages=2)
    return folder


def test_a_node_killed_mid_stream_moves_its_stage_and_loses_nothing(cluster, tiny_plan_dir):
    from edgevit.distributed.pipeline_runner import PipelineRunner
    from edgevit.distributed.plan import read_plan
    from edgevit.reference import run_onnxruntime

    for _ in range(3):  # two stages and a spare
        cluster.add_node("x86")
    cluster.wait_for("x86", 3)
    plan = read_plan(tiny_plan_dir)
    rng = np.random.default_rng(5)
    items = [[rng.standard_normal((1, 3, 16, 16)).astype(np.float32)] for _ in range(60)]
    runner = PipelineRunner(plan, cluster.client(10.0), stall_timeout=2.0)
    killed = []

    def kill_first_stage_node(done: int):
        if done == 20 and not killed:
            pid = runner.stages[0].session.info["node_pid"]
            os.killpg(pid, signal.SIGKILL)
            killed.append(pid)

    try:
        runner.open(wait=60)
        results = runner.stream(items, wait=60, on_result=lambda seq: kill_first_stage_node(seq))
    finally:
        runner.close()
    assert killed and runner.counters["nodes_replaced"] >= 1
    assert all(r["error"] is None for r in results)  # every input answered, in order
    for item, result in zip(items, results):
        np.testing.assert_allclose(result["outputs"][0], run_onnxruntime(tiny_plan_dir / "model.onnx", item)[0],
                                   rtol=1e-4, atol=1e-5)
    assert runner.counters["resent"] >= 1


def _infer(plan_dir, tracker, *extra):
    return subprocess.run([sys.executable, "-m", "edgevit.distributed", "infer", str(plan_dir), "--tracker", tracker,
                           "--insecure-plaintext", "--wait", "5", "--timeout", "3", *extra], capture_output=True,
                          text=True, timeout=120)


def test_a_dead_tracker_is_named(tiny_plan_dir):
    port = free_port()   # a port nobody listens on
    proc = _infer(tiny_plan_dir, f"127.0.0.1:{port}")
    lines = [line for line in proc.stderr.splitlines() if line.startswith("edgevit: error:")]
    assert proc.returncode == ExecutionError.exit_code and len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "tracker" in lines[0] and "does not answer" in lines[0] and "no 'x86' node" not in lines[0]


def test_a_changed_artifact_is_named(cluster, tiny_plan_dir, tmp_path):
    import shutil

    copy = tmp_path / "plan"
    shutil.copytree(tiny_plan_dir, copy)
    art = copy / json.loads((copy / "plan.json").read_text())["stages"][0]["artifact"]
    data = bytearray(art.read_bytes())
    data[-10] ^= 0xFF
    art.write_bytes(bytes(data))
    cluster.add_node("x86")
    proc = subprocess.run([sys.executable, "-m", "edgevit.distributed", "infer", str(copy), "--tracker",
                           cluster.address, *cluster.host_keys, "--wait", "20"], capture_output=True, text=True,
                          timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("edgevit: error:")]
    assert proc.returncode == ArtifactError.exit_code and len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "changed since planning" in lines[0]
