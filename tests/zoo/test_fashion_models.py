"""The Fashion-MNIST models: every configuration builds, takes a 28x28 grey image and ends in the linear ``head``
the class split replaces; training goes through the one loop and repeats exactly."""

import pytest
import torch

from edgevit.zoo import TRAINED
from edgevit.zoo.fashion_models import FASHION_MODELS, TrainConfig, VitConfig, train_full


@pytest.mark.parametrize("name", sorted(FASHION_MODELS))
def test_every_configuration_builds_and_classifies_a_28x28_image(name):
    arch, _ = FASHION_MODELS[name]
    torch.manual_seed(0)
    model = arch.build().eval()
    with torch.no_grad():
        out = model(torch.randn(2, arch.channels, arch.image, arch.image))
    assert out.shape == (2, arch.classes) and torch.isfinite(out).all()
    assert isinstance(model.head, torch.nn.Linear)
    assert name in TRAINED and TRAINED[name].input_shape == (1, arch.channels, arch.image, arch.image)


def test_training_repeats_exactly_and_the_cache_key_names_the_configuration(tmp_path, monkeypatch):
    arch, cfg = VitConfig(dim=16, depth=1, heads=2, head_dim=8, mlp=32), TrainConfig(train_images=256, epochs=1)
    models = []
    for run in ("a", "b"):   # two empty caches: both runs train
        monkeypatch.setenv("EDGEVIT_CACHE", str(tmp_path / run))
        models.append(train_full(arch, cfg, log=lambda _: None))
        assert len(list((tmp_path / run).rglob("full-*.pt"))) == 1
    a, b = models
    torch.manual_seed(cfg.seed)
    start = arch.build()   # the weights training starts from: training moved them
    assert not all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), start.state_dict().values()))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert cfg.key(arch) != TrainConfig(train_images=256, epochs=2).key(arch)
    assert cfg.key(arch) == TrainConfig(train_images=256, epochs=1, finetune_epochs=9).key(arch)
    assert cfg.key(arch, split=True) != TrainConfig(train_images=256, epochs=1, finetune_epochs=9).key(arch, split=True)
