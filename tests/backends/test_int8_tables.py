"""The table lookups of ``edgevit.backends.int8_tables``: the AArch64 kernel (``tbl``/``tbx`` over a table held in
registers) against numpy under qemu, every one of the 256 inputs and a tail shorter than a vector."""

import numpy as np
import pytest
from test_int8_dot_kernels import _run_under_qemu
from tvm import relax

from edgevit.backends import tvm_compiler
from edgevit.backends.int8_tables import emit_lookup
from edgevit.targets import get_target


@pytest.mark.qemu
def test_neon_lookup_matches_numpy_under_qemu(tmp_path):
    rng = np.random.default_rng(3)
    table = rng.integers(-128, 128, size=256).astype(np.int8)
    x = np.concatenate([np.arange(-128, 128), rng.integers(-128, 128, size=87)]).astype(np.int8).reshape(1, 7, 7, 7)
    bb = relax.BlockBuilder()
    data = relax.Var("x", relax.TensorType(x.shape, "int8"))
    with tvm_compiler.make_target(get_target("rpi4").require_cpu().tvm):
        with bb.function("main", [data]):
            with bb.dataflow():
                out = bb.emit_output(bb.emit(emit_lookup(bb, table, data)))
            bb.emit_func_output(out)
    mod = bb.get()
    assert [gv.name_hint for gv in mod.get_global_vars() if gv.name_hint != "main"] == ["int8_lookup_neon"]
    (got,), (disassembly,) = _run_under_qemu("rpi4", [mod], [x], tmp_path)
    np.testing.assert_array_equal(got, table[x.astype(np.int32) + 128])
    assert "tbx" in disassembly and "tbl" in disassembly
