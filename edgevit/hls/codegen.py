"""Write a readable HLS project for a calibrated :class:`~edgevit.hls.program.Program`.

The accelerator is one fixed set of units (``hw/include/edgevit/units.h``) driven by a layer program, so the
C++ is the same for every model except ``config.h`` (lanes, on-chip buffer bounds, loop trip counts). Every
text file of the project is a template of ``hw/templates`` filled by :func:`fill_template` (placeholders
``{{name}}``). The project holds:

* ``top.cpp``: ``edgevit_top``, which reads the descriptors of ``program.bin`` and dispatches each to its unit;
  ``config.h`` (which also flags the ops the dispatch has cases for: the program's, so that synthesis builds
  only their units); ``tb.cpp``, the C-simulation testbench;
* ``program.bin`` (header + descriptors, int32), ``params.bin`` (packed weights, int16), and ``program.json``
  (the program, its formats, and the readable descriptor table);
* ``regmap.json`` / ``regmap.h``: AXI-lite control and the m_axi buffers the driver allocates;
* ``testdata/``: ``inputs.bin`` (all test inputs, int16), ``golden.bin`` (the golden model's outputs) and
  ``reference.bin`` (float64 outputs) for the testbench, ``samples.npy`` (float inputs) for ``hls build``;
* ``hls.tcl`` (Vitis HLS csim/csynth/cosim/export), ``vivado_bd.tcl`` (block design) and ``params.npz``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np

from ..targets import FpgaTarget
from . import layer_table
from .csim import HW_INCLUDE, HW_TEMPLATES
from .estimator import layernorm_lanes, lanes_of, row_pass_beats
from .fixed import Fmt
from .ops import KINDS
from .program import Layer, Program

NOTICE = ("Synthesis needs Vitis HLS and Vivado, which are not installed here: csynth, cosim and the bitstream "
          "were NOT run. Only the g++ C-simulation and the analytic estimate were.")

PORTS = ("program", "params", "arena", "input", "output")
TEMPLATE_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def fill_template(name: str, **values) -> str:
    """``hw/templates/NAME`` with each ``{{key}}`` replaced by ``values[key]``.

    Raises
    ------
    ValueError
        If the template's placeholders and the given keys differ (a template and its writer out of step).
    """
    text = (HW_TEMPLATES / name).read_text()
    wanted = set(TEMPLATE_PLACEHOLDER.findall(text))
    if wanted != set(values):
        raise ValueError(f"template {name} has placeholders {sorted(wanted)}, the writer gives {sorted(values)}")
    return TEMPLATE_PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


# The loop trip counts config.h gives the units (hw/include/edgevit/*.h, EDGEVIT_TRIPCOUNT), with what they count.
TRIPCOUNTS = {
    "program_layers": "descriptors in the program", "input_copy": "input words copied in",
    "output_copy": "output words copied out",
    "linear_n_tiles": "linear: weight tiles (N / LO)", "linear_m_tiles": "linear: token tiles (M / TM)",
    "linear_tile_tokens": "linear: tokens in a token tile", "linear_k": "linear: input features K",
    "linear_k_steps": "linear: pipelined k steps (K / LI)", "linear_jobs": "linear: (token tile, weight tile) jobs",
    "linear_pass": "linear: iterations of a tile's pass (MAC steps, next tile's load, previous tile's write-back)",
    "dw_channel_groups": "depthwise: channel groups (C / LD)", "dw_window": "depthwise: weights per channel (K*K)",
    "dw_rows": "depthwise: input rows", "dw_cols": "depthwise: input columns",
    "dw_rows_ready": "depthwise: output rows completed per input row", "dw_out_cols": "depthwise: output columns",
    "dw_overlapped": "depthwise: iterations of a group's overlapped row passes (row reads and output rows)",
    "im2col_out_rows": "im2col: output rows", "im2col_out_cols": "im2col: output columns",
    "im2col_k": "im2col: kernel size", "im2col_channels": "im2col: channels",
    "im2col_run_beats": "im2col: beats of a tap row's K C words (channels not whole beats)",
    "attn_groups": "attention: sequences", "attn_heads": "attention: heads", "attn_tokens": "attention: tokens",
    "attn_head_dim": "attention: head dimension", "attn_steps": "attention: key steps per head",
    "attn_run_beats": "attention: beats of a token's q, k or v run of the head dimension",
    "attn_out_steps": "attention: output steps per head (LNL words each when outputs are whole beats)",
    "ln_slots": "layernorm: row slots (rows + 1)", "ln_channels": "layernorm: channels",
    "unfold_words": "unfold/fold: words", "concat_words": "concat: output words",
    "avgpool_tokens": "avgpool: tokens", "avgpool_channels": "avgpool: channels",
    "pool_rows": "pool mixer: rows", "pool_cols": "pool mixer: columns", "pool_channels": "pool mixer: channels",
    "pool_k": "pool mixer: window", "l2_slots": "l2norm: row slots (rows + 1)", "l2_channels": "l2norm: channels",
    "additive_tokens": "additive attention: tokens", "additive_dim": "additive attention: features",
    "route_patches": "moe route: patches", "route_experts": "moe route: experts", "route_kept": "moe route: k",
    "moe_patches": "moe experts: patches", "moe_dim": "moe experts: features",
    "moe_expert_count": "moe experts: experts",
    "moe_kept": "moe experts: k", "moe_work_items": "moe experts: expert runs per image",
    "moe_queue": "moe experts: patches per expert run",
    "add_words": "add: words",
    "token_param_words": "token rows: parameter words", "token_copy_words": "token rows: copied words",
    "scale_words": "channel scale: words",
    "gn_words": "global norm: words",
    "sep_groups": "separable attention: groups (patch pixels)", "sep_tokens": "separable attention: tokens",
    "sep_dim": "separable attention: features",
}


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def tripcounts(table: layer_table.LayerTable, lanes, tile_tokens: int, wpb: int = 1) -> dict:
    """(min, max, avg) of every loop count in :data:`TRIPCOUNTS` over ``table``'s descriptors (``wpb``: words
    per port beat).

    Counts that depend on the routes an MoE layer takes at run time span their possible range. A loop of a unit
    the program never runs gets (1, 1, 1).
    """
    seen = {name: [] for name in TRIPCOUNTS}
    hd = table.header
    seen["program_layers"].append(hd["layers"])
    seen["input_copy"].append(hd["input_words"])
    seen["output_copy"].append(hd["output_words"])

    def add(**counts):
        for name, values in counts.items():
            seen[name] += values if isinstance(values, list) else [values]

    def linear(m, k, n):
        add(linear_n_tiles=_ceil(n, lanes.lo), linear_m_tiles=_ceil(m, tile_tokens), linear_k=k,
            linear_k_steps=_ceil(k, lanes.li),
            linear_tile_tokens=[tile_tokens] * (m // tile_tokens) + ([m % tile_tokens] if m % tile_tokens else []),
            linear_jobs=_ceil(m, tile_tokens) * _ceil(n, lanes.lo),
            # a pass is the longest of its MAC steps, the next tile's load and the previous tile's write-back (at
            # most: after the load, when it reads a residual)
            linear_pass=[max(tm * _ceil(k, lanes.li), _ceil(tm * k, wpb) + 1 + tm * _ceil(min(lanes.lo, n), wpb))
                         for tm in {min(tile_tokens, m), m % tile_tokens or tile_tokens}])

    by_code = {kind.code: kind for kind in KINDS.values()}
    for d in table.descriptors:
        by_code[d["op"]].trips([d[f"d{n}"] for n in range(6)], lanes, add, linear)
    # the port's beats, which the registry's trip counts do not know
    seen["attn_run_beats"] = [row_pass_beats(dh, wpb) for dh in seen["attn_head_dim"]]
    lnl = layernorm_lanes(lanes.li, wpb)
    seen["attn_out_steps"] = [n * dh // (lnl if dh % wpb == 0 else 1)
                              for n, dh in zip(seen["attn_tokens"], seen["attn_head_dim"])]
    seen["im2col_run_beats"] = [(k * c + wpb - 2) // wpb + 1 for k, c in zip(seen["im2col_k"], seen["im2col_channels"])]
    return {name: (min(v), max(v), round(sum(v) / len(v))) if v else (1, 1, 1) for name, v in seen.items()}


def beats(words: int, axi_bits: int) -> int:
    """AXI beats of ``axi_bits`` holding ``words`` 16-bit words (at least one)."""
    return max(1, _ceil(words, axi_bits // layer_table.WORD_BITS))


def dispatched_kinds(prog: Program, every_unit: bool = False) -> list[str]:
    """The layer kinds ``config.h`` flags (``EDGEVIT_OP_<KIND>``), in op-code order: the program's, or with
    ``every_unit`` all of them (a project that builds the whole unit library, for the synthesis-mode check)."""
    kinds = {layer.kind for layer in prog.layers}
    return sorted((k for k in KINDS if every_unit or k in kinds), key=lambda k: KINDS[k].code)


def _config_h(prog: Program, table: layer_table.LayerTable, axi_bits: int, every_unit: bool = False) -> str:
    lanes = lanes_of(prog)
    bounds = layer_table.unit_bounds(prog)
    h = table.header
    wpb = axi_bits // layer_table.WORD_BITS
    # INTERFACE depths: the program port is 32-bit words, the others beats
    elements = {"program": len(table.to_bytes()) // 4, "params": beats(h["params_words"], axi_bits),
                "arena": beats(h["arena_words"], axi_bits), "input": beats(h["input_words"], axi_bits),
                "output": beats(h["output_words"], axi_bits)}

    def constants(values: dict, suffix: str = "") -> str:
        return "\n".join(f"    static const int {k}{suffix} = {v};" for k, v in values.items())

    trips = "\n".join(f"    typedef edgevit::tripcount<{lo}, {hi}, {avg}> {name};  // {TRIPCOUNTS[name]}"
                       for name, (lo, hi, avg) in tripcounts(table, lanes, bounds["TM"], wpb).items())
    lane_constants = constants({"LI": lanes.li, "LO": lanes.lo, "LD": lanes.ld, "ROWS": lanes.rows,
                                "XTILES": lanes.xtiles, "WTILES": lanes.wtiles})
    ports = (constants({"AXI_BITS": axi_bits, "WPB": wpb, "XBANKS": max(lanes.li, wpb),
                        "LNL": layernorm_lanes(lanes.li, wpb)})
             + "\n    typedef ap_uint<AXI_BITS> beat_t;")
    ops = "\n".join(f"#define EDGEVIT_OP_{kind.upper()} 1" for kind in dispatched_kinds(prog, every_unit))
    return fill_template("config.h", ops=ops, lanes=lane_constants, ports=ports, buffer_bounds=constants(bounds),
                         port_elements=constants(elements, "_elements"), tripcounts=trips)


def _regmap(prog: Program, table: layer_table.LayerTable, axi_bits: int) -> dict:
    """Vitis HLS's s_axilite layout for a top with five 64-bit m_axi pointers, and the buffers behind them.

    The int16 buffers are read and written in beats of ``axi_bits``: ``alloc_elements`` pads each to whole beats
    (what a driver allocates), ``elements`` is what it holds.
    """
    regs = [{"name": "CTRL", "offset": "0x00", "bits": "0 ap_start, 1 ap_done, 2 ap_idle, 3 ap_ready, 7 auto_restart"},
            {"name": "GIE", "offset": "0x04"}, {"name": "IER", "offset": "0x08"}, {"name": "ISR", "offset": "0x0c"}]
    for k, port in enumerate(PORTS):
        regs.append({"name": port.upper(), "offset": f"0x{0x10 + 12 * k:02x}", "width": 64,
                     "meaning": f"physical address of the {port} buffer"})
    h = table.header
    fi, fo = prog.formats[prog.input], prog.formats[prog.output]
    buffers = {
        "program": {"dtype": "int32", "elements": len(table.to_bytes()) // 4, "file": "program.bin"},
        "params": {"dtype": "int16", "elements": h["params_words"], "file": "params.bin"},
        "arena": {"dtype": "int16", "elements": h["arena_words"]},
        "input": {"dtype": "int16", "elements": h["input_words"], "shape": list(prog.shapes[prog.input]),
                  "format": [fi.w, fi.i], "layout": "channels-last"},
        "output": {"dtype": "int16", "elements": h["output_words"], "shape": list(prog.shapes[prog.output]),
                   "format": [fo.w, fo.i], "layout": "channels-last"}}
    wpb = axi_bits // layer_table.WORD_BITS
    for spec in buffers.values():
        if spec["dtype"] == "int16":
            spec.update(beat_bits=axi_bits, alloc_elements=beats(spec["elements"], axi_bits) * wpb)
    return {"ip": "edgevit_top", "control": "s_axi_control", "registers": regs, "buffers": buffers}


def _regmap_h(regmap: dict) -> str:
    registers = "\n".join(f"#define EDGEVIT_REG_{r['name']} {r['offset']}" for r in regmap["registers"])
    buffers = "\n".join(f"#define EDGEVIT_{name.upper()}_ELEMENTS {b['elements']}  // {b['dtype']}"
                        for name, b in regmap["buffers"].items())
    return fill_template("regmap.h", registers=registers, buffers=buffers)


def _hls_tcl(fpga: FpgaTarget) -> str:
    return fill_template("hls.tcl", part=fpga.part, clock_period_ns=f"{1000.0 / fpga.clock_mhz:.3f}")


def _vivado_tcl(fpga: FpgaTarget, board: str) -> str:
    zynq_us = fpga.family == "zynquplus"
    # The PS presets (DDR, clocks, MIO) come from the board files: without board_part, apply_board_preset
    # has nothing to apply.
    board_part = (f"set_property board_part {fpga.board_part} [current_project]" if fpga.board_part else
                  "# no board_part in targets/: set the PS configuration by hand before implementation")
    return fill_template("vivado_bd.tcl", board=board, part=fpga.part, board_part=board_part,
                         ps_ip="zynq_ultra_ps_e" if zynq_us else "processing_system7",
                         hp_port="S_AXI_HP0_FPD" if zynq_us else "S_AXI_HP0")


def write_project(prog: Program, out: Path, fpga: FpgaTarget, board: str, samples: np.ndarray | None = None,
                  meta: dict | None = None, every_unit: bool = False) -> Path:
    """Write the project for ``prog`` into ``out``; ``samples`` (float inputs) become the testbench inputs.
    ``every_unit``: dispatch every op, not only the program's (:func:`dispatched_kinds`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = layer_table.build(prog)
    (out / "config.h").write_text(_config_h(prog, table, fpga.axi_bits, every_unit))
    (out / "top.cpp").write_text(fill_template("top.cpp"))
    (out / "tb.cpp").write_text(fill_template("tb.cpp"))
    (out / "program.bin").write_bytes(table.to_bytes())
    table.params.astype("<i2").tofile(out / "params.bin")
    regmap = _regmap(prog, table, fpga.axi_bits)
    (out / "regmap.json").write_text(json.dumps(regmap, indent=1))
    (out / "regmap.h").write_text(_regmap_h(regmap))
    (out / "hls.tcl").write_text(_hls_tcl(fpga))
    # A copy of the unit headers makes the project self-contained for Vitis on another machine.
    shutil.copytree(HW_INCLUDE / "edgevit", out / "include" / "edgevit", dirs_exist_ok=True)
    (out / "vivado_bd.tcl").write_text(_vivado_tcl(fpga, board))
    save_program(prog, out, board, meta or {}, table)
    data = out / "testdata"
    shutil.rmtree(data, ignore_errors=True)
    if samples is not None:
        data.mkdir()
        raw = [prog.quantize_input(x) for x in samples]
        np.concatenate([r.ravel() for r in raw]).astype("<i2").tofile(data / "inputs.bin")
        golden = [prog.run_fixed(r)[prog.output].ravel() for r in raw]
        np.concatenate(golden).astype("<i2").tofile(data / "golden.bin")
        ref = [prog.run_float(x)[prog.output].ravel() for x in samples]
        np.concatenate(ref).astype("<f8").tofile(data / "reference.bin")
        np.save(data / "samples.npy", np.asarray(samples))
    (out / "README.txt").write_text(fill_template("README.txt", board=board, part=fpga.part,
                                                  clock_mhz=fpga.clock_mhz, notice=NOTICE, project=out))
    return out


