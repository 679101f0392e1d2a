"""Lightning callbacks: the sign projection after each optimizer step, and epoch summaries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.hooks import RemovableHandle

from ei_lightning.circuits import Circuit

log = logging.getLogger(__name__)


def project_after_step(
    optimizer: torch.optim.Optimizer, circuit: Circuit, then: Callable[[], None] | None = None
) -> RemovableHandle:
    """Hook the circuit's sign projection onto every ``optimizer.step()``."""

    def project(*_: Any) -> None:
        circuit.signs.project_(circuit)
        if then is not None:
            then()

    return optimizer.register_step_post_hook(project)


class SignConstraint(L.Callback):
    """Projects the circuit's constrained weights back onto their signs after every step.

    The projection hangs on the optimizer's own post-step hook, so it follows optimizer steps
    (not batches: with gradient accumulation it runs once per accumulated step) and works the
    same under any loop, device or precision.
    """

    def __init__(self) -> None:
        self.handles: list[RemovableHandle] = []
        self.projections = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.handles = [
            project_after_step(optimizer, pl_module.circuit, self._count)
            for optimizer in trainer.optimizers
        ]

    def _count(self) -> None:
        self.projections += 1

    def _remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._remove()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._remove()


class EpochSummary(L.Callback):
    """One log line per epoch, for runs whose output goes to a file rather than a terminal."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        parts = [
            f"{key}={float(metrics[key]):.4f}"
            for key in ("train/loss_epoch", "val/loss", "val/acc")
            if key in metrics
        ]
        rank_zero_info(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} "
            f"step {trainer.global_step} {' '.join(parts)} "
            f"({time.perf_counter() - self.start:.1f} s)"
        )
