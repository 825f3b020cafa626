"""Every quantized tensor of an int8 build against onnxruntime's, group by group, given the same int8 inputs.

A QDQ model is a chain of groups: each reads int8 tensors through DequantizeLinear, computes in float (or, fused,
in integers) and ends in an activation QuantizeLinear. Two correct engines compute each group's int8 result alike
except where its exact value lies within float rounding of a half step (a tie: onnxruntime runs some convs as
float32 DequantizeLinear -> Conv -> QuantizeLinear, edgevit always in integers). One such tie, carried through a
deep model, can move the outputs by tens of steps, so comparing outputs alone cannot tell a correct build from a
wrong one (results/int8_zoo_verify.md). The check here is local instead:

- :func:`probe_model` adds every activation QuantizeLinear output to the model's outputs: an edgevit build of it
  (the *probe*) reports every int8 tensor it computes;
- :func:`cut_model` makes every reader of such a tensor read a graph input instead, so onnxruntime computes each
  group from edgevit's int8 inputs, in one run;
- :func:`check_groups` compares the two per group. **Rule: every value within 1 step, and every 1-step
  difference at a tie** (onnxruntime's float32 value before QuantizeLinear within ``TIE`` steps of the midpoint
  of the two results). A wrong requantization, scale, table or kernel moves values that are not at ties and
  fails, naming the group.

Works on any QDQ file (int8 or uint8 activations, per-tensor or per-axis), not only edgevit's quantizer's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

MAX_OUTPUTS = 256   # outputs an artifact may have (runtime/artifact.py)
TIE = 0.01   # steps: far above float32 rounding of a group's value (~1e-5 steps), far below a wrong result
PREFIX = "cut_"


def activation_quantizers(model) -> list:
    """The QuantizeLinear nodes of an ``onnx.ModelProto`` that quantize a computed tensor (not a constant)."""
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in constants]


def _typed(model, names: list[str]) -> list:
    """``ValueInfoProto`` for ``names`` (element type and shape from ONNX shape inference)."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model)
    infos = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    missing = [n for n in names if n not in infos or not infos[n].type.tensor_type.elem_type
               or not all(d.HasField("dim_value") for d in infos[n].type.tensor_type.shape.dim)]
    if missing:
        from ..errors import ModelImportError

        raise ModelImportError(f"cannot infer the type and static shape of quantized tensor '{missing[0]}' (ONNX "
                               "shape inference): the per-group int8 check needs them")
    return [infos[n] for n in names]


def probe_model(model):
    """A copy of ``model`` that also outputs every activation QuantizeLinear's tensor.

    Each tensor is an extra output of its own, after the model's outputs, as long as an artifact's
    ``MAX_OUTPUTS`` allow (mobilevitv2_050 has 300 such tensors); beyond that the smallest are flattened and
    concatenated in pairs (:func:`_probe_outputs`). Not all in one Concat: that compiles to one kernel picking
    each value's source through a chain of comparisons as long as the list (swiftformer_xs's 279 tensors:
    34.7 G instructions per inference on a Cortex-A76, 300x the model).

    Returns
    -------
    probe, layout
        The probe model and, per quantized tensor in graph order, ``(name, output index, offset, shape)``:
        where :func:`probe_tensors` finds it in the probe's outputs.
    """
    import onnx
    from onnx import helper, numpy_helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [q.output[0] for q in activation_quantizers(model)]
    infos = _typed(model, names)
    shapes = [tuple(d.dim_value for d in info.type.tensor_type.shape.dim) for info in infos]
    types = [info.type.tensor_type.elem_type for info in infos]
    flat = numpy_helper.from_array(np.array([-1], np.int64), "probe_flat_shape")
    probe.graph.initializer.append(flat)
    taken = {o.name for o in model.graph.output}
    layout = []
    groups = _probe_outputs([int(np.prod(s, dtype=np.int64)) for s in shapes], types,
                            MAX_OUTPUTS - len(model.graph.output))
    for index, members in enumerate(groups, start=len(model.graph.output)):
        if len(members) == 1 and names[members[0]] not in taken:   # the tensor itself: no kernel added
            (i,) = members
            probe.graph.output.append(infos[i])
            layout.append((names[i], index, 0, shapes[i]))
            continue
        offset, parts = 0, []
        for i in members:
            parts.append(f"probe_flat_{i}")
            probe.graph.node.append(helper.make_node("Reshape", [names[i], flat.name], [parts[-1]],
                                                     name=f"probe_reshape_{i}"))
            layout.append((names[i], index, offset, shapes[i]))
            offset += int(np.prod(shapes[i], dtype=np.int64))
        output = f"probe_concat_{index}"
        probe.graph.node.append(helper.make_node("Concat", parts, [output], axis=0, name=output))
        probe.graph.output.append(helper.make_tensor_value_info(output, types[members[0]], [offset]))
    order = {name: i for i, name in enumerate(names)}
    return probe, sorted(layout, key=lambda entry: order[entry[0]])


