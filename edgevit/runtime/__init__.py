"""The board side of edgevit: what runs on a device (and under qemu here).

Nothing in this package imports the compiler side (no ``tvm.relax``, torch or onnx): boards have little
memory, and TVM's runtime-only mode (``TVM_USE_RUNTIME_LIB=1``) forbids ``tvm.relax``.
The host may import this package; this package never imports the host side.
"""

import platform


def host_arch() -> str:
    """This machine's architecture in the names targets use (``x86_64``, ``aarch64``, ``armv7l``...)."""
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
