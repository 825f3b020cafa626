"""Every kernel: g++ C-simulation equals the golden model bit for bit, on random and adversarial inputs;
error against float64 is printed (run with -s) and bounded."""

import dataclasses

import numpy as np
import pytest

from edgevit.hls import golden, layer_table
from edgevit.hls.fixed import Fmt, to_float

from edgevit.targets import get_target

from hls_helpers import csim_vs_golden, program

RNG = np.random.default_rng(1)


def _normal(*shape, scale=1.0):
    return RNG.normal(size=shape) * scale


@pytest.mark.parametrize("act", ["none", "relu", "gelu", "silu", "hswish", "sigmoid"])
def test_linear_epilogues(tmp_path, act):
    t, ci, co = 12, 20, 11
    prog = program([
        ("linear", ["input"], "a", {"act": "none"}, {"w": _normal(co, ci, scale=0.3), "b": _normal(co)}),
        ("linear", ["a"], "out", {"act": act}, {"w": _normal(co, co, scale=0.4), "b": _normal(co)}),
        ("linear", ["out", "a"], "res", {"act": "none"}, {"w": _normal(co, co, scale=0.4)}),
    ], {"input": (t, ci), "a": (t, co), "out": (t, co), "res": (t, co)})
    samples = [_normal(t, ci), _normal(t, ci, scale=4)]
    # Adversarial: inputs far beyond the calibrated range saturate the input and every later tensor.
    samples.append(np.sign(_normal(t, ci)) * 100)
    mism, errs, _ = csim_vs_golden(prog, samples, tmp_path)
    print(f"linear+{act}: mismatches {mism}, max error vs float {errs[0]:.2e}")
    assert errs[0] < 0.02
    assert mism == 0


def test_linear_both_loop_orders(tmp_path):
    # 70 tokens span three token tiles; the narrow layer runs weight tiles outer, the wide one token tiles outer.
    t, ci = 70, 9
    prog = program([
        ("linear", ["input"], "a", {"act": "silu"}, {"w": _normal(4, ci, scale=0.3), "b": _normal(4)}),
        ("linear", ["a"], "out", {"act": "none"}, {"w": _normal(23, 4, scale=0.4), "b": _normal(23)}),
    ], {"input": (t, ci), "a": (t, 4), "out": (t, 23)})
    mism, errs, _ = csim_vs_golden(prog, [_normal(t, ci)], tmp_path)
    orders = [d["d3"] for d in layer_table.build(prog).descriptors]
    assert orders == [1, 0] and mism == 0 and errs[0] < 0.02


@pytest.mark.parametrize("axi_bits", [32, 64, 512])
def test_packed_ports_keep_every_word(tmp_path, axi_bits):
    # Ports of 2, 4 and 32 words a beat (128 runs in every other test): tiles and output rows that start and end
    # inside a beat (K = 13, N = 11, LO = 5), a residual, a narrow layer (N = 3) and a unit that moves a word at a
    # time (layernorm) between them; the result must not depend on the width.
    fpga = dataclasses.replace(get_target("zcu102").require_fpga(), axi_bits=axi_bits)
    t, ci, co = 37, 13, 11
    prog = program([
        ("linear", ["input"], "a", {"act": "gelu"}, {"w": _normal(co, ci, scale=0.3), "b": _normal(co)}),
        ("linear", ["a", "a"], "r", {"act": "none"}, {"w": _normal(co, co, scale=0.4), "b": _normal(co)}),
        ("layernorm", ["r"], "n", {"eps": 1e-5},
         {"gamma": 1 + _normal(co, scale=0.1), "beta": _normal(co, scale=0.1)}),
        ("linear", ["n"], "out", {"act": "none"}, {"w": _normal(3, co, scale=0.4)}),
    ], {"input": (t, ci), "a": (t, co), "r": (t, co), "n": (t, co), "out": (t, 3)})
    mism, errs, _ = csim_vs_golden(prog, [_normal(t, ci), np.sign(_normal(t, ci)) * 100], tmp_path, fpga=fpga)
    config = (tmp_path / "prj" / "config.h").read_text()
    assert f"AXI_BITS = {axi_bits};" in config and f"WPB = {axi_bits // 16};" in config
    assert mism == 0 and errs[0] < 0.05
    # Maps: depthwise pixels of LD = 5 of 11 channels (read and written as the beats that hold them), im2col and
    # the pool mixer (a word a cycle).
    h, w, c = 5, 6, 11
    maps = program([
        ("dwconv", ["input"], "a", {"k": 3, "stride": 1, "pad": 1, "act": "relu"},
         {"w": _normal(c, 3, 3, scale=0.5), "b": _normal(c)}),
        ("pool_mixer", ["a"], "p", {"k": 3}, {"scale": _normal(c, scale=0.5)}),
        ("im2col", ["p"], "cols", {"k": 3, "stride": 2, "pad": 1}, {}),
        ("linear", ["cols"], "out", {"act": "none"}, {"w": _normal(4, 9 * c, scale=0.2)}),
    ], {"input": (h, w, c), "a": (h, w, c), "p": (h, w, c), "cols": (9, 9 * c), "out": (3, 3, 4)}, {"ld": 5})
    mism, errs, _ = csim_vs_golden(maps, [_normal(h, w, c)], tmp_path / "maps", fpga=fpga)
    assert mism == 0 and errs[0] < 0.05


