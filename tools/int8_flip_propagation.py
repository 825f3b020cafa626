"""How far one rounding flip moves a QDQ model's output, measured with onnxruntime alone.

The model is cut at every activation QuantizeLinear (``edgevit.quantize.groups.cut_model``, what ``run --verify``
uses): each QDQ group reads its int8 inputs from graph inputs and writes its int8 output as a graph output, so
onnxruntime can run the model group by group and a chosen value can be changed in between. Running the cut model repeatedly, each run fed the previous run's tensors, reaches
onnxruntime's own result (a fixed point after as many runs as the graph is deep). Then a convolution output
value whose exact value (integer accumulator x scales, float64) lies within ``--tie`` of a half step is rounded
the other way, as any float32 evaluation may, and onnxruntime carries it to the output. First, onnxruntime is
compared with itself: without QDQ fusion (basic graph optimisations) and cut vs whole. ``--edgevit`` also
counts, per operator, the groups where an edgevit host build and onnxruntime differ given the same int8 inputs.

    python tools/int8_flip_propagation.py M_int8.onnx [--seed 0] [--flips 1] [--edgevit]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fixed_point(session, x, quantized, start, overrides=()):
    """onnxruntime's tensors for input ``x``, group by group, with ``overrides`` ((tensor, index, value)) kept."""
    names = [i.name for i in session.get_inputs()]
    values, runs = dict(start), 0
    while True:
        out = dict(zip(quantized, session.run(None, {n: x if n == names[0] else values[n[4:]] for n in names})))
        for tensor, index, value in overrides:
            out[tensor][index] = value
        runs += 1
        if all(np.array_equal(out[q], values[q]) for q in quantized):
            return out, runs
        values = out


def near_ties(model, values, tie: float):
    """Convolution outputs within ``tie`` of a half step: (tensor, index, exact value before rounding in steps,
    the int8 value rounded the other way), in graph order."""
    import torch
    from onnx import helper, numpy_helper

    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}

    def dequantize_input(name):  # (int8 values, scale, zero point) behind a DequantizeLinear
        dq = producer[name]
        source = dq.input[0]
        return (values[source[4:]] if source.startswith("cut_") else constants[source],
                constants[dq.input[1]], constants[dq.input[2]])

    found = []
    for node in model.graph.node:
        conv = producer.get(node.input[0])
        if node.op_type != "QuantizeLinear" or conv is None or conv.op_type != "Conv":
            continue
        (x, sx, zx), (w, sw, _) = dequantize_input(conv.input[0]), dequantize_input(conv.input[1])
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        pads = attrs.get("pads", [0, 0, 0, 0])
        data = torch.nn.functional.pad(torch.from_numpy(x.astype(np.float64) - float(zx)),
                                       (pads[1], pads[3], pads[0], pads[2]))
        acc = torch.nn.functional.conv2d(data, torch.from_numpy(w.astype(np.float64)), stride=attrs.get("strides", 1),
                                         dilation=attrs.get("dilations", 1), groups=attrs.get("group", 1)).numpy()
        if len(conv.input) > 2:
            acc += dequantize_input(conv.input[2])[0].reshape(1, -1, 1, 1)
        exact = acc * float(sx) * sw.astype(np.float64).reshape(1, -1, 1, 1) / float(constants[node.input[1]])
        zy, ours = int(constants[node.input[2]]), values[node.output[0]]
        for index in map(tuple, np.argwhere(np.abs(exact - np.floor(exact) - 0.5) < tie)):
            other = int(np.floor(exact[index]) if ours[index] - zy > exact[index] else np.ceil(exact[index])) + zy
            if -128 <= other <= 127:
                found.append((node.output[0], index, float(exact[index]), np.int8(other)))
    return found


def edgevit_differences(cut, quantized, x, values):
    """Per QDQ group: how many values an edgevit host build of the cut model computes differently from
    onnxruntime, both given onnxruntime's int8 inputs. Returns {group's operator: [groups, differing groups,
    differing values]} and the differing values as (tensor, index, edgevit's value), in graph order."""
    import tvm
    from tvm.runtime import vm

    from edgevit.backends import tvm_compiler
    from edgevit.frontend import TensorSpec
    from edgevit.targets import get_target

    specs = [TensorSpec(i.name, tuple(d.dim_value for d in i.type.tensor_type.shape.dim),
                        "int8" if i.name.startswith("cut_") else "float32") for i in cut.graph.input]
    executable = tvm_compiler.build(tvm_compiler.import_onnx(cut, specs), get_target("host").require_cpu())
    machine = vm.VirtualMachine(executable, tvm.runtime.cpu())
    feeds = [x if not s.name.startswith("cut_") else values[s.name[4:]] for s in specs]
    mine = [o.numpy() for o in machine["main"](*[tvm.runtime.tensor(f) for f in feeds])]
    producer = {o: n for n in cut.graph.node for o in n.output}
    table, differences = {}, []
    for q, a in zip(quantized, mine):
        op = producer[producer[q].input[0]].op_type if producer[q].input[0] in producer else "input"
        row = table.setdefault(op, [0, 0, 0])
        differing = int(np.count_nonzero(a != values[q]))
        row[0], row[1], row[2] = row[0] + 1, row[1] + bool(differing), row[2] + differing
        differences += [(q, index, a[index]) for index in map(tuple, np.argwhere(a != values[q]))]
    return table, differences


