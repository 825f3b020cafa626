"""Before/after table of the HLS estimator: DSP/BRAM/LUT use and latency per model and board.

    python tools/hls_dsp_report.py [--models mobilevit_xxs ...] [--boards zcu102 pynq-z2] [--out results/hls_dsp]

Nine rows per model and board (ten for mobilevitv2_050):

* ``before``: what ``edgevit hls MODEL`` printed at the commit in results/hls_dsp_before.json (the estimator then
  assumed loads overlapping compute, axi_bits-wide ports and on-chip MoE expert blocks);
* ``16-bit ports``: the ``after`` row of results/hls_dsp_16bit_ports.json, the design before word packing (every
  m_axi port one 16-bit word a cycle);
* ``old lanes``: the ``before`` lanes under today's estimator, which follows the C++ as written;
* ``previous``: the ``after`` row of results/hls_dsp_previous.json (the report at a3d139b: weight tile in
  16-bit banks, L2 norm and pool mixer a word a cycle, BRAM counted by bits); for a model listed in
  results/hls_dsp_v2_prefix.json that row is called ``a3d139b`` and ``previous`` is the one kept there
  (mobilevitv2_050 at 76398e5, when only the part before its first MobileVitV2Block ran on the accelerator);
* ``sequential``: the ``after`` row of results/hls_dsp_sequential.json (the report at 8b24102, when the linear
  unit ran each tile's load, MAC steps and write-back one after the other);
* ``linear overlap``: the ``after`` row of results/hls_dsp_linear_overlap.json (the report at e8db318, when only
  the linear unit overlapped its transfers: the depthwise unit read a row, then wrote output rows, a loop each,
  and im2col moved a word a cycle);
* ``row waits``: the ``after`` row of results/hls_dsp_row_waits.json (the report at 859f7f0, when the layernorm and
  the L2 norm ran two loops per row and additive attention a word a cycle, each loop waiting out the m_axi
  latency, and a residual layer's token tiles loaded between passes);
* ``word movers``: the ``after`` row of results/hls_dsp_word_movers.json (the report at 0a3f103, the same estimates
  as at 642e939: attention read Q, K and V three words a step at II=3, im2col of channels that are not whole beats,
  concat and unfold/fold moved a word a cycle, concat and unfold/fold one loop per row; every pass of the linear
  unit was a pipelined loop of its own waiting out the m_axi latency, and weight tiles loaded between passes);
* ``after``: the lane plan ``estimator.choose_lanes`` picks today.

For the ``after`` plan, ``next lanes`` raises each lane count in turn to the next value the search tries and says whether the design still fits (and
which resource is over the 80 % limit if not) and how much latency it would save: the bound that stops the search.

Writes OUT.json and OUT.md. Lowering needs only the model's shapes (no calibration, no C-simulation).
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgevit import zoo  # noqa: E402
from edgevit.hls import estimator  # noqa: E402
from edgevit.zoo.tiny_mobilevit import build_tiny_mobilevit  # noqa: E402
from edgevit.hls.torch_import import lower  # noqa: E402
from edgevit.targets import get_target  # noqa: E402

MODELS = ("mobilevit_xxs", "swiftformer_xs", "efficientformer_l1", "mobilevitv2_050")
BOARDS = ("zcu102", "pynq-z2")
BEFORE = ROOT / "results" / "hls_dsp_before.json"
UNPACKED = ROOT / "results" / "hls_dsp_16bit_ports.json"
PREVIOUS = ROOT / "results" / "hls_dsp_previous.json"
PREFIX = ROOT / "results" / "hls_dsp_v2_prefix.json"
SEQUENTIAL = ROOT / "results" / "hls_dsp_sequential.json"
LINEAR_OVERLAP = ROOT / "results" / "hls_dsp_linear_overlap.json"
ROW_WAITS = ROOT / "results" / "hls_dsp_row_waits.json"
WORD_MOVERS = ROOT / "results" / "hls_dsp_word_movers.json"


def _program(name: str):
    if name == "tiny_mobilevit":
        return lower(build_tiny_mobilevit().eval(), (1, 1, 8, 8))
    return lower(zoo.build(name), zoo.get_entry(name).input_shape)


def _row(rep: dict, label: str) -> dict:
    res, av = rep["resources"], rep["available"]
    return {"row": label, "lanes": rep["lanes"], "fits": rep["fits"], "latency_ms": rep["latency_ms"],
            "cycles": rep["cycles"], **{k: res[k] for k in res},
            **{f"{k}_pct": 100 * res[k] / av[k] for k in res},
            "memory_bound_share": rep["memory_bound_share"],
            "compute_share": rep["compute_cycles"] / rep["cycles"],
            "linear_mac_efficiency": rep["linear_mac_efficiency"]}


def next_lanes(prog, fpga, lanes: estimator.Lanes, latency_ms: float) -> list[dict]:
    """Each lane count of ``lanes`` raised in turn to the next value of the search space: whether it fits
    ``fpga`` (resources over the limit if not) and the latency it would save (percent of ``latency_ms``)."""
    out = []
    for key, space in estimator.LANE_SPACE.items():
        value = getattr(lanes, key)
        up = [v for v in space if v > value]
        if not up:
            continue
        bigger = estimator.Lanes(**{**lanes.__dict__, key: up[0]})
        estimator.apply_lanes(prog, bigger)
        rep = estimator.report(prog, fpga)
        over = {k: round(100 * rep["resources"][k] / rep["available"][k]) for k in rep["available"]
                if rep["resources"][k] > estimator.UTIL_LIMIT * rep["available"][k]}
        out.append({"lane": key, "from": value, "to": up[0], "fits": rep["fits"], "over_pct": over,
                    "dsp_pct": 100 * rep["resources"]["dsp"] / rep["available"]["dsp"],
                    "saves_pct": 100 * (1 - rep["latency_ms"] / latency_ms)})
    estimator.apply_lanes(prog, lanes)
    return out


def measure(models, boards) -> list[dict]:
    """One entry per (model, board) with its ``before``, ``16-bit ports``, ``old lanes``, ``previous``,
    ``sequential``, ``linear overlap``, ``row waits``, ``word movers`` and ``after`` rows."""
    before = {(r["model"], r["board"]): r for r in json.loads(BEFORE.read_text())["rows"]}
    unpacked = {(e["model"], e["board"]): e["rows"][-1] for e in json.loads(UNPACKED.read_text())["entries"]}
    previous = {(e["model"], e["board"]): e["rows"][-1] for e in json.loads(PREVIOUS.read_text())["entries"]}
    prefix = {(e["model"], e["board"]): e["rows"][-1] for e in json.loads(PREFIX.read_text())["entries"]}
    sequential = {(e["model"], e["board"]): e["rows"][-1] for e in json.loads(SEQUENTIAL.read_text())["entries"]}
    linear_overlap = {(e["model"], e["board"]): e["rows"][-1]
                      for e in json.loads(LINEAR_OVERLAP.read_text())["entries"]}
    row_waits = {(e["model"], e["board"]): e["rows"][-1] for e in json.loads(ROW_WAITS.read_text())["entries"]}
    word_movers = {(e["model"], e["board"]): e["rows"][-1] for e in json.loads(WORD_MOVERS.read_text())["entries"]}
    out = []
    for name in models:
        prog = _program(name)
        for board in boards:
            fpga = get_target(board).require_fpga()
            rows = []
            old = before.get((name, board))
            if old:
                rows.append({"row": "before", "lanes": old["lanes"], "fits": None, "latency_ms": old["latency_ms"],
                             **{k: old[k] for k in ("dsp", "bram36", "lut")},
                             **{f"{k}_pct": 100 * old[k] / old[f"{k}_available"] for k in ("dsp", "bram36", "lut")}})
            if (name, board) in unpacked:
                rows.append({**unpacked[(name, board)], "row": "16-bit ports"})
            if old:
                estimator.apply_lanes(prog, estimator.Lanes(**old["lanes"]))
                rows.append(_row(estimator.report(prog, fpga), "old lanes"))
            if (name, board) in previous:
                rows.append({**previous[(name, board)], "row": "a3d139b" if (name, board) in prefix else "previous"})
            if (name, board) in prefix:
                rows.append({**prefix[(name, board)], "row": "previous"})
            if (name, board) in sequential:
                rows.append({**sequential[(name, board)], "row": "sequential"})
            if (name, board) in linear_overlap:
                rows.append({**linear_overlap[(name, board)], "row": "linear overlap"})
            if (name, board) in row_waits:
                rows.append({**row_waits[(name, board)], "row": "row waits"})
            if (name, board) in word_movers:
                rows.append({**word_movers[(name, board)], "row": "word movers"})
            chosen = estimator.choose_lanes(prog, fpga)
            estimator.apply_lanes(prog, chosen)
            rep = estimator.report(prog, fpga)
            rows.append(_row(rep, "after"))
            bound = {}
            for r in rep["layers"]:
                bound[r["kind"]] = bound.get(r["kind"], 0) + r["cycles"]
            ms = fpga.clock_mhz * 1e3
            linear = {"estimated_ms": bound.get("linear", 0) / ms,
                      "mac_steps_ms": sum(r["compute"] for r in rep["layers"] if r["kind"] == "linear") / ms,
                      "port_floor_ms": estimator.linear_port_floor(prog, fpga.axi_bits) / ms,
                      "ddr_floor_ms": sum(r["ddr_cycles"] for r in rep["layers"] if r["kind"] == "linear") / ms}
            out.append({"model": name, "board": board, "rows": rows, "linear": linear,
                        "next_lanes": next_lanes(prog, fpga, chosen, rep["latency_ms"]),
                        "after_ms_by_kind": {k: v / (fpga.clock_mhz * 1e3) for k, v in
                                             sorted(bound.items(), key=lambda kv: -kv[1])}})
    return out


def markdown(entries: list[dict]) -> str:
    lines = ["| model | board | row | lanes li,lo,ld,rows[,input tiles[,weight tiles]] | DSP | BRAM36 | LUT | latency ms | fits | "
             "memory-bound cycles | linear MAC efficiency |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        for r in e["rows"]:
            keys = ("li", "lo", "ld", "rows") + tuple(k for k in ("xtiles", "wtiles") if k in r["lanes"])
            lanes = ",".join(str(r["lanes"][k]) for k in keys)
            fits = "" if r["fits"] is None else ("yes" if r["fits"] else "NO")
            extra = ("", "") if "memory_bound_share" not in r else (f"{100 * r['memory_bound_share']:.0f} %",
                                                                     f"{100 * r['linear_mac_efficiency']:.1f} %")
            lines.append(f"| {e['model']} | {e['board']} | {r['row']} | {lanes} | {r['dsp']} ({r['dsp_pct']:.1f} %) | "
                         f"{r['bram36']} ({r['bram36_pct']:.0f} %) | {r['lut']} ({r['lut_pct']:.0f} %) | "
                         f"{r['latency_ms']:.1f} | {fits} | {extra[0]} | {extra[1]} |")
    lines += ["", "Where the after plan spends its time (ms by layer kind):", ""]
    for e in entries:
        top = ", ".join(f"{k} {v:.1f}" for k, v in list(e["after_ms_by_kind"].items())[:4])
        lines.append(f"* {e['model']} on {e['board']}: {top}")
    lines += ["", "The linear layers of the after plan: estimated, their MAC steps at its lanes, and the port floor no "
              "lane plan goes below (each output word written once, each input and residual word and each weight "
              "read once: estimator.linear_port_floor), and the DDR floor at the plan (all ports' words over the "
              "board's DDR bandwidth, targets/*.toml ddr_gbps):", ""]
    for e in entries:
        lin = e["linear"]
        lines.append(f"* {e['model']} on {e['board']}: {lin['estimated_ms']:.2f} ms, MAC steps "
                     f"{lin['mac_steps_ms']:.2f} ms, port floor {lin['port_floor_ms']:.2f} ms, DDR floor "
                     f"{lin['ddr_floor_ms']:.2f} ms")
    lines += ["", "Next lanes: each lane count of the after plan raised to the next value the search tries (it "
              "keeps a plan only if it fits and saves more than 1 % of the latency):", ""]
    for e in entries:
        steps = []
        for n in e["next_lanes"]:
            what = (f"saves {n['saves_pct']:.1f} % ({n['dsp_pct']:.0f} % DSP)" if n["fits"] else
                    "does not fit (" + ", ".join(f"{k} {v} %" for k, v in n["over_pct"].items()) + ")")
            steps.append(f"{n['lane']} {n['from']}->{n['to']} {what}")
        lines.append(f"* {e['model']} on {e['board']}: " + "; ".join(steps))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--boards", nargs="+", default=list(BOARDS))
    p.add_argument("--out", default=str(ROOT / "results" / "hls_dsp"), help="output path without extension")
    p.add_argument("--jobs", type=int, default=1, help="models measured in parallel processes")
    args = p.parse_args(argv)
    with multiprocessing.Pool(max(1, args.jobs)) as pool:
        per_model = pool.map(functools.partial(measure, boards=args.boards), [[m] for m in args.models])
    entries = [e for model in per_model for e in model]
    text = markdown(entries)
    print(text, end="")
    before = json.loads(BEFORE.read_text())
    doc = {"before_commit": before["commit"], "estimate_only": "analytic estimator; Vitis HLS did not run",
           "entries": entries}
    Path(args.out + ".json").write_text(json.dumps(doc, indent=1))
    Path(args.out + ".md").write_text("# HLS estimator: before / after (`python tools/hls_dsp_report.py`)\n\n"
                                      f"`before`: `edgevit hls MODEL` at {before['commit'][:7]} ({before['note']}). "
                                      f"`16-bit ports`: the lane plan and estimate before word packing "
                                      f"({UNPACKED.name}: every m_axi port one 16-bit word a cycle). "
                                      "`old lanes`: the `before` lanes under today's estimator, which follows the "
                                      "C++ as written. `previous`: the `after` plan and estimate at a3d139b "
                                      f"({PREVIOUS.name}: weight tile in 16-bit banks, L2 norm and pool mixer a word "
                                      "a cycle, BRAM counted by bits, not by bank width); for mobilevitv2_050 that row is "
                                      f"`a3d139b` and `previous` is the after plan at 76398e5 ({PREFIX.name}: only "
                                      "the part before its first MobileVitV2Block on the accelerator, the rest on "
                                      "the CPU). `sequential`: the after plan and estimate at 8b24102 "
                                      f"({SEQUENTIAL.name}: the linear unit's tile loads, MAC steps and write-back "
                                      "one after the other). `linear overlap`: the after plan and estimate at "
                                      f"e8db318 ({LINEAR_OVERLAP.name}: only the linear unit overlapped its "
                                      "transfers; the depthwise unit read a row and wrote output rows in separate "
                                      "loops, one per row, and im2col moved a word a cycle). `row waits`: the after "
                                      f"plan and estimate at 859f7f0 ({ROW_WAITS.name}: the layernorm and the L2 norm "
                                      "ran two loops per row and additive attention a word a cycle, each loop "
                                      "waiting out the m_axi latency; a residual layer's token tiles loaded between "
                                      "passes). `word movers`: the after plan and estimate at 0a3f103 "
                                      f"({WORD_MOVERS.name}: attention read Q, K and V three words a step at II=3; "
                                      "im2col of channels that are not whole beats, concat and unfold/fold a word a "
                                      "cycle, concat and unfold/fold one loop per row; each pass of the linear unit a pipelined loop of its own, "
                                      "waiting out the m_axi latency, weight tiles loaded between passes). `after`: today's C++ "
                                      "(ports of the board's AXI width, weight rows in pairs per 32-bit bank, the "
                                      "pool mixer LNL words a cycle, the linear unit's next token tile "
                                      "and previous results moving during a tile's MAC steps, a residual read "
                                      "after the tile's load in the same loop, a weight tile's passes one pipelined "
                                      "loop when weight tiles are outer, the next weight tile prefetched over the "
                                      "params port during them where the plan has two weight tiles (WTILES 2, the "
                                      "lanes column's last number; with 1 it loads after the run); the depthwise unit's "
                                      "row reads and output rows in one pipelined loop per channel group, a "
                                      "pixel's whole beats in and out; im2col a beat a cycle when the channels are "
                                      "whole beats, otherwise a tap row's beats a cycle; the layernorm and the L2 "
                                      "norm one loop over the rows, a row read while the previous one is written, "
                                      "LNL words a cycle; additive attention three such loops over the tokens' "
                                      "beats; attention's Q, K and V a beat a cycle; concat and unfold/fold one "
                                      "loop a layer, a beat a cycle when rows are whole beats) and lane plan. "
                                      "Estimates only: Vitis HLS did not run.\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
