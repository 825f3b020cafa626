"""Fixtures of the MoE tests: the trained presets (cached under ~/.cache/edgevit/moe) and the digits tasks."""

import pytest
import torch


@pytest.fixture(scope="session")
def digits():
    from edgevit.moe.train import digits_tasks

    return digits_tasks()


@pytest.fixture(scope="session")
def trained():
    from edgevit.moe import trained_moe_vit

    torch.set_num_threads(1)
    return {preset: trained_moe_vit(preset) for preset in ("moe_vit_tiny", "moe_vit_tiny_static")}
