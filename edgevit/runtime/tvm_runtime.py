"""Every board-side TVM call edgevit makes: load a compiled library and run it in TVM's Relax VM.

Only ``tvm.runtime`` is used, so this works with ``TVM_USE_RUNTIME_LIB=1`` (runtime-only import, 2.4x faster
to start under qemu) and on boards without TVM's compiler.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class CompiledModel:
    """A compiled library loaded into TVM's Relax virtual machine on the CPU."""

    def __init__(self, library: Path):
        import tvm.runtime
        from tvm.runtime import vm

        self._tvm = tvm.runtime
        self._vm = vm.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.runtime.cpu())
        self._main = self._vm["main"]

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run ``main`` on numpy inputs (in the model's input order); return its outputs as numpy arrays."""
        out = self._main(*(self._tvm.tensor(np.ascontiguousarray(x)) for x in inputs))
        items = out if isinstance(out, (list, tuple)) or type(out).__name__ == "Array" else [out]
        return [item.numpy() for item in items]


def version() -> str:
    """The TVM runtime version."""
    import tvm

    return tvm.__version__
