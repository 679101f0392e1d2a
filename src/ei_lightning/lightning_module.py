"""The LightningModule that trains any of the circuits: loss, metrics and optimizer."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from ei_lightning.circuits import N_CLASSES, build_circuit
from ei_lightning.constraints import sign_census
from ei_lightning.errors import ConfigError

SCHEDULERS = ("cosine", "none")


class DivergedError(FloatingPointError):
    """The training loss became NaN or infinite, so further steps would be meaningless."""


class CircuitModule(L.LightningModule):
    """Wraps one circuit with cross-entropy training, accuracy metrics and Adam.

    Args:
        model: keyword arguments of :func:`~ei_lightning.circuits.build_circuit`.
        optim: ``lr``, ``betas``, ``weight_decay``, ``scheduler`` (``cosine`` anneals the
            learning rate to zero over ``trainer.max_epochs``, as the lab's script did) and
            ``fused`` (Adam's fused implementation; same update, fewer kernel launches).
        schedule_epochs: epochs of one cosine half-period; ``None`` for the whole run.
    """

    def __init__(
        self, model: dict[str, Any], optim: dict[str, Any], schedule_epochs: int | None = None
    ) -> None:
        super().__init__()
        check_optim_args(**optim)
        self.save_hyperparameters()
        self.circuit = build_circuit(**model)
        self.init_census = sign_census(self.circuit)

        # Labels come from our own data module; checking them on every step costs device syncs.
        accuracy = {"num_classes": N_CLASSES, "average": "micro", "validate_args": False}
        self.val_acc = MulticlassAccuracy(**accuracy)
        self.test_acc = MulticlassAccuracy(**accuracy)
        # a NaN loss must show as NaN, not be dropped from the mean with a warning
        self.val_loss = MeanMetric(nan_strategy="disable")
        self.test_loss = MeanMetric(nan_strategy="disable")
        # persistent, so a run resumed from a checkpoint still knows its best epoch
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)

        # The training epoch's summed loss and correct count, kept on the device. Two torchmetrics
        # updates per step cost about 0.1 ms of Python on a CPU, an eighth of all that the
        # product adds to a bare loop's step; these sums are a few tensor operations. Validation
        # and test batches are few and large, so they keep torchmetrics.
        self.register_buffer("train_sums", torch.zeros(2), persistent=False)
        self.train_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.circuit(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        self._check_finite(loss)
        # Metrics are only accumulated here: a Lightning self.log call costs more than a small
        # circuit's whole step on a CPU, so the step value is logged when the logger will
        # write it (Lightning's own cadence) and the epoch values once, after the last batch.
        self._accumulate(loss, logits, labels)
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx + 1 < self.trainer.num_training_batches:
            return
        # on_epoch so Lightning writes them with the epoch; logged before validation runs and
        # before the epoch-end hooks of callbacks, which read them
        mean_loss, accuracy = self.train_sums / self.train_seen
        self.log("train/loss_epoch", mean_loss, on_step=False, on_epoch=True)
        self.log("train/acc", accuracy, on_step=False, on_epoch=True)
        self.train_sums.zero_()
        self.train_seen = 0

    @torch.no_grad()
    def _accumulate(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        # a NaN loss stays NaN in the sum, so a diverging epoch cannot report a finite mean
        correct = (logits.argmax(dim=1) == labels).sum()
        self.train_sums.add_(torch.stack((loss * len(labels), correct)))
        self.train_seen += len(labels)

    def _check_finite(self, loss: torch.Tensor) -> None:
        # Reading the loss forces a device sync, so look only at the logging cadence: a diverged
        # run still stops within a few steps instead of training on NaN for whole epochs.
        if self.global_step % self.trainer.log_every_n_steps == 0 and not torch.isfinite(loss):
            raise DivergedError(f"training loss is {loss.item()} at step {self.global_step}")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_acc, self.val_loss)

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        self.log("val/acc", acc, prog_bar=True)
        self.log("val/loss", self.val_loss.compute())
        self.val_acc.reset()
        self.val_loss.reset()
        if not self.trainer.sanity_checking:
            self.val_acc_best.update(acc)
            self.log("val/acc_best", self.val_acc_best.compute())

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_acc, self.test_loss)

    def _evaluate(
        self,
        batch: tuple[torch.Tensor, torch.Tensor],
        accuracy: MulticlassAccuracy,
        mean_loss: MeanMetric,
    ) -> None:
        images, labels = batch
        logits = self(images)
        accuracy.update(logits, labels)
        # One loss per sample, so the mean weighs every sample once whatever the batch sizes:
        # MeanMetric drops its `weight` argument under nan_strategy="disable" (torchmetrics
        # issue 3434), which would weigh a short last batch like a full one.
        mean_loss.update(F.cross_entropy(logits, labels, reduction="none"))

    def on_test_epoch_end(self) -> None:
        self.log("test/acc", self.test_acc.compute())
        self.log("test/loss", self.test_loss.compute())
        self.test_acc.reset()
        self.test_loss.reset()

    def configure_optimizers(self) -> Any:
        optim = self.hparams["optim"]
        optimizer = torch.optim.Adam(
            self.parameters(),
            lr=optim["lr"],
            betas=tuple(optim["betas"]),
            weight_decay=optim["weight_decay"],
            # one fused kernel for all parameters: on CPU it halves the optimizer's step time
            fused=optim.get("fused", True),
        )
        if optim["scheduler"] == "none":
            return optimizer
        epochs = self.hparams.get("schedule_epochs") or self.trainer.max_epochs
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        return {"optimizer": optimizer, "lr_scheduler": schedule}


def check_optim_args(
    lr: float, betas: tuple[float, float], weight_decay: float, scheduler: str, fused: bool = True
) -> None:
    """Reject optimizer settings that cannot train, naming the accepted values."""
    if not isinstance(lr, int | float) or not lr > 0:
        raise ConfigError(f"optim.lr={lr!r} must be a positive learning rate")
    if len(betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in betas):
        raise ConfigError(f"optim.betas={list(betas)!r} must be two numbers in [0, 1)")
    if not isinstance(weight_decay, int | float) or weight_decay < 0:
        raise ConfigError(f"optim.weight_decay={weight_decay!r} must be >= 0")
    if not isinstance(fused, bool):
        raise ConfigError(f"optim.fused={fused!r} must be true or false")
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"optim.scheduler={scheduler!r} is not known; use one of {SCHEDULERS}")
