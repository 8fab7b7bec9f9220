r"""``torch.optim`` faces of the game update rules in :mod:`nestopt.updates`.

Each optimizer is a thin :class:`RuleOptimizer`: every step builds the pure rule from the
parameter group's settings (so LR schedulers and ``param_groups`` edits take effect) and applies
it to each parameter with a gradient; the rule's state lives in ``optimizer.state[p]`` as plain
tensors, so ``state_dict()`` / ``load_state_dict()`` round-trip. Buffers are real tensors:
``load_state_dict`` casts state to the parameter's dtype and would drop an imaginary part.

Use one optimizer per player and :meth:`nestopt.games.Game.step` for simultaneous or
alternating updates; plain gradient descent-ascent is ``torch.optim.SGD`` per player.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ..updates import (
    DEFAULT_BETA,
    State,
    UpdateRule,
    adam,
    complex_adam,
    complex_momentum_two_buffer,
    extragradient,
    extrapolated,
    optimistic,
)

_ONE = "p"  # rules see each parameter as a one-leaf tree under this key


class RuleOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` that applies ``make_rule(**group settings)`` to each parameter.

    ``make_rule`` returns an :class:`nestopt.UpdateRule` whose state holds numbers and trees; the
    trees are stored per parameter (``optimizer.state[p][name]`` is a tensor). Settings are
    checked when the optimizer (or a parameter group) is created.
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], make_rule: Callable[..., UpdateRule]):
        self._make_rule, self._settings = make_rule, tuple(defaults)  # torch adds keys to defaults
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._rule(self.param_groups[-1])  # one-line errors for bad settings, now rather than at step

    def _rule(self, group: dict[str, Any]) -> UpdateRule:
        return self._make_rule(**{k: group[k] for k in self._settings})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            rule = self._rule(group)
            for p in group["params"]:
                if p.grad is None:
                    continue
                params = {_ONE: p.detach().clone()}  # a rule may keep it in its state; p changes in place
                slot = self.state[p]
                state = _unpack(slot) if slot else rule.init(params)
                new_params, new_state = rule.update({_ONE: p.grad}, state, params)
                p.copy_(new_params[_ONE])
                self.state[p] = _pack(new_state)
        return loss


class ComplexMomentum(RuleOptimizer):
    r"""SGD with complex momentum (Lorraine et al., AISTATS 2022).

    .. math:: \mu \leftarrow \beta\mu - g, \qquad w \leftarrow w + \text{lr}\,\Re(\mu),
              \qquad \beta = |\beta| e^{i\theta},\ |\beta| < 1,

    kept as two real buffers :math:`\mu = u + iv` (``momentum_real``, ``momentum_imag`` in the
    state): :math:`u \leftarrow \Re\beta\,u - \Im\beta\,v - g`, :math:`v \leftarrow \Im\beta\,u +
    \Re\beta\,v`, :math:`w \leftarrow w + \text{lr}\,u`. The default :math:`\beta = 0.9 e^{i\pi/8}`
    is the paper's recommendation; a real ``beta`` is ``torch.optim.SGD(momentum=beta)`` (and
    may be negative). The rule is :func:`nestopt.complex_momentum_two_buffer`.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, beta: complex = DEFAULT_BETA) -> None:
        super().__init__(params, {"lr": lr, "beta": complex(beta)}, complex_momentum_two_buffer)


class ComplexAdam(RuleOptimizer):
    r"""Adam with a complex first-moment coefficient :math:`\beta_1` (Lorraine et al., 2022).

    .. math:: m \leftarrow \beta_1 m + (1-\beta_1) g, \qquad v \leftarrow \beta_2 v + (1-\beta_2) g^2,

              w \leftarrow w - \text{lr}\,\Re(\hat m) / (\sqrt{\hat v} + \epsilon),
              \quad \hat m = m / (1-\beta_1^t),\ \hat v = v / (1-\beta_2^t)

    with :math:`|\beta_1| < 1`; the first moment is kept as two real buffers. A real
    :math:`\beta_1` is ``torch.optim.Adam``. The rule is :func:`nestopt.complex_adam`.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[complex, float] = (DEFAULT_BETA, 0.999),
        eps: float = 1e-8,
    ) -> None:
        betas = (complex(betas[0]), float(betas[1]))
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps}, complex_adam)


class ExtraGradient(RuleOptimizer):
    r"""Extragradient, one gradient evaluation per ``step()``.

    Steps alternate: the first moves to the extrapolated point :math:`\bar w = w - \text{lr}\,g(w)`,
    the second updates from the anchor, :math:`w \leftarrow w - \text{lr}\,g(\bar w)`; so two
    ``step()`` calls (each after its own backward pass) make one extragradient step. The rule is
    :func:`nestopt.extragradient`.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3) -> None:
        super().__init__(params, {"lr": lr}, extragradient)


class ExtraAdam(RuleOptimizer):
    r"""Extra-Adam (Gidel et al., 2019), one gradient evaluation per ``step()``: extragradient
    whose two half-steps are Adam steps, both advancing Adam's moments.

    As :class:`ExtraGradient`, two ``step()`` calls (each after its own backward pass) make one
    update: the first moves to :math:`\bar w = w + \text{Adam step}(g(w))`, the second to
    :math:`w + \text{Adam step}(g(\bar w))`. The rule is ``nestopt.extrapolated(nestopt.adam(...))``.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps}, _extra_adam)


class OptimisticGradient(RuleOptimizer):
    r"""Optimistic gradient descent: :math:`w \leftarrow w - \text{lr}\,(2 g_t - g_{t-1})`, the
    first step plain gradient descent. The rule is :func:`nestopt.optimistic`."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3) -> None:
        super().__init__(params, {"lr": lr}, optimistic)


def _extra_adam(lr: float, betas: tuple[float, float], eps: float) -> UpdateRule:
    if not all(0.0 <= b < 1.0 for b in betas) or lr < 0 or eps < 0:
        raise ValueError(
            f"Extra-Adam needs lr >= 0, 0 <= betas < 1 and eps >= 0, got lr={lr}, betas={betas}, eps={eps}: "
            f"use e.g. lr=1e-3, betas=(0.9, 0.999)"
        )
    return extrapolated(adam(lr, betas, eps))


def _pack(state: State) -> dict[str, Any]:
    return {k: v[_ONE] if isinstance(v, dict) else v for k, v in state.items()}


def _unpack(slot: dict[str, Any]) -> State:
    return {k: {_ONE: v} if isinstance(v, Tensor) else v for k, v in slot.items()}
