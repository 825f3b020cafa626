"""The per-group int8 check (``edgevit.quantize.groups``): onnxruntime's own tensors pass, a planted wrong
result in one group (off by one step, a wrong scale) fails naming that group and no other, a value rounded the
other way at a half-step tie passes as a tie; ``run --verify`` and ``bench --quantize int8`` on a build whose
requantization is wrong fail with exit 8 and a line naming the group; ``run --verify`` passes a model whose ties
move the outputs by 16 steps."""

import json

import numpy as np
import onnx
import pytest

from cli_helpers import assert_one_line_error, run_cli
from tiny_onnx_models import tiny_cnn_onnx

from edgevit.ort_session import onnxruntime_session
from edgevit.quantize import compare_int8, output_steps
from edgevit.quantize.groups import (TIE, Int8Verification, check_groups, cut_model, probe_model,
                                     probe_tensors)


@pytest.fixture(scope="module")
def qdq(tmp_path_factory):
    from edgevit.cli import main

    folder = tmp_path_factory.mktemp("groups")
    assert main(["quantize", str(tiny_cnn_onnx(folder / "cnn.onnx")), "--calibration", "fashion-mnist",
                 "--calib-count", "4", "-o", str(folder / "q.onnx")]) == 0
    return onnx.load(str(folder / "q.onnx"))


def _onnxruntime_tensors(model, x):
    """onnxruntime's outputs and every quantized tensor, by running the probe model itself."""
    probe, layout = probe_model(model)
    outputs = onnxruntime_session(probe.SerializeToString()).run(None, {"x": x})
    return outputs[:len(model.graph.output)], probe_tensors(outputs, layout)


def _conv_group(model):
    producer = {o: n for n in model.graph.node for o in n.output}
    return next(n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"
                and producer.get(n.input[0]) is not None and producer[n.input[0]].op_type == "Conv")


def _floats(model, x, tensors, name):
    cut = cut_model(model, pre_quantize=True)
    feeds = {"x": x, **{"cut_" + n: a for n, a in tensors.items()}}
    names = [o.name for o in cut.graph.output]
    return onnxruntime_session(cut.SerializeToString()).run(None, feeds)[names.index("pre_" + name)]


def _quantizer(model, name):
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.output[0] == name)
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return float(constants[q.input[1]]), int(constants[q.input[2]])


def _carry(model, tensors, planted):
    """Every group computed by onnxruntime from its inputs, except group ``planted``, kept as given: what an
    engine with one wrong group would compute."""
    cut = cut_model(model)
    session, names = onnxruntime_session(cut.SerializeToString()), [o.name for o in cut.graph.output]
    for _ in range(len(names)):  # as many runs as the graph is deep reach the fixed point
        result = dict(zip(names, session.run(None, {"x": X, **{"cut_" + n: a for n, a in tensors.items()}})))
        result[planted] = tensors[planted]
        tensors = result
    return tensors


X = np.random.default_rng(5).standard_normal((1, 3, 16, 16)).astype(np.float32)


def test_onnxruntime_tensors_pass_and_every_group_is_checked(qdq):
    _, tensors = _onnxruntime_tensors(qdq, X)
    groups = check_groups(qdq, [X], tensors)
    assert [g.tensor for g in groups] == list(tensors) and len(groups) >= 4
    assert all(g.ok and g.max_steps == 0 and g.one_step == 0 for g in groups)


def test_off_by_one_requantization_in_one_group_fails_naming_it(qdq):
    _, tensors = _onnxruntime_tensors(qdq, X)
    conv = _conv_group(qdq)
    wrong = dict(tensors)
    wrong[conv] = np.clip(tensors[conv].astype(np.int16) + 1, -128, 127).astype(np.int8)  # zero point + 1
    groups = check_groups(qdq, [X], _carry(qdq, wrong, conv))
    failing = [g for g in groups if not g.ok]
    assert [g.tensor for g in failing] == [conv]   # local: later groups are right given the wrong input
    assert failing[0].max_steps == 1 and failing[0].one_step > failing[0].ties
    assert failing[0].op == "Conv" and f"-> {conv})" in failing[0].line() and "FAIL" in failing[0].line()


