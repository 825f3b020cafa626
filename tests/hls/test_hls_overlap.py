"""Overlapped passes. The linear unit's (a tile's MAC steps, the next tile's load and the previous tile's
write-back in one pipelined loop, ping-pong input and result tiles) and the depthwise unit's (an input row's
reads and an output row in one pipelined loop, a line buffer of K + 1 rows), im2col a beat a cycle when the
channels are whole beats, the layernorm and the L2 norm (a row read while the previous one is written), additive
attention (three passes over the tokens' beats): C-simulation equals the golden model bit for bit in every path
(overlapped, overlapped with a residual, sequential; float and int8 depthwise; im2col by beat and by word; rows
whole beats or not), and the estimator's loop model is the loops the C++ runs, counted in C-simulation."""

import dataclasses
import math

import numpy as np
import pytest

from edgevit.hls import estimator, layer_table, ops
from edgevit.hls.fixed import Fmt
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
    * r: N = 24 with a residual: the write-back overlaps and reads the residual after the next token tile's beats;
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
    _check_loops(prog, envs[0]["unit_loops"])


def test_one_input_tile_loads_between_passes(tmp_path):
    # XTILES = 1 (a board without BRAM for a second input tile): token tiles load between passes, the write-back
    # still overlaps; the estimator counts that, not the two-tile schedule.
    layers, shapes = _layers(70)
    prog = program(layers, shapes, {"li": 4, "lo": 16, "xtiles": 1})
    mism, errs, envs = csim_vs_golden(prog, [_normal(70, 20)], tmp_path)
    assert "XTILES = 1;" in (tmp_path / "prj" / "config.h").read_text()
    assert mism == 0 and errs[0] < 0.05
    counted = envs[0]["unit_loops"]
    _check_loops(prog, counted)
    two = _estimated_loops(prog, lanes=dataclasses.replace(estimator.lanes_of(prog), xtiles=2))
    assert not _matches(counted.tolist()[0], two[0])


def test_one_weight_tile_loads_between_runs(tmp_path):
    # WTILES = 1 (a board whose BRAM buys more output lanes than a prefetch saves): the second weight tile of a and
    # r (N = 24, LO = 16) loads after the run before it instead of during it; the estimator counts that loop, not
    # the prefetch.
    layers, shapes = _layers(70)
    prog = program(layers, shapes, {"li": 4, "lo": 16, "wtiles": 1})
    mism, errs, envs = csim_vs_golden(prog, [_normal(70, 20), np.sign(_normal(70, 20)) * 100], tmp_path)
    assert "WTILES = 1;" in (tmp_path / "prj" / "config.h").read_text()
    assert mism == 0 and errs[0] < 0.05
    counted = envs[0]["unit_loops"]
    _check_loops(prog, counted)
    two = _estimated_loops(prog, lanes=dataclasses.replace(estimator.lanes_of(prog), wtiles=2))
    assert not _matches(counted.tolist()[0], two[0])


