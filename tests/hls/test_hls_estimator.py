"""The analytic estimator: lane choice fits each board, oversize designs do not fit, one entry per descriptor;
DSPs by operand width, memory-bound layers gain nothing from lanes, the lane search is the brute-force optimum."""

import dataclasses
import itertools

import numpy as np
import pytest

from edgevit.hls import estimator, layer_table
from edgevit.hls.program import Layer, Program, calibrate
from edgevit.zoo.tiny_mobilevit import build_tiny_mobilevit
from edgevit.hls.torch_import import lower, to_accel_layout
from edgevit.targets import get_target


@pytest.fixture(scope="module")
def prog():
    return lower(build_tiny_mobilevit().eval(), (1, 1, 8, 8))


@pytest.mark.parametrize("board", ["pynq-z2", "zcu102"])
def test_chosen_lanes_fit(prog, board):
    fpga = get_target(board).require_fpga()
    lanes = estimator.choose_lanes(prog, fpga)
    estimator.apply_lanes(prog, lanes)
    rep = estimator.report(prog, fpga)
    assert rep["fits"] and rep["cycles"] > 0
    assert all(rep["resources"][k] <= 0.8 * rep["available"][k] for k in rep["resources"])


def test_more_lanes_fewer_cycles_and_oversize_does_not_fit(prog):
    pynq = get_target("pynq-z2").require_fpga()
    small = sum(r["cycles"] for r in estimator.layer_cycles(prog, estimator.Lanes(1, 1, 1, 1), pynq.axi_bits))
    big_lanes = estimator.Lanes(16, 16, 16, 16)
    big = sum(r["cycles"] for r in estimator.layer_cycles(prog, big_lanes, pynq.axi_bits))
    assert big < small
    assert not estimator.fits(estimator.resources(prog, big_lanes), pynq)


def test_cycles_follow_the_descriptor_loop():
    prog = lower(build_tiny_mobilevit().eval(), (1, 1, 8, 8))
    fpga = get_target("zcu102").require_fpga()
    calibrate(prog, [to_accel_layout(np.random.default_rng(0).standard_normal((1, 1, 8, 8)))])
    estimator.apply_lanes(prog, estimator.choose_lanes(prog, fpga))
    rep = estimator.report(prog, fpga)
    table = layer_table.build(prog)
    assert [r["kind"] for r in rep["layers"]] == [d["op"] for d in table.to_json()["layers"]]
    assert all(r["cycles"] >= estimator.dispatch_cycles(fpga.axi_bits) for r in rep["layers"])
    lo = rep["lanes"]["lo"]
    for layer, d in zip(prog.layers, table.descriptors):
        if layer.kind == "linear":
            assert d["d3"] == layer_table.weights_outer(d["d0"], d["d1"], d["d2"], lo)


def _linear_prog(m, k, n):
    rng = np.random.default_rng(0)
    layer = Layer("linear", "fc", ["input"], "out", {}, {"w": rng.standard_normal((n, k)), "b": np.zeros(n)})
    return Program("input", {"input": (m, k), "out": (m, n)}, [layer])


@pytest.mark.parametrize("family,bits,dsp", [
    ("zynquplus", (16, 16), 1), ("zynq", (16, 16), 1), ("zynquplus", (27, 18), 1), ("zynq", (27, 18), 2),
    ("zynq", (25, 18), 1), ("zynquplus", (41, 17), 2), ("zynquplus", (19, 19), 2)])
def test_dsp_per_multiply_follows_the_multiplier_widths(family, bits, dsp):
    # DSP48E2 multiplies 27x18, DSP48E1 25x18 (signed); wider operands take partial products.
    assert estimator.dsp_per_multiply(*bits, family) == dsp
    assert estimator.dsp_per_multiply(*reversed(bits), family) == dsp


def test_lanes_shorten_compute_bound_layers_only():
    fpga = get_target("zcu102").require_fpga()
    # 4 inputs per output: from 4 input lanes (a MAC step per token, as many as its write-back beats) the
    # write-back and the m_axi latencies dominate
    thin = _linear_prog(512, 4, 8), 8, 4
    deep = _linear_prog(32, 256, 256), 1, 1   # one token tile, its inputs reused by 256 one-lane weight tiles
    for (prog, lo, li), bound in ((thin, "memory"), (deep, "compute")):
        one, wide = (estimator.layer_cycles(prog, estimator.Lanes(n, lo, 1, 1), fpga.axi_bits)[0] for n in (li, 32))
        assert one["bound"] == bound
        assert wide["memory"] == one["memory"]          # input lanes do not move words faster
        gain = one["cycles"] / wide["cycles"]
        # a memory-bound layer keeps its memory cycles whatever the lanes; a compute-bound one sheds most cycles
        assert (wide["cycles"] > one["memory"] and gain < 1.5) if bound == "memory" else (gain > 5)


