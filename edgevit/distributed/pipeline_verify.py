"""``edgevit infer --verify``: a pipeline's results against onnxruntime.

- **Float plans**: every result against onnxruntime running the whole model (``PLAN_DIR/model.onnx``), by the
  rule of ``edgevit run --verify`` (``reference.verify``), onnxruntime once per distinct input.
- **int8 (QDQ) plans**: the per-group rule of ``run --verify`` (docs/int8.md), stage by stage. Comparing the
  final outputs with onnxruntime cannot tell a correct int8 pipeline from a wrong one: a value at a half-step tie
  may round the other way and the flip grows through the later stages. So the host runs the first input through
  the stages once more, one stage at a time on the same nodes (``PipelineRunner.run_stages``: each node's
  ``run``, the code its stream runs), each fed the previous node's outputs. Per stage, the probe of the stage's
  QDQ model (every activation QuantizeLinear's tensor as an output, built for the stage's target, cached) runs
  on the host (under qemu for an aarch64 stage) on that stage's actual inputs; the stage passes when

  1. its node's outputs equal the probe's bit for bit (else the groups checked are not what the node computed:
     a different artifact, or a node that changed a value);
  2. every QDQ group is within 1 step of onnxruntime given the probe's int8 inputs, 1-step values at half-step
     ties only (``quantize.groups.check_groups``);
  3. every stage output that is not a quantized tensor (a cut between an operator and its QuantizeLinear sends
     the float value) is within ``FLOAT_RTOL`` (relative to its largest value) of onnxruntime computing it from
     the probe's int8 tensors: the next stage's groups start from that value, so nothing else checks it.

  The streamed result of that input must equal the stage-by-stage run's bit for bit, and every result's top-1
  class must agree with onnxruntime on the whole model (or differ only at a tie within ``MAX_STEPS`` output
  steps); the end-to-end step count is reported, not judged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

FLOAT_RTOL = 1e-5   # the float rule's tolerance (reference.compare), for float tensors a stage sends


def whole_model(plan: dict) -> Path:
    """The plan's whole model (``PLAN_DIR/model.onnx``): onnxruntime's reference for every result."""
    return Path(plan["artifact_root"]) / plan["whole_model"]


def is_int8_plan(plan: dict) -> bool:
    """Whether the plan's whole model is a QDQ (int8) model, verified by the per-stage int8 rule."""
    import onnx

    from ..quantize import is_qdq_model

    return is_qdq_model(onnx.load(str(whole_model(plan)), load_external_data=False))


def check_int8_verifiable(plan: dict) -> None:
    """Raise :class:`InputError` before streaming when ``--verify`` cannot apply the int8 rule to a plan."""
    fpga = [s["name"] for s in plan["stages"] if "artifact" not in s]
    if fpga:
        raise InputError(f"--verify of an int8 plan needs a compiled artifact per stage, and {fpga[0]} runs on an "
                         "FPGA accelerator: not supported (verify the accelerator with `edgevit hls` C-simulation, "
                         "the rest with a plan without the FPGA node)")
    missing = [s["name"] for s in plan["stages"] if "onnx" not in s]
    if missing:
        raise InputError(f"{missing[0]} of this plan names no stage model ('onnx'): make the plan again with "
                         "`edgevit plan` for the int8 --verify")


def verify_float(plan: dict, items: list, results: list[dict], rtol: float) -> dict:
    """Every result against onnxruntime running the whole model (``reference.verify``); onnxruntime runs once
    per distinct input. Returns ``{"ok", "max_rel_error", "checked", "rtol", "why"}``."""
    from ..reference import run_onnxruntime, verify

    whole = whole_model(plan)
    worst, checked = 0.0, 0
    expected: dict[int, list] = {}
    for item, result in zip(items, results):
        if result["outputs"] is None:
            return {"ok": False, "max_rel_error": float("nan"), "checked": checked, "rtol": rtol,
                    "why": f"an input got no result ({result['error']})"}
        if id(item) not in expected:
            expected[id(item)] = run_onnxruntime(whole, item)
        comparison = verify(result["outputs"], whole, item, rtol, reference=expected[id(item)])
        if not comparison.ok:
            return {"ok": False, "max_rel_error": comparison.max_rel_error, "checked": checked, "rtol": rtol,
                    "why": comparison.summary()}
        worst, checked = max(worst, comparison.max_rel_error), checked + 1
    return {"ok": True, "max_rel_error": worst, "checked": checked, "rtol": rtol, "why": ""}


