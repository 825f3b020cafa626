"""The timm zoo: every model the issue lists, sizes as published, seeded weights shaped like trained ones."""

import pytest

from edgevit import zoo
from edgevit.errors import UnknownNameError
from edgevit.zoo import timm_models

REQUIRED = ("mobilevit_xxs mobilevit_xs mobilevit_s mobilevitv2_050 mobilevitv2_075 mobilevitv2_100 swiftformer_xs "
            "swiftformer_s swiftformer_l1 efficientformer_l1 efficientformerv2_s0 efficientformerv2_s1").split()


def test_zoo_has_every_required_model():
    assert set(REQUIRED) <= set(zoo.ZOO)


def test_unknown_model():
    with pytest.raises(UnknownNameError, match="mobilevit_xxs.*edgevit models"):
        zoo.get_entry("resnet50")


@pytest.mark.parametrize("name, params_m", [("mobilevit_xxs", 1.3), ("efficientformer_l1", 12.3)])
def test_params_match_the_papers(name, params_m):
    assert zoo.stats(name)["params"] / 1e6 == pytest.approx(params_m, abs=0.1)


def test_macs_match_the_paper():
    # EfficientFormer paper (Table 1): L1 has 1.3 GMACs at 224x224.
    assert zoo.stats("efficientformer_l1")["macs"] / 1e9 == pytest.approx(1.3, abs=0.05)


def test_weights_are_seeded():
    a, b = zoo.build("mobilevit_xxs"), zoo.build("mobilevit_xxs")
    assert all((pa == pb).all() for pa, pb in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevitv2_050", "efficientformerv2_s0"])
def test_no_parameter_is_exactly_zero_except_biases(name):
    # timm zero-initialises residual-branch BatchNorm scales (dead blocks a converter folds away, which would
    # flatter that runtime in benchmarks) and EfficientFormer's attention biases; build() redraws them.
    model = zoo.build(name)
    zero = [k for k, p in model.named_parameters() if not k.endswith(".bias") and p.numel() and not bool(p.any())]
    assert zero == []


def test_cache_tag_pins_the_weights(monkeypatch):
    tag = zoo.cache_tag("mobilevit_xxs", "1.0", "2.0")
    monkeypatch.setattr(timm_models, "WEIGHTS_VERSION", timm_models.WEIGHTS_VERSION + 1)
    assert zoo.cache_tag("mobilevit_xxs", "1.0", "2.0") != tag
