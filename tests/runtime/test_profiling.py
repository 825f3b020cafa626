"""``runtime.profiling``: per-kernel times of a compiled model (no timings asserted)."""

from __future__ import annotations

from edgevit.frontend import TensorSpec
from edgevit.reference import random_inputs
from edgevit.runtime.artifact import Artifact
from edgevit.runtime.profiling import profile_kernels
from edgevit.runtime.tvm_runtime import CompiledModel


def test_profile_lists_every_kernel(tiny_host_artifact):
    with Artifact.open(tiny_host_artifact) as artifact:
        specs = [TensorSpec.from_json(s) for s in artifact.metadata["inputs"]]
        rows = profile_kernels(CompiledModel(artifact.library), random_inputs(specs, 0), runs=2)
    names = [r["name"] for r in rows]
    assert any("conv2d" in n for n in names)
    assert all(r["calls"] >= 1 and r["ms"] >= 0 for r in rows)
    assert abs(sum(r["percent"] for r in rows) - 100) < 1e-6