def save_program(prog: Program, out: Path, board: str, meta: dict, table: layer_table.LayerTable) -> None:
    layers = [{"kind": l.kind, "name": l.name, "inputs": l.inputs, "output": l.output, "attrs": l.attrs,
               "params": sorted(l.params), "source": l.source} for l in prog.layers]
    doc = {"board": board, "input": prog.input, "shapes": {k: list(v) for k, v in prog.shapes.items()},
           "formats": {k: [f.w, f.i] for k, f in prog.formats.items()}, "layers": layers,
           "cpu_layers": prog.cpu_layers, "meta": meta, "table": table.to_json()}
    (out / "program.json").write_text(json.dumps(doc, indent=1))
    np.savez(out / "params.npz", **{f"{l.name}/{k}": v for l in prog.layers for k, v in l.params.items()})


def load_program(out: Path) -> tuple[Program, dict]:
    """Reload a project's program (the inverse of :func:`save_program`); returns it and the JSON document."""
    doc = json.loads((Path(out) / "program.json").read_text())
    arrays = np.load(Path(out) / "params.npz")
    layers = [Layer(d["kind"], d["name"], d["inputs"], d["output"], d["attrs"],
                    {k: arrays[f"{d['name']}/{k}"] for k in d["params"]}, d["source"]) for d in doc["layers"]]
    prog = Program(doc["input"], {k: tuple(v) for k, v in doc["shapes"].items()}, layers,
                   {k: Fmt(*v) for k, v in doc["formats"].items()}, doc["cpu_layers"])
    return prog, doc