@dataclass
class FloatOutput:
    """A float tensor a stage sends, against onnxruntime computing it from the stage's int8 tensors."""

    tensor: str
    max_rel_error: float
    nonfinite: str | None = None

    @property
    def ok(self) -> bool:
        return self.nonfinite is None and self.max_rel_error <= FLOAT_RTOL

    def line(self) -> str:
        what = self.nonfinite or f"max rel error {self.max_rel_error:.3g} (tolerance {FLOAT_RTOL:g})"
        return f"float output {self.tensor}: {what} -> {'PASS' if self.ok else 'FAIL'}"


@dataclass
class StageVerification:
    """One stage of an int8 plan on one input: its node's outputs, the probe of its QDQ model, its groups."""

    name: str
    target: str
    node: str
    groups: list = field(default_factory=list)        # quantize.groups.GroupResult
    floats: list[FloatOutput] = field(default_factory=list)
    probe_differs: int = 0                            # output values where the node differs from the probe

    @property
    def failing(self) -> list[str]:
        """One line per failure: the probe, each failing group, each failing float output."""
        lines = [f"the node's outputs differ from the probe build of the stage's model in {self.probe_differs} "
                 "value(s): it did not compute what the stage's QDQ model computes"] if self.probe_differs else []
        return lines + [g.line() for g in self.groups if not g.ok] + [f.line() for f in self.floats if not f.ok]

    @property
    def ok(self) -> bool:
        return not self.failing

    def summary(self) -> str:
        one, ties = sum(g.one_step for g in self.groups), sum(g.ties for g in self.groups)
        floats = f", {len(self.floats)} float output(s) within {FLOAT_RTOL:g}" if self.floats else ""
        head = f"{self.name} ({self.target} on {self.node})"
        if self.failing:
            return f"{head}: {self.failing[0]} -> FAIL"
        return (f"{head}: {len(self.groups)} QDQ groups within 1 step of onnxruntime on the node's inputs ({one} "
                f"values at 1 step, {ties} of them half-step ties){floats}; outputs equal the probe's -> PASS")

    def to_json(self) -> dict:
        return {"stage": self.name, "target": self.target, "node": self.node, "ok": self.ok,
                "groups_checked": len(self.groups), "groups_failing": sum(not g.ok for g in self.groups),
                "probe_differs": self.probe_differs, "failing": self.failing,
                "float_outputs": [{**asdict(f), "ok": f.ok} for f in self.floats],
                "groups": [{**asdict(g), "ok": g.ok} for g in self.groups]}


@dataclass
class PipelineInt8Verification:
    """The int8 verdict of ``infer --verify`` (module docstring): every stage on the checked input, the stream
    reproducing the stage-by-stage run, and every result's top-1 against onnxruntime on the whole model."""

    stages: list[StageVerification]
    end_to_end: list = field(default_factory=list)    # quantize.verify.Int8Comparison per result
    stream_differs: int = 0
    missing: str | None = None                        # a result that never came

    @property
    def failure(self) -> str | None:
        """The first failure as one line naming the stage (None: PASS)."""
        if self.missing:
            return f"an input got no result ({self.missing})"
        for stage in self.stages:
            if not stage.ok:
                return f"{stage.name}: {stage.failing[0]}"
        if self.stream_differs:
            return (f"the streamed result differs from the stage-by-stage run of the same input in "
                    f"{self.stream_differs} value(s)")
        for index, comparison in enumerate(self.end_to_end):
            if comparison.nonfinite or not comparison.top1_agree or comparison.max_steps == float("inf"):
                return f"result {index} against onnxruntime on the whole model: {comparison.summary()}"
        return None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def summary(self) -> str:
        steps = max((c.max_steps for c in self.end_to_end), default=0.0)
        return (f"{sum(s.ok for s in self.stages)} of {len(self.stages)} stage(s) pass the int8 per-group rule on "
                f"input 0; end to end max {steps:g} output quantization steps over {len(self.end_to_end)} "
                f"result(s) (reported, not judged), top-1 "
                f"{'agrees' if all(c.top1_agree for c in self.end_to_end) else 'DIFFERS'} -> "
                f"{'PASS' if self.ok else 'FAIL'}")

    def to_json(self) -> dict:
        return {"ok": self.ok, "rule": "int8 per stage: every QDQ group within 1 step of onnxruntime on the "
                "node's inputs (1-step values at half-step ties), outputs equal to the stage's probe build, float "
                f"stage outputs within {FLOAT_RTOL:g}; the stream equal to the stage-by-stage run; top-1 agreeing",
                "checked": len(self.end_to_end), "why": self.failure or "",
                "max_steps": max((c.max_steps for c in self.end_to_end), default=0.0),
                "stream_differs": self.stream_differs, "stages": [s.to_json() for s in self.stages],
                "end_to_end": [c.to_json() for c in self.end_to_end]}