def test_wrong_scale_in_one_group_fails(qdq):
    _, tensors = _onnxruntime_tensors(qdq, X)
    conv = _conv_group(qdq)
    scale, zero = _quantizer(qdq, conv)
    wrong = dict(tensors)
    wrong[conv] = np.clip(np.rint(_floats(qdq, X, tensors, conv) / (scale * 1.25)) + zero, -128, 127).astype(np.int8)
    failing = [g for g in check_groups(qdq, [X], _carry(qdq, wrong, conv)) if not g.ok]
    assert [g.tensor for g in failing] == [conv] and failing[0].max_steps > 1


def test_a_value_rounded_the_other_way_at_a_tie_passes_as_a_tie(qdq):
    """The tie-amplification case: one conv value within TIE of a half step rounded the other way, carried by
    onnxruntime to the output, passes by the group rule, labelled as a tie; the end-to-end steps are reported."""
    outputs, tensors = _onnxruntime_tensors(qdq, X)
    conv = _conv_group(qdq)
    scale, zero = _quantizer(qdq, conv)
    position = _floats(qdq, X, tensors, conv).astype(np.float64) / scale + zero
    near = np.argwhere((np.abs(position - np.floor(position) - 0.5) <= TIE) & (position > -127) & (position < 127))
    assert len(near), "no value of the test conv lies near a half step"
    index = tuple(near[0])
    flipped = dict(tensors)
    flipped[conv] = tensors[conv].copy()
    ours = int(tensors[conv][index])
    flipped[conv][index] = int(np.floor(position[index]) if ours > position[index] else np.ceil(position[index]))
    flipped = _carry(qdq, flipped, conv)   # onnxruntime carries the flip through every later group
    producer = {o: n for n in qdq.graph.node for o in n.output}
    dq = producer[qdq.graph.output[0].name]
    s, z = (float(onnx.numpy_helper.to_array(t)) for t in qdq.graph.initializer if t.name in dq.input[1:])
    carried = [((flipped[dq.input[0]].astype(np.int32) - z) * np.float32(s)).astype(np.float32)]
    groups = check_groups(qdq, [X], flipped)
    verdict = Int8Verification(compare_int8(carried, outputs, output_steps(qdq)), groups)
    (tied,) = [g for g in groups if g.one_step]
    assert tied.tensor == conv and tied.one_step == tied.ties == 1 and tied.max_steps == 1 and tied.ok
    assert verdict.ok and "1 values at 1 step, 1 of them half-step ties" in verdict.summary()
    assert "-> PASS" in verdict.summary() and verdict.to_json()["values_at_ties"] == 1


def _plant(monkeypatch, zero_shift=0, scale=1.0):
    """Make the int8 build's convolution requantization wrong (the Gemm's stays right)."""
    from edgevit.backends import int8

    rewriter = int8._Rewriter._cls   # the class behind TVM's @mutator wrapper
    original = rewriter._requantize

    def wrong(self, acc, weight_sums, channel_shape, zx, sx, sw, bias, sy, zy):
        if len(channel_shape) > 1:   # a conv's per-channel shape
            sy, zy = sy / scale, zy + zero_shift
        return original(self, acc, weight_sums, channel_shape, zx, sx, sw, bias, sy, zy)

    monkeypatch.setattr(rewriter, "_requantize", wrong)


@pytest.mark.parametrize("fault", [{"zero_shift": 1}, {"scale": 1.25}], ids=["off_by_one", "wrong_scale"])
def test_run_verify_fails_on_a_planted_kernel_defect_naming_the_group(capsys, tmp_path, monkeypatch, fault):
    """Both the artifact and its probe come from the defective build: the group check still sees the conv
    group compute something onnxruntime does not, given the same inputs."""
    monkeypatch.setenv("EDGEVIT_CACHE", str(tmp_path / "cache"))
    _plant(monkeypatch, **fault)
    model = tiny_cnn_onnx(tmp_path / "cnn.onnx")
    code, _, err = run_cli(capsys, "compile", model, "--quantize", "int8", "--calibration", "fashion-mnist",
                           "--calib-count", "4", "-o", tmp_path / "m.tar")
    assert code == 0, err
    code, out, err = run_cli(capsys, "run", tmp_path / "m.tar", "--verify")
    assert_one_line_error(code, err, 8, "verification failed (int8 rule)", "QDQ groups FAIL", "(Conv -> ")
    lines = [line for line in out.splitlines() if line.startswith("group ")]
    assert len(lines) == 1 and "(Conv -> " in lines[0] and lines[0].endswith("-> FAIL")


