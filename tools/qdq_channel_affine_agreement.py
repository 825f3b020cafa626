"""How far the int8 per-channel affine rule (edgevit/hls/qdq_import.py ``_channel_affine``: a 1x1 qdwconv) is from
onnxruntime, on every standalone BatchNormalization and every Mul / Add / Sub by a per-channel constant of QDQ
files, for every int8 input of every channel.

    python tools/qdq_channel_affine_agreement.py m_int8.onnx ... [--json FILE]

Each ``DequantizeLinear -> OP -> QuantizeLinear`` of a file is cut out with its own scales, zero points and
constants into a one-node QDQ graph whose input holds each int8 value once per channel; the rule's golden model
(the program's ``run_fixed``, which the C-simulation equals bit for bit) is compared with onnxruntime running
that graph. Prints per file and op: nodes, values compared, values off by one step, the largest difference.
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


AFFINE_OPS = ("BatchNormalization", "Mul", "Add", "Sub")


def affine_nodes(model):
    """(node, the DequantizeLinear of its tensor input, the QuantizeLinear of its output) of every
    ``AFFINE_OPS`` node of ``model`` between quantize steps whose other inputs are constants: a BatchNormalization,
    or a Mul / Add / Sub by a [C, 1, 1] constant (a node the importer then refuses is counted as not mapped)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    per_channel = {t.name for t in model.graph.initializer   # [C, 1, 1] / [1, C, 1, 1]: one value per map channel
                   if len(t.dims) >= 3 and list(t.dims[-2:]) == [1, 1] and int(np.prod(t.dims)) == t.dims[-3] > 1}
    users: dict = {}
    for n in model.graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)

    def constant_size(name):   # elements of a constant (an initializer or its DequantizeLinear), else 0
        p = producer.get(name)
        if name in sizes:
            return sizes[name]
        return sizes.get(p.input[0], 0) if p is not None and p.op_type == "DequantizeLinear" else 0

    for n in model.graph.node:
        if n.op_type not in AFFINE_OPS:
            continue
        tensors = [i for i in n.input if i and not constant_size(i)]
        after = users.get(n.output[0], [])
        dq = producer.get(tensors[0]) if len(tensors) == 1 else None
        def channel_constant(name):
            p = producer.get(name)
            return name in per_channel or (p is not None and p.op_type == "DequantizeLinear"
                                           and p.input[0] in per_channel)

        if dq is not None and dq.op_type == "DequantizeLinear" and len(after) == 1 \
                and after[0].op_type == "QuantizeLinear" and (n.op_type == "BatchNormalization" or any(
                    channel_constant(i) for i in n.input)):
            yield n, dq, after[0]


def one_node_graph(model, node, dq, q):
    """``node`` alone between its own quantize steps, on a [1, C, SIDE, SIDE] float input (per-channel constants
    as [C, 1, 1]), and its input scale, zero point and channel count."""
    from onnx import TensorProto, helper, numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    x_name = dq.output[0]
    values = {}
    for name in node.input:   # constants: initializers, or DequantizeLinear of initializers (computed here)
        if name == x_name or not name:
            continue
        if name in consts:
            values[name] = consts[name]
        else:
            p = producer[name]
            z = consts[p.input[2]].astype(np.int64) if len(p.input) > 2 and p.input[2] else 0
            s = consts[p.input[1]].astype(np.float32)
            if s.size > 1:   # per-axis
                axis = next((helper.get_attribute_value(a) for a in p.attribute if a.name == "axis"), 1)
                shape = [1] * consts[p.input[0]].ndim
                shape[axis] = -1
                s, z = s.reshape(shape), np.reshape(z, shape) if np.size(z) > 1 else z
            values[name] = ((consts[p.input[0]].astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)
    c = next(v.size for v in values.values()) if node.op_type != "BatchNormalization" else values[node.input[1]].size
    if node.op_type != "BatchNormalization":
        values = {k: v.reshape(c, 1, 1) if v.size == c else v for k, v in values.items()}
    sx, zx = consts[dq.input[1]], consts[dq.input[2]]
    sy, zy = consts[q.input[1]], consts[q.input[2]]
    init = {"sx": sx, "zx": zx, "sy": sy, "zy": zy, **values}
    inputs = ["xf" if i == x_name else i for i in node.input]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xf"]),
             helper.make_node(node.op_type, inputs, ["r"]),
             helper.make_node("QuantizeLinear", ["r", "sy", "zy"], ["y"])]
    nodes[2].attribute.extend(a for a in node.attribute if a.name == "epsilon")
    g = helper.make_graph(nodes, "one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, SIDE, SIDE])],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, [1, c, SIDE, SIDE])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in init.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, float(sx), int(zx), c


def compare(model) -> dict:
    """Every affine node of ``model`` through the rule and through onnxruntime, all int8 inputs; per op type."""
    out: dict = {}
    q = np.arange(-128, 128).reshape(SIDE, SIDE)
    for node, dq, qn in affine_nodes(model):
        stats = out.setdefault(node.op_type, {"nodes": 0, "mapped": 0, "values": 0, "off_by_one": 0, "max_steps": 0,
                                              "not_mapped": []})
        stats["nodes"] += 1
        m, sx, zx, c = one_node_graph(model, node, dq, qn)
        x = np.stack([(np.roll(q, k) - zx) * np.float32(sx) for k in range(c)])[None].astype(np.float32)
        try:
            result = qdq_import.lower_qdq(m, x)
        except qdq_import.ModelImportError as exc:
            stats["not_mapped"].append(f"{node.name}: {exc}")
            continue
        prog = result.program
        if [l.kind for l in prog.layers] != ["qdwconv"]:
            stats["not_mapped"].append(f"{node.name}: {result.unsupported}")
            continue
        stats["mapped"] += 1
        got = prog.run_fixed(prog.quantize_input(to_accel_layout(x)))[prog.output]
        got = got + prog.formats[prog.output].zero_point
        want = onnxruntime_session(m.SerializeToString()).run(None, {"x": x})[0][0].transpose(1, 2, 0)
        d = np.abs(got.astype(np.int64) - want.astype(np.int64))
        stats["values"] += d.size
        stats["off_by_one"] += int((d == 1).sum())
        stats["max_steps"] = max(stats["max_steps"], int(d.max()))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    import onnx

    out, worst = {}, 0
    for path in args.models:
        out[path] = compare(onnx.load(path))
        for op, s in out[path].items():
            worst = max(worst, s["max_steps"])
            print(f"{path} {op}: {s['mapped']} of {s['nodes']} mapped; {s['values']} values (every int8 input of "
                  f"every channel): {s['values'] - s['off_by_one']} bit-exact, {s['off_by_one']} one step off, "
                  f"max {s['max_steps']} steps" + "".join(f"\n  not mapped: {w}" for w in s["not_mapped"]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0 if worst <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