def test_attention_rows_shorten_the_key_steps(prog):
    fpga = get_target("zcu102").require_fpga()
    att = [[r for r in estimator.layer_cycles(prog, estimator.Lanes(1, 1, 1, rows), fpga.axi_bits)
            if r["kind"] == "attention"] for rows in (1, 4)]
    assert att[0] and all(a["compute"] > 3 * b["compute"] for a, b in zip(*att))


def test_each_unit_depends_only_on_its_own_lanes(prog):
    # choose_lanes scores each unit's lanes on its own layers; that is exact only if this holds.
    fpga = get_target("zcu102").require_fpga()
    a = estimator.layer_cycles(prog, estimator.Lanes(2, 4, 1, 1), fpga.axi_bits)
    b = estimator.layer_cycles(prog, estimator.Lanes(2, 4, 16, 8), fpga.axi_bits)
    c = estimator.layer_cycles(prog, estimator.Lanes(16, 32, 1, 1), fpga.axi_bits)
    for ra, rb, rc in zip(a, b, c):
        if ra["kind"] not in ("dwconv", "attention"):
            assert ra["cycles"] == rb["cycles"], ra["layer"]
        # layernorm's, L2 norm's and the pool mixer's lanes follow LI, and so do attention's output lanes (scored per
        # ROWS and LI)
        if ra["kind"] not in estimator.LI_KINDS | {"attention"}:
            assert ra["cycles"] == rc["cycles"], ra["layer"]


@pytest.mark.parametrize("board", ["pynq-z2", "zcu102"])
def test_choice_is_the_fastest_fitting_plan_by_brute_force(prog, board, monkeypatch):
    fpga = get_target(board).require_fpga()
    space = {"li": (1, 4, 16), "lo": (2, 8, 32), "ld": (1, 4), "rows": (1, 2, 8)}
    monkeypatch.setattr(estimator, "LANE_SPACE", space)
    chosen = estimator.choose_lanes(prog, fpga)
    plans = []
    for li, lo, ld, rows in itertools.product(*space.values()):
        lanes = estimator.Lanes(li, lo, ld, rows)
        res = estimator.resources(prog, lanes, fpga.family, fpga.axi_bits)
        if estimator.fits(res, fpga):
            cycles = estimator.layer_cycles(prog, lanes, fpga.axi_bits, estimator.ddr_bytes_per_cycle(fpga))
            plans.append((sum(r["cycles"] for r in cycles), res["dsp"], lanes))
    best = min(c for c, _, _ in plans)
    near = [(dsp, lanes) for c, dsp, lanes in plans if c <= best * (1 + estimator.LATENCY_TOLERANCE)]
    got = next((c, dsp) for c, dsp, lanes in plans if lanes == chosen)
    assert got[0] <= best * (1 + estimator.LATENCY_TOLERANCE) and got[1] == min(d for d, _ in near)


def test_report_keeps_the_bundle_keys_and_per_layer_ms(prog):
    fpga = get_target("pynq-z2").require_fpga()
    estimator.apply_lanes(prog, estimator.choose_lanes(prog, fpga))
    rep = estimator.report(prog, fpga)
    assert {"latency_ms", "cycles", "clock_mhz", "fits"} <= set(rep)
    assert rep["latency_ms"] == pytest.approx(rep["cycles"] / (fpga.clock_mhz * 1e3))
    assert sum(r["ms"] for r in rep["layers"]) == pytest.approx(rep["latency_ms"])
    assert {r["bound"] for r in rep["layers"]} <= {"compute", "memory"}
    assert all(r["cycles"] == r["compute"] + r["memory"] + estimator.dispatch_cycles(fpga.axi_bits)
               for r in rep["layers"])


def _int8_program(kinds):
    """An int8 program of the given kinds on a 6 x 6 x 16 map (resources need only kinds and shapes)."""
    shapes = {"input": (6, 6, 16), "d": (6, 6, 16), "t": (6, 6, 16), "y": (36, 24), "s": (36, 24), "p": (1, 24)}
    layers = {"qdwconv": Layer("qdwconv", "dw", ["input"], "d", {"k": 3, "stride": 1, "pad": 1}, {}),
              "qtable": Layer("qtable", "tb", ["d"], "t", {}, {}),
              "qlinear": Layer("qlinear", "fc", ["t"], "y", {}, {}),
              "qadd": Layer("qadd", "add", ["y", "y"], "s", {}, {}),
              "qavgpool": Layer("qavgpool", "pool", ["s"], "p", {}, {})}
    return Program("input", shapes, [layers[k] for k in kinds])


