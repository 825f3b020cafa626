"""Every board-side TVM call edgevit makes: load a compiled library and run it in TVM's Relax VM.

Only ``tvm.runtime`` is used, so this works with ``TVM_USE_RUNTIME_LIB=1`` (runtime-only import, 2.4x faster
to start under qemu) and on boards without TVM's compiler.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np


_EXTRA_LIBS: list = []   # keeps the runtime extras loaded


def register_builtins() -> None:
    """Make available the packed functions Relax builds call that runtime-only mode does not load.

    Per-patch MoE routing (ONNX TopK, NonZero) needs ``tvm.contrib.sort.*``, which live in
    ``libtvm_runtime_extra`` (loaded by ``import tvm`` only with the compiler), and ``relax.run.nonzero``, which
    ``tvm.relax.op.set`` defines in Python and a board never imports: this registers the same numpy function.
    """
    import tvm.runtime
    import tvm_ffi

    if tvm_ffi.get_global_func("tvm.contrib.sort.topk", allow_missing=True) is None:
        from tvm import libinfo
        from tvm_ffi.libinfo import load_lib_ctypes

        try:
            _EXTRA_LIBS.append(load_lib_ctypes("tvm", "tvm_runtime_extra", "RTLD_LOCAL",
                                               extra_lib_paths=libinfo.package_lib_paths()))
        except (OSError, RuntimeError):
            pass   # a runtime without the extras: the VM names the missing function if a model needs it
    if tvm_ffi.get_global_func("relax.run.nonzero", allow_missing=True) is None:
        def nonzero(x):
            return tvm.runtime.tensor(np.stack(np.atleast_1d(x.numpy()).nonzero(), axis=0))

        tvm_ffi.register_global_func("relax.run.nonzero", nonzero)


class CompiledModel:
    """A compiled library loaded into TVM's Relax virtual machine on the CPU."""

    def __init__(self, library: Path):
        import tvm.runtime
        from tvm.runtime import vm

        register_builtins()

        self._tvm = tvm.runtime
        self.vm = vm.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.runtime.cpu())
        self._main = self.vm["main"]

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run ``main`` on numpy inputs (in the model's input order); return its outputs as numpy arrays."""
        out = self._main(*(self._tvm.tensor(np.ascontiguousarray(x)) for x in inputs))
        items = out if isinstance(out, (list, tuple)) or type(out).__name__ == "Array" else [out]
        return [item.numpy() for item in items]


def version() -> str:
    """The TVM runtime version."""
    import tvm

    return tvm.__version__


@contextlib.contextmanager
def thread_count(threads: int | None):
    """Run TVM's thread pool in this process with ``threads`` threads inside the block (None: leave it).

    The pool cannot grow past the size it started with (``TVM_NUM_THREADS``, else the core count). Without
    ``TVM_NUM_THREADS`` the pool ignored the setting: under ``thread_count(1)`` every parallel kernel still
    cost a 2-thread launch (16 us a call on the loaded 2-core VM; 0.15 us with the variable set), so it is set
    to the core count here, before the pool starts."""
    import os

    if threads is None:
        yield
        return
    os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
    import tvm.runtime  # noqa: F401 - registers the thread pool's functions
    import tvm_ffi

    config = tvm_ffi.get_global_func("runtime.config_threadpool")
    before = int(tvm_ffi.get_global_func("runtime.NumThreads")())
    config(0, threads)
    try:
        yield
    finally:
        config(0, before)
