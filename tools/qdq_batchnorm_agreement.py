"""How far the int8 BatchNormalization rule (edgevit/hls/qdq_import.py ``_batchnorm``: a 1x1 qdwconv) is from
onnxruntime, on every standalone BatchNormalization of QDQ files, for every int8 input of every channel.

    python tools/qdq_batchnorm_agreement.py m_int8.onnx ... [--json FILE]

Each ``DequantizeLinear -> BatchNormalization -> QuantizeLinear`` of a file is cut out with its own scales, zero
points and parameters into a one-node QDQ graph whose input holds each int8 value once per channel; the rule's
golden model (the program's ``run_fixed``, which the C-simulation equals bit for bit) is compared with onnxruntime
running that graph. Prints per file: BNs, values compared, values off by one step, the largest difference.
Exit 0 when no value is more than one step off, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgevit.hls import qdq_import  # noqa: E402
from edgevit.hls.torch_import import to_accel_layout  # noqa: E402
from edgevit.reference import onnxruntime_session  # noqa: E402

SIDE = 16   # 16 x 16 pixels: each int8 value once per channel


def standalone_batchnorms(model):
    """(BatchNormalization node, its input's DequantizeLinear, its output's QuantizeLinear) of ``model``."""
    producer = {o: n for n in model.graph.node for o in n.output}
    users: dict = {}
    for n in model.graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    for n in model.graph.node:
        dq, after = producer.get(n.input[0]), users.get(n.output[0], [])
        if n.op_type == "BatchNormalization" and dq is not None and dq.op_type == "DequantizeLinear" \
                and len(after) == 1 and after[0].op_type == "QuantizeLinear":
            yield n, dq, after[0]


def one_bn_graph(model, bn, dq, q):
    """The BN alone between its own quantize steps, on a [1, C, SIDE, SIDE] float input, and its scale and zero
    point (input side)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    sess = None
    params = []
    for name in bn.input[1:5]:   # BN parameters: initializers, or DequantizeLinear of initializers
        if name not in consts:
            if sess is None:
                m = onnx.ModelProto()
                m.CopyFrom(model)
                m.graph.output.extend(onnx.helper.ValueInfoProto(name=i) for i in bn.input[1:5])
                shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
                sess = onnxruntime_session(m.SerializeToString())
                feed = {sess.get_inputs()[0].name: np.zeros(shape, np.float32)}
                run = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
            consts[name] = run[name]
        params.append(np.asarray(consts[name], np.float32))
    sx, zx = consts[dq.input[1]], consts[dq.input[2]]
    sy, zy = consts[q.input[1]], consts[q.input[2]]
    c = params[0].size
    init = {"sx": sx, "zx": zx, "sy": sy, "zy": zy, "g": params[0], "b": params[1], "m": params[2], "v": params[3]}
    eps = next((helper.get_attribute_value(a) for a in bn.attribute if a.name == "epsilon"), 1e-5)
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xf"]),
             helper.make_node("BatchNormalization", ["xf", "g", "b", "m", "v"], ["bn"], epsilon=eps),
             helper.make_node("QuantizeLinear", ["bn", "sy", "zy"], ["y"])]
    g = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, SIDE, SIDE])],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, [1, c, SIDE, SIDE])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in init.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, float(sx), int(zx), c


def compare(model) -> dict:
    """Every standalone BN of ``model`` through the rule and through onnxruntime, all int8 inputs."""
    stats = {"batchnorms": 0, "mapped": 0, "values": 0, "off_by_one": 0, "max_steps": 0, "not_mapped": []}
    q = np.arange(-128, 128).reshape(SIDE, SIDE)
    for bn, dq, qn in standalone_batchnorms(model):
        stats["batchnorms"] += 1
        m, sx, zx, c = one_bn_graph(model, bn, dq, qn)
        x = np.stack([(np.roll(q, k) - zx) * np.float32(sx) for k in range(c)])[None].astype(np.float32)
        try:
            result = qdq_import.lower_qdq(m, x)
        except qdq_import.ModelImportError as exc:
            stats["not_mapped"].append(f"{bn.name}: {exc}")
            continue
        prog = result.program
        if [l.kind for l in prog.layers] != ["qdwconv"]:
            stats["not_mapped"].append(f"{bn.name}: {result.unsupported}")
            continue
        stats["mapped"] += 1
        got = prog.run_fixed(prog.quantize_input(to_accel_layout(x)))[prog.output] + prog.formats[prog.output].zero_point
        want = onnxruntime_session(m.SerializeToString()).run(None, {"x": x})[0][0].transpose(1, 2, 0)
        d = np.abs(got.astype(np.int64) - want.astype(np.int64))
        stats["values"] += d.size
        stats["off_by_one"] += int((d == 1).sum())
        stats["max_steps"] = max(stats["max_steps"], int(d.max()))
    return stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    import onnx

    out, worst = {}, 0
    for path in args.models:
        s = out[path] = compare(onnx.load(path))
        worst = max(worst, s["max_steps"])
        print(f"{path}: {s['mapped']} of {s['batchnorms']} standalone BatchNormalizations mapped; {s['values']} "
              f"values (every int8 input of every channel): {s['values'] - s['off_by_one']} bit-exact, "
              f"{s['off_by_one']} one step off, max {s['max_steps']} steps"
              + "".join(f"\n  not mapped: {w}" for w in s["not_mapped"]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0 if worst <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
