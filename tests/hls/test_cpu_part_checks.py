"""The check a CPU part passes before ``edgevit hls`` writes it (edgevit/hls/onnx_import.write_cpu_tail): a part
whose outputs are NaN (onnxruntime's too) is not written, with the reason; the accelerator project stands."""

import numpy as np
import pytest

from edgevit.hls import project

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


class _SqrtTail(torch.nn.Module):
    """conv (the accelerator) -> sqrt of values that are mostly negative (NaN) -> mean: the CPU part."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, 2, 1)

    def forward(self, x):
        return torch.sqrt(self.conv(x) - 5.0).mean((2, 3))


def test_a_cpu_part_with_nan_outputs_is_not_written(tmp_path):
    from edgevit.frontend import from_torch

    torch.manual_seed(0)
    mp = onnx.load(str(from_torch(_SqrtTail().eval(), (1, 3, 8, 8), "sqrt_tail").onnx_path))
    samples = [np.random.default_rng(k).standard_normal((1, 3, 8, 8)) for k in range(2)]
    result, out = project.generate_onnx(mp, "pynq-z2", tmp_path / "prj", samples, test_inputs=samples)
    assert result.cut is not None and (out / "program.json").is_file()
    assert not (out / "cpu_tail.json").exists()
    assert "relative error nan" in result.tail_error and "\n" not in result.tail_error
