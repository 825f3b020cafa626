import numpy as np
import pytest

from tiny_onnx_models import tiny_cnn_onnx
from edgevit.errors import InputError, ModelImportError, UnknownNameError
from edgevit.frontend import from_torch, load_model, parse_input_shape


def test_static_onnx_file_is_read_with_its_shapes(tiny_onnx):
    model = load_model(str(tiny_onnx))
    assert [(s.name, s.shape, s.dtype) for s in model.inputs] == [("x", (1, 3, 16, 16), "float32")]


def test_symbolic_batch_needs_input_shape(tmp_path):
    path = tiny_cnn_onnx(tmp_path / "dyn.onnx", batch="N")
    with pytest.raises(InputError, match="--input-shape"):
        load_model(str(path))
    model = load_model(str(path), "2,3,16,16")
    assert model.inputs[0].shape == (2, 3, 16, 16)
    assert model.name == "dyn"
    assert model.load().graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


def test_input_shape_that_contradicts_the_model_is_refused(tmp_path):
    path = tiny_cnn_onnx(tmp_path / "dyn.onnx", batch="N")
    with pytest.raises(InputError, match="does not fit"):
        load_model(str(path), "1,3,32,32")
    with pytest.raises(InputError, match="unknown input"):
        load_model(str(path), "nope:1,3,16,16")


@pytest.mark.parametrize("text, expected", [
    ("1,3,224,224", {None: (1, 3, 224, 224)}),
    ("a:1,3;b:2x4", {"a": (1, 3), "b": (2, 4)}),
])
def test_parse_input_shape(text, expected):
    assert parse_input_shape(text) == expected


@pytest.mark.parametrize("text", ["1,3,a", "1,0,3"])
def test_parse_input_shape_rejects_garbage(text):
    with pytest.raises(InputError):
        parse_input_shape(text)


def test_garbage_file_is_not_an_onnx_model(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x08\x07this is not protobuf\xff\xff\xff")
    with pytest.raises(ModelImportError, match="not a valid ONNX model"):
        load_model(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(ModelImportError, match="not found"):
        load_model(str(tmp_path / "nothing.onnx"))


def test_unknown_zoo_name_lists_the_zoo():
    with pytest.raises(UnknownNameError, match="mobilevit_xxs"):
        load_model("mobilevit_tiny")


def test_torch_module_is_exported_through_onnx():
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GELU(), torch.nn.Flatten(),
                                 torch.nn.Linear(4 * 6 * 6, 5))
    model = from_torch(module, (1, 3, 8, 8), name="small")
    assert model.name == "small" and model.inputs[0].shape == (1, 3, 8, 8)
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    got = ort.InferenceSession(str(model.onnx_path)).run(None, {model.inputs[0].name: x})[0]
    np.testing.assert_allclose(got, module(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