def test_depthwise_conv_and_im2col(tmp_path):
    h, w, c = 7, 6, 8
    prog = program([
        ("dwconv", ["input"], "a", {"k": 3, "stride": 1, "pad": 1, "act": "silu"},
         {"w": _normal(c, 3, 3, scale=0.5), "b": _normal(c)}),
        ("dwconv", ["a"], "b", {"k": 3, "stride": 2, "pad": 1, "act": "none"}, {"w": _normal(c, 3, 3, scale=0.5)}),
        ("im2col", ["b"], "cols", {"k": 3, "stride": 1, "pad": 1}, {}),
        ("linear", ["cols"], "out", {"act": "relu"}, {"w": _normal(5, 9 * c, scale=0.2), "b": _normal(5)}),
    ], {"input": (h, w, c), "a": (h, w, c), "b": (4, 3, c), "cols": (12, 9 * c), "out": (4, 3, 5)})
    samples = [_normal(h, w, c), np.full((h, w, c), 1e3), np.full((h, w, c), -1e3)]
    mism, errs, _ = csim_vs_golden(prog, samples, tmp_path)
    print(f"dwconv/im2col: mismatches {mism}, max error vs float {errs[0]:.2e}")
    assert mism == 0 and errs[0] < 0.05


def test_layernorm_including_zero_variance(tmp_path):
    t, c = 6, 24
    prog = program([("layernorm", ["input"], "out", {"eps": 1e-5},
                     {"gamma": 1 + 0.3 * _normal(c), "beta": 0.2 * _normal(c)})],
                   {"input": (t, c), "out": (t, c)})
    x = _normal(t, c, scale=3)
    x[1] = 2.5            # zero variance
    x[2] = 0.0            # all zero
    x[3, ::2], x[3, 1::2] = 7.9, -7.9   # extremes of the format
    x[4] *= 1e-3          # tiny variance: eps matters
    mism, errs, envs = csim_vs_golden(prog, [_normal(t, c), x], tmp_path)
    print(f"layernorm: mismatches {mism}, max error vs float {max(errs):.2e}")
    assert mism == 0 and max(errs) < 5e-3


@pytest.mark.parametrize("rows", [1, 3, 16])
def test_attention_online_softmax(tmp_path, rows):
    g, n, heads, dh = 2, 16, 2, 8
    d = heads * dh
    prog = program([("attention", ["input"], "out", {"heads": heads, "groups": g, "n": n}, {})],
                   {"input": (g, n, 3 * d), "out": (g, n, d)}, {"rows": rows})
    # The second sample saturates the input format: logits reach the edge of the logit format.
    samples = [_normal(g, n, 3 * d), _normal(g, n, 3 * d, scale=6)]
    mism, errs, envs = csim_vs_golden(prog, samples, tmp_path)
    print(f"attention rows={rows}: mismatches {mism}, max error vs float {errs[0]:.2e}")
    assert mism == 0 and errs[0] < 0.01
    steps = envs[0]["trace"]
    assert (steps == golden.attention_done_steps(g, heads, n, rows)).all()
    assert len(set(steps[:n].tolist())) == n   # at most one row completes per key step


