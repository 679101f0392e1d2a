"""Shared fixtures: the composed Hydra config and small synthetic batches."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ei_lightning.datamodule import TensorBatches
from ei_lightning.train import CONFIG_DIR

CIRCUIT_NAMES = ["mlp", "lhb_dan", "combined_ei", "split_ep", "split_ep_lhb"]
INHIBITORY = ["lhb_dan", "combined_ei", "split_ep", "split_ep_lhb"]


def quiet_trainer(**options: object) -> L.Trainer:
    """A Trainer that writes nothing to disk or the terminal, for tests that only read state."""
    return L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )


@pytest.fixture
def make_cfg() -> Callable[..., DictConfig]:
    """Compose the real ``conf/train.yaml`` with overrides, as the command line would."""

    def make(*overrides: str) -> DictConfig:
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            return compose("train", overrides=list(overrides))

    return make


@pytest.fixture
def fake_batches() -> TensorBatches:
    """Eight batches of 32 random uint8 images with random labels, in a fixed order."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (256, 784), dtype=torch.uint8, generator=generator)
    return TensorBatches(images, torch.randint(0, 10, (256,), generator=generator), 32)