def _probe_outputs(sizes: list[int], types: list[int], budget: int) -> list[list[int]]:
    """Tensor indices per probe output, at most ``budget`` outputs: each tensor alone if they fit, else the
    largest alone and the rest, smallest first, concatenated per element type in groups as small as fit."""
    by_size = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    for per_output in range(2, len(sizes) + 2):
        for alone in range(min(len(sizes), budget), -1, -1):
            rest: dict[int, list[int]] = {}
            for i in by_size[alone:]:
                rest.setdefault(types[i], []).append(i)
            merged = [m[j:j + per_output] for m in rest.values() for j in range(0, len(m), per_output)]
            if alone + len(merged) <= budget:
                return [[i] for i in by_size[:alone]] + merged
    raise ValueError(f"{len(sizes)} tensors of {len(set(types))} types do not fit in {budget} outputs")


def probe_tensors(outputs: list[np.ndarray], layout) -> dict[str, np.ndarray]:
    """The quantized tensors by name, from a probe build's outputs (``layout`` from :func:`probe_model`)."""
    return {name: outputs[index].reshape(-1)[offset:offset + int(np.prod(shape, dtype=np.int64))].reshape(shape)
            for name, index, offset, shape in layout}


def cut_model(model, pre_quantize: bool = False):
    """``model`` with every reader of an activation QuantizeLinear output reading graph input ``cut_<name>``.

    Its outputs are those tensors (in graph order), so one onnxruntime run computes every group from the given
    int8 tensors. With ``pre_quantize`` the outputs are instead each QuantizeLinear's float input (through an
    Identity, which also keeps onnxruntime from fusing the group into an integer kernel): where each value lies
    between two steps.
    """
    import onnx
    from onnx import helper

    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    quantizers = activation_quantizers(cut)
    names = [q.output[0] for q in quantizers]
    infos = _typed(model, names)
    renamed = set(names)
    for node in cut.graph.node:
        node.input[:] = [PREFIX + i if i in renamed else i for i in node.input]
    cut.graph.input.extend(helper.make_value_info(PREFIX + i.name, i.type) for i in infos)
    del cut.graph.output[:]
    if pre_quantize:
        floats = [f"pre_{n}" for n in names]
        cut.graph.node.extend(helper.make_node("Identity", [q.input[0]], [f], name=f"probe_{f}")
                              for q, f in zip(quantizers, floats))
        cut.graph.output.extend(helper.make_empty_tensor_value_info(f) for f in floats)
    else:
        cut.graph.output.extend(infos)
    return cut


@dataclass
class GroupResult:
    """One QDQ group: edgevit's int8 tensor against onnxruntime's on edgevit's inputs."""

    tensor: str          # the QuantizeLinear output
    op: str              # the operator computing what is quantized (``input`` for a graph input)
    node: str            # its node name
    size: int
    max_steps: int
    one_step: int        # values 1 step from onnxruntime's
    ties: int            # of those, at a half-step tie
    farthest_tie: float | None = None   # the largest distance (steps) from the midpoint among the 1-step values
    differing: int = 0   # values differing at all
    nan: int = 0         # differing values whose float value before QuantizeLinear is NaN in onnxruntime

    @property
    def ok(self) -> bool:
        return self.max_steps <= 1 and self.one_step == self.ties

    def line(self) -> str:
        nan = (f"; {self.nan} of them NaN before QuantizeLinear in onnxruntime (e.g. 0/0 after a quantized "
               "denominator rounded to 0), which quantizes NaN to the lowest value (its clamp takes the maximum "
               "first); ONNX leaves it undefined" if self.nan else "")
        return (f"group {self.node or self.tensor} ({self.op} -> {self.tensor}): max {self.max_steps} steps, "
                f"{self.differing} of {self.size} values differ, {self.one_step} by 1 step, "
                f"{self.one_step - self.ties} of those not at a half-step tie{nan} -> {'PASS' if self.ok else 'FAIL'}")


