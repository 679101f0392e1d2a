"""Protocols: what a run does with its data over time (one task, or a switch between two)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from ei_lightning.datamodule import FashionMNISTDataModule
from ei_lightning.errors import ConfigError
from ei_lightning.task_switch import TaskSwitch, TaskSwitchDataModule

PROTOCOLS = ("single", "task_switch")


@dataclass
class Protocol:
    """What the protocol changes about a run: its data, extra callbacks, epochs and schedule."""

    data: L.LightningDataModule
    shuffled: FashionMNISTDataModule
    callbacks: list[L.Callback] = field(default_factory=list)
    trainer_options: dict[str, Any] = field(default_factory=dict)
    schedule_epochs: int | None = None
    switch: TaskSwitch | None = None


def build_protocol(cfg: DictConfig) -> Protocol:
    """``single``: one task for the whole run; ``task_switch``: the original task, then data's."""
    kwargs = {**OmegaConf.to_container(cfg.data, resolve=True), "seed": cfg.seed}
    task = FashionMNISTDataModule(**kwargs)
    protocol = OmegaConf.to_container(cfg.protocol, resolve=True)
    check_protocol_args(**protocol)
    if protocol["name"] == "single":
        return Protocol(data=task, shuffled=task)

    phase1, phase2 = protocol["phase1_epochs"], protocol["phase2_epochs"]
    original = FashionMNISTDataModule(**{**kwargs, "name": "fmnist", "shuffle": None})
    data = TaskSwitchDataModule(original, task, phase1)
    switch = TaskSwitch(data, protocol["reset_optimizer"], phase2, protocol["eval_every_n_steps"])
    options = {"max_epochs": phase1 + phase2, "reload_dataloaders_every_n_epochs": 1}
    return Protocol(data, task, [switch], options, schedule_epochs=phase1, switch=switch)


def check_protocol_args(name: str, **knobs: Any) -> None:
    """Reject protocol settings that cannot run, naming the accepted values."""
    if name not in PROTOCOLS:
        raise ConfigError(f"protocol={name!r} is not known; use one of {PROTOCOLS}")
    for key in ("phase1_epochs", "phase2_epochs", "eval_every_n_steps"):
        value = knobs.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"protocol.{key}={value!r} must be an integer of at least 1")
    if not isinstance(knobs.get("reset_optimizer", False), bool):
        raise ConfigError(f"protocol.reset_optimizer={knobs['reset_optimizer']!r} must be a bool")