def verify_int8(plan: dict, items: list, results: list[dict], stage_runs: list[tuple[list, list]],
                nodes: list[str]) -> PipelineInt8Verification:
    """The int8 rule of ``infer --verify`` (module docstring).

    Parameters
    ----------
    plan
        A pipeline plan of a QDQ model (``plan.read_plan``).
    items, results
        The streamed inputs and their results (``PipelineRunner.stream``).
    stage_runs
        ``items[0]`` run stage by stage on the nodes (``PipelineRunner.run_stages``): per stage its inputs and
        its node's outputs (None when a result is missing: then that is the verdict).
    nodes
        Per stage, the node that ran it (for the report).

    Returns
    -------
    PipelineInt8Verification
    """
    from ..reference import run_onnxruntime, verify

    missing = next((r["error"] for r in results if r["outputs"] is None), None)
    if missing is not None:
        return PipelineInt8Verification([], missing=missing)
    whole = whole_model(plan)
    stages = [_verify_stage(spec, inputs, outputs, node, plan["model"])
              for spec, (inputs, outputs), node in zip(plan["stages"], stage_runs, nodes)]
    verdict = PipelineInt8Verification(stages)
    expected: dict[int, list] = {}
    for item, result in zip(items, results):
        if id(item) not in expected:
            expected[id(item)] = run_onnxruntime(whole, item)
        verdict.end_to_end.append(verify(result["outputs"], whole, item, FLOAT_RTOL, reference=expected[id(item)]))
    streamed, staged = results[0]["outputs"], stage_runs[-1][1]
    verdict.stream_differs = sum(int(np.count_nonzero(a != b)) if a.shape == b.shape else max(a.size, b.size)
                                 for a, b in zip(streamed, staged))
    return verdict


def _verify_stage(spec: dict, inputs: list, outputs: list, node: str, model_name: str) -> StageVerification:
    """One stage by the int8 rule: its probe on ``inputs`` (on the host, or under qemu), its groups, its float
    outputs; ``outputs`` are what its node computed."""
    from ..execute import probe_int8
    from ..quantize.groups import check_groups

    model, probed, tensors = probe_int8(Path(spec["onnx"]), spec["target"], inputs, build=spec["sha256"],
                                        name=f"{model_name} {spec['name']}")
    differs = sum(int(np.count_nonzero(a != b)) if a.shape == b.shape else max(a.size, b.size)
                  for a, b in zip(probed[:len(outputs)], outputs))
    return StageVerification(spec["name"], spec["target"], node, check_groups(model, inputs, tensors),
                             _float_outputs(model, inputs, tensors, outputs), differs)


def _float_outputs(model, inputs: list, tensors: dict, outputs: list) -> list[FloatOutput]:
    """The stage outputs that are not quantized tensors, against onnxruntime computing them from ``tensors``
    (the probe's int8 tensors) and the stage's ``inputs``."""
    from onnx import helper

    from ..ort_session import onnxruntime_session
    from ..quantize.groups import PREFIX, cut_model
    from ..reference import compare

    names = [o.name for o in model.graph.output]
    floats = [i for i, name in enumerate(names) if name not in tensors]
    if not floats:
        return []
    cut = cut_model(model)
    del cut.graph.output[:]
    cut.graph.output.extend(helper.make_empty_tensor_value_info(names[i]) for i in floats)
    graph_inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    feeds = {**dict(zip(graph_inputs, inputs)), **{PREFIX + n: a for n, a in tensors.items()}}
    feeds = {i.name: feeds[i.name] for i in cut.graph.input if i.name in feeds}
    theirs = onnxruntime_session(cut.SerializeToString()).run(None, feeds)
    results = []
    for index, reference in zip(floats, theirs):
        comparison = compare([outputs[index]], [reference], FLOAT_RTOL)
        results.append(FloatOutput(names[index], comparison.max_rel_error, comparison.nonfinite))
    return results
