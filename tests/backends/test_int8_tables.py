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


@pytest.mark.parametrize("shape, pixels", [((1, 8, 4, 8), 32), ((1, 12, 7, 7), 64), ((1, 4, 14, 14), 208)],
                         ids=["whole-vectors", "7x7-padded", "14x14-padded"])
def test_vbmi_lookup_pack_matches_numpy(shape, pixels):
    """The x86 lookup + 1x1 conv input packing (``vpermi2b``): every int8 input, pixels padded past the map
    (repeating the last one), a tail shorter than 16 pixels."""
    import tvm
    from tvm.target import codegen

    from edgevit.backends.int8_tables import lookup_pack_vbmi

    target = tvm_compiler.make_target(get_target("host").require_cpu().tvm)
    if not codegen.target_has_features("avx512vbmi", target):
        pytest.skip("this CPU has no AVX-512 VBMI")
    _, c, h, w = shape
    func = lookup_pack_vbmi(c, h, w, pixels).with_attr("global_symbol", "main")
    lib = tvm.tirx.build(tvm.IRModule({"main": func}), target=target)
    rng = np.random.default_rng(5)
    table = rng.integers(0, 256, size=256).astype(np.uint8)
    x = rng.integers(-128, 128, size=shape).astype(np.int8)
    x.flat[:min(256, x.size)] = np.arange(-128, 128)[:min(256, x.size)]
    out = tvm.runtime.tensor(np.zeros((c // 4, pixels, 4), np.uint8))
    lib["main"](tvm.runtime.tensor(table), tvm.runtime.tensor(x), out)
    columns = x.reshape(c, h * w)[:, np.minimum(np.arange(pixels), h * w - 1)]
    expected = table[columns.astype(np.int32) + 128].reshape(c // 4, 4, pixels).transpose(0, 2, 1)
    np.testing.assert_array_equal(out.numpy(), expected)
