"""Sign constraints: Dale-style initialisation, reference signs and the projection that keeps them.

A constrained parameter remembers the sign each entry had right after initialisation. After every
optimizer step, an entry whose sign has flipped is set to zero: a projection onto the orthant the
circuit allows. Entries that started at exactly zero carry no sign and stay free.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

SCOPES = ("all", "weights")


def excitatory_(weight: torch.Tensor) -> None:
    """E-init: every outgoing synapse of the population becomes non-negative."""
    with torch.no_grad():
        weight.abs_()


def inhibitory_(weight: torch.Tensor) -> None:
    """I-init: every outgoing synapse of the population becomes non-positive."""
    with torch.no_grad():
        weight.abs_().neg_()


def column_dale_(weight: torch.Tensor) -> None:
    """Make each presynaptic unit single-signed, by the sign of its summed outgoing weights.

    ``weight`` is ``(out, in)``: column ``j`` holds every synapse that unit ``j`` makes, so a unit
    whose column sums to >= 0 becomes excitatory and the others inhibitory.
    """
    with torch.no_grad():
        column_sign = torch.where(weight.sum(dim=0) >= 0, 1.0, -1.0).to(weight.dtype)
        weight.abs_().mul_(column_sign)


def _buffer_name(param_name: str) -> str:
    return param_name.replace(".", "__")


class SignReference(nn.Module):
    """Reference signs of the constrained parameters of one circuit, stored as buffers.

    Buffers (not plain attributes) so that the signs move with the circuit between devices and
    are saved in, and restored from, checkpoints together with the weights they constrain.
    """

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def record(self, module: nn.Module, names: list[str]) -> None:
        """Store the current sign of each named parameter of ``module`` as its reference."""
        params = dict(module.named_parameters())
        for name in names:
            sign = torch.sign(params[name].detach()).to(torch.int8)
            self.register_buffer(_buffer_name(name), sign)
            self.names.append(name)

    def pairs(self, module: nn.Module) -> Iterator[tuple[str, nn.Parameter, torch.Tensor]]:
        # get_parameter walks to each constrained tensor; this runs after every optimizer step,
        # so it avoids rebuilding a dict of all the module's parameters
        for name in self.names:
            yield name, module.get_parameter(name), getattr(self, _buffer_name(name))

    @torch.no_grad()
    def project_(self, module: nn.Module) -> None:
        """Zero every constrained entry whose sign is now opposite to its reference, in place.

        In place on the same ``Parameter`` objects, so the optimizer's state stays attached.
        """
        for _, param, ref in self.pairs(module):
            param.masked_fill_(_flipped(param, ref), 0.0)

    @torch.no_grad()
    def count_violations(self, module: nn.Module) -> int:
        total = torch.zeros((), dtype=torch.long)
        for _, param, ref in self.pairs(module):
            total = total + _flipped(param, ref).sum().cpu()
        return int(total)


def _flipped(param: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return (torch.sign(param) * ref) < 0


def constrained_names(module: nn.Module, scope: str) -> list[str]:
    """Names of the parameters that the fixed-sign update constrains under ``scope``.

    ``all`` follows the lab's fixed-sign optimizer, which kept the sign of every parameter
    (biases and BatchNorm affine terms included); ``weights`` restricts it to Linear weights.
    """
    if scope not in SCOPES:
        raise ValueError(f"model.scope={scope!r} is not a constraint scope; use one of {SCOPES}")
    if scope == "all":
        return [name for name, _ in module.named_parameters()]
    return [
        f"{prefix}.weight" if prefix else "weight"
        for prefix, sub in module.named_modules()
        if isinstance(sub, nn.Linear)
    ]


def sign_census(module: nn.Module) -> dict[str, dict[str, float]]:
    """Percent positive, negative and zero entries of every parameter tensor."""
    census = {}
    with torch.no_grad():
        for name, param in module.named_parameters():
            n = param.numel()
            census[name] = {
                "pos": 100.0 * float((param > 0).sum()) / n,
                "neg": 100.0 * float((param < 0).sum()) / n,
                "zero": 100.0 * float((param == 0).sum()) / n,
            }
    return census
