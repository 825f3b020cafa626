"""The CPU (TVM) path: per-task builds of the trained MoE-ViTs against PyTorch, and what each artifact carries."""

import tarfile

import numpy as np
import onnx
import pytest
import torch

from edgevit.cli import main
from edgevit.compiler import compile_for_target
from edgevit.frontend import load_model
from edgevit.moe import load_task_model
from edgevit.runtime.artifact import Artifact
from edgevit.runtime.tvm_runtime import CompiledModel
from edgevit.targets import get_target


def _build(spec, tmp_path, target="host"):
    model = load_model(spec)
    path = tmp_path / f"{spec.replace(':', '_')}-{target}.tar"
    meta = compile_for_target(model, get_target(target), path, command="pytest")
    return path, meta


def _weights_and_ops(path):
    with tarfile.open(path) as tar:
        graph = onnx.load_from_string(tar.extractfile("reference.onnx").read()).graph
    return sum(int(np.prod(i.dims)) for i in graph.initializer), {n.op_type for n in graph.node}


@pytest.mark.parametrize("spec", ["moe_vit_tiny:digit", "moe_vit_tiny:parity", "moe_vit_tiny_static:parity"])
def test_task_build_matches_pytorch(spec, tmp_path, trained, digits):
    path, meta = _build(spec, tmp_path)
    moe = meta["model"]["moe"]
    weights, ops = _weights_and_ops(path)
    # The artifact holds the task build's parameters (plus small index constants), not the other experts'.
    assert moe["params"] <= weights <= moe["params"] + 1024 < moe["params_all_tasks"]
    dynamic = moe["gate"] == "patch"
    assert ({"TopK", "NonZero", "GatherND", "ScatterND"} <= ops) == dynamic   # gather/scatter only if routed
    _, _, xte, lte = digits
    task = 1 if spec.endswith("parity") else 0
    with torch.no_grad():
        ref = load_task_model(spec)(torch.from_numpy(xte)).numpy()
        # the error bound is against float64: float32 PyTorch and onnxruntime are themselves 1.3e-5 apart on an
        # AVX-512 Xeon (moe_vit_tiny_static:parity, max over the test set), edgevit 7e-6 from float64 there
        ref64 = load_task_model(spec).double()(torch.from_numpy(xte).double()).numpy()
    with Artifact.open(path) as art:
        compiled = CompiledModel(art.library)
        got = np.concatenate([compiled([x[None]])[0] for x in xte])
    rel = (np.abs(got - ref64).max(1) / np.abs(ref64).max(1)).max()
    acc_cpu, acc_torch = (got.argmax(1) == lte[task]).mean(), (ref.argmax(1) == lte[task]).mean()
    print(f"{spec}: max rel error vs PyTorch float64 {rel:.2e} over {len(xte)} images; accuracy CPU {100 * acc_cpu:.2f} %, "
          f"PyTorch {100 * acc_torch:.2f} %; {moe['params']} params, experts {moe['experts']}")
    assert rel <= 1e-5
    assert acc_cpu == acc_torch


def test_compile_command_reports_experts_and_params(tmp_path, capsys):
    out = tmp_path / "static.tar"
    assert main(["compile", "moe_vit_tiny_static:digit", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "task build moe_vit_tiny_static:digit: experts per MoE layer" in text and " of 6, " in text
    assert main(["compile", "moe_vit_tiny:nope", "-o", str(out)]) == 3


@pytest.mark.qemu
def test_routed_build_runs_on_the_board_runtime_under_qemu(tmp_path, digits):
    # The board side loads TVM in runtime-only mode: TopK and NonZero must still find their kernels there.
    from edgevit import emulation

    path, _ = _build("moe_vit_tiny:parity", tmp_path, "rpi4")
    xs = digits[2][:3]
    with Artifact.open(path) as art:
        python = emulation.prepare("aarch64")
        got = np.concatenate([emulation.run_artifact(python, art.dir, [x[None]])[0][0] for x in xs])
    with torch.no_grad():
        ref = load_task_model("moe_vit_tiny:parity")(torch.from_numpy(xs)).numpy()
    assert (np.abs(got - ref).max(1) / np.abs(ref).max(1)).max() <= 1e-5
