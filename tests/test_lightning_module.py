"""The training epoch's loss and accuracy, as CircuitModule reports them to the logger."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from conftest import quiet_trainer
from ei_lightning.datamodule import TensorBatches
from ei_lightning.lightning_module import CircuitModule

OPTIM = {"lr": 0.05, "betas": [0.9, 0.999], "weight_decay": 0.0, "scheduler": "none"}


class EpochMetrics(L.Callback):
    """The epoch values logged by the module, read where callbacks read them."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        self.epochs.append({key: float(metrics[key]) for key in ("train/loss_epoch", "train/acc")})


def fit_recording_logits(
    batches: TensorBatches, epochs: int
) -> tuple[EpochMetrics, list[torch.Tensor]]:
    """Train a small circuit and keep the logits of every training forward pass."""
    torch.manual_seed(0)
    module = CircuitModule(model={"name": "split_ep", "h1": 16, "h2": 12}, optim=OPTIM)
    logits: list[torch.Tensor] = []

    def record(circuit: torch.nn.Module, _: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if circuit.training:  # validation passes are not part of the training epoch
            logits.append(out.detach().clone())

    module.circuit.register_forward_hook(record)
    metrics = EpochMetrics()
    trainer = quiet_trainer(max_epochs=epochs, callbacks=[metrics], num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=batches, val_dataloaders=batches)
    return metrics, logits


@pytest.mark.parametrize("epochs", [1, 2])
def test_epoch_loss_and_accuracy_weight_every_sample_once(epochs: int) -> None:
    # 250 samples in batches of 32: the last batch holds 26, so a mean over batches would differ
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (250, 784), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (250,), generator=generator)
    batches = TensorBatches(images, labels, 32)

    metrics, logits = fit_recording_logits(batches, epochs)

    per_epoch = len(batches)
    assert len(logits) == epochs * per_epoch
    for epoch, logged in enumerate(metrics.epochs):
        seen = torch.cat(logits[epoch * per_epoch : (epoch + 1) * per_epoch])
        expected_loss = F.cross_entropy(seen, labels).item()
        expected_acc = (seen.argmax(dim=1) == labels).float().mean().item()
        assert logged["train/loss_epoch"] == pytest.approx(expected_loss, rel=1e-5)
        assert logged["train/acc"] == pytest.approx(expected_acc, abs=1e-6)


def test_validation_and_test_loss_weigh_a_short_last_batch_by_its_samples() -> None:
    # 250 samples in batches of 32: a mean over batches gives the 26-sample batch 32's weight
    generator = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (250, 784), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (250,), generator=generator)
    batches = TensorBatches(images, labels, 32)
    torch.manual_seed(0)
    module = CircuitModule(model={"name": "combined_ei", "h1": 16, "h2": 12}, optim=OPTIM)
    trainer = quiet_trainer()

    validated = trainer.validate(module, dataloaders=batches, verbose=False)[0]
    tested = trainer.test(module, dataloaders=batches, verbose=False)[0]

    module.eval()
    with torch.no_grad():
        logits = module(images.float() / 255.0)
    expected_loss = F.cross_entropy(logits, labels).item()
    expected_acc = (logits.argmax(dim=1) == labels).float().mean().item()
    for prefix, logged in (("val", validated), ("test", tested)):
        assert logged[f"{prefix}/loss"] == pytest.approx(expected_loss, rel=1e-5)
        assert logged[f"{prefix}/acc"] == pytest.approx(expected_acc, abs=1e-6)