def _estimated_loops(prog, **force):
    """Per linear, depthwise, layernorm, L2 norm and additive attention layer the estimator's (iterations, loops run) for its descriptor; ``force``: arguments of
    ``linear_loops`` to override (what an estimator crediting absent overlap would assume)."""
    out = []
    for layer, d in zip(prog.layers, layer_table.build(prog).descriptors):
        if layer.kind in ("dwconv", "qdwconv"):
            args = {"lanes": estimator.lanes_of(prog), "bias": "b" in layer.params, "int8": layer.kind == "qdwconv",
                    "wpb": WPB, **force}
            loops = [t for t, *_ in estimator.depthwise_loops(*(d[f"d{n}"] for n in range(6)), **args) if t > 0]
        elif layer.kind == "layernorm":
            loops = [t for t, _ in estimator.layernorm_loops(d["d0"], d["d1"], estimator.lanes_of(prog).li, WPB)]
        elif layer.kind == "l2norm":
            loops = [t for t, _ in estimator.l2norm_loops(d["d0"], d["d1"], estimator.lanes_of(prog).li, WPB)]
        elif layer.kind == "additive":
            loops = [t for t, _ in estimator.additive_loops(d["d0"], d["d1"], estimator.lanes_of(prog).li, WPB)]
        elif layer.kind == "attention":   # per sequence and head: Q/K/V beats, key steps, outputs
            g, n, heads, dh = (d[f"d{k}"] for k in range(4))
            lanes = estimator.lanes_of(prog)
            loops = [t for t, *_ in estimator.attention_loops(n, dh, lanes.rows, WPB, lanes.li)] * (g * heads)
        elif layer.kind in ("unfold", "fold", "concat", "im2col"):   # one loop over the output
            h, w, c = d["d0"], d["d1"], d["d2"]
            if layer.kind == "im2col":
                loops = [ops.im2col_trip(prog.shapes[layer.output][0], d["d3"], c, WPB)]
            else:
                words, run = {"unfold": (h * w * c, c), "fold": (h * w * c, c),
                              "concat": (d["d0"] * (d["d1"] + d["d2"]), math.gcd(d["d1"], d["d2"]))}[layer.kind]
                loops = [ops.mover_trip(words, run, WPB)]
        elif layer.kind == "linear":
            args = {"lanes": estimator.lanes_of(prog), "bias": "b" in layer.params,
                    "residual": len(layer.inputs) > 1, "outer_w": bool(d["d3"]), "wpb": WPB, **force}
            loops = [t for t, *_ in estimator.linear_loops(d["d0"], d["d1"], d["d2"], **args) if t > 0]
        else:
            continue
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
    counted = envs[0]["unit_loops"].tolist()
    _check_loops(prog, envs[0]["unit_loops"])
    # Overlap the C++ does not have is caught: the sequential layer (s, N = 11) counted as overlapped no longer
    # matches what C-sim ran.
    assert not _matches(counted[2], _estimated_loops(prog, overlap=True)[2])
    # The weight tile of `out` (weights outer, overlapped) serves three token tiles in one run, one loop: its
    # weight tile, first token tile, the run, the last write-back. Counting a loop per job does not match.
    assert counted[3][1] == 4
    assert not _matches(counted[3], _estimated_loops(prog, runs=False)[3])


def test_residual_write_back_follows_the_load(tmp_path):
    # LI = 8: a pass's 32 x 3 MAC steps are fewer than the next token tile's 96 beats plus the residual write-back's
    # 64, which reads the residual after the load (one arena read a cycle): the pass is their sum, and crediting
    # both to the same iterations (two reads a cycle) does not match what C-sim ran.
    layers, shapes = _layers(70)
    prog = program(layers, shapes, {"li": 8, "lo": 16})
    mism, errs, envs = csim_vs_golden(prog, [_normal(70, 20), np.sign(_normal(70, 20)) * 100], tmp_path)
    assert mism == 0 and errs[0] < 0.05
    counted = envs[0]["unit_loops"]
    _check_loops(prog, counted)
    assert not _matches(counted.tolist()[1], _estimated_loops(prog, residual=False)[1])


def _dw_layers(c: int):
    """Depthwise layers on a 9 x 7 map of ``c`` channels: K = 3 stride 1, K = 3 stride 2 (two input rows an output
    row), K = 5 stride 1 pad 2 (three output rows complete with the last input row); KMAXDW = 5 masks the taps of
    the K = 3 layers."""
    return [
        ("dwconv", ["input"], "a", {"k": 3, "stride": 1, "pad": 1, "act": "silu"},
         {"w": _normal(c, 3, 3, scale=0.5), "b": _normal(c)}),
        ("dwconv", ["a"], "b", {"k": 3, "stride": 2, "pad": 1, "act": "relu"}, {"w": _normal(c, 3, 3, scale=0.5)}),
        ("dwconv", ["b"], "out", {"k": 5, "stride": 1, "pad": 2, "act": "none"},
         {"w": _normal(c, 5, 5, scale=0.3), "b": _normal(c)}),
    ], {"input": (9, 7, c), "a": (9, 7, c), "b": (5, 4, c), "out": (5, 4, c)}


