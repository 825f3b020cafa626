"""The linear unit's overlapped passes (a tile's MAC steps, the next tile's load and the previous tile's
write-back in one pipelined loop, ping-pong input and result tiles): C-simulation equals the golden model bit for
bit in every path (overlapped, overlapped with a residual, sequential), and the estimator's loop model is the
loops the C++ runs, counted in C-simulation."""

import dataclasses

import numpy as np
import pytest

from edgevit.hls import estimator, layer_table
from edgevit.targets import get_target

from hls_helpers import csim_vs_golden, program

RNG = np.random.default_rng(7)
WPB = get_target("zcu102").require_fpga().axi_bits // 16   # the tests' board: 128-bit ports, 8 words a beat


def _normal(*shape, scale=1.0):
    return RNG.normal(size=shape) * scale


def _layers(t: int):
    """Linear layers over ``t`` tokens that take each path of linear_unit (LO = 16 lanes, WPB = 8):

    * a: K = 20 (token tiles start inside a beat), N = 24 (two weight tiles, the second 8 wide), token tiles outer
      (a new token tile every second job): overlapped;
    * r: N = 24 with a residual: the write-back overlaps and reads the residual, token tiles load on their own;
    * s: N = 11 (rows end inside a beat): sequential write-back, token tiles load inside the passes;
    * out: N = 8, weight tiles outer over three token tiles: overlapped, one weight tile.
    """
    return [
        ("linear", ["input"], "a", {"act": "gelu"}, {"w": _normal(24, 20, scale=0.3), "b": _normal(24)}),
        ("linear", ["a", "a"], "r", {"act": "none"}, {"w": _normal(24, 24, scale=0.3), "b": _normal(24)}),
        ("linear", ["r"], "s", {"act": "relu"}, {"w": _normal(11, 24, scale=0.3), "b": _normal(11)}),
        ("linear", ["s"], "out", {"act": "none"}, {"w": _normal(8, 11, scale=0.4)}),
    ], {"input": (t, 20), "a": (t, 24), "r": (t, 24), "s": (t, 11), "out": (t, 8)}


@pytest.fixture(scope="module")
def overlapped(tmp_path_factory):
    """The four layers over 70 tokens (three token tiles, the last of 6), C-simulated with loop counts."""
    layers, shapes = _layers(70)
    prog = program(layers, shapes, {"li": 4, "lo": 16})
    samples = [_normal(70, 20), np.sign(_normal(70, 20)) * 100]
    mism, errs, envs = csim_vs_golden(prog, samples, tmp_path_factory.mktemp("overlap"))
    return prog, mism, errs, envs


def test_overlapped_passes_are_bit_exact(overlapped):
    prog, mism, errs, _ = overlapped
    orders = [d["d3"] for d in layer_table.build(prog).descriptors]
    assert orders == [0, 0, 1, 1]   # both loop orders run overlapped
    assert mism == 0 and errs[0] < 0.05


def test_one_token_tile_and_one_weight_tile_are_kept(tmp_path):
    # 20 tokens (one token tile): weight tiles outer keep the token tile, token tiles outer keep the weight tile.
    layers, shapes = _layers(20)
    prog = program(layers, shapes, {"li": 4, "lo": 16})
    mism, errs, envs = csim_vs_golden(prog, [_normal(20, 20)], tmp_path)
    assert mism == 0 and errs[0] < 0.05
    _check_loops(prog, envs[0]["linear_loops"])


def test_one_input_tile_loads_between_passes(tmp_path):
    # XTILES = 1 (a board without BRAM for a second input tile): token tiles load between passes, the write-back
    # still overlaps; the estimator counts that, not the two-tile schedule.
    layers, shapes = _layers(70)
    prog = program(layers, shapes, {"li": 4, "lo": 16, "xtiles": 1})
    mism, errs, envs = csim_vs_golden(prog, [_normal(70, 20)], tmp_path)
    assert "XTILES = 1;" in (tmp_path / "prj" / "config.h").read_text()
    assert mism == 0 and errs[0] < 0.05
    counted = envs[0]["linear_loops"]
    _check_loops(prog, counted)
    two = _estimated_loops(prog, lanes=dataclasses.replace(estimator.lanes_of(prog), xtiles=2))
    assert not _matches(counted.tolist()[0], two[0])


def _estimated_loops(prog, **force):
    """Per linear layer the estimator's (iterations, loops run) for its descriptor; ``force``: arguments of
    ``linear_loops`` to override (what an estimator crediting absent overlap would assume)."""
    out = []
    for layer, d in zip(prog.layers, layer_table.build(prog).descriptors):
        args = {"lanes": estimator.lanes_of(prog), "bias": "b" in layer.params, "residual": len(layer.inputs) > 1,
                "outer_w": bool(d["d3"]), "wpb": WPB, **force}
        loops = [t for t, *_ in estimator.linear_loops(d["d0"], d["d1"], d["d2"], **args) if t > 0]
        out.append((sum(loops), len(loops)))
    return out


def _matches(counted, estimated) -> bool:
    """The same number of loops, iterations within one beat per loop (the estimator does not know where a tile
    starts within a beat)."""
    (trips, loops), (est_trips, est_loops) = counted, estimated
    return loops == est_loops and abs(trips - est_trips) <= loops


def _check_loops(prog, counted):
    estimated = _estimated_loops(prog)
    assert len(counted) == len(estimated)
    assert all(_matches(c, e) for c, e in zip(counted.tolist(), estimated)), (counted.tolist(), estimated)


def test_estimator_loops_are_the_cplusplus_loops(overlapped):
    prog, _, _, envs = overlapped
    counted = envs[0]["linear_loops"].tolist()
    _check_loops(prog, envs[0]["linear_loops"])
    # Overlap the C++ does not have is caught: the sequential layer (s, N = 11) counted as overlapped, or the
    # residual layer (r) with its token tiles loaded inside the passes, no longer matches what C-sim ran.
    assert not _matches(counted[2], _estimated_loops(prog, overlap=True)[2])
    assert not _matches(counted[1], _estimated_loops(prog, residual=False)[1])
