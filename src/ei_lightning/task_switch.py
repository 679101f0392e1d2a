"""The two-part experiment: learn Fashion-MNIST, then go on training on the shuffled task.

One Trainer runs both phases, so the network, its optimizer and its learning-rate schedule simply
continue across the switch; the data module hands out the second task's batches from the first
epoch of phase 2 on. A callback measures what the switch does: accuracy on the old task before
and after, and the relearning curve on both tasks at a cadence finer than epochs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from ei_lightning.datamodule import FashionMNISTDataModule, TensorBatches
from ei_lightning.errors import ConfigError

log = logging.getLogger(__name__)

RELEARNING_FILE = "relearning.csv"


class TaskSwitchDataModule(L.LightningDataModule):
    """Task 1 (the original images and labels) for ``phase1_epochs``, then task 2.

    Needs ``reload_dataloaders_every_n_epochs=1`` so the Trainer asks for loaders each epoch.
    Validation follows the task being trained; the final test is on task 2.
    """

    def __init__(
        self, task1: FashionMNISTDataModule, task2: FashionMNISTDataModule, phase1_epochs: int
    ) -> None:
        super().__init__()
        if task1.shuffle is not None or task2.shuffle is None:
            raise ConfigError(
                "protocol=task_switch needs a shuffled second task: use data=shuffled "
                "(with data.shuffle=pixels or data.shuffle=labels)"
            )
        self.task1 = task1
        self.task2 = task2
        self.phase1_epochs = phase1_epochs

    def setup(self, stage: str | None = None) -> None:
        for task in (self.task1, self.task2):
            task.trainer = self.trainer
            task.setup(stage)

    def current(self) -> FashionMNISTDataModule:
        in_phase1 = self.trainer is None or self.trainer.current_epoch < self.phase1_epochs
        return self.task1 if in_phase1 else self.task2

    def train_dataloader(self) -> TensorBatches:
        return self.current().train_dataloader()

    def val_dataloader(self) -> TensorBatches:
        return self.current().val_dataloader()

    def test_dataloader(self) -> TensorBatches:
        return self.task2.test_dataloader()


@torch.no_grad()
def evaluate(module: L.LightningModule, batches: Iterable) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``module`` in eval mode, leaving its mode as it was."""
    was_training = module.training
    module.eval()
    correct = loss = torch.zeros((), device=module.device)
    n = 0
    for images, labels in batches:
        logits = module(images)
        correct = correct + (logits.argmax(dim=1) == labels).sum()
        loss = loss + F.cross_entropy(logits, labels, reduction="sum")
        n += len(labels)
    module.train(was_training)
    # float32 division, as torchmetrics computes the test accuracy of the same run
    return float(correct.float() / n), float(loss / n)


class TaskSwitch(L.Callback):
    """Switches tasks after phase 1 and records forgetting and relearning.

    Args:
        data: the two tasks.
        reset_optimizer: at the switch, start Adam's moments and the cosine schedule afresh
            (over phase 2); otherwise both carry over, as in the lab's script.
        phase2_epochs: length of phase 2, for a schedule that restarts.
        eval_every_n_steps: cadence of the relearning curve after the switch.
    """

    def __init__(
        self,
        data: TaskSwitchDataModule,
        reset_optimizer: bool,
        phase2_epochs: int,
        eval_every_n_steps: int,
    ) -> None:
        self.data = data
        self.reset_optimizer = reset_optimizer
        self.phase2_epochs = phase2_epochs
        self.every = eval_every_n_steps
        self.switch_step: int | None = None
        self.metrics: dict[str, float] = {}
        self.curve: list[dict[str, float]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch != self.data.phase1_epochs or self.switch_step is not None:
            return

        self.switch_step = trainer.global_step
        acc, loss = evaluate(pl_module, self.data.task1.test_dataloader())
        self.metrics |= {"task1_acc_phase1": acc, "task1_loss_phase1": loss}
        log.info("switching to the %s task at step %d; task-1 test accuracy %.4f",
                 self.data.task2.shuffle, self.switch_step, acc)  # fmt: skip
        if self.reset_optimizer:
            self._restart_optimizer(trainer)
        self._record(trainer, pl_module)

    def _restart_optimizer(self, trainer: L.Trainer) -> None:
        for optimizer in trainer.optimizers:
            optimizer.state.clear()
        for config in trainer.lr_scheduler_configs:
            schedule = config.scheduler
            schedule.T_max = self.phase2_epochs
            schedule.last_epoch = 0
            for group, base in zip(
                schedule.optimizer.param_groups, schedule.base_lrs, strict=True
            ):
                group["lr"] = base

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        steps = self._steps_since_switch(trainer)
        if steps is not None and steps > 0 and steps % self.every == 0:
            self._record(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        steps = self._steps_since_switch(trainer)
        if steps is None:
            return
        if not self.curve or self.curve[-1]["step_after_switch"] != steps:
            self._record(trainer, pl_module)
        acc, loss = evaluate(pl_module, self.data.task1.test_dataloader())
        self.metrics |= {"task1_acc_phase2": acc, "task1_loss_phase2": loss}

    def _steps_since_switch(self, trainer: L.Trainer) -> int | None:
        return None if self.switch_step is None else trainer.global_step - self.switch_step

    def _record(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        task1, _ = evaluate(pl_module, self.data.task1.val_dataloader())
        task2, _ = evaluate(pl_module, self.data.task2.val_dataloader())
        self.curve.append({
            "step_after_switch": trainer.global_step - self.switch_step,
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "task1_val_acc": task1,
            "task2_val_acc": task2,
        })  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {"switch_step": self.switch_step, "metrics": self.metrics, "curve": self.curve}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.switch_step = state_dict["switch_step"]
        self.metrics = dict(state_dict["metrics"])
        self.curve = list(state_dict["curve"])

    def summary(self) -> dict[str, float]:
        """The result fields of the switch: forgetting and speed of relearning."""
        if "task1_acc_phase2" not in self.metrics:
            return {}
        steps = np.array([row["step_after_switch"] for row in self.curve], dtype=float)
        task2 = np.array([row["task2_val_acc"] for row in self.curve], dtype=float)
        return {
            **self.metrics,
            "forgetting": self.metrics["task1_acc_phase1"] - self.metrics["task1_acc_phase2"],
            **relearning_speed(steps, task2),
        }


def relearning_speed(steps: np.ndarray, accuracy: np.ndarray) -> dict[str, float]:
    """Steps after the switch to reach 90% and 95% of the final task-2 accuracy, and the area.

    The steps are NaN when the run ends no better than it started on task 2: it never relearnt.

    ``phase2_auc`` is the area under task-2 validation accuracy over the steps of phase 2,
    divided by their span: the mean accuracy while relearning, in [0, 1].
    """
    if len(accuracy) == 0:
        return {"steps_to_90": np.nan, "steps_to_95": np.nan, "phase2_auc": np.nan}

    span = steps[-1] - steps[0]
    auc = float(np.trapezoid(accuracy, steps) / span) if span > 0 else float(accuracy[0])
    final = accuracy[-1]
    if final <= accuracy[0]:
        # nothing was relearnt: "steps to reach" the starting level would read as instant
        return {"steps_to_90": np.nan, "steps_to_95": np.nan, "phase2_auc": auc}
    first = {f"steps_to_{p}": float(steps[np.flatnonzero(accuracy >= p / 100 * final)[0]])
             for p in (90, 95)}  # fmt: skip
    return {**first, "phase2_auc": auc}
