"""Cuts on the ONNX graph: live tensors, stage extraction, and chained stages equal to the whole model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgevit.distributed.graph_split import GraphSplitter, run_chain, save_stage
from edgevit.errors import EdgevitError


def _residual_model() -> onnx.ModelProto:
    """x -> conv -> relu -> (+ skip from the conv) -> shape arithmetic on a weight -> reshape -> gemm.

    Live across the relu: the conv output (the skip) and the relu output, so only cuts elsewhere have one live
    tensor. The reshape's target shape is computed from a weight alone (Shape of an initializer): such tensors
    are never live, since every stage can compute them.
    """
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal((5, 4 * 8 * 8)).astype(np.float32), "fc"),
            numpy_helper.from_array(np.zeros((1, 256), np.float32), "like")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Add", ["r", "c"], ["a"]),
             helper.make_node("Shape", ["like"], ["target"]),
             helper.make_node("Reshape", ["a", "target"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], initializer=init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def test_live_tensors_skip_connections_and_weight_only_values():
    splitter = GraphSplitter(_residual_model())
    live = {c.position: c.tensors for c in splitter.cuts}
    assert live[0] == ("x",) and live[1] == ("c",) and live[2] == ("c", "r") and live[3] == ("a",)
    assert live[4] == ("a",)  # 'target' (Shape of a weight) is not live
    assert live[6] == ("y",)
    assert [c.position for c in splitter.candidate_cuts(1)] == [0, 1, 3, 4, 5, 6]
    assert 2 in [c.position for c in splitter.candidate_cuts(2)]
    assert splitter.cuts[1].bytes == 4 * 4 * 8 * 8


@pytest.mark.parametrize("max_live", [1, 2])
def test_chained_stages_equal_the_whole_model(tmp_path, max_live):
    import onnxruntime as ort

    model = _residual_model()
    splitter = GraphSplitter(model)
    cuts = splitter.candidate_cuts(max_live)
    paths = [save_stage(splitter.extract(a, b), tmp_path / f"s{i}.onnx") for i, (a, b) in enumerate(zip(cuts, cuts[1:]))]
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    whole = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    chained = run_chain(paths, {"x": x})["y"]
    np.testing.assert_array_equal(chained, whole)
    assert len(paths) == len(cuts) - 1


def test_costs_count_conv_and_gemm_macs():
    splitter = GraphSplitter(_residual_model())
    conv_macs, _ = splitter.node_cost(0)
    gemm_macs, _ = splitter.node_cost(5)
    assert conv_macs == 4 * 8 * 8 * 3 * 3 * 3 and gemm_macs == 5 * 256
    unit = splitter.unit(splitter.cuts[0], splitter.cuts[-1])
    assert unit.macs == conv_macs + gemm_macs and unit.weight_bytes == 4 * (4 * 27 + 5 * 256 + 256)


def test_coarsen_keeps_the_ends_and_at_most_the_asked_units():
    splitter = GraphSplitter(_residual_model())
    cuts = splitter.candidate_cuts(1)
    for count in (1, 2, 3, 10):
        kept = splitter.coarsen(cuts, count)
        assert kept[0] is cuts[0] and kept[-1] is cuts[-1] and len(kept) - 1 <= count


def test_a_cut_that_hides_a_live_tensor_is_refused():
    splitter = GraphSplitter(_residual_model())
    wrong_start = splitter.cuts[2].__class__(2, ("r",), 0)  # drops the skip tensor 'c'
    with pytest.raises(EdgevitError, match="not a valid cut"):
        splitter.extract(wrong_start, splitter.cuts[4])