@pytest.mark.parametrize("c,ld,overlaps", [(16, 8, True), (24, 16, True), (12, 8, False)])
def test_depthwise_passes_are_bit_exact_and_counted(tmp_path, c, ld, overlaps):
    # LD = 8 (one beat a pixel) and 16 over 24 channels (a last group of one beat) overlap; C = 12 is not whole
    # beats a pixel: the sequential rows.
    layers, shapes = _dw_layers(c)
    prog = program(layers, shapes, {"ld": ld})
    samples = [_normal(9, 7, c), np.sign(_normal(9, 7, c)) * 100]
    mism, errs, envs = csim_vs_golden(prog, samples, tmp_path)
    assert mism == 0 and errs[0] < 0.05
    counted = envs[0]["unit_loops"]
    _check_loops(prog, counted)
    # The other schedule's loops are not what C-sim ran.
    other = _estimated_loops(prog, overlap=not overlaps)
    assert not any(_matches(cnt, est) for cnt, est in zip(counted.tolist(), other))


@pytest.mark.parametrize("c,k,stride,pad", [(16, 3, 2, 1), (12, 3, 2, 1), (3, 3, 2, 1), (3, 3, 1, 1), (1, 3, 1, 0),
                                           (5, 2, 2, 0), (3, 5, 1, 2)])
