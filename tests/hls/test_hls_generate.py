"""``edgevit hls NAME`` for every registry model: the torch importer where it knows the module classes, the ONNX op
mapper for the rest, calibrated on the model's own dataset and C-simulated bit for bit."""

from edgevit.datasets import digits
from edgevit.hls import generate
from edgevit.hls.project import run_csim


def test_a_registry_model_the_torch_importer_does_not_know_goes_through_the_onnx_mapper(tmp_path):
    # fashion-vit-tiny is a plain ViT of our own classes: the torch importer maps none of it
    made = generate.generate("fashion-vit-tiny", "pynq-z2", tmp_path / "p")
    assert made.onnx is not None and made.onnx.accel_nodes == made.onnx.total_nodes > 0
    assert len(made.tests) == generate.TEST_IMAGES and made.tests[0].shape == (1, 1, 28, 28)   # Fashion-MNIST
    report = run_csim(made.path)
    assert report["inputs"] == generate.TEST_IMAGES and report["mismatches"] == 0
    assert report["argmax_agreement"] > 0.95   # fixed point against float on real test images


def test_a_zoo_family_model_still_takes_the_torch_importer(tmp_path):
    made = generate.generate("tiny_mobilevit", "zcu102", tmp_path / "p")
    assert made.onnx is None and len(made.tests) == len(digits()[2])   # the whole digits test split
