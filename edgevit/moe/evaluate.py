"""Accuracy of the MoE-ViT task builds on each path against PyTorch: CPU (TVM artifact) and FPGA (C-simulation),
plus the FPGA's expert weight traffic. Used by ``tools/moe_report.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .models import load_task_model, parse_name
from .train import digits_tasks


def _torch_logits(spec: str, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return load_task_model(spec)(torch.from_numpy(x)).numpy()


def cpu_eval(spec: str, workdir: Path, target: str = "host") -> dict:
    """Compile ``spec`` for ``target`` (a CPU this machine runs), run the digits test set through the artifact.

    Returns accuracy, the largest per-image relative error against PyTorch, and the build's summary.
    """
    from ..compiler import compile_for_target
    from ..frontend import load_model
    from ..runtime.artifact import Artifact
    from ..runtime.tvm_runtime import CompiledModel
    from ..targets import get_target

    name = parse_name(spec)
    path = Path(workdir) / f"{name.preset}_{name.task_name}-{target}.tar"
    meta = compile_for_target(load_model(spec), get_target(target), path)
    _, _, xte, labels = digits_tasks()
    ref = _torch_logits(spec, xte)
    with Artifact.open(path) as art:
        compiled = CompiledModel(art.library)
        got = np.concatenate([compiled([x[None]])[0] for x in xte])
    rel = float((np.abs(got - ref).max(1) / np.abs(ref).max(1)).max())
    return {"artifact": str(path), "accuracy": float((got.argmax(1) == labels[name.task]).mean()),
            "max_rel_error_vs_torch": rel, "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
            "build": meta["model"]["moe"]}


def csim_eval(spec: str, workdir: Path, board: str = "zcu102", per_patch_images: int = 20) -> dict:
    """Generate the HLS project of ``spec`` for ``board`` (calibrated on 200 training images), C-simulate the
    digits test set, and compare with the golden model (bit for bit) and PyTorch (top-1). The expert weight
    traffic is estimated and counted in C-simulation, with patch reordering on the test set and without it on
    its first ``per_patch_images`` images."""
    from ..hls import codegen, csim, estimator, project
    from ..hls.torch_import import to_accel_layout
    from ..targets import get_target

    name = parse_name(spec)
    model = load_task_model(spec)
    xtr, _, xte, labels = digits_tasks()
    out = Path(workdir) / f"{name.preset}_{name.task_name}-{board}"
    prog, _ = project.generate(model, model.input_shape, board, out, [x[None] for x in xtr[:200]],
                               test_inputs=[x[None] for x in xte], meta={"model": str(name)})
    outputs, probes = csim.simulate_project(out, probes=True)
    gold = np.fromfile(out / "testdata" / "golden.bin", "<i2").reshape(len(outputs), -1)
    envs = [prog.run_fixed(prog.quantize_input(to_accel_layout(x[None]))) for x in xte]
    pred = np.array([np.argmax(o) for o in outputs])
    ref = _torch_logits(spec, xte).argmax(1)
    fpga = get_target(board).require_fpga()
    rep = estimator.report(prog, fpga)
    traffic = estimator.moe_weight_traffic(prog, envs)
    traffic["measured_csim"] = float(np.mean([2 * p["moe_reads"].sum() for p in probes]))
    # The same program without patch reordering, on the first images: the same bits, its own weight reads.
    for layer in prog.layers:
        if layer.kind == "moe_experts":
            layer.attrs["reorder"] = 0
    few = min(per_patch_images, len(xte))
    base = codegen.write_project(prog, out.with_name(out.name + "-per-patch"), fpga, board,
                                 np.asarray([to_accel_layout(x[None]) for x in xte[:few]]))
    base_out, base_probes = csim.simulate_project(base, probes=True)
    traffic["measured_csim_per_patch"] = float(np.mean([2 * p["moe_reads"].sum() for p in base_probes]))
    traffic["per_patch_images"] = few
    traffic["per_patch_same_outputs"] = all((a == b).all() for a, b in zip(base_out, outputs))
    return {"project": str(out), "accuracy": float((pred == labels[name.task]).mean()),
            "top1_agreement_vs_torch": float((pred == ref).mean()),
            "mismatches_vs_golden": int(sum((o != g).sum() for o, g in zip(outputs, gold))),
            "latency_ms": rep["latency_ms"], "resources": rep["resources"], "fits": rep["fits"],
            "weight_traffic_bytes_per_image": traffic, "codegen_notice": codegen.NOTICE}
