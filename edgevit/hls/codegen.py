"""Write a readable HLS project for a calibrated :class:`~edgevit.hls.program.Program`.

The project holds: ``model.h`` (formats and sizes), ``top.cpp`` (the top function: the layer program as calls
into the shared kernels of ``hw/include/edgevit``), ``params.bin`` (packed raw weights), ``regmap.json`` and
``regmap.h`` (AXI-lite control and m_axi buffers), ``tb.cpp`` (C-simulation testbench), ``hls.tcl`` (Vitis HLS
csim/csynth/cosim/export) and ``vivado_bd.tcl`` (block design for the board), plus ``program.json`` and
``params.npz`` so ``edgevit hls build`` and ``report`` can reload it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..targets import FpgaTarget
from .csim import HW_INCLUDE, write_i64
from .fixed import Fmt
from .golden import eps_q
from .program import Layer, Program

NOTICE = ("Synthesis needs Vitis HLS and Vivado, which are not installed here: csynth, cosim and the bitstream "
          "were NOT run. Only the g++ C-simulation and the analytic estimate were.")


def ident(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _buffers(prog: Program) -> tuple[list, list]:
    """(activation tensors, parameter tensors) as (c_name, size, fmt, owner) lists."""
    acts = [(ident(n), int(np.prod(s)), prog.formats[n], n) for n, s in prog.shapes.items()]
    params = []
    for layer in prog.layers:
        for key, (raw, fmt) in prog.quantized_params(layer).items():
            params.append((ident(f"{layer.name}_{key}"), raw.size, fmt, (layer.name, key, raw)))
    return acts, params


def _traces(prog: Program) -> list:
    return [(ident(f"{l.name}_done"), int(l.attrs["groups"] * l.attrs["heads"] * l.attrs["n"]))
            for l in prog.layers if l.kind == "attention"]


def _act(attrs: dict) -> str:
    return "edgevit::ACT_" + {"hswish": "HSWISH"}.get(attrs.get("act", "none"), attrs.get("act", "none").upper())


def _call(prog: Program, layer: Layer) -> str:
    """The C++ statement that runs ``layer``: buffers are ``b_<tensor>``, parameters ``p_<layer>_<key>``, types
    ``t_<tensor>`` and ``t_<layer>_<key>``."""
    a, i, o = layer.attrs, [ident(n) for n in layer.inputs], ident(layer.output)

    def t(tensor):
        return f"t_{ident(tensor)}"

    def p(key):
        return f"p_{ident(layer.name)}_{key}"

    def pt(key):
        return f"t_{ident(layer.name)}_{key}"

    shape = prog.shapes[layer.inputs[0]]
    if layer.kind == "linear":
        tokens, ci = int(np.prod(shape[:-1])), shape[-1]
        co = prog.shapes[layer.output][-1]
        has_b, has_r = "b" in layer.params, len(layer.inputs) > 1
        tb = pt('b') if has_b else t(layer.output)
        tr = t(layer.inputs[1]) if has_r else t(layer.output)
        return (f"edgevit::linear_unit<{tokens}, {ci}, {co}, {a['li']}, {a['lo']}, {_act(a)}, "
                f"{t(layer.inputs[0])}, {pt('w')}, {tb}, {t(layer.output)}, {tr}>"
                f"(b_{i[0]}, {p('w')}, {p('b') if has_b else '0'}, {'b_' + i[1] if has_r else '0'}, b_{o});")
    if layer.kind == "dwconv":
        h, w, c = shape
        tb = pt('b') if "b" in layer.params else t(layer.output)
        return (f"edgevit::depthwise_conv<{h}, {w}, {c}, {a['k']}, {a['stride']}, {a['pad']}, "
                f"{_act(a)}, {t(layer.inputs[0])}, {pt('w')}, {tb}, {t(layer.output)}>"
                f"(b_{i[0]}, {p('w')}, {p('b') if 'b' in layer.params else '0'}, b_{o});")
    if layer.kind == "im2col":
        h, w, c = shape
        return (f"edgevit::im2col<{h}, {w}, {c}, {a['k']}, {a['stride']}, {a['pad']}, {t(layer.inputs[0])}>"
                f"(b_{i[0]}, b_{o});")
    if layer.kind == "layernorm":
        tokens, c = int(np.prod(shape[:-1])), shape[-1]
        eq = eps_q(a["eps"], prog.formats[layer.inputs[0]])
        return (f"edgevit::layernorm<{tokens}, {c}, {eq}LL, {t(layer.inputs[0])}, {pt('gamma')}, "
                f"{t(layer.output)}>(b_{i[0]}, {p('gamma')}, {p('beta')}, b_{o});")
    if layer.kind == "attention":
        g, n, w3 = shape
        d = w3 // 3
        return (f"edgevit::attention<{g}, {n}, {a['heads']}, {d // a['heads']}, {a['rows']}, {t(layer.inputs[0])}, "
                f"t_{ident(layer.name)}_logits, {t(layer.output)}>(b_{i[0]}, b_{o}, tr_{ident(layer.name)}_done);")
    if layer.kind in ("unfold", "fold"):
        h, w, c = shape if layer.kind == "unfold" else prog.shapes[layer.output]
        return (f"edgevit::{layer.kind}<{h}, {w}, {c}, {a['ph']}, {a['pw']}, {t(layer.inputs[0])}>"
                f"(b_{i[0]}, b_{o});")
    if layer.kind == "concat":
        tokens = int(np.prod(shape[:-1]))
        cb = prog.shapes[layer.inputs[1]][-1]
        return (f"edgevit::concat<{tokens}, {shape[-1]}, {cb}, {t(layer.inputs[0])}, {t(layer.inputs[1])}, "
                f"{t(layer.output)}>(b_{i[0]}, b_{i[1]}, b_{o});")
    if layer.kind == "avgpool":
        tokens = int(np.prod(shape[:-1]))
        return (f"edgevit::avgpool<{tokens}, {shape[-1]}, {t(layer.inputs[0])}, {t(layer.output)}>"
                f"(b_{i[0]}, b_{o});")
    if layer.kind == "pool_mixer":
        h, w, c = shape
        has_s = "scale" in layer.params
        return (f"edgevit::pool_mixer<{h}, {w}, {c}, {a['k']}, {t(layer.inputs[0])}, "
                f"{pt('scale') if has_s else t(layer.output)}, {t(layer.output)}>"
                f"(b_{i[0]}, {p('scale') if has_s else '0'}, b_{o});")
    if layer.kind == "l2norm":
        tokens = int(np.prod(shape[:-1]))
        return (f"edgevit::l2_normalize<{tokens}, {shape[-1]}, {t(layer.inputs[0])}, {t(layer.output)}>"
                f"(b_{i[0]}, b_{o});")
    if layer.kind == "additive":
        tokens = int(np.prod(shape[:-1]))
        return (f"edgevit::additive_attention<{tokens}, {shape[-1]}, {t(layer.inputs[0])}, {t(layer.inputs[1])}, "
                f"{pt('wg')}, {t(layer.output)}>(b_{i[0]}, b_{i[1]}, {p('wg')}, b_{o});")
    raise ValueError(layer.kind)


def _model_h(prog: Program, acts, params, traces) -> str:
    lines = ["// Formats and sizes of the layer program (generated by edgevit hls).", "#ifndef MODEL_H",
             "#define MODEL_H", "", "#include <edgevit/kernels.h>", ""]
    for c, size, fmt, _ in acts:
        lines.append(f"typedef {fmt.cpp} t_{c};  // {size} values")
    for layer in prog.layers:
        if layer.kind == "attention":
            lines.append(f"typedef {prog.formats[layer.name + '.logits'].cpp} t_{ident(layer.name)}_logits;")
    for c, size, fmt, _ in params:
        lines.append(f"typedef {fmt.cpp} t_{c};")
    off = 0
    lines.append("")
    for c, size, _, _ in params:
        lines.append(f"#define OFF_{c} {off}")
        off += size
    lines.append(f"#define PARAMS_SIZE {off}")
    lines.append(f"#define INPUT_SIZE {int(np.prod(prog.shapes[prog.input]))}")
    lines.append(f"#define OUTPUT_SIZE {int(np.prod(prog.shapes[prog.output]))}")
    lines.append(f"#define PROBES_SIZE {sum(a[1] for a in acts) + sum(n for _, n in traces)}")
    lines += ["", "void edgevit_top(const long long* params, const long long* input, long long* output,",
              "                 long long* probes);", "", "#endif", ""]
    return "\n".join(lines)


def _top_cpp(prog: Program, acts, params, traces) -> str:
    lines = ["// The accelerator's top function: loads the weights, runs the layer program on the kernels of",
             "// hw/include/edgevit, writes the output (and, when probes != 0, every tensor for debugging).",
             "// Each call instantiates a kernel for its tensors' formats; see hw/README.md on unit sharing.",
             "#include \"model.h\"", "", "template <class T>",
             "static void load(T* dst, const long long* src, int n) { for (int k = 0; k < n; ++k) dst[k].V = src[k]; }",
             "template <class T>",
             "static void store(long long* dst, const T* src, int n) { for (int k = 0; k < n; ++k) dst[k] = (long long)src[k].V; }",
             ""]
    for c, size, _, _ in acts:
        lines.append(f"static t_{c} b_{c}[{size}];")
    for c, size, _, _ in params:
        lines.append(f"static t_{c} p_{c}[{size}];")
    for c, n in traces:
        lines.append(f"static int tr_{c}[{n}];")
    lines += ["", "void edgevit_top(const long long* params, const long long* input, long long* output,",
              "                 long long* probes) {",
              "#pragma HLS INTERFACE m_axi port=params offset=slave bundle=gmem0",
              "#pragma HLS INTERFACE m_axi port=input offset=slave bundle=gmem1",
              "#pragma HLS INTERFACE m_axi port=output offset=slave bundle=gmem1",
              "#pragma HLS INTERFACE m_axi port=probes offset=slave bundle=gmem2",
              "#pragma HLS INTERFACE s_axilite port=return"]
    for c, size, _, _ in params:
        lines.append(f"    load(p_{c}, params + OFF_{c}, {size});")
    lines.append(f"    load(b_{ident(prog.input)}, input, INPUT_SIZE);")
    for layer in prog.layers:
        lines.append(f"    // {layer.name}: {layer.kind} ({layer.source})")
        lines.append("    " + _call(prog, layer))
    lines.append(f"    store(output, b_{ident(prog.output)}, OUTPUT_SIZE);")
    lines.append("    if (!probes) return;")
    off = 0
    for c, size, _, _ in acts:
        lines.append(f"    store(probes + {off}, b_{c}, {size});")
        off += size
    for c, n in traces:
        lines.append(f"    for (int k = 0; k < {n}; ++k) probes[{off} + k] = tr_{c}[k];")
        off += n
    lines += ["}", ""]
    return "\n".join(lines)


TB_CPP = """// C-simulation testbench: reads params.bin and every input_<k>.bin, writes output_<k>.bin and probes_<k>.bin.
#include <cstdio>
#include <vector>
#include "model.h"