def test_softmax_rows_sum_to_one(tmp_path):
    # With V = identity the attention output is the softmax matrix itself.
    g, n = 1, 16
    q = _normal(g, n, n, scale=3)
    x = np.concatenate([q, np.ones((g, n, n)) * np.eye(n)[None, :, :1], np.eye(n)[None]], axis=-1)
    x[..., n:2 * n] = _normal(g, n, n, scale=2)
    prog = program([("attention", ["input"], "out", {"heads": 1, "groups": g, "n": n}, {})],
                   {"input": (g, n, 3 * n), "out": (g, n, n)})
    mism, _, envs = csim_vs_golden(prog, [x], tmp_path, {"input": Fmt(16, 4), "out": Fmt(16, 2)})
    sums = to_float(envs[0]["out"], Fmt(16, 2)).sum(-1)
    print(f"softmax row sums: max |sum - 1| = {np.abs(sums - 1).max():.2e} (resolution {2.0 ** -14:.1e})")
    assert mism == 0
    assert np.abs(sums - 1).max() <= n * 2.0 ** -14


@pytest.mark.parametrize("c", [5, 16])
def test_unfold_fold_concat_avgpool(tmp_path, c):
    # C = 5: a word a cycle; C = 16: unfold/fold and concat a beat a cycle (WPB = 8)
    h, w = 4, 6
    prog = program([
        ("unfold", ["input"], "u", {"ph": 2, "pw": 2}, {}),
        ("fold", ["u"], "f", {"h": h, "w": w, "ph": 2, "pw": 2}, {}),
        ("concat", ["f", "input"], "cat", {}, {}),
        ("avgpool", ["cat"], "out", {}, {}),
    ], {"input": (h, w, c), "u": (4, 6, c), "f": (h, w, c), "cat": (h, w, 2 * c), "out": (1, 2 * c)})
    x = _normal(h, w, c)
    mism, errs, envs = csim_vs_golden(prog, [x], tmp_path, {"cat": Fmt(16, 1)})   # concat saturates
    assert mism == 0
    assert (envs[0]["f"] == envs[0]["input"]).all()


@pytest.mark.parametrize("k,scaled,c,li", [(3, False, 6, 1), (3, True, 6, 1), (5, True, 6, 1), (3, True, 20, 8)])
def test_pool_mixer(tmp_path, k, scaled, c, li):
    # with and without a layer scale; a 5x5 window covers most of the 5-row map (clipped counts at every edge);
    # LNL words a cycle follow the linear unit's LI (1 without one; 8 with a linear layer of LI = 8 after it:
    # a beat a cycle, 20 channels so rows start anywhere in a beat)
    h, w = 5, 7
    params = {"scale": _normal(c, scale=0.5)} if scaled else {}
    layers = [("pool_mixer", ["input"], "out", {"k": k}, params)]
    shapes = {"input": (h, w, c), "out": (h, w, c)}
    if li > 1:
        layers = [("pool_mixer", ["input"], "p", {"k": k}, params),
                  ("linear", ["p"], "out", {"act": "none", "li": li}, {"w": _normal(4, c, scale=0.3)})]
        shapes = {"input": (h, w, c), "p": (h, w, c), "out": (h, w, 4)}
    prog = program(layers, shapes)
    mism, errs, _ = csim_vs_golden(prog, [_normal(h, w, c), np.full((h, w, c), 50.0)], tmp_path)
    print(f"pool mixer: mismatches {mism}, max error vs float {errs[0]:.2e}")
    assert mism == 0 and errs[0] < (2e-3 if li == 1 else 0.05)


