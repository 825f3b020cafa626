"""``edgevit bench`` reports: the tables, the plot and the notes that go with the timings of :mod:`edgevit.bench`."""

from __future__ import annotations

import platform
from pathlib import Path

from .tables import format_table


def arm_note(machine: str) -> str | None:
    """What the bench says of ARM speed when it runs on another architecture (``machine``: the host's, as
    ``platform.machine()`` names it), or None on an ARM host."""
    if machine in ("aarch64", "arm64"):
        return None
    return (f"ARM speed cannot be measured here ({machine} host): aarch64 builds (e.g. --target rpi4) run only "
            "under qemu, checked for correctness (edgevit run --verify); time them on the board")


def format_report(report: dict) -> str:
    """The bench report as a table with a header line (and the slowest kernels when profiled)."""
    peak = report["fp32_peak"]["gflops"]
    rows = [[name, f"{s['median_ms']:.2f}", f"{s['min_ms']:.2f}", f"{s['max_ms']:.2f}", f"{s['std_ms']:.2f}",
             s["runs"], f"{s['gflops']:.1f}" if "gflops" in s else "-",
             f"{100 * s['gflops'] / peak:.0f}%" if "gflops" in s and peak else "-",
             f"{s['ratio_vs_onnxruntime']:.2f}x" if "ratio_vs_onnxruntime" in s else "-"]
            for name, s in report["engines"].items()]
    head = (f"{report['model']} on {report['target']} ({report['cpu']}, {report['threads']} thread(s)); "
            f"edgevit build {'TUNED' if report['tuned'] else 'with default schedules (untuned)'}")
    agree, quantization = report["agreement"], report.get("quantization")
    if quantization:
        head += (f"; int8 QDQ ({'per-channel' if quantization['per_channel'] else 'per-tensor'} weights, "
                 f"{quantization['method']} ranges from {quantization['samples']} {quantization['calibration']} "
                 "samples), edgevit and onnxruntime running the same QDQ file")
        tail = (f"edgevit int8 / onnxruntime int8 = {report['ratio_vs_onnxruntime']:.2f}x\n"
                + "".join(line + "\n" for line in agree["failing_groups"])   # the rule of run --verify
                + f"verify vs onnxruntime int8 (a probe build, run once untimed): {agree['summary']}")
    else:
        tail = (f"edgevit / onnxruntime = {report['ratio_vs_onnxruntime']:.2f}x   "
                f"(outputs agree: max rel error {agree['max_rel_error']:.2g}, top-1 "
                f"{'same' if agree['top1_agree'] else 'DIFFERENT'}); FP32 peak {peak:.0f} GFLOP/s "
                f"({report['fp32_peak']['formula']})")
    tail += f"\nmachine during the run: {_noise(report)}"
    litert = report.get("agreement_litert")
    if quantization:  # says how LiteRT's int8 model was made, or why there is none
        litert = report["litert"] + (f"; outputs vs onnxruntime int8: max rel error {litert['max_rel_error']:.2g}, "
                                     f"top-1 {'same' if litert['top1_agree'] else 'DIFFERENT'}" if litert else "")
    else:
        litert = (f"LiteRT vs onnxruntime outputs: max rel error {litert['max_rel_error']:.2g}, top-1 "
                  f"{'same' if litert['top1_agree'] else 'DIFFERENT'}" if litert else f"LiteRT: {report.get('litert')}")
    parts = [head, format_table(rows, ["engine", "median ms", "min ms", "max ms", "std ms", "runs", "GFLOP/s",
                                       "% peak", "vs ORT"]), tail, litert]
    arm = arm_note(report.get("machine", platform.machine()))
    if arm:
        parts.append(arm)
    if report.get("profile"):
        rows = [[r["name"], r["calls"], f"{r['ms']:.3f}", f"{r['percent']:.1f}"] for r in report["profile"][:25]]
        parts += ["", "edgevit per kernel (VM instrument; slowest 25):",
                  format_table(rows, ["kernel", "calls", "ms / inference", "%"])]
    return "\n".join(parts)


def _noise(report: dict, short: bool = False) -> str:
    load, other = report.get("load_average"), report.get("other_cpu_share")
    load = f"{load[0]:.1f}" if load else "-"
    other = f"{100 * other:.0f}%" if other is not None else "-"
    return f"{load}, {other}" if short else f"load average {load}, other processes used {other} of the CPU"


def format_all(result: dict) -> str:
    """One line per (model, threads): every engine's latency, ratios to onnxruntime and achieved GFLOP/s."""
    from .litert import SETUP_HINT

    rows = []
    for r in result["rows"]:
        e, o = r["engines"]["edgevit"], r["engines"]["onnxruntime"]
        lite = r["engines"].get("litert")
        peak = r["fp32_peak"]["gflops"]
        rows.append([r["model"], r["threads"], f"{e['median_ms']:.1f}", f"{o['median_ms']:.1f}",
                     f"{r['ratio_vs_onnxruntime']:.2f}x",
                     f"{lite['median_ms']:.1f}" if lite else "-",
                     f"{lite['ratio_vs_onnxruntime']:.2f}x" if lite else "-",
                     f"{e.get('gflops', 0):.1f}", f"{o.get('gflops', 0):.1f}",
                     f"{100 * e.get('gflops', 0) / peak:.0f}%" if peak else "-",
                     f"{r['agreement']['max_rel_error']:.1g}", "TUNED" if r["tuned"] else "default",
                     _noise(r, short=True)])
    table = format_table(rows, ["model", "threads", "edgevit ms", "onnxruntime ms", "ratio", "LiteRT ms",
                                "LiteRT ratio", "edgevit GFLOP/s", "ORT GFLOP/s", "edgevit % peak", "rel err",
                                "schedules", "load avg, other CPU"])
    missing = sorted({r["model"] for r in result["rows"] if r.get("litert") == SETUP_HINT})
    notes = ["ratios are to onnxruntime; each engine ran in a process of its own, the engines taking turns. "
             "load avg: 1-minute load average before the run (counts the bench's own threads); other CPU: the "
             "share of all cores that other processes used while the engines were timed (above ~5%, 2-thread "
             "timings are not clean)"]
    if missing:
        notes.append(f"LiteRT {SETUP_HINT}: {', '.join(missing)}")
    arm = arm_note(result.get("machine", platform.machine()))
    if arm:
        notes.append(arm)
    return "\n".join([table, *notes])


def plot_all(result: dict, path: Path) -> None:
    """Bar chart of median latency per model and engine, one panel per thread count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = sorted({r["threads"] for r in result["rows"]})
    engines = [e for e in ("edgevit", "onnxruntime", "litert") if any(e in r["engines"] for r in result["rows"])]
    width = 0.8 / len(engines)
    fig, axes = plt.subplots(1, len(threads), figsize=(6 * len(threads), 4.5), squeeze=False)
    for ax, n in zip(axes[0], threads):
        rows = [r for r in result["rows"] if r["threads"] == n]
        xs = range(len(rows))
        for i, engine in enumerate(engines):
            ax.bar([x + (i - (len(engines) - 1) / 2) * width for x in xs],
                   [r["engines"][engine]["median_ms"] if engine in r["engines"] else 0 for r in rows], width,
                   label=engine)
        for x, r in zip(xs, rows):
            ax.text(x, max(s["median_ms"] for s in r["engines"].values()),
                    f"{r['ratio_vs_onnxruntime']:.2f}x", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(xs), [r["model"] for r in rows], rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("median latency (ms)")
        ax.set_title(f"{n} thread(s), batch 1 (labels: edgevit / onnxruntime)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
