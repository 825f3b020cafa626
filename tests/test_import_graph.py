"""The package's import graph: no cycles, and no module imports a layer above its own (imports inside functions
count too: a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgevit"

# Layers, lowest first. A module may import its own layer and those below, never one above. Data flows
# model -> graph -> plan -> per-device build -> artifact -> runtime; the board side sits at the bottom with the
# stdlib-only helpers, so the host may import it and it never imports the host.
LAYERS = [
    ("base", ["edgevit", "edgevit.errors", "edgevit.settings", "edgevit.tables", "edgevit.outputs", "edgevit.arrays",
              "edgevit.runtime"]),
    ("board", ["edgevit.pynq.board", "edgevit.pynq.manifest", "edgevit.pynq.numpy_graph", "edgevit.pynq.driver",
               "edgevit.pynq.selftest", "edgevit.pynq.sim_device", "edgevit.pynq.stage_worker",
               "edgevit.distributed.dataplane", "edgevit.distributed.rpc_listener", "edgevit.distributed.keys_cli",
               "edgevit.distributed.accelerator_stage", "edgevit.distributed.node"]),
    ("targets", ["edgevit.targets"]),
    # the model registry (zoo), the models it names, their datasets and the one training loop
    ("models", ["edgevit.zoo", "edgevit.training", "edgevit.moe", "edgevit.datasets"]),
    ("graph", ["edgevit.frontend", "edgevit.frontend_tflite", "edgevit.static_shapes", "edgevit.ort_session",
               "edgevit.reference", "edgevit.reference_litert",
               "edgevit.quantize", "edgevit.memory_estimate", "edgevit.litert", "edgevit.litert_int8"]),
    ("build", ["edgevit.backends", "edgevit.compiler", "edgevit.hls", "edgevit.emulation", "edgevit.pynq",
               "edgevit.execute"]),
    ("plan", ["edgevit.distributed"]),
    # entry points and measurements over every path (the MoE evaluation runs the CPU and FPGA builds)
    ("tools", ["edgevit.bench", "edgevit.bench_report", "edgevit.bench_worker", "edgevit.cli", "edgevit.distributed.__main__",
               "edgevit.moe.evaluate"]),
]
# Known crossings, each with its reason. Keep this short: a new entry needs a reason a reviewer accepts.
ALLOWED = {
    # off-board only (--simulate): the FPGA node builds the C-simulation library that stands in for the PL
    ("edgevit.distributed.accelerator_stage", "edgevit.pynq.simlib"),
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "_data" in path.relative_to(PACKAGE).parts:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else (node.module or "")
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("edgevit") and target != name:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(name: str) -> int:
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    assert best is not None, f"{name} is in no layer: add it to LAYERS in {__file__}"
    return best[0]


def test_no_import_cycles():
    graph = _graph()
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):   # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{a} ({LAYERS[_layer(a)][0]}) imports {b} ({LAYERS[_layer(b)][0]})"
              for a, deps in sorted(_graph().items()) for b in sorted(deps)
              if _layer(b) > _layer(a) and (a, b) not in ALLOWED]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """Planted: the checks above are not vacuous."""
    pkg = tmp_path / "edgevit"
    (pkg / "runtime").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "runtime" / "__init__.py").write_text("from ..compiler import x\n")   # board side -> build: upward
    (pkg / "compiler.py").write_text("from .frontend import y\n")
    (pkg / "frontend.py").write_text("def f():\n    from .compiler import x\n")   # lazy, still a cycle
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    graph = _graph()
    assert graph["edgevit.runtime"] == {"edgevit.compiler"}
    assert graph["edgevit.frontend"] == {"edgevit.compiler"} and graph["edgevit.compiler"] == {"edgevit.frontend"}
    assert _layer("edgevit.compiler") > _layer("edgevit.runtime")
    try:
        test_no_import_cycles()
    except AssertionError as exc:
        assert "edgevit.compiler" in str(exc)
    else:
        raise AssertionError("the planted cycle was not found")