static bool read_file(const char* path, std::vector<long long>& v) {
    FILE* f = std::fopen(path, "rb");
    if (!f) return false;
    size_t n = std::fread(v.data(), sizeof(long long), v.size(), f);
    std::fclose(f);
    return n == v.size();
}

static void write_file(const char* path, const std::vector<long long>& v) {
    FILE* f = std::fopen(path, "wb");
    std::fwrite(v.data(), sizeof(long long), v.size(), f);
    std::fclose(f);
}

int main(int argc, char** argv) {
    std::vector<long long> params(PARAMS_SIZE), input(INPUT_SIZE), output(OUTPUT_SIZE), probes(PROBES_SIZE);
    if (!read_file("params.bin", params)) { std::fprintf(stderr, "cannot read params.bin\\n"); return 2; }
    bool want_probes = argc > 1;
    int count = 0;
    for (;; ++count) {
        char name[64];
        std::snprintf(name, sizeof name, "input_%d.bin", count);
        if (!read_file(name, input)) break;
        edgevit_top(params.data(), input.data(), output.data(), want_probes ? probes.data() : 0);
        std::snprintf(name, sizeof name, "output_%d.bin", count);
        write_file(name, output);
        if (want_probes) {
            std::snprintf(name, sizeof name, "probes_%d.bin", count);
            write_file(name, probes);
        }
    }
    std::printf("%d inputs simulated\\n", count);
    return 0;
}
"""


def _regmap(prog: Program) -> dict:
    """Vitis HLS's s_axilite layout for a top with four 64-bit m_axi pointers."""
    regs = [{"name": "CTRL", "offset": "0x00", "bits": "0 ap_start, 1 ap_done, 2 ap_idle, 3 ap_ready, 7 auto_restart"},
            {"name": "GIE", "offset": "0x04"}, {"name": "IER", "offset": "0x08"}, {"name": "ISR", "offset": "0x0c"}]
    for k, port in enumerate(("params", "input", "output", "probes")):
        regs.append({"name": port.upper(), "offset": f"0x{0x10 + 12 * k:02x}", "width": 64,
                     "meaning": f"physical address of the {port} buffer (int64 raw fixed-point words)"})
    sizes = {"params": None, "input": int(np.prod(prog.shapes[prog.input])),
             "output": int(np.prod(prog.shapes[prog.output]))}
    return {"ip": "edgevit_top", "control": "s_axi_control", "registers": regs,
            "buffers": {"input_format": str(prog.formats[prog.input]), "output_format": str(prog.formats[prog.output]),
                        "input_shape": list(prog.shapes[prog.input]), "output_shape": list(prog.shapes[prog.output]),
                        **{k: v for k, v in sizes.items() if v}}}


