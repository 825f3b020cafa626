"""Build a small ONNX file the way ``edgevit compile`` does, for tests that look at the fused kernels and run them."""

from __future__ import annotations

import onnx

from edgevit.backends import tvm_compiler
from edgevit.frontend import from_onnx_file
from edgevit.targets import get_target


def fused_for(path, target: str = "host"):
    """(input specs, Relax module, CPU target, fused module) of the ONNX file ``path`` for ``target``."""
    specs = from_onnx_file(path).inputs
    mod = tvm_compiler.import_onnx(onnx.load(str(path)), specs)
    cpu = get_target(target).require_cpu()
    return specs, mod, cpu, tvm_compiler.fused_module(mod, cpu)


def host_machine(mod, cpu):
    """A Relax VM running ``mod`` built for the host target ``cpu``."""
    import tvm
    from tvm.runtime import vm

    return vm.VirtualMachine(tvm_compiler.build(mod, cpu), tvm.runtime.cpu())
