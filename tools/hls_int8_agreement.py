"""How far the FPGA backend's int8 C-simulation is from onnxruntime on a QDQ model, in output quantization steps.

    python tools/hls_int8_agreement.py m_int8.onnx [--images 200] [--board zcu102] [--out DIR] [--json FILE]

Maps the QDQ file (edgevit/hls/qdq_import.py), writes its project with the first N Fashion-MNIST test images as
testbench inputs, C-simulates it with g++ and compares, per image: the C-simulation with the golden model (must
be bit-exact), and the accelerator's last int8 tensor with onnxruntime's value of the same tensor when it runs the
unmodified QDQ file (its fused int8 kernels). When the accelerator runs the whole graph that is the model's
output; otherwise the CPU part's input, and then also the whole model the board's way (C-simulated
accelerator output, dequantized as the PYNQ driver does, through the numpy CPU part) against onnxruntime. Prints max steps off, values bit-exact, argmax agreement (whole
models only) and accuracy.

Exit 0 when the C-simulation is bit-exact with the golden model, 1 when it is not; on a file it cannot read or
map, one error line and the error's exit code (edgevit/errors.py: 5 unreadable, 4 not mappable).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgevit.datasets import fashion_mnist  # noqa: E402
from edgevit.errors import EdgevitError, InputError  # noqa: E402
from edgevit.hls import csim, qdq_import  # noqa: E402
from edgevit.hls.torch_import import to_accel_layout  # noqa: E402
from edgevit.reference import onnxruntime_session  # noqa: E402


def onnxruntime_steps(model, result, images) -> np.ndarray:
    """onnxruntime's int8 values (minus zero point, program order) of the accelerator's output tensor, running
    the file as it is plus that one tensor as an extra output where it is not the graph's output."""
    import onnx

    prog = result.program
    fo, out = prog.formats[prog.output], prog.output
    m = onnx.ModelProto()
    m.CopyFrom(model)
    target = result.cut or m.graph.output[0].name
    if target not in {o.name for o in m.graph.output}:
        m.graph.output.extend([onnx.helper.ValueInfoProto(name=target)])
    sess = onnxruntime_session(m.SerializeToString())
    idx = [o.name for o in sess.get_outputs()].index(target)
    rows = []
    for x in images:
        v = np.asarray(sess.run(None, {sess.get_inputs()[0].name: x[None].astype(np.float32)})[idx])
        steps = np.rint(v.astype(np.float64) / fo.scale) if v.dtype.kind == "f" else v.astype(np.int64) - fo.zero_point
        shape = prog.shapes[out]
        if steps.ndim == 4:   # NCHW -> the program's channels-last order
            steps = np.moveaxis(steps.reshape((shape[-1],) + shape[:-1]), 0, -1)
        rows.append(steps.reshape(-1).astype(np.int64))
    return np.asarray(rows)


def board_outputs(project: Path, sim) -> np.ndarray | None:
    """The model's outputs the board's way: each C-simulated output dequantized by the PYNQ driver's
    ``part_output`` and run through the project's numpy CPU part (None if the project has none)."""
    from edgevit.pynq import numpy_graph
    from edgevit.pynq.driver import part_output

    if not (project / "cpu_tail.json").exists():
        return None
    graph, weights = numpy_graph.load(project, "cpu_tail.json", "cpu_tail.npz")
    spec = json.loads((project / "regmap.json").read_text())["buffers"]["output"]
    return np.asarray([numpy_graph.run(graph, weights, {graph["input"]: part_output(raw, spec, graph)})[0].ravel()
                       for raw in sim], np.float64)


def final_outputs(model, images) -> np.ndarray:
    sess = onnxruntime_session(model.SerializeToString())
    return np.asarray([sess.run(None, {sess.get_inputs()[0].name: x[None]})[0].ravel() for x in images], np.float64)


def output_scale(model) -> float:
    """The scale of the DequantizeLinear producing the model's output (its int8 step)."""
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    node = next(n for n in model.graph.node if model.graph.output[0].name in n.output)
    return float(np.max(consts[node.input[1]])) if node.op_type == "DequantizeLinear" else 1.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--board", default="zcu102")
    ap.add_argument("--out", help="project directory (default: a temporary one)")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args(argv)
    try:
        return _agreement(args)
    except EdgevitError as exc:
        print(f"hls_int8_agreement: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _agreement(args) -> int:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(args.model)
    except (OSError, DecodeError) as exc:   # missing, unreadable, or not an ONNX protobuf
        raise InputError(f"cannot read {args.model} as an ONNX model: {exc}") from None
    images, labels = fashion_mnist("test", args.images)
    result = qdq_import.lower_qdq(model, images[0][None])
    with tempfile.TemporaryDirectory(prefix="edgevit-int8-") as tmp:
        out = Path(args.out or tmp)
        qdq_import.write_project(result, args.board, out, [x[None] for x in images])
        sim, _ = csim.simulate_project(out)
        whole = board_outputs(out, sim)
    prog = result.program
    sim = np.asarray(sim)
    golden = np.asarray([prog.run_fixed(prog.quantize_input(to_accel_layout(x[None])))[prog.output].ravel()
                         for x in images])
    ort = onnxruntime_steps(model, result, images)
    diff = np.abs(sim - ort)
    rep = {"model": args.model, "images": len(images), "accelerator_layers": len(prog.layers),
           "nodes_on_accelerator": result.accel_nodes, "nodes": result.total_nodes,
           "stops_at": list(result.unsupported) if result.unsupported else None,
           "compared_tensor": result.cut or "graph output",
           "csim_vs_golden_mismatches": int((sim != golden).sum()),
           "max_steps_vs_onnxruntime": int(diff.max()), "values": int(diff.size),
           "values_bit_exact": int((diff == 0).sum()), "images_bit_exact": int((diff.max(1) == 0).sum()),
           "layer_kinds": sorted({l.kind for l in prog.layers})}
    if whole is not None:   # the board's way: C-simulated accelerator part, then the numpy CPU part
        want = final_outputs(model, images)
        scale = result.program.formats[prog.output].scale if result.cut is None else output_scale(model)
        rep["cpu_tail_error"] = result.tail_error
        rep["whole_model_max_steps_vs_onnxruntime"] = float(np.abs(whole - want).max() / scale)
        rep["whole_model_argmax_agreement"] = float((whole.argmax(1) == want.argmax(1)).mean())
        top2 = np.sort(want, 1)[:, -2:]
        differ = whole.argmax(1) != want.argmax(1)
        # docs/int8.md's rule: a different top-1 is a tie where onnxruntime's own top two are within 4 steps
        rep["whole_model_argmax_differences_within_4_step_ties"] = int((differ & (
            (top2[:, 1] - top2[:, 0]) / scale <= 4 + 1e-6)).sum())
        rep["whole_model_argmax_differences"] = int(differ.sum())
        rep["accuracy_board_way"] = float((whole.argmax(1) == labels).mean())
        rep["accuracy_onnxruntime"] = float((want.argmax(1) == labels).mean())
    elif result.cut is not None:
        rep["cpu_tail_error"] = result.tail_error
    if result.cut is None:   # the model's output: classes
        rep["argmax_agreement"] = float((sim.argmax(1) == ort.argmax(1)).mean())
        rep["accuracy_csim"] = float((sim.argmax(1) == labels).mean())
        rep["accuracy_onnxruntime"] = float((ort.argmax(1) == labels).mean())
    print(json.dumps(rep, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=1))
    return 0 if rep["csim_vs_golden_mismatches"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