def test_int8_units_are_counted():
    # Each int8 unit adds what its C++ holds: qgemm_unit its own LI x LO MACs, one requantisation (a 34 x 25-bit
    # product: two DSP48E2) and its tiles; the int8 depthwise unit its LD x 9 MACs and LD requantisations; qadd
    # two 16 x 31-bit products; qavgpool one requantisation; qtable a 512-word table.
    lanes = estimator.Lanes(4, 8, 2, 1, 1)
    requant = estimator.dsp_per_multiply(34, 25, "zynquplus")
    assert requant == 2
    kinds = ["qdwconv", "qtable", "qlinear", "qadd", "qavgpool"]
    full = estimator.resources(_int8_program(kinds), lanes, "zynquplus", 128)
    expected_dsp = {"qdwconv": 2 * (9 + requant), "qtable": 0, "qlinear": 4 * 8 + requant,
                    "qadd": 2 * estimator.dsp_per_multiply(16, 31, "zynquplus"), "qavgpool": requant}
    for kind in kinds:
        without = estimator.resources(_int8_program([k for k in kinds if k != kind]), lanes, "zynquplus", 128)
        assert full["dsp"] - without["dsp"] == expected_dsp[kind], kind
        assert full["lut"] > without["lut"], kind
    without_table = estimator.resources(_int8_program([k for k in kinds if k != "qtable"]), lanes, "zynquplus", 128)
    assert full["bram36"] - without_table["bram36"] == 1   # 512 x 16 bits: one BRAM18


def test_int8_only_programs_get_lanes():
    # The lane search counts the int8 linear and depthwise units' cycles and resources: a program of them gets
    # lanes (it had one of each), and the plan fits.
    prog = _int8_program(["qdwconv", "qtable", "qlinear", "qadd", "qavgpool"])
    fpga = get_target("zcu102").require_fpga()
    lanes = estimator.choose_lanes(prog, fpga)
    assert lanes.li * lanes.lo > 1 and lanes.ld > 1
    assert estimator.fits(estimator.resources(prog, lanes, fpga.family, fpga.axi_bits), fpga)


@pytest.mark.parametrize("board", ["pynq-z2", "zcu102"])
def test_no_lane_plan_beats_the_linear_port_floor(prog, board):
    # The floor counts each linear layer's words once (output written, input and residual read, weights read);
    # the estimated linear cycles stay above it at any plan, the widest included.
    fpga = get_target(board).require_fpga()
    floor = estimator.linear_port_floor(prog, fpga.axi_bits)
    wpb = fpga.axi_bits // 16
    by_hand = 0
    for layer in prog.layers:
        if layer.kind == "linear":
            shape = prog.shapes[layer.inputs[0]]
            m, k, n = int(np.prod(shape[:-1])), shape[-1], prog.shapes[layer.output][-1]
            words = (m * n, m * k + m * n * (len(layer.inputs) > 1), n * k)
            by_hand += max(-(-w // wpb) for w in words)
    assert floor == by_hand > 0
    for lanes in (estimator.Lanes(1, 1, 1, 1), estimator.Lanes(32, 256, 1, 1)):
        linear = sum(r["cycles"] for r, l in zip(estimator.layer_cycles(prog, lanes, fpga.axi_bits), prog.layers)
                     if l.kind == "linear")
        assert linear > floor


def test_no_layer_moves_more_than_the_ddr_delivers():
    # 256 tokens x 64 -> 64 with bias: the words cross DDR once each (one weight tile, so weights are not re-read):
    # input, weights, biases (four words each), output. On the ZCU102 (64 bytes a cycle) the ports bound the layer;
    # with a DDR of 0.5 GB/s (1.7 bytes a cycle) the layer takes its traffic over that bandwidth, bound "ddr".
    prog = _linear_prog(256, 64, 64)
    lanes = estimator.Lanes(8, 64, 1, 1)
    zcu = get_target("zcu102").require_fpga()
    words = 256 * 64 + 64 * 64 + 4 * 64 + 256 * 64
    rows = {}
    for gbps in (zcu.ddr_gbps, 0.5):
        fpga = dataclasses.replace(zcu, ddr_gbps=gbps)
        (r,) = estimator.layer_cycles(prog, lanes, fpga.axi_bits, estimator.ddr_bytes_per_cycle(fpga))
        assert r["ddr_words"] == words and r["ddr_cycles"] == -(-2 * words * fpga.clock_mhz // int(gbps * 1e3))
        assert r["compute"] + r["memory"] >= r["ddr_cycles"]
        rows[gbps] = r
    assert rows[zcu.ddr_gbps]["bound"] != "ddr" and rows[0.5]["bound"] == "ddr"
    assert rows[0.5]["cycles"] > rows[zcu.ddr_gbps]["cycles"]
    (free,) = estimator.layer_cycles(prog, lanes, zcu.axi_bits)
    assert free["cycles"] == rows[zcu.ddr_gbps]["cycles"]
