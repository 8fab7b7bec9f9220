"""Hyperparameter families: ``nn.Module``s whose parameters are raw, unconstrained hyperparameters.

A family says how its hyperparameters enter the inner (training) objective through
:meth:`HyperParameters.inner_loss`, written functionally over the trees ``hparams`` (its own
``dict(named_parameters())``) and ``params`` (the model's), so the same code serves plain
training and every hypergradient. Constraints are reparameterizations, never clipping: a
positive hyperparameter is ``exp(raw)`` or ``softplus(raw)``, a fraction ``sigmoid(raw)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .tree import Tree


@dataclass(frozen=True)
class Constraint:
    """A bijection from the real line onto the allowed set, with its inverse for initialisation."""

    name: str
    forward: Callable[[Tensor], Tensor]
    inverse: Callable[[float], float]


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


CONSTRAINTS = {
    "exp": Constraint("exp", torch.exp, math.log),
    "softplus": Constraint("softplus", F.softplus, _softplus_inverse),
    "sigmoid": Constraint("sigmoid", torch.sigmoid, lambda y: math.log(y / (1 - y))),
}


def constraint(name: str) -> Constraint:
    if name not in CONSTRAINTS:
        raise ValueError(f"unknown constraint {name!r}: choose one of {sorted(CONSTRAINTS)}")
    return CONSTRAINTS[name]


class HyperParameters(nn.Module):
    """Base class of a family. Subclasses define :meth:`inner_loss` (or just :meth:`penalty`)."""

    def inner_loss(self, hparams: Tree, params: Tree, losses: Tensor, batch: Any) -> Tensor:
        """Training objective from the per-example data ``losses`` (or their mean)."""
        return losses.mean() + self.penalty(hparams, params)

    def penalty(self, hparams: Tree, params: Tree) -> Tensor | float:
        return 0.0

    def tree(self) -> Tree:
        """The raw hyperparameters as a tree of detached views (they follow in-place updates;
        clone them to keep a copy)."""
        return {k: v.detach() for k, v in self.named_parameters()}


Granularity = Literal["weight", "layer", "global"]


class WeightDecay(HyperParameters):
    r"""L2 penalty :math:`\frac12 \sum_i c(\rho_i) w_i^2` with one decay per weight, per layer
    (parameter tensor) or one for the whole model.

    With ``per="weight"`` there is one hyperparameter per weight (105k for an MLP 40-300-300-10),
    as in Lorraine, Vicol & Duvenaud (AISTATS 2020). ``c`` is the constraint (``exp``: the raw
    value is log-decay). ``include(name, param)`` selects the penalised parameters (all by default).
    """

    def __init__(
        self,
        model: nn.Module,
        init: float = 1e-4,
        per: Granularity = "weight",
        positive: Literal["exp", "softplus"] = "exp",
        include: Callable[[str, Tensor], bool] | None = None,
    ) -> None:
        super().__init__()
        if not init > 0:
            raise ValueError(f"WeightDecay(init={init}): the initial decay must be > 0")
        if per not in ("weight", "layer", "global"):
            raise ValueError(f"WeightDecay(per={per!r}): choose 'weight', 'layer' or 'global'")
        self.per, self.positive = per, constraint(positive)
        raw = self.positive.inverse(init)
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        if include is not None:
            named = [(k, p) for k, p in named if include(k, p)]
        if not named:
            raise ValueError("WeightDecay selected no parameter: check include=... and requires_grad")
        self.names = [k for k, _ in named]
        self._hparam_key = {k: "raw.all" if per == "global" else f"raw.{_key(k)}" for k in self.names}
        like = named[0][1]
        if per == "global":
            self.raw = nn.ParameterDict(
                {"all": nn.Parameter(torch.full((), raw, dtype=like.dtype, device=like.device))}
            )
        else:
            self.raw = nn.ParameterDict(
                {
                    _key(k): nn.Parameter(
                        torch.full(p.shape if per == "weight" else (), raw, dtype=p.dtype, device=p.device)
                    )
                    for k, p in named
                }
            )

    def decays(self, hparams: Tree | None = None) -> dict[str, Tensor]:
        """The constrained decay of each penalised parameter (broadcastable to its shape)."""
        hparams = dict(self.named_parameters()) if hparams is None else hparams
        if self.per == "global":
            value = self.positive.forward(hparams["raw.all"])
            return {k: value for k in self.names}
        return {k: self.positive.forward(hparams[self._hparam_key[k]]) for k in self.names}

    def penalty(self, hparams: Tree, params: Tree) -> Tensor:
        decays = self.decays(hparams)
        if self.per == "weight":
            for k in self.names:
                if decays[k].shape != params[k].shape:
                    raise ValueError(
                        f"shape mismatch: decay for {k!r} is {tuple(decays[k].shape)} but the parameter "
                        f"is {tuple(params[k].shape)}: build WeightDecay from this model"
                    )
        return 0.5 * sum((decays[k] * params[k] * params[k]).sum() for k in self.names)


class ExampleWeights(HyperParameters):
    r"""One weight per training example: inner loss :math:`\frac1B \sum_{i \in B} c(\rho_i)\,\ell_i`.

    ``index(batch)`` gives the examples' indices in the training set (default: the batch's last
    element, as the embedded data sets yield ``(x, y, index)``); ``train_loss`` must return
    per-example losses (``reduction="none"``).
    """

    def __init__(
        self,
        n_examples: int,
        init: float = 1.0,
        positive: Literal["exp", "softplus", "sigmoid"] = "exp",
        index: Callable[[Any], Tensor] | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.positive = constraint(positive)
        raw = self.positive.inverse(init)
        self.raw = nn.Parameter(torch.full((n_examples,), raw, dtype=dtype, device=device))
        self.index = index or (lambda batch: batch[-1])

    def weights(self, hparams: Tree | None = None) -> Tensor:
        hparams = dict(self.named_parameters()) if hparams is None else hparams
        return self.positive.forward(hparams["raw"])

    def inner_loss(self, hparams: Tree, params: Tree, losses: Tensor, batch: Any) -> Tensor:
        if losses.dim() != 1:
            raise ValueError(
                f"ExampleWeights needs per-example losses of shape [batch], got {tuple(losses.shape)}: "
                f"return reduction='none' losses from train_loss"
            )
        return (self.weights(hparams)[self.index(batch)] * losses).mean()


def _key(name: str) -> str:
    # nn.ParameterDict keys may not contain '.'
    return name.replace(".", "__")