def test_differences_where_onnxruntime_quantizes_nan_are_named(tmp_path):
    """0/0 inside a group (efficientvit_b0's attention divides by a quantized denominator that rounds to 0):
    onnxruntime quantizes the NaN to one value, another engine may to another; the group fails and says why."""
    from onnx import TensorProto, helper, numpy_helper

    s, z = numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "z")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("Div", ["xd", "xd"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"], name="ratio_q"),
             helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "nan", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializer=[s, z])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    x = np.array([[0.0, 0.3, 0.0, -0.5]], np.float32)
    probe, layout = probe_model(model)
    tensors = probe_tensors(onnxruntime_session(probe.SerializeToString()).run(None, {"x": x}), layout)
    assert tensors["rq"][0, 0] == tensors["rq"][0, 2] == -128   # onnxruntime: NaN -> the lowest value
    other = dict(tensors, rq=tensors["rq"].copy())
    other["rq"][0, [0, 2]] = np.where(tensors["rq"][0, [0, 2]] == 127, -128, 127)   # NaN quantized the other way
    (ratio,) = [g for g in check_groups(model, [x], other) if g.tensor == "rq"]
    assert not ratio.ok and ratio.nan == ratio.differing == 2 and "NaN before QuantizeLinear" in ratio.line()
    assert "quantizes NaN to the lowest value" in ratio.line()
    assert all(g.ok for g in check_groups(model, [x], tensors))


def test_bench_quantize_int8_fails_on_a_planted_kernel_defect_naming_the_group(capsys, tmp_path, monkeypatch):
    """``bench --quantize int8`` judges by the same rule: the report is printed, then exit 8 and one line."""
    monkeypatch.setenv("EDGEVIT_CACHE", str(tmp_path / "cache"))
    _plant(monkeypatch, zero_shift=1)
    code, out, err = run_cli(capsys, "bench", tiny_cnn_onnx(tmp_path / "cnn.onnx"), "--quantize", "int8",
                             "--calibration", "fashion-mnist", "--calib-count", "4", "--runs", "1", "--warmup", "0")
    assert_one_line_error(code, err, 8, "verification failed (int8 rule)", "QDQ groups FAIL", "(Conv -> ")
    lines = [line for line in out.splitlines() if line.startswith("group ")]
    assert len(lines) == 1 and "(Conv -> " in lines[0] and lines[0].endswith("-> FAIL")
    assert "edgevit int8 / onnxruntime int8 = " in out


def tie_amplifier_onnx(path):
    """A QDQ model with dense half-step ties, amplified: quantizations of ``x`` and of a row ``w`` broadcast over it
    (scales 32/255 and 16/255) are added and quantized at one float32 ulp above 32/255 (efficientformerv2_s0's
    pattern: about a fifth of the sums are half steps), then multiplied by 16 at the same scale, so one tie
    rounded the other way moves an output by 16 steps."""
    from onnx import TensorProto, helper, numpy_helper

    sa, sb = np.float32(32 / 255), np.float32(16 / 255)
    sc = np.nextafter(sa, np.float32(1))
    init = [numpy_helper.from_array(v, n) for n, v in (
        ("sa", sa), ("za", np.int8(-1)), ("sb", sb), ("zb", np.int8(-128)), ("sc", sc), ("z0", np.int8(0)),
        ("m", np.int8(16)), ("one", np.float32(1)))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sa", "za"], ["a"]),
             helper.make_node("Relu", ["w"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "sb", "zb"], ["b"]),
             helper.make_node("DequantizeLinear", ["a", "sa", "za"], ["da"]),
             helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["db"]),
             helper.make_node("Add", ["da", "db"], ["s"], name="tie_add"),
             helper.make_node("QuantizeLinear", ["s", "sc", "z0"], ["y"]),
             helper.make_node("DequantizeLinear", ["y", "sc", "z0"], ["dy"]),
             helper.make_node("DequantizeLinear", ["m", "one", "z0"], ["dm"]),
             helper.make_node("Mul", ["dy", "dm"], ["p"], name="amplify"),
             helper.make_node("QuantizeLinear", ["p", "sc", "z0"], ["pq"]),
             helper.make_node("DequantizeLinear", ["pq", "sc", "z0"], ["out"])]
    graph = helper.make_graph(nodes, "ties", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 32, 32]),
                                              helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 1, 1, 32])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, 32, 32])],
                              initializer=init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
    return path