@pytest.mark.parametrize("li", [3, 8])
def test_additive_attention(tmp_path, li):
    # the L2 norms move LNL = 2 or 8 words a cycle (LI 3 or 8); 12 channels, so rows start anywhere in a beat
    t, d = 20, 12
    prog = program([
        ("l2norm", ["input"], "qn", {}, {}),
        ("linear", ["input"], "k", {"act": "none", "li": li}, {"w": _normal(d, d, scale=0.3), "b": _normal(d)}),
        ("l2norm", ["k"], "kn", {}, {}),
        ("additive", ["qn", "kn"], "out", {}, {"wg": _normal(d) * d ** -0.5}),
    ], {"input": (t, d), "qn": (t, d), "k": (t, d), "kn": (t, d), "out": (t, d)})
    zero_rows = _normal(t, d)
    zero_rows[3] = 0.0       # a zero token: its norm is 0 and it must stay 0
    mism, errs, _ = csim_vs_golden(prog, [_normal(t, d), zero_rows, np.full((t, d), 1e4)], tmp_path)
    print(f"additive attention: mismatches {mism}, max error vs float {errs[0]:.2e}")
    assert mism == 0 and errs[0] < 2e-3


def test_attention_saturated_logits_and_ties(tmp_path):
    g, n, heads, dh = 1, 12, 1, 8
    d = heads * dh
    prog = program([("attention", ["input"], "out", {"heads": heads, "groups": g, "n": n}, {})],
                   {"input": (g, n, 3 * d), "out": (g, n, d)}, {"rows": 5})
    ties = _normal(g, n, 3 * d)
    ties[..., d:2 * d] = 0.5          # every key equal: all logits of a row tie
    # A 16-bit logit format of range +-2 makes most logits saturate: ties at the format's edge.
    mism, _, _ = csim_vs_golden(prog, [_normal(g, n, 3 * d, scale=3), ties], tmp_path, {"k0.logits": Fmt(16, 2)})
    assert mism == 0


@pytest.mark.parametrize("li", [1, 8])
def test_global_norm(tmp_path, li):
    # GroupNorm with one group (MobileViTv2): mean and variance over all words; LNL = 1 or 8 words a cycle, 20
    # channels so a row ends anywhere in a beat; a constant tensor (zero variance: eps only) and a tiny one
    p, n, c = 4, 6, 20
    layers = [("global_norm", ["input"], "out", {"eps": 1e-5}, {})]
    shapes = {"input": (p, n, c), "out": (p, n, c)}
    if li > 1:
        layers = [("global_norm", ["input"], "g", {"eps": 1e-5}, {}),
                  ("linear", ["g"], "out", {"act": "none", "li": li}, {"w": _normal(4, c, scale=0.3)})]
        shapes = {"input": (p, n, c), "g": (p, n, c), "out": (p, n, 4)}
    prog = program(layers, shapes)
    x = 1.5 + _normal(p, n, c, scale=2)
    mism, errs, _ = csim_vs_golden(prog, [x, np.full((p, n, c), 2.5), 1e-3 * _normal(p, n, c)], tmp_path)
    print(f"global norm li={li}: mismatches {mism}, max error vs float {errs[0]:.2e}")
    assert mism == 0 and errs[0] < (5e-3 if li == 1 else 0.05)


@pytest.mark.parametrize("li", [3, 8])
def test_separable_attention(tmp_path, li):
    # MobileViTv2's separable self-attention: per group a softmax of the scores (column 0 of qk) over the tokens
    # weights the keys into a context that scales the values (ReLU from the linear layer before it). Keys and
    # values move LNL = 2 or 8 words a cycle; rows of 11 words, so groups and rows start anywhere in a beat. The
    # second sample saturates the input (extreme scores), the first group of the third has equal scores.
    g, n, d = 4, 12, 10
    prog = program([("linear", ["input"], "v", {"act": "relu", "li": li}, {"w": _normal(d, 1 + d, scale=0.4)}),
                    ("separable_attention", ["input", "v"], "out", {}, {})],
                   {"input": (g, n, 1 + d), "v": (g, n, d), "out": (g, n, d)})
    flat = _normal(g, n, 1 + d)
    flat[0, :, 0] = 1.0        # equal scores: the context is the mean key
    mism, errs, envs = csim_vs_golden(prog, [_normal(g, n, 1 + d), _normal(g, n, 1 + d, scale=6), flat], tmp_path)
    print(f"separable attention li={li}: mismatches {mism}, max error vs float {errs[0]:.2e}")
    assert mism == 0 and errs[0] < 0.01