def main() -> int:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from edgevit.frontend import from_onnx_file
    from edgevit.quantize import compare_int8, output_steps
    from edgevit.quantize.groups import cut_model
    from edgevit.reference import onnxruntime_session, random_inputs

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="a QDQ .onnx (edgevit quantize)")
    p.add_argument("--seed", type=int, default=0, help="random input, as EDGEVIT_SEED")
    p.add_argument("--flips", type=int, default=1, help="how many values to change: near-half conv outputs "
                                                       "rounded the other way, or with --edgevit edgevit's values "
                                                       "(0: only compare onnxruntime with itself)")
    p.add_argument("--tie", type=float, default=1e-5, help="distance from a half step that counts as a tie")
    p.add_argument("--edgevit", action="store_true", help="also build the cut model for the host, count per "
                                                          "operator the groups where edgevit differs, and change "
                                                          "the first --flips of those values instead")
    args = p.parse_args()
    model = onnx.load(str(args.model))
    spec = from_onnx_file(args.model).inputs[0]
    x = random_inputs([spec], args.seed)[0]
    levels = {}
    for level in ("ORT_ENABLE_BASIC", "ORT_ENABLE_ALL"):  # basic: no QDQ fusion, every group in float32
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.graph_optimization_level = 1, getattr(ort.GraphOptimizationLevel, level)
        levels[level] = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"],
                                             disabled_optimizers=["WeightBiasQuantization"]).run(None, {spec.name: x})
    steps = output_steps(model)
    print(f"onnxruntime, basic vs all graph optimisations: "
          f"{compare_int8(levels['ORT_ENABLE_BASIC'], levels['ORT_ENABLE_ALL'], steps).summary()}")
    cut = cut_model(model)
    quantized = [o.name for o in cut.graph.output]
    path = Path("/tmp") / f"{args.model.stem}_cut.onnx"
    onnx.save(cut, str(path))
    session = onnxruntime_session(path)
    zeros = {q: np.zeros([d.dim_value for d in o.type.tensor_type.shape.dim], np.int8)
             for q, o in zip(quantized, cut.graph.output)}
    values, runs = fixed_point(session, x, quantized, zeros)
    whole = onnxruntime_session(args.model).run(None, {session.get_inputs()[0].name: x})
    producer = {o: n for n in model.graph.node for o in n.output}
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    print(f"{args.model.name}, seed {args.seed}: {len(quantized)} QDQ groups; onnxruntime's tensors after {runs} "
          f"runs of the cut model")
    for output, array in zip(model.graph.output, whole):
        dq = producer[output.name]
        mine = (values[dq.input[0]].astype(np.int32) - constants[dq.input[2]]).astype(np.float32) \
            * constants[dq.input[1]]  # DequantizeLinear in float32, as onnxruntime computes it
        print(f"  cut model vs the whole model in onnxruntime, {output.name}: "
              f"{np.abs(mine - array).max() / float(constants[dq.input[1]]):g} steps")
    ties = near_ties(cut, values, args.tie)
    print(f"{len(ties)} conv output values lie within {args.tie:g} of a half step")
    flips = [(t, i, v) for t, i, _, v in ties[:args.flips]]
    for tensor, index, exact, other in ties[:args.flips if not args.edgevit else 0]:
        print(f"  rounded the other way: {tensor}{[int(i) for i in index]}, exact {exact:.7f} steps from the zero "
              f"point, onnxruntime {values[tensor][index]}, now {other}")
    if args.edgevit:
        table, differences = edgevit_differences(cut, quantized, x, values)
        print("edgevit host build vs onnxruntime, each group given onnxruntime's inputs "
              "(operator: groups, groups differing, values differing):")
        for op, row in sorted(table.items()):
            print(f"  {op}: {row[0]}, {row[1]}, {row[2]}")
        exact = {(t, i): e for t, i, e, _ in ties}
        flips = differences[:args.flips]
        for tensor, index, value in flips:
            print(f"  changed to edgevit's value: {tensor}{[int(i) for i in index]}, onnxruntime "
                  f"{values[tensor][index]}, edgevit {value}"
                  + (f" (exact {exact[tensor, index]:.7f} steps from the zero point)" if (tensor, index) in exact
                     else ""))
    if not flips:
        return 0
    flipped, runs = fixed_point(session, x, quantized, values, flips)
    for output in model.graph.output:
        final = producer[output.name].input[0]
        diff = np.abs(flipped[final].astype(np.int64) - values[final])
        agree = flipped[final].reshape(-1).argmax() == values[final].reshape(-1).argmax()
        print(f"{output.name}: onnxruntime with those {len(flips)} value(s) changed differs "
              f"by {diff.max()} steps, {np.count_nonzero(diff)} of {diff.size} values, top-1 "
              f"{'agrees' if agree else 'DIFFERS'} ({runs} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