def test_im2col_moves_beats(tmp_path, c, k, stride, pad):
    # C = 16: a beat a cycle (an output beat is one input beat or zeros); otherwise a tap row's K C words (which
    # start anywhere in a beat, in the padding left of the map too) the beats they can span: the 3-channel stem at
    # stride 2 and 1, one channel, K = 2 without padding, K = 5 with two columns of padding.
    h, w = 7, 6
    pixels = ((h + 2 * pad - k) // stride + 1) * ((w + 2 * pad - k) // stride + 1)
    prog = program([("im2col", ["input"], "cols", {"k": k, "stride": stride, "pad": pad}, {}),
                    ("linear", ["cols"], "out", {"act": "none"}, {"w": _normal(8, k * k * c, scale=0.2)})],
                   {"input": (h, w, c), "cols": (pixels, k * k * c), "out": (pixels, 8)}, {"lo": 8})
    mism, errs, envs = csim_vs_golden(prog, [_normal(h, w, c), np.full((h, w, c), 9.0)], tmp_path)
    assert mism == 0 and errs[0] < 0.05
    (trips, loops), _ = envs[0]["unit_loops"].tolist()   # im2col, then the linear layer
    rb = (k * c + WPB - 2) // WPB + 1
    assert loops == 1 and trips == ops.im2col_trip(pixels, k, c, WPB) == (
        pixels * k * k * c // WPB if c == 16 else pixels * k * rb)


@pytest.mark.parametrize("c", [16, 12])
def test_unfold_fold_and_concat_move_beats_when_rows_are_whole_beats(tmp_path, c):
    # C = 16: unfold, fold and concat (16 + 16 channels) a beat a cycle; C = 12: a word a cycle. Each one loop.
    prog = program([("unfold", ["input"], "u", {"ph": 2, "pw": 2}, {}),
                    ("fold", ["u"], "f", {"h": 6, "w": 4, "ph": 2, "pw": 2}, {}),
                    ("concat", ["f", "input"], "out", {}, {})],
                   {"input": (6, 4, c), "u": (4, 6, c), "f": (6, 4, c), "out": (6, 4, 2 * c)})
    mism, errs, envs = csim_vs_golden(prog, [_normal(6, 4, c)], tmp_path, {"out": Fmt(16, 3)})
    assert mism == 0 and (envs[0]["f"] == envs[0]["input"]).all()
    counted = envs[0]["unit_loops"]
    _check_loops(prog, counted)
    words = 6 * 4 * c
    assert counted.tolist() == [[words // WPB, 1]] * 2 + [[2 * words // WPB, 1]] if c == 16 else \
        counted.tolist() == [[words, 1]] * 2 + [[2 * words, 1]]


@pytest.mark.parametrize("dh,rows,li", [(16, 3, 8), (16, 3, 3), (6, 4, 8)])
def test_attention_reads_q_k_v_a_beat_a_cycle(tmp_path, dh, rows, li):
    # DH = 16: a token's q, k and v runs are two whole beats each (WPB = 8), outputs LNL words a cycle (8 with LI =
    # 8, 2 with LI = 3); DH = 6: runs start anywhere in a beat (two beats each, the most six words can span),
    # outputs a word a cycle. Two sequences, two heads, 11 tokens; a linear layer after it sets LI.
    g, n, heads = 2, 11, 2
    prog = program([("attention", ["input"], "a", {"heads": heads}, {}),
                    ("linear", ["a"], "out", {"act": "none"}, {"w": _normal(8, heads * dh, scale=0.3)})],
                   {"input": (g, n, 3 * heads * dh), "a": (g, n, heads * dh), "out": (g, n, 8)},
                   {"rows": rows, "li": li, "lo": 8})
    mism, errs, envs = csim_vs_golden(prog, [_normal(g, n, 3 * heads * dh), _normal(g, n, 3 * heads * dh, scale=4)],
                                      tmp_path)
    assert mism == 0 and errs[0] < 0.05
    counted = envs[0]["unit_loops"]
    _check_loops(prog, counted)
    # per head 3 N beats in (II = 1; before: N DH iterations at II = 3), the key steps, N DH / LNL steps out
    steps = (n - 1) * -(-n // rows) + n
    out = n * dh // (estimator.layernorm_lanes(li, WPB) if dh == 16 else 1)
    assert counted.tolist()[0] == [g * heads * (3 * n * 2 + steps + out), 3 * g * heads]


@pytest.mark.parametrize("d,li", [(16, 8), (12, 3)])
def test_l2_norm_and_additive_attention_move_beats(tmp_path, d, li):
    # D = 16: rows are whole beats (WPB = 8), LNL = 8; D = 12: rows start anywhere in a beat (three beats a row's
    # pass), LNL = 2. A zero token stays zero.
    t = 21
    prog = program([
        ("l2norm", ["input"], "qn", {}, {}),
        ("linear", ["input"], "k", {"act": "none"}, {"w": _normal(d, d, scale=0.3), "b": _normal(d)}),
        ("l2norm", ["k"], "kn", {}, {}),
        ("additive", ["qn", "kn"], "out", {}, {"wg": _normal(d) * d ** -0.5}),
    ], {"input": (t, d), "qn": (t, d), "k": (t, d), "kn": (t, d), "out": (t, d)}, {"li": li, "lo": 8})
    zero_row = _normal(t, d)
    zero_row[4] = 0.0
    mism, errs, envs = csim_vs_golden(prog, [_normal(t, d), zero_row, np.full((t, d), 1e4)], tmp_path)
    assert mism == 0 and errs[0] < 2e-3
    counted = envs[0]["unit_loops"]
    _check_loops(prog, counted)
    passes = t * estimator.row_pass_beats(d, WPB) * (WPB // estimator.layernorm_lanes(li, WPB))
    l2, _, _, additive = counted.tolist()
    assert l2 == [passes + passes // t, 1]       # one loop: the rows and one slot more
    assert additive[1] == 4 and additive[0] - 3 * passes in (2, 3)   # w_g's beats, then three passes


@pytest.mark.parametrize("c,li", [(24, 8), (20, 3)])
def test_layernorm_reads_a_row_while_writing_the_last(tmp_path, c, li):
    # C = 24: rows are whole beats, LNL = 8; C = 20: rows start anywhere in a beat, LNL = 2. Zero-variance and
    # all-zero rows normalise to beta.
    t = 13
    norm = {"gamma": 1 + 0.3 * _normal(c), "beta": 0.2 * _normal(c)}
    prog = program([("layernorm", ["input"], "n", {"eps": 1e-5}, norm),
                    ("linear", ["n"], "out", {"act": "none"}, {"w": _normal(8, c, scale=0.3)})],
                   {"input": (t, c), "n": (t, c), "out": (t, 8)}, {"li": li, "lo": 8})
    x = _normal(t, c, scale=3)
    x[1], x[2] = 2.5, 0.0
    mism, errs, envs = csim_vs_golden(prog, [_normal(t, c), x], tmp_path)
    assert mism == 0 and max(errs) < 0.05
    counted = envs[0]["unit_loops"]
    _check_loops(prog, counted)
    slots = (t + 1) * estimator.row_pass_beats(c, WPB) * (WPB // estimator.layernorm_lanes(li, WPB))
    assert counted.tolist()[0] == [2 * c + slots, 3]   # gamma, beta, then one loop over the rows
