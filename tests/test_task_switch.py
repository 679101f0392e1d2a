"""The two-part experiment: the switch keeps the network, and phase 1 is a plain run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import DictConfig

from ei_lightning.datamodule import FashionMNISTDataModule, label_derangement, pixel_permutation
from ei_lightning.errors import ConfigError
from ei_lightning.protocol import build_protocol
from ei_lightning.task_switch import relearning_speed
from ei_lightning.train import train

TINY = ("model.h1=16", "model.h2=16", "trainer.limit_train_batches=6", "progress=epoch",
        "trainer.limit_val_batches=1")  # fmt: skip
SWITCH = ("protocol=task_switch", "protocol.phase1_epochs=2", "protocol.phase2_epochs=2",
          "protocol.eval_every_n_steps=4", "data=shuffled")  # fmt: skip


class Probe(L.Callback):
    """Watches the run: weights and optimizer state around the switch, signs after every step."""

    def __init__(self, switch_epoch: int) -> None:
        self.switch_epoch = switch_epoch
        self.violations: list[int] = []
        self.before: dict = {}
        self.after: dict = {}

    def snapshot(self, trainer: L.Trainer, module: L.LightningModule) -> dict:
        optimizer = trainer.optimizers[0]
        return {
            "ids": [id(p) for p in module.parameters()],
            "weights": {k: v.clone() for k, v in module.circuit.state_dict().items()},
            "moments": [
                optimizer.state[p]["exp_avg"].clone()
                for p in module.parameters()
                if p in optimizer.state
            ],  # fmt: skip
            "lr": optimizer.param_groups[0]["lr"],
        }

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.current_epoch == self.switch_epoch - 1:
            self.before = self.snapshot(trainer, module)

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, *_) -> None:
        if trainer.current_epoch == self.switch_epoch and not self.after:
            self.after = self.snapshot(trainer, module)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *_) -> None:
        self.violations.append(module.circuit.signs.count_violations(module.circuit))


@pytest.mark.parametrize("reset", [False, True])
def test_phase2_starts_from_the_network_that_left_phase1(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, reset: bool
) -> None:
    probe = Probe(switch_epoch=2)
    cfg = make_cfg(*TINY, *SWITCH, "model=split_ep_lhb", f"protocol.reset_optimizer={reset}")

    result = train(cfg, tmp_path, callbacks=[probe])

    before, after = probe.before, probe.after
    assert after["ids"] == before["ids"]
    assert all(torch.equal(before["weights"][k], v) for k, v in after["weights"].items())
    if reset:
        assert after["moments"] == [] and after["lr"] == pytest.approx(0.01)
    else:
        assert len(after["moments"]) == len(before["moments"]) > 0
        assert all(
            torch.equal(a, b) for a, b in zip(before["moments"], after["moments"], strict=True)
        )
        assert after["lr"] == pytest.approx(0.01 * (1 + np.cos(np.pi * 2 / 2)) / 2)
    assert result["steps"] == 4 * 6


def test_no_sign_violation_at_any_step_of_either_phase(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    probe = Probe(switch_epoch=2)

    train(make_cfg(*TINY, *SWITCH, "model=combined_ei", "optim.lr=0.5"), tmp_path, [probe])

    assert len(probe.violations) == 4 * 6
    assert set(probe.violations) == {0}


def test_phase1_reproduces_a_single_run_bit_for_bit(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    probe = Probe(switch_epoch=2)

    single = train(make_cfg(*TINY, "trainer.max_epochs=2", "trainer.limit_test_batches=null"),
                   tmp_path / "single")  # fmt: skip
    switched = train(make_cfg(*TINY, *SWITCH), tmp_path / "switch", [probe])

    final = torch.load(tmp_path / "single" / "checkpoints" / "last.ckpt", weights_only=False)
    weights = {k.removeprefix("circuit."): v for k, v in final["state_dict"].items()
               if k.startswith("circuit.")}  # fmt: skip
    assert all(torch.equal(weights[k], v) for k, v in probe.before["weights"].items())
    assert switched["task1_acc_phase1"] == single["test_acc"]


def test_task_switch_result_and_relearning_curve(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    result = train(make_cfg(*TINY, *SWITCH, "data.shuffle=labels"), tmp_path)

    curve = pd.read_csv(tmp_path / "relearning.csv")
    assert curve["step_after_switch"].tolist() == [0, 4, 8, 12]
    assert result["forgetting"] == pytest.approx(
        result["task1_acc_phase1"] - result["task1_acc_phase2"]
    )
    assert result["steps_to_95"] <= 12 and result["steps_to_90"] <= result["steps_to_95"]
    assert (tmp_path / "label_permutation.json").is_file()


def test_task_switch_needs_a_shuffled_second_task(make_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigError, match="protocol=task_switch needs a shuffled second task"):
        build_protocol(make_cfg(*TINY, "protocol=task_switch"))


def test_label_permutation_moves_every_class_and_is_shared() -> None:
    relabel = label_derangement(0)
    by_seed = [
        FashionMNISTDataModule(name="shuffled", shuffle="labels", seed=s).relabel
        for s in (0, 1, 7)
    ]

    assert sorted(relabel.tolist()) == list(range(10))
    assert not (relabel == torch.arange(10)).any()
    assert all(torch.equal(r, relabel) for r in by_seed)
    assert all(not (label_derangement(s) == torch.arange(10)).any() for s in range(50))


def test_labels_shuffle_keeps_images_and_moves_labels() -> None:
    plain = FashionMNISTDataModule(seed=0)
    shuffled = FashionMNISTDataModule(name="shuffled", shuffle="labels", seed=0)
    plain.setup()
    shuffled.setup()

    images, labels = plain.splits["test"]
    new_images, new_labels = shuffled.splits["test"]
    assert torch.equal(images, new_images)
    assert torch.equal(new_labels, shuffled.relabel[labels])


def test_task_switch_uses_the_pixel_permutation_of_data_shuffled(
    make_cfg: Callable[..., DictConfig],
) -> None:
    protocol = build_protocol(make_cfg(*TINY, *SWITCH))
    standalone = build_protocol(make_cfg(*TINY, "data=shuffled"))

    assert torch.equal(protocol.shuffled.permutation, standalone.shuffled.permutation)
    assert torch.equal(protocol.shuffled.permutation, pixel_permutation(0))


def test_relearning_speed_reads_the_curve() -> None:
    steps = np.array([0, 50, 100, 150])
    accuracy = np.array([0.1, 0.7, 0.85, 0.9])

    speed = relearning_speed(steps, accuracy)

    # 90% of 0.9 = 0.81, first reached at step 100; 95% = 0.855, at step 150
    assert speed["steps_to_90"] == 100 and speed["steps_to_95"] == 150
    assert speed["phase2_auc"] == pytest.approx((0.4 + 0.775 + 0.875) * 50 / 150)
