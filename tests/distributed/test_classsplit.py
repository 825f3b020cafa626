"""Class-wise split: class assignment, node assignment, and a plan run on x86 + aarch64 (qemu) nodes whose
fused answers equal the same split computed locally."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgevit.distributed import classsplit as cs
from edgevit.distributed.plan import NodeSlot, assign_greedy, read_plan
from edgevit.errors import EdgevitError


def test_assign_classes_balanced_and_complete():
    confusion = np.random.default_rng(0).integers(0, 50, (10, 10)).astype(float)
    for k in (2, 3, 5):
        for method in ("confusion", "random"):
            groups = cs.assign_classes(k, 10, method, confusion, seed=1)
            assert sorted(c for g in groups for c in g) == list(range(10))
            assert max(map(len, groups)) <= -(-10 // k)


def test_confusion_assignment_groups_confused_classes():
    confusion = np.eye(4) * 100
    confusion[0, 3] = confusion[3, 0] = 40  # 0 and 3 are confused with each other
    assert [0, 3] in cs.assign_classes(2, 4, "confusion", confusion)


def test_greedy_assignment_respects_memory():
    slots = [NodeSlot("a", 0, "host", 10), NodeSlot("a", 1, "host", 4)]
    placed = assign_greedy([6, 3, 1], slots)
    assert [p.name for p in placed] == ["a#0", "a#1", "a#0"]
    with pytest.raises(EdgevitError, match="no node has that much"):
        assign_greedy([11], slots)


def test_pruned_submodels_are_smaller(tiny_plan):
    plan = read_plan(tiny_plan)
    assert all(s["params"] * 3 <= plan["full"]["params"] for s in plan["submodels"])
    assert {s["target"] for s in plan["submodels"]} == {"host", "rpi4"}
    assert sorted(c for s in plan["submodels"] for c in s["classes"]) == list(range(10))


def test_infer_class_split_matches_local(shared_cluster, tiny_plan, tmp_path):
    from edgevit.distributed import fashion
    from edgevit.distributed.planner import model_configs

    report_path = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "edgevit.distributed", "infer", str(tiny_plan), "--tracker",
                           shared_cluster.address, "--dataset", "fashion-mnist", "--stream", "12",
                           "--json", str(report_path), "--timeout", "120"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout and "rpi4#0" in proc.stdout
    report = json.loads(report_path.read_text())
    assert report["degraded"] == 0 and report["images"] == 12
    assert all(n["calls"] == 12 and n["bytes_sent"] > 0 for n in report["nodes"])

    vit, cfg = model_configs("fashion-vit-tiny")
    full = cs.train_full(vit, cfg)
    split = cs.train_split(full, vit, cfg, 3)
    x, _ = fashion.load("test", 12)
    local = split.fuse([cs.predict(m, x) for m in split.submodels]).argmax(1)
    assert report["predictions"] == local.tolist()
