"""The five circuits: shapes, sign initialisation, and the sign of the LHb -> DAN pathway."""

from __future__ import annotations

import pytest
import torch

from conftest import CIRCUIT_NAMES, INHIBITORY
from ei_lightning.circuits import build_circuit

SMALL = {"h1": 16, "h2": 12}


def weights(circuit: torch.nn.Module, name: str) -> torch.Tensor:
    return dict(circuit.named_parameters())[name].detach()


@pytest.mark.parametrize("name", CIRCUIT_NAMES)
def test_circuit_maps_images_to_ten_logits(name: str) -> None:
    circuit = build_circuit(name, **SMALL)

    logits = circuit(torch.rand(5, 1, 28, 28))

    assert logits.shape == (5, 10)


def test_mlp_has_mixed_signs_and_no_constraint() -> None:
    circuit = build_circuit("mlp", **SMALL)

    dan = weights(circuit, "dan.weight")

    assert (dan > 0).any() and (dan < 0).any()
    assert circuit.signs.names == []


@pytest.mark.parametrize("name", INHIBITORY)
def test_dan_readout_weights_start_non_negative(name: str) -> None:
    circuit = build_circuit(name, **SMALL)

    assert (weights(circuit, "dan.weight") >= 0).all()


def test_lhb_dan_constrains_only_the_readout() -> None:
    circuit = build_circuit("lhb_dan", **SMALL)

    assert circuit.signs.names == ["dan.weight"]
    assert (weights(circuit, "ep.linear.weight") < 0).any()


@pytest.mark.parametrize("layer", ["ep.linear.weight", "lhb.linear.weight", "dan.weight"])
def test_combined_ei_gives_each_presynaptic_unit_one_sign(layer: str) -> None:
    circuit = build_circuit("combined_ei", **SMALL)
    weight = weights(circuit, layer)

    # column j = every outgoing synapse of presynaptic unit j
    all_pos = (weight >= 0).all(dim=0)
    all_neg = (weight <= 0).all(dim=0)

    assert (all_pos | all_neg).all()


def test_combined_ei_has_both_excitatory_and_inhibitory_ep_units() -> None:
    weight = weights(build_circuit("combined_ei", **SMALL), "lhb.linear.weight")

    assert (weight > 0).all(dim=0).any() and (weight < 0).all(dim=0).any()


@pytest.mark.parametrize(
    ("name", "excitatory", "inhibitory"),
    [
        ("split_ep", ["ep_e.linear.weight"], ["ep_i.linear.weight"]),
        (
            "split_ep_lhb",
            ["ep_e.linear.weight", "lhb_e.linear.weight"],
            ["ep_i.linear.weight", "lhb_i.linear.weight"],
        ),
    ],
)
def test_split_streams_start_with_their_population_signs(
    name: str, excitatory: list[str], inhibitory: list[str]
) -> None:
    circuit = build_circuit(name, **SMALL)

    for layer in excitatory:
        assert (weights(circuit, layer) >= 0).all(), layer
    for layer in inhibitory:
        assert (weights(circuit, layer) <= 0).all(), layer


@pytest.mark.parametrize(("fraction", "n_e", "n_i"), [(0.5, 8, 8), (0.25, 4, 12), (0.8, 13, 3)])
def test_split_ep_lhb_divides_ep_by_the_excitatory_fraction(
    fraction: float, n_e: int, n_i: int
) -> None:
    circuit = build_circuit("split_ep_lhb", e_fraction=fraction, **SMALL)

    assert weights(circuit, "ep_e.linear.weight").shape == (n_e, 784)
    assert weights(circuit, "ep_i.linear.weight").shape == (n_i, 784)
    assert weights(circuit, "lhb_i.linear.weight").shape == (12, n_i)


def test_split_ep_keeps_two_full_width_ep_populations() -> None:
    mlp, split = build_circuit("mlp", **SMALL), build_circuit("split_ep", **SMALL)

    extra = sum(p.numel() for p in split.parameters()) - sum(p.numel() for p in mlp.parameters())

    # one more 784 -> h1 Linear and its BatchNorm
    assert extra == 784 * 16 + 16 + 2 * 16


# split_ep_lhb: 5 Linear layers (EP_E, EP_I, LHb_E, LHb_I, DAN) and 4 BatchNorms; 'all' adds
# the 5 biases and the BatchNorms' 8 affine terms to the 5 weight matrices.
@pytest.mark.parametrize(("scope", "expected"), [("weights", 5), ("all", 18)])
def test_scope_chooses_which_parameters_keep_their_sign(scope: str, expected: int) -> None:
    circuit = build_circuit("split_ep_lhb", scope=scope, **SMALL)

    assert len(circuit.signs.names) == expected


def lhb_to_dan_responses(name: str) -> torch.Tensor:
    """Change in every DAN logit when one LHb unit's activity rises, for every LHb unit."""
    torch.manual_seed(0)
    circuit = build_circuit(name, **SMALL).eval()
    populations = [p.detach() for p in circuit.lhb_populations(torch.rand(4, 784))]
    base = circuit.readout(populations)

    responses = []
    for p, population in enumerate(populations):
        for unit in range(population.shape[1]):
            bumped = [q.clone() for q in populations]
            bumped[p][:, unit] += 1.0
            responses.append(circuit.readout(bumped) - base)
    return torch.stack(responses)


@pytest.mark.parametrize("name", INHIBITORY)
def test_raising_lhb_activity_never_raises_a_dan_logit(name: str) -> None:
    assert (lhb_to_dan_responses(name) <= 1e-6).all()


def test_mlp_control_lets_lhb_excite_dan() -> None:
    assert (lhb_to_dan_responses("mlp") > 1e-3).any()
