"""The sign projection during real Lightning training, with a learning rate that flips signs."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from conftest import CIRCUIT_NAMES, quiet_trainer
from ei_lightning.callbacks import SignConstraint
from ei_lightning.constraints import SignReference
from ei_lightning.datamodule import TensorBatches
from ei_lightning.lightning_module import CircuitModule

OPTIM = {"lr": 1.0, "betas": [0.9, 0.999], "weight_decay": 0.0, "scheduler": "none"}


def fit(
    name: str, batches: TensorBatches, accumulate: int = 1, scope: str = "all"
) -> tuple[CircuitModule, SignConstraint, dict[str, torch.Tensor], L.Trainer]:
    torch.manual_seed(0)
    model = {"name": name, "h1": 16, "h2": 12, "scope": scope}
    module = CircuitModule(model=model, optim=OPTIM)
    initial = {n: p.detach().clone() for n, p in module.circuit.named_parameters()}
    constraint = SignConstraint()
    trainer = quiet_trainer(
        max_epochs=1,
        accumulate_grad_batches=accumulate,
        callbacks=[constraint],
        log_every_n_steps=1,
    )
    trainer.fit(module, train_dataloaders=batches, val_dataloaders=batches)
    return module, constraint, initial, trainer


def constrained_entries(signs: SignReference) -> dict[str, torch.Tensor]:
    return {name: getattr(signs, name.replace(".", "__")) != 0 for name in signs.names}


def sign_flips(
    module: CircuitModule, initial: dict[str, torch.Tensor], constrained: bool
) -> tuple[int, int]:
    """(flipped entries, entries projected to zero) within the constrained or the free set."""
    masks = constrained_entries(module.circuit.signs)
    flipped = projected = 0
    for name, param in module.circuit.named_parameters():
        start, now = initial[name], param.detach()
        mask = masks.get(name, torch.zeros_like(start, dtype=torch.bool))
        mask = mask if constrained else ~mask
        flipped += int(((torch.sign(now) != torch.sign(start)) & (now != 0) & mask).sum())
        projected += int(((now == 0) & (start != 0) & mask).sum())
    return flipped, projected


@pytest.mark.parametrize("accumulate", [1, 2])
@pytest.mark.parametrize("name", CIRCUIT_NAMES)
def test_constrained_signs_hold_while_free_ones_move(
    name: str, accumulate: int, fake_batches: TensorBatches
) -> None:
    module, _, initial, _ = fit(name, fake_batches, accumulate)

    flipped_constrained, projected = sign_flips(module, initial, constrained=True)
    flipped_free, _ = sign_flips(module, initial, constrained=False)

    assert module.circuit.signs.count_violations(module.circuit) == 0
    assert flipped_constrained == 0
    assert flipped_free > 0
    if name != "mlp":
        # the learning rate pushed constrained entries across zero, and the projection caught them
        assert projected > 0


@pytest.mark.parametrize("name", ["combined_ei", "split_ep_lhb"])
def test_weights_scope_leaves_biases_free(name: str, fake_batches: TensorBatches) -> None:
    module, _, initial, _ = fit(name, fake_batches, scope="weights")

    biases = [n for n in initial if n.endswith("bias")]
    flipped = [
        n for n in biases
        if ((torch.sign(initial[n]) * torch.sign(dict(module.circuit.named_parameters())[n])) < 0)
        .any()
    ]  # fmt: skip

    assert not any(n.endswith("bias") for n in module.circuit.signs.names)
    assert flipped


@pytest.mark.parametrize("accumulate", [1, 2])
def test_projection_follows_optimizer_steps_not_batches(
    accumulate: int, fake_batches: TensorBatches
) -> None:
    _, constraint, _, trainer = fit("split_ep", fake_batches, accumulate)

    assert trainer.global_step == len(fake_batches) // accumulate
    assert constraint.projections == trainer.global_step


def test_projection_keeps_parameters_and_optimizer_state(fake_batches: TensorBatches) -> None:
    torch.manual_seed(0)
    module = CircuitModule(model={"name": "combined_ei", "h1": 16, "h2": 12}, optim=OPTIM)
    before = [id(p) for p in module.circuit.parameters()]
    trainer = quiet_trainer(max_epochs=1, callbacks=[SignConstraint()], accumulate_grad_batches=2)

    trainer.fit(module, train_dataloaders=fake_batches, val_dataloaders=fake_batches)

    optimizer = trainer.optimizers[0]
    assert [id(p) for p in module.circuit.parameters()] == before
    assert all(id(p) in {id(q) for q in optimizer.state} for p in module.circuit.parameters())
    assert all(optimizer.state[p]["step"] == len(fake_batches) // 2 for p in optimizer.state)
