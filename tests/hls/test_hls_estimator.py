"""The analytic estimator: lane choice fits each board, oversize designs do not fit, one entry per descriptor."""

import numpy as np
import pytest

from edgevit.hls import estimator, layer_table
from edgevit.hls.program import calibrate
from edgevit.hls.tiny_models import build_tiny_mobilevit
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