def _regmap_h(regmap: dict) -> str:
    lines = ["// AXI-lite register offsets of edgevit_top (generated).", "#ifndef REGMAP_H", "#define REGMAP_H"]
    for r in regmap["registers"]:
        lines.append(f"#define EDGEVIT_REG_{r['name']} {r['offset']}")
    lines += ["#endif", ""]
    return "\n".join(lines)


def _hls_tcl(fpga: FpgaTarget, include: str) -> str:
    period = 1000.0 / fpga.clock_mhz
    return f"""# Vitis HLS project for edgevit_top. Run: vitis_hls -f hls.tcl  (not run by edgevit: no Vitis here).
# Vitis brings its own ap_fixed.h; only edgevit's kernel headers are added.
open_project -reset edgevit_prj
set_top edgevit_top
add_files top.cpp -cflags "-std=c++14 -I{include} -I."
add_files -tb tb.cpp -cflags "-std=c++14 -I{include} -I."
add_files -tb params.bin
add_files -tb input_0.bin
open_solution -reset solution1 -flow_target vivado
set_part {fpga.part}
create_clock -period {period:.3f} -name default
csim_design
csynth_design
cosim_design
export_design -format ip_catalog
exit
"""


def _vivado_tcl(fpga: FpgaTarget, board: str) -> str:
    ps = "zynq_ultra_ps_e" if fpga.family == "zynquplus" else "processing_system7"
    hp = "S_AXI_HP0_FPD" if fpga.family == "zynquplus" else "S_AXI_HP0"
    return f"""# Vivado block design for {board}: PS + edgevit_top. Run: vivado -mode batch -source vivado_bd.tcl
# (not run by edgevit: no Vivado here). Needs the IP exported by hls.tcl.
create_project -force edgevit_bd ./edgevit_bd -part {fpga.part}
set_property ip_repo_paths ./edgevit_prj/solution1/impl/ip [current_project]
update_ip_catalog
create_bd_design edgevit
create_bd_cell -type ip -vlnv xilinx.com:ip:{ps}:* ps
apply_bd_automation -rule xilinx.com:bd_rule:{ps} -config {{apply_board_preset "1"}} [get_bd_cells ps]
create_bd_cell -type ip -vlnv xilinx.com:hls:edgevit_top:1.0 edgevit_top
apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config {{Master "/ps/M_AXI_GP0" Clk "Auto"}} [get_bd_intf_pins edgevit_top/s_axi_control]
foreach port {{m_axi_gmem0 m_axi_gmem1 m_axi_gmem2}} {{
    apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config [list Slave "/ps/{hp}" Clk "Auto"] [get_bd_intf_pins edgevit_top/$port]
}}
validate_bd_design
make_wrapper -files [get_files edgevit.bd] -top
add_files -norecurse ./edgevit_bd/edgevit_bd.gen/sources_1/bd/edgevit/hdl/edgevit_wrapper.v
launch_runs impl_1 -to_step write_bitstream -jobs 2
wait_on_run impl_1
"""


