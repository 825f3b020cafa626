"""The model registry: every kind of model is found by name through one lookup, and reaches the compilers the
same way (ONNX through the frontend; the torch module for the HLS importer)."""

import numpy as np
import pytest

from edgevit import zoo
from edgevit.errors import InputError, UnknownNameError
from edgevit.frontend import load_model


@pytest.mark.parametrize("name, kind", [("mobilevit_xxs", zoo.ZooEntry), ("tiny_mobilevit", zoo.TrainedEntry),
                                        ("fashion-vit-tiny", zoo.TrainedEntry), ("moe_vit_tiny:parity", zoo.MoeEntry)])
def test_every_kind_is_found_by_name(name, kind):
    entry = zoo.lookup(name)
    assert isinstance(entry, kind) and entry.name == name and zoo.is_known(name)
    assert len(entry.input_shape) == 4 and entry.family and entry.data and entry.source


def test_an_unknown_name_lists_every_kind():
    with pytest.raises(UnknownNameError) as err:
        zoo.lookup("resnet50")
    message = str(err.value)
    assert "mobilevit_xxs" in message and "tiny_mobilevit" in message and "fashion-vit" in message
    assert "PRESET[:TASK]" in message and not zoo.is_known("resnet50")


def test_an_moe_preset_without_its_task_is_its_first_task():
    assert zoo.lookup("moe_vit_tiny").name == "moe_vit_tiny:digit"
    with pytest.raises(UnknownNameError, match="tasks: digit, parity"):
        zoo.lookup("moe_vit_tiny:colour")


def test_a_model_trained_here_is_known_by_name():
    model = load_model("tiny_mobilevit")
    assert model.inputs[0].shape == (1, 1, 8, 8) and "digits" in model.source


def test_a_fashion_model_compiles_by_name_like_any_other():
    # the class-split demo models are registry entries too: `edgevit compile fashion-vit-tiny` needs no special case
    model = load_model("fashion-vit-tiny")
    assert model.inputs[0].shape == (1, 1, 28, 28) and "Fashion-MNIST" in model.source
    with pytest.raises(InputError, match="fixed input size 1x1x28x28"):
        load_model("fashion-vit-tiny", "1,1,32,32")


def test_examples_come_from_the_models_own_dataset():
    calibration, tests = zoo.lookup("fashion-vit-tiny").examples(3)
    assert len(calibration) == len(tests) == 3 and calibration[0].shape == (1, 1, 28, 28)
    assert not np.array_equal(calibration[0], tests[0])   # training and test splits
    assert zoo.lookup("mobilevit_xxs").examples(3) is None   # the zoo has no dataset: random inputs


def test_a_task_build_carries_its_expert_summary():
    meta = zoo.lookup("moe_vit_tiny:parity").metadata()["moe"]
    assert meta["name"] == "moe_vit_tiny:parity" and meta["params"] <= meta["params_all_tasks"]
