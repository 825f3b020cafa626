"""Mixture-of-experts ViTs end to end: accuracy per task in PyTorch, on the CPU (TVM) and in FPGA C-simulation,
experts and parameters per task build, and the expert weight traffic with and without patch reordering.

    .venv/bin/python tools/moe_report.py [--out results/moe.json] [--work build/moe] [--board zcu102]

Trains the presets once (cached under ~/.cache/edgevit/moe); compiles and simulates every task build (a few
minutes on one thread).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TVM_NUM_THREADS", "1")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/moe.json")
    parser.add_argument("--work", default="build/moe", help="where artifacts and HLS projects go")
    parser.add_argument("--board", default="zcu102")
    args = parser.parse_args(argv)

    import torch

    from edgevit.moe import model_module, task_build_summary, trained_moe_vit
    from edgevit.moe.evaluate import cpu_eval, csim_eval
    from edgevit.moe.train import CONFIG, accuracy, digits_tasks
    from edgevit.tables import format_table

    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    _, _, xte, labels = digits_tasks()
    report = {"data": f"scikit-learn digits, {len(xte)} test images; tasks: digit (10 classes), parity (2)",
              "training": CONFIG, "board": args.board, "presets": {}}
    rows, traffic_rows = [], []
    for preset, cfg in model_module().PRESETS.items():
        model = trained_moe_vit(preset)
        float_acc = accuracy(model, xte, labels)
        entry = {"config": {k: v for k, v in cfg.__dict__.items()}, "tasks": {}}
        for task, build in enumerate(task_build_summary(preset, model)):
            spec = build["name"]
            print(f"[moe_report] {spec}: CPU build and C-simulation", file=sys.stderr, flush=True)
            cpu, fpga = cpu_eval(spec, work), csim_eval(spec, work, args.board)
            entry["tasks"][build["task"]] = {"build": build, "accuracy_torch": float_acc[task], "cpu": cpu,
                                             "csim": fpga}
            rows.append([spec, " ".join(f"{len(e)}/{build['experts_total']}" for e in build["experts"]),
                         f"{build['params']:,} / {build['params_all_tasks']:,}", f"{100 * float_acc[task]:.2f}",
                         f"{100 * cpu['accuracy']:.2f}", f"{cpu['max_rel_error_vs_torch']:.1e}",
                         f"{100 * fpga['accuracy']:.2f}", f"{100 * fpga['top1_agreement_vs_torch']:.2f}",
                         str(fpga["mismatches_vs_golden"])])
            t = fpga["weight_traffic_bytes_per_image"]
            full = sum(layer["expert_bytes"] * cfg.num_experts for layer in t["layers"])
            t["all_experts_all_tasks"] = full
            traffic_rows.append([spec, " ".join(f"{layer['active']:.2f}/{layer['experts']}" for layer in t["layers"]),
                                 f"{t['reordered'] / 1024:.1f}", f"{t['measured_csim'] / 1024:.1f}",
                                 f"{t['per_patch'] / 1024:.1f}", f"{t['measured_csim_per_patch'] / 1024:.1f}",
                                 f"{t['reduction_vs_per_patch']:.1f}x", f"{t['all_experts'] / 1024:.1f}",
                                 f"{full / 1024:.1f}"])
        report["presets"][preset] = entry
    print(format_table(rows, ["task build", "experts/MoE layer", "params (task / all)", "torch %", "CPU %",
                              "CPU rel err", "C-sim %", "C-sim=torch %", "C-sim!=golden"]))
    print()
    print(format_table(traffic_rows, ["task build", "active experts/layer", "KiB reordered", "(C-sim)",
                                      "KiB per patch", "(C-sim)", "reduction", "KiB build's experts",
                                      "KiB all experts"]))
    print("\nExpert weight KiB read per image by the MoE layers, estimated and (C-sim) counted: 'reordered' queues "
          "patches per expert and reads each active expert once (mean over the test set); 'per patch' reads an "
          "expert for every (patch, expert) pair (C-sim: first 20 test images); 'build's experts' = every expert "
          "of the task build once; 'all experts' = every expert of the multi-task model once.")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