def write_project(prog: Program, out: Path, fpga: FpgaTarget, board: str, samples: np.ndarray | None = None,
                  meta: dict | None = None) -> Path:
    """Write the project for ``prog`` into ``out``; ``samples`` (float inputs) become the testbench inputs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("input_*.bin"):   # the testbench simulates every input file it finds
        stale.unlink()
    acts, params, traces = *_buffers(prog), _traces(prog)
    (out / "model.h").write_text(_model_h(prog, acts, params, traces))
    (out / "top.cpp").write_text(_top_cpp(prog, acts, params, traces))
    (out / "tb.cpp").write_text(TB_CPP)
    write_i64(out / "params.bin", np.concatenate([p[3][2].ravel() for p in params]) if params else np.zeros(0))
    regmap = _regmap(prog)
    (out / "regmap.json").write_text(json.dumps(regmap, indent=1))
    (out / "regmap.h").write_text(_regmap_h(regmap))
    (out / "hls.tcl").write_text(_hls_tcl(fpga, str(HW_INCLUDE)))
    (out / "vivado_bd.tcl").write_text(_vivado_tcl(fpga, board))
    save_program(prog, out, board, meta or {})
    if samples is not None:
        for k, x in enumerate(samples):
            write_i64(out / f"input_{k}.bin", prog.quantize_input(x).ravel())
        np.save(out / "samples.npy", np.asarray(samples))
    (out / "README.txt").write_text(f"edgevit HLS project for {board} ({fpga.part} @ {fpga.clock_mhz} MHz).\n"
                                    f"{NOTICE}\nC-simulation: edgevit hls build {out} --csim\n"
                                    f"Estimate:     edgevit hls report {out}\n")
    return out


def save_program(prog: Program, out: Path, board: str, meta: dict) -> None:
    layers = [{"kind": l.kind, "name": l.name, "inputs": l.inputs, "output": l.output, "attrs": l.attrs,
               "params": sorted(l.params), "source": l.source} for l in prog.layers]
    doc = {"board": board, "input": prog.input, "shapes": {k: list(v) for k, v in prog.shapes.items()},
           "formats": {k: [f.w, f.i] for k, f in prog.formats.items()}, "layers": layers,
           "cpu_layers": prog.cpu_layers, "meta": meta}
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
