"""The five EP -> LHb -> DAN circuits, as plain PyTorch modules.

Layers stand for the entopeduncular nucleus (EP), the lateral habenula (LHb) and the dopamine
neurons (DAN). A co-releasing neuron is an ordinary unit whose outgoing weights have mixed signs;
a neuron under Dale's law has every outgoing weight of one sign, kept for life by
:class:`~ei_lightning.constraints.SignReference`. ``docs/models.md`` describes each circuit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ei_lightning.constraints import (
    SCOPES,
    SignReference,
    column_dale_,
    constrained_names,
    excitatory_,
    inhibitory_,
)
from ei_lightning.errors import ConfigError

N_INPUTS = 784  # 28 x 28 Fashion-MNIST pixels, flattened
N_CLASSES = 10


class Population(nn.Module):
    """Linear -> BatchNorm1d -> ReLU: one layer of non-negative firing rates."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.norm = nn.BatchNorm1d(n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.linear(x)))


class Circuit(nn.Module):
    """Shared readout and sign bookkeeping of every circuit.

    Subclasses build their EP and LHb populations, apply their sign initialisation, and call
    :meth:`_fix_signs` with the names of the parameters whose signs must hold during training.
    """

    # LHb is glutamatergic onto GABAergic interneurons that inhibit DANs: the lab models the net
    # LHb -> DAN effect as inhibition. Only the control MLP leaves it free.
    inhibitory_readout = True

    def __init__(self, h2: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dan = nn.Linear(h2, N_CLASSES)
        self.signs = SignReference()

    def lhb_populations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activity of each LHb population, ``(batch, 784) -> [(batch, h2), ...]``."""
        raise NotImplementedError

    def readout(self, populations: list[torch.Tensor]) -> torch.Tensor:
        """DAN logits from LHb activity; LHb enters negated when the readout is inhibitory."""
        activity = torch.stack(populations).sum(dim=0) if len(populations) > 1 else populations[0]
        if self.inhibitory_readout:
            # activity is already a ReLU output, so this is the -relu(...) drive onto DAN; with
            # DAN weights kept >= 0 every effective LHb -> DAN synapse is <= 0.
            activity = -activity
        return self.dan(self.dropout(activity))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.lhb_populations(x.flatten(1)))

    def _fix_signs(self, names: list[str]) -> None:
        self.signs.record(self, names)


class MLP(Circuit):
    """Control: every synapse free to take either sign (co-release everywhere)."""

    inhibitory_readout = False

    def __init__(self, h1: int, h2: int, dropout: float, **_: object) -> None:
        super().__init__(h2, dropout)
        self.ep = Population(N_INPUTS, h1)
        self.lhb = Population(h1, h2)
        self._fix_signs([])

    def lhb_populations(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.lhb(self.ep(x))]


class LHbDAN(MLP):
    """The anatomical LHb -> DAN sign: inhibitory readout, DAN weights kept non-negative."""

    inhibitory_readout = True

    def __init__(self, h1: int, h2: int, dropout: float, **_: object) -> None:
        super().__init__(h1, h2, dropout)
        excitatory_(self.dan.weight)
        self._fix_signs(["dan.weight"])


class CombinedEI(MLP):
    """Every unit obeys Dale's law within one mixed population (column Dale init)."""

    inhibitory_readout = True

    def __init__(self, h1: int, h2: int, dropout: float, scope: str, **_: object) -> None:
        super().__init__(h1, h2, dropout)
        excitatory_(self.dan.weight)
        for layer in (self.ep.linear, self.lhb.linear, self.dan):
            column_dale_(layer.weight)
        self._fix_signs(constrained_names(self, scope))


class SplitEP(Circuit):
    """Separate excitatory and inhibitory EP populations, both full width, converging on LHb.

    The EP populations' signs sit on their input weights (784 -> h1), as in the lab's model.
    """

    def __init__(self, h1: int, h2: int, dropout: float, scope: str, **_: object) -> None:
        super().__init__(h2, dropout)
        self.ep_e = Population(N_INPUTS, h1)
        self.ep_i = Population(N_INPUTS, h1)
        self.lhb = Population(h1, h2)
        excitatory_(self.ep_e.linear.weight)
        inhibitory_(self.ep_i.linear.weight)
        excitatory_(self.dan.weight)
        self._fix_signs(constrained_names(self, scope))

    def lhb_populations(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.lhb(self.ep_e(x) + self.ep_i(x))]


class SplitEPLHb(Circuit):
    """Two streams, E and I, kept apart through EP and LHb and summed only at DAN."""

    def __init__(
        self, h1: int, h2: int, dropout: float, scope: str, e_fraction: float, **_: object
    ) -> None:
        super().__init__(h2, dropout)
        n_e, n_i = split_width(h1, e_fraction)
        self.ep_e = Population(N_INPUTS, n_e)
        self.ep_i = Population(N_INPUTS, n_i)
        self.lhb_e = Population(n_e, h2)
        self.lhb_i = Population(n_i, h2)
        for layer in (self.ep_e, self.lhb_e):
            excitatory_(layer.linear.weight)
        for layer in (self.ep_i, self.lhb_i):
            inhibitory_(layer.linear.weight)
        excitatory_(self.dan.weight)
        self._fix_signs(constrained_names(self, scope))

    def lhb_populations(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.lhb_e(self.ep_e(x)), self.lhb_i(self.ep_i(x))]


CIRCUITS: dict[str, type[Circuit]] = {
    "mlp": MLP,
    "lhb_dan": LHbDAN,
    "combined_ei": CombinedEI,
    "split_ep": SplitEP,
    "split_ep_lhb": SplitEPLHb,
}


def split_width(h1: int, e_fraction: float) -> tuple[int, int]:
    """Sizes of the excitatory and inhibitory EP populations for ``e_fraction`` of ``h1``."""
    n_e = round(h1 * e_fraction)
    return n_e, h1 - n_e


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_model_args(
    name: str, h1: int, h2: int, dropout: float, scope: str, e_fraction: float
) -> None:
    """Reject settings that would build a meaningless circuit, naming the accepted values."""
    if name not in CIRCUITS:
        raise ConfigError(f"model={name!r} is not a circuit; choose one of {sorted(CIRCUITS)}")
    for key, width in (("h1", h1), ("h2", h2)):
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ConfigError(f"model.{key}={width!r} must be a positive integer width")
    if not _is_number(dropout) or not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.dropout={dropout!r} must lie in [0, 1)")
    if scope not in SCOPES:
        raise ConfigError(f"model.scope={scope!r} is not a constraint scope; use one of {SCOPES}")
    if not _is_number(e_fraction) or not 0.0 < e_fraction < 1.0:
        raise ConfigError(f"model.e_fraction={e_fraction!r} must lie strictly between 0 and 1")
    n_e, n_i = split_width(h1, e_fraction)
    if name == "split_ep_lhb" and min(n_e, n_i) < 1:
        raise ConfigError(
            f"model.e_fraction={e_fraction!r} with model.h1={h1} leaves an empty EP population "
            f"({n_e} excitatory, {n_i} inhibitory); each needs at least one unit"
        )


def build_circuit(
    name: str,
    h1: int = 512,
    h2: int = 512,
    dropout: float = 0.0,
    scope: str = "all",
    e_fraction: float = 0.5,
) -> Circuit:
    """Build the circuit called ``name`` after checking its settings."""
    check_model_args(name, h1, h2, dropout, scope, e_fraction)
    return CIRCUITS[name](h1=h1, h2=h2, dropout=dropout, scope=scope, e_fraction=e_fraction)