def test_run_verify_passes_a_tie_amplified_model_that_the_output_rule_fails(capsys, tmp_path, monkeypatch):
    """edgevit computes a broadcasting two-tensor Add as dequantize, add, quantize (an Add of equal shapes is
    QLinearAdd's arithmetic, ``tests/backends/test_int8_add.py``); onnxruntime as QLinearAdd (another float32
    order): they differ at half steps only, which the x16 multiply carries to the output (16 steps, over the old
    4-step rule). ``run --verify`` passes it, every 1-step value labelled a tie."""
    from edgevit.quantize import MAX_STEPS

    monkeypatch.setenv("EDGEVIT_CACHE", str(tmp_path / "cache"))
    code, _, err = run_cli(capsys, "compile", tie_amplifier_onnx(tmp_path / "ties.onnx"), "-o", tmp_path / "t.tar")
    assert code == 0, err
    code, out, err = run_cli(capsys, "run", tmp_path / "t.tar", "--verify", "--json")
    verdict = json.loads(out)["verify"]
    assert code == 0, err
    (add,) = [g for g in verdict["groups"] if g["node"] == "tie_add"]
    assert add["ties"] == add["one_step"] > 0 and add["max_steps"] == 1
    assert verdict["ok"] and verdict["groups_failing"] == 0 and verdict["max_steps"] > MAX_STEPS


def test_probe_of_more_quantized_tensors_than_outputs_concatenates_few_per_output():
    """300 quantized tensors (an artifact has at most 256 outputs): the probe outputs most alone and concatenates
    the rest in pairs (one Concat of all of them compiles to a select chain as long as its input list:
    swiftformer_xs's probe spent 300x the model's instructions there), and every tensor reads back as
    onnxruntime computes it."""
    from onnx import TensorProto, helper, numpy_helper

    from edgevit.quantize.groups import MAX_OUTPUTS

    count = 300
    s, z = numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(np.int8(0), "z")
    k = numpy_helper.from_array(np.float32(0.97), "k")
    nodes, previous = [], "x"
    for i in range(count):
        nodes += [helper.make_node("QuantizeLinear", [previous, "s", "z"], [f"q{i}"]),
                  helper.make_node("DequantizeLinear", [f"q{i}", "s", "z"], [f"d{i}"]),
                  helper.make_node("Mul", [f"d{i}", "k"], [f"m{i}"])]
        previous = f"m{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, 8])],
                              initializer=[s, z, k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    probe, layout = probe_model(model)
    assert len(probe.graph.output) == MAX_OUTPUTS and len(layout) == count
    concats = [n for n in probe.graph.node if n.op_type == "Concat"]
    alone = [o.name for o in probe.graph.output[1:] if o.name.startswith("q")]
    assert {len(n.input) for n in concats} == {2} and len(alone) + 2 * len(concats) == count
    assert [name for name, *_ in layout] == [f"q{i}" for i in range(count)]   # graph order
    x = np.linspace(-6, 6, 8, dtype=np.float32)[None]
    tensors = probe_tensors(onnxruntime_session(probe.SerializeToString()).run(None, {"x": x}), layout)
    cut = helper.make_model(helper.make_graph(nodes, "all", graph.input, [helper.make_tensor_value_info(
        f"q{i}", TensorProto.INT8, [1, 8]) for i in range(count)], initializer=[s, z, k]),
        opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    expected = onnxruntime_session(cut.SerializeToString()).run(None, {"x": x})
    assert all(np.array_equal(tensors[f"q{i}"], expected[i]) for i in range(count))
    assert len({tensors[f"q{i}"].tobytes() for i in range(count)}) > 10   # the tensors differ: layout checked
