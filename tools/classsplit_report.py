"""ED-ViT class-wise split of a Fashion-MNIST model: accuracy unsplit vs split+fused, and each sub-model's size.

    .venv/bin/python tools/classsplit_report.py [--model fashion-mobilevit] [--ks 2 5] [--images 10000]
                                                [--results results]

For each K, builds the class plan (`edgevit plan MODEL --strategy class --k K`: train or load the full model,
assign classes, prune each sub-model with torch-pruning, fine-tune, fuse, compile for this CPU), then measures
on held-out test images the accuracy of the unsplit model and of the split+fused one, both with torch and with
the compiled artifacts (run locally in TVM's VM, one image at a time, as nodes run them), and reports every
sub-model's parameters, MACs and artifact bytes. Writes results/classsplit_<model>.{md,json,png}.
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


def _compiled_outputs(artifact: str, x: np.ndarray) -> np.ndarray:
    from edgevit.runtime.artifact import Artifact
    from edgevit.runtime.tvm_runtime import CompiledModel

    with Artifact.open(Path(artifact)) as art:
        model = CompiledModel(art.library)
        return np.concatenate([model([img[None]])[0] for img in x])


def measure(model: str, k: int, x: np.ndarray, y: np.ndarray, work: Path) -> dict:
    """Build the K-way plan of ``model`` and measure it (see the module docstring)."""
    from edgevit.distributed import classsplit as cs
    from edgevit.distributed.plan import fuse, fusion_of, load_nodes, read_plan
    from edgevit.distributed.planner import build_class_plan, model_configs
    from edgevit.zoo.fashion_models import train_full

    nodes = work / f"nodes{k}.yaml"
    nodes.write_text(f"nodes:\n  - {{key: local, count: {k}, target: host, memory_mib: 256}}\n")
    build_class_plan(model, load_nodes(nodes), k, work / f"plan-k{k}.json")
    plan = read_plan(work / f"plan-k{k}.json")
    arch, cfg = model_configs(model)
    full = train_full(arch, cfg)
    split = cs.train_split(full, arch, cfg, k)
    torch_fused = split.fuse([cs.predict(m, x) for m in split.submodels]).argmax(1)
    tvm_fused = fuse([_compiled_outputs(s["artifact"], x) for s in plan["submodels"]], *fusion_of(plan)).argmax(1)
    return {
        "k": k, "keep": plan["submodels"][0]["keep"],
        "accuracy_torch": float(np.mean(torch_fused == y)), "accuracy_tvm": float(np.mean(tvm_fused == y)),
        "agreement_tvm_torch": float(np.mean(torch_fused == tvm_fused)),
        "submodels": [{"classes": s["classes"], "params": s["params"], "macs": s["macs"],
                       "artifact_bytes": s["bytes"]} for s in plan["submodels"]],
        "full": plan["full"],
    }


def write_markdown(report: dict, path: Path) -> None:
    full = report["unsplit"]
    train, arch = report["train"], report["arch"]
    lines = [f"# Class-wise split (ED-ViT) of {report['model']} on Fashion-MNIST", "",
             f"Command: `{report['command']}` ({report['seconds']:.0f} s; training counts only when not cached). "
             f"Model: {arch['family']} {json.dumps({k: v for k, v in arch.items() if k != 'family'})}. "
             f"Full model trained on {train['train_images']} training images for {train['epochs']} epochs; each "
             f"sub-model is a copy pruned structurally with torch-pruning {report['torch_pruning']} (channels and "
             "whole attention heads ranked by Taylor importance on the group's classes), then fine-tuned for "
             f"{train['finetune_epochs']} epochs on the same images relabelled for its group (its classes + "
             "\"none of mine\", plus distillation from the full model); a linear fusion head combines the "
             f"sub-models' outputs. Accuracy on {report['test_images']} held-out test images, with torch and with "
             "the builds compiled for this CPU (run one image at a time, as nodes run them). MACs: convs, "
             "linears and norms as torch-pruning counts them, plus the attention matmuls. Artifact: the whole "
             "edgevit `.tar` (compiled library, reference ONNX, metadata).", "",
             "| model | accuracy (torch) | accuracy (TVM build) | params | MACs | artifact |",
             "|---|---|---|---|---|---|",
             f"| unsplit | {full['accuracy_torch'] * 100:.2f} % | {full['accuracy_tvm'] * 100:.2f} % | "
             f"{full['params']:,} | {full['macs']:,} | {full['artifact_bytes'] / 1024:.0f} KiB |"]
    for s in report["splits"]:
        lines.append(f"| K={s['k']} split + fusion (keep {s['keep']:.2f}) | {s['accuracy_torch'] * 100:.2f} % | "
                     f"{s['accuracy_tvm'] * 100:.2f} % | {sum(m['params'] for m in s['submodels']):,} (sum) | "
                     f"{sum(m['macs'] for m in s['submodels']):,} (sum) | "
                     f"{sum(m['artifact_bytes'] for m in s['submodels']) / 1024:.0f} KiB (sum) |")
    lines += ["", "Each sub-model (one per node):", "",
              "| K | sub-model | classes | params | vs unsplit | MACs | vs unsplit | artifact |",
              "|---|---|---|---|---|---|---|---|"]
    for s in report["splits"]:
        for i, m in enumerate(s["submodels"]):
            lines.append(f"| {s['k']} | sub{i} | {m['classes']} | {m['params']:,} | "
                         f"{m['params'] / full['params']:.2f}x | {m['macs']:,} | {m['macs'] / full['macs']:.2f}x | "
                         f"{m['artifact_bytes'] / 1024:.0f} KiB |")
    path.write_text("\n".join(lines) + "\n")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = report["unsplit"]
    fig, (acc, size) = plt.subplots(1, 2, figsize=(10, 4))
    names = ["unsplit"] + [f"K={s['k']}" for s in report["splits"]]
    acc.bar(names, [full["accuracy_tvm"] * 100] + [s["accuracy_tvm"] * 100 for s in report["splits"]])
    acc.set_ylabel("test accuracy (%), TVM builds")
    acc.set_ylim(0, 100)
    acc.set_title("accuracy")
    labels, params, macs = [], [], []
    for s in report["splits"]:
        for i, m in enumerate(s["submodels"]):
            labels.append(f"K{s['k']}/{i}")
            params.append(m["params"] / full["params"])
            macs.append(m["macs"] / full["macs"])
    pos = np.arange(len(labels))
    size.bar(pos - 0.2, params, 0.4, label="params")
    size.bar(pos + 0.2, macs, 0.4, label="MACs")
    size.set_xticks(pos, labels, rotation=45)
    size.set_ylabel("fraction of the unsplit model")
    size.set_title("each sub-model's size")
    size.legend()
    fig.suptitle(f"ED-ViT class split of {report['model']} (Fashion-MNIST)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fashion-mobilevit")
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--images", type=int, default=10000, help="test images (default: all 10000)")
    parser.add_argument("--results", default=str(ROOT / "results"))
    args = parser.parse_args()

    from importlib.metadata import version

    from edgevit import datasets
    from edgevit.distributed import classsplit as cs
    from edgevit.distributed.planner import model_configs
    from edgevit.zoo.fashion_models import train_full

    start = time.perf_counter()
    x, y = datasets.fashion_mnist("test", args.images)
    arch, cfg = model_configs(args.model)
    work = Path(tempfile.mkdtemp(prefix="edgevit-classsplit-"))
    report = {"model": args.model, "command": " ".join(["python tools/classsplit_report.py", *sys.argv[1:]]),
              "arch": {"family": type(arch).__name__, **asdict(arch)}, "train": asdict(cfg),
              "torch_pruning": version("torch-pruning"), "test_images": len(x), "splits": []}
    for k in args.ks:
        entry = measure(args.model, k, x, y, work)
        full = entry.pop("full")
        if "unsplit" not in report:
            torch_pred = cs.predict(train_full(arch, cfg), x).argmax(1)
            tvm_pred = _compiled_outputs(full["artifact"], x).argmax(1)
            report["unsplit"] = {"accuracy_torch": float(np.mean(torch_pred == y)),
                                 "accuracy_tvm": float(np.mean(tvm_pred == y)),
                                 "params": full["params"], "macs": full["macs"], "artifact_bytes": full["bytes"]}
        report["splits"].append(entry)
        print(f"K={k}: split+fused {entry['accuracy_tvm'] * 100:.2f} % (torch {entry['accuracy_torch'] * 100:.2f} %), "
              f"unsplit {report['unsplit']['accuracy_tvm'] * 100:.2f} %; sub-models "
              + ", ".join(f"{m['params']:,} params / {m['macs']:,} MACs / {m['artifact_bytes'] / 1024:.0f} KiB"
                          for m in entry["submodels"]), flush=True)
    report["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"classsplit_{args.model.replace('-', '_')}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    write_markdown(report, stem.with_suffix(".md"))
    plot(report, stem.with_suffix(".png"))
    print(f"wrote {stem}.md, .json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