@dataclass
class Int8Verification:
    """The int8 verdict of ``run --verify``: every group within 1 step (1-step values at ties only), the build's
    top-1 agreeing with onnxruntime's, and the probe build reproducing the artifact's outputs bit for bit (so the
    groups checked are the artifact's). The end-to-end step count is reported, not judged: a tie amplifies."""

    end_to_end: object                          # quantize.verify.Int8Comparison of the artifact's outputs
    groups: list[GroupResult] = field(default_factory=list)
    probe_differs: int = 0                      # output values where the probe build differs from the artifact

    @property
    def nonfinite(self) -> str | None:
        return self.end_to_end.nonfinite

    @property
    def failing(self) -> list[GroupResult]:
        return [g for g in self.groups if not g.ok]

    @property
    def ok(self) -> bool:
        return (self.nonfinite is None and not self.failing and self.probe_differs == 0
                and self.end_to_end.top1_agree and self.end_to_end.max_steps != float("inf"))

    def to_json(self) -> dict:
        e2e = self.end_to_end.to_json()
        return {"ok": self.ok, "rule": f"every QDQ group within 1 step of onnxruntime on edgevit's int8 inputs, "
                f"1-step values only at half-step ties (within {TIE} steps), top-1 agreeing",
                "groups_checked": len(self.groups), "groups_failing": len(self.failing),
                "values_one_step": sum(g.one_step for g in self.groups), "values_at_ties": sum(g.ties for g in self.groups),
                "probe_differs": self.probe_differs, "top1_agree": self.end_to_end.top1_agree,
                "max_steps": e2e["max_steps"], "differing": e2e["differing"], "end_to_end": e2e,
                "groups": [{**asdict(g), "ok": g.ok} for g in self.groups]}

    def summary(self) -> str:
        if self.nonfinite:
            return f"{self.nonfinite} -> FAIL"
        e2e = self.end_to_end
        one, ties = sum(g.one_step for g in self.groups), sum(g.ties for g in self.groups)
        groups = (f"{len(self.failing)} of {len(self.groups)} QDQ groups FAIL (first: {self.failing[0].line()})"
                  if self.failing else
                  f"{len(self.groups)} QDQ groups within 1 step of onnxruntime on edgevit's inputs")
        probe = (f"; the probe build differs from the artifact in {self.probe_differs} output values"
                 if self.probe_differs else "")
        return (f"{groups} ({one} values at 1 step, {ties} of them half-step ties){probe}; end to end max "
                f"{e2e.max_steps:g} output quantization steps, {e2e.differing} values differ, top-1 "
                f"{'agrees' if e2e.top1_agree else 'DIFFERS'} -> {'PASS' if self.ok else 'FAIL'}")


def _parameters(node, constants: dict, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """A QuantizeLinear's scale and zero point, shaped to broadcast over its input (per tensor or per axis)."""
    from onnx import helper

    scale = constants[node.input[1]].astype(np.float64)
    zero = constants[node.input[2]].astype(np.float64) if len(node.input) > 2 and node.input[2] else np.zeros(1)
    if scale.size > 1:
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1) % rank
        shape = [1] * rank
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), np.broadcast_to(zero, scale.shape).reshape(shape)
    return scale, zero


def check_groups(model, inputs: list[np.ndarray], tensors: dict[str, np.ndarray]) -> list[GroupResult]:
    """Compare edgevit's int8 ``tensors`` (activation QuantizeLinear outputs by name) with onnxruntime's.

    onnxruntime runs :func:`cut_model` fed with the model's ``inputs`` and edgevit's tensors, so every group gets
    edgevit's own int8 inputs; a second run of the ``pre_quantize`` cut gives onnxruntime's float32 value before
    each QuantizeLinear, which says whether a 1-step difference is a half-step tie.

    Raises
    ------
    ModelImportError
        onnxruntime cannot load the cut model.
    """
    from onnx import numpy_helper

    from ..ort_session import onnxruntime_session

    graph_inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    feeds = {**dict(zip(graph_inputs, inputs)), **{PREFIX + n: a for n, a in tensors.items()}}
    cut = cut_model(model)
    names = [o.name for o in cut.graph.output]
    theirs = onnxruntime_session(cut.SerializeToString()).run(None, feeds)
    floats = dict(zip(names, onnxruntime_session(cut_model(model, pre_quantize=True).SerializeToString())
                      .run(None, feeds)))
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producer = {o: n for n in model.graph.node for o in n.output}
    quantizer = {q.output[0]: q for q in activation_quantizers(model)}
    results = []
    for name, reference in zip(names, theirs):
        mine = tensors[name].astype(np.int64)
        diff = np.abs(mine - reference.astype(np.int64))
        source = producer.get(quantizer[name].input[0])
        result = GroupResult(name, source.op_type if source else "input", source.name if source else "",
                             int(diff.size), int(diff.max()) if diff.size else 0, int(np.count_nonzero(diff == 1)), 0,
                             differing=int(np.count_nonzero(diff)),
                             nan=int(np.count_nonzero(np.isnan(floats[name]) & (diff != 0))))
        if result.one_step:
            scale, zero = _parameters(quantizer[name], constants, diff.ndim)
            position = floats[name].astype(np.float64) / scale + zero   # in steps, as QuantizeLinear rounds it
            midpoint = (mine + reference.astype(np.int64)) / 2
            distance = np.abs(position - midpoint)[diff == 1]
            result.ties, result.farthest_tie = int(np.count_nonzero(distance <= TIE)), round(float(distance.max()), 6)
        results.append(result)
    return results
