"""Class-wise split: class assignment, node assignment, structured pruning of the ViT and the MobileViT
(torch-pruning), accuracy of the fused split, validation of K, and plans run on x86 + aarch64 (qemu) nodes
whose fused answers equal the same split computed locally."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgevit.distributed import classsplit as cs
from edgevit.distributed.plan import NodeSlot, assign_greedy, load_nodes, read_plan
from edgevit.distributed.planner import build_class_plan, check_k, model_configs
from edgevit.errors import EdgevitError, UnknownNameError
from edgevit.zoo.fashion_models import train_full

ROOT = Path(__file__).resolve().parents[2]


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


def test_unknown_assignment_is_a_clear_error():
    with pytest.raises(UnknownNameError, match="known: confusion, random"):
        cs.assign_classes(2, 10, "alphabetical", np.eye(10))


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
    from edgevit import datasets
    from edgevit.distributed.planner import model_configs

    report_path = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "edgevit.distributed", "infer", str(tiny_plan), "--tracker",
                           shared_cluster.address, *shared_cluster.host_keys, "--dataset", "fashion-mnist",
                           "--stream", "12", "--json", str(report_path), "--timeout", "120"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout and "rpi4#0" in proc.stdout
    report = json.loads(report_path.read_text())
    assert report["degraded"] == 0 and report["images"] == 12
    assert all(n["calls"] == 12 and n["bytes_sent"] > 0 for n in report["nodes"])

    vit, cfg = model_configs("fashion-vit-tiny")
    full = train_full(vit, cfg)
    split = cs.train_split(full, vit, cfg, 3)
    x, _ = datasets.fashion_mnist("test", 12)
    local = split.fuse([cs.predict(m, x) for m in split.submodels]).argmax(1)
    assert report["predictions"] == local.tolist()


@pytest.fixture(scope="module")
def mobilevit_split():
    """The tiny MobileViT (timm classes) trained on Fashion-MNIST and split K=2 (cached on disk)."""
    arch, cfg = model_configs("fashion-mobilevit-tiny")
    full = train_full(arch, cfg)
    return arch, full, cs.train_split(full, arch, cfg, 2)


def _shapes(model) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def test_mobilevit_submodels_are_structurally_pruned(mobilevit_split):
    arch, full, split = mobilevit_split
    full_shapes = _shapes(full)
    full_heads = [m.num_heads for m in full.modules() if hasattr(m, "qkv")]
    for spec, sub in zip(split.specs, split.submodels):
        shapes = _shapes(sub)
        assert shapes.keys() == full_shapes.keys()  # same layers, narrower: nothing is masked or dropped
        narrower = [n for n in shapes if shapes[n] != full_shapes[n] and not n.startswith("head.")]
        assert all(a <= b for n in narrower for a, b in zip(shapes[n], full_shapes[n]))
        assert any(n.startswith("body.stem.") for n in narrower)  # convs ...
        assert any(".transformer." in n and "qkv" in n for n in narrower)  # ... and the transformer width
        heads = [m.num_heads for m in sub.modules() if hasattr(m, "qkv")]
        assert all(a <= b for a, b in zip(heads, full_heads)) and sum(heads) < sum(full_heads)  # whole heads go
        assert shapes["head.weight"] == (len(spec.classes) + 1, shapes["head.weight"][1])
        assert spec.params == cs.param_count(sub) < 0.8 * cs.param_count(full)
        out = sub(cs.example_input(arch))
        assert out.shape == (1, len(spec.classes) + 1)


def test_mobilevit_fused_split_beats_chance_on_held_out_images(mobilevit_split):
    from edgevit import datasets

    _, _, split = mobilevit_split
    x, y = datasets.fashion_mnist("test", 1000)  # the test split: never seen in training or fine-tuning
    fused = split.fuse([cs.predict(m, x) for m in split.submodels]).argmax(1)
    assert np.mean(fused == y) > 0.5  # chance is 0.1


@settings(max_examples=25, deadline=None)
@given(st.one_of(st.integers(max_value=1), st.integers(min_value=11), st.floats(), st.text(max_size=3),
                 st.booleans(), st.none()))
def test_bad_k_values_are_clear_errors(k):
    with pytest.raises(EdgevitError, match="--k must be"):
        check_k(k, 10)


def test_good_k_values_pass():
    assert [check_k(k, 10) for k in (2, 5, 10, np.int64(3))] == [2, 5, 10, 3]


def test_plan_rejects_bad_k_before_training(tmp_path):
    slots = [NodeSlot("a", 0, "host", 64)]
    for k in (0, 1, 11):
        with pytest.raises(EdgevitError, match="between 2 and the number of classes"):
            build_class_plan("fashion-mobilevit-tiny", slots, k, tmp_path / "plan.json")
    assert not (tmp_path / "plan.json").exists()


@pytest.mark.parametrize("k", ["1", "11", "-2"])
def test_cli_bad_k_one_line_error(tmp_path, k):
    (tmp_path / "nodes.yaml").write_text("nodes:\n  - {key: x86, count: 2, target: host}\n")
    proc = subprocess.run([sys.executable, "-m", "edgevit.distributed", "plan", "fashion-mobilevit-tiny",
                           "--strategy", "class", "--k", k, "--nodes", str(tmp_path / "nodes.yaml"),
                           "-o", str(tmp_path / "plan.json")], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == EdgevitError.exit_code
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("edgevit: error: --k must be between 2")


@pytest.fixture(scope="session")
def mobilevit_plan(tmp_path_factory) -> Path:
    """A K=2 class-split plan of the tiny MobileViT for the shared cluster's 2 x86 nodes."""
    folder = tmp_path_factory.mktemp("mvit-plan")
    (folder / "nodes.yaml").write_text("nodes:\n  - {key: x86, count: 2, target: host, memory_mib: 64}\n")
    build_class_plan("fashion-mobilevit-tiny", load_nodes(folder / "nodes.yaml"), 2, folder / "plan.json")
    return folder / "plan.json"


def test_infer_mobilevit_split_on_nodes_matches_local(shared_cluster, mobilevit_plan, mobilevit_split, tmp_path):
    from edgevit import datasets

    plan = read_plan(mobilevit_plan)
    assert all(s["params"] < plan["full"]["params"] and s["macs"] < plan["full"]["macs"] for s in plan["submodels"])
    report_path = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "edgevit.distributed", "infer", str(mobilevit_plan), "--tracker",
                           shared_cluster.address, *shared_cluster.host_keys, "--dataset", "fashion-mnist",
                           "--stream", "20", "--json", str(report_path), "--timeout", "120"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout
    report = json.loads(report_path.read_text())
    assert report["degraded"] == 0 and report["images"] == 20
    _, _, split = mobilevit_split
    x, _ = datasets.fashion_mnist("test", 20)
    local = split.fuse([cs.predict(m, x) for m in split.submodels]).argmax(1)
    assert report["predictions"] == local.tolist()
