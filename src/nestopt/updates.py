"""Update rules as pure ``(init, update)`` pairs over parameter trees, after optax.

``rule.update(grads, state, params) -> (new_params, new_state)``. Being pure tensor code, the
same rule trains a model, is differentiated through by :func:`nestopt.unrolled`, and is
checkpointed as a plain tree. The rules reproduce ``torch.optim.SGD`` and ``torch.optim.Adam``
step for step, so :func:`rule_from_optimizer` turns a user's optimizer (and its state) into
the rule that continues it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .tree import Tree

State = dict[str, Any]


class UpdateRule(NamedTuple):
    init: Callable[[Tree], State]
    update: Callable[[Tree, State, Tree], tuple[Tree, State]]


def sgd(
    lr: float | Tensor,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> UpdateRule:
    r"""SGD with heavy-ball momentum, as ``torch.optim.SGD``.

    :math:`g \leftarrow g + \text{wd}\, w`; :math:`b \leftarrow \mu b + (1 - d) g` (``b = g`` on
    the first step); :math:`w \leftarrow w - \text{lr}\,(g + \mu b \text{ if nesterov else } b)`.
    """

    def init(params: Tree) -> State:
        state: State = {"step": 0}
        if momentum:
            state["momentum"] = {k: torch.zeros_like(v) for k, v in params.items()}
        return state

    def update(grads: Tree, state: State, params: Tree) -> tuple[Tree, State]:
        new_params, new_state = {}, {"step": state["step"] + 1}
        buffers = {}
        for k, w in params.items():
            g = grads[k] if not weight_decay else grads[k] + weight_decay * w
            if momentum:
                b = state["momentum"][k]
                # torch starts the buffer at g (no dampening on the first step)
                b = g if state["step"] == 0 else momentum * b + (1 - dampening) * g
                buffers[k] = b
                g = g + momentum * b if nesterov else b
            new_params[k] = w - lr * g
        if momentum:
            new_state["momentum"] = buffers
        return new_params, new_state

    return UpdateRule(init, update)


def adam(
    lr: float | Tensor,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> UpdateRule:
    r"""Adam (Kingma & Ba, 2015), as ``torch.optim.Adam`` (L2 weight decay added to the gradient).

    :math:`m \leftarrow \beta_1 m + (1-\beta_1) g`, :math:`v \leftarrow \beta_2 v + (1-\beta_2) g^2`,
    :math:`w \leftarrow w - \text{lr}\, \hat m / (\sqrt{\hat v} + \epsilon)` with bias-corrected
    :math:`\hat m = m / (1-\beta_1^t)`, :math:`\hat v = v / (1-\beta_2^t)`. The square root has a
    safe derivative at 0 so that differentiating through it gives no NaN for zero gradients.
    """
    beta1, beta2 = betas

    def init(params: Tree) -> State:
        zeros = {k: torch.zeros_like(v) for k, v in params.items()}
        return {"step": 0, "exp_avg": zeros, "exp_avg_sq": dict(zeros)}

    def update(grads: Tree, state: State, params: Tree) -> tuple[Tree, State]:
        t = state["step"] + 1
        correction1 = 1 - beta1**t
        correction2_sqrt = (1 - beta2**t) ** 0.5
        new_params, m_new, v_new = {}, {}, {}
        for k, w in params.items():
            g = grads[k] if not weight_decay else grads[k] + weight_decay * w
            m = state["exp_avg"][k] * beta1 + (1 - beta1) * g
            v = state["exp_avg_sq"][k] * beta2 + (1 - beta2) * g * g
            denom = _safe_sqrt(v) / correction2_sqrt + eps
            new_params[k] = w - (lr / correction1) * m / denom
            m_new[k], v_new[k] = m, v
        return new_params, {"step": t, "exp_avg": m_new, "exp_avg_sq": v_new}

    return UpdateRule(init, update)


def _safe_sqrt(x: Tensor) -> Tensor:
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), 0.0)


# --------------------------------------------------------------------------- torch.optim bridge
_SGD_KEYS = ("lr", "momentum", "dampening", "nesterov", "weight_decay")
_ADAM_KEYS = ("lr", "betas", "eps", "weight_decay")


def rule_from_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module) -> tuple[UpdateRule, State]:
    """The update rule equal to ``optimizer`` and its current state as a tree keyed like
    ``model.named_parameters()``. Supports ``torch.optim.SGD`` and ``torch.optim.Adam`` with one
    set of settings across parameter groups."""
    kind, keys = _kind(optimizer)
    settings = {k: optimizer.param_groups[0][k] for k in keys}
    for group in optimizer.param_groups[1:]:
        if any(group[k] != settings[k] for k in keys):
            raise ValueError(
                f"unrolled differentiation needs one set of {kind} settings for all parameter "
                f"groups, got {[{k: g[k] for k in keys} for g in optimizer.param_groups]}"
            )
    names = _names(optimizer, model)
    if kind == "SGD":
        rule = sgd(**settings)
        state: State = {"step": 0}
        if settings["momentum"]:
            buffers = {names[p]: optimizer.state.get(p, {}).get("momentum_buffer") for p in names}
            started = all(b is not None for b in buffers.values())
            state["step"] = 1 if started else 0
            state["momentum"] = {
                k: b.detach().clone() if started else torch.zeros_like(p)
                for (p, k), b in zip(names.items(), buffers.values(), strict=True)
            }
        return rule, state
    rule = adam(**settings)
    first = optimizer.state.get(next(iter(names)), {})
    step = int(first["step"]) if "step" in first else 0
    if step == 0:
        return rule, rule.init({k: p.detach() for p, k in names.items()})
    return rule, {
        "step": step,
        "exp_avg": {k: optimizer.state[p]["exp_avg"].detach().clone() for p, k in names.items()},
        "exp_avg_sq": {k: optimizer.state[p]["exp_avg_sq"].detach().clone() for p, k in names.items()},
    }


@torch.no_grad()
def load_into_optimizer(
    optimizer: torch.optim.Optimizer, model: nn.Module, params: Tree, state: State
) -> None:
    """Write rule ``state`` and ``params`` back into ``model`` and ``optimizer`` (inverse of
    :func:`rule_from_optimizer`), so plain training continues where the rule stopped."""
    kind, _ = _kind(optimizer)
    for p, k in _names(optimizer, model).items():
        p.copy_(params[k])
        slot = optimizer.state[p]
        if kind == "SGD":
            if "momentum" in state:
                slot["momentum_buffer"] = state["momentum"][k].detach().clone()
        else:
            slot["step"] = torch.tensor(float(state["step"]))
            slot["exp_avg"] = state["exp_avg"][k].detach().clone()
            slot["exp_avg_sq"] = state["exp_avg_sq"][k].detach().clone()


def _kind(optimizer: torch.optim.Optimizer) -> tuple[str, tuple[str, ...]]:
    if type(optimizer) is torch.optim.SGD:
        return "SGD", _SGD_KEYS
    if type(optimizer) is torch.optim.Adam:
        group = optimizer.param_groups[0]
        if group.get("amsgrad") or group.get("maximize"):
            raise ValueError("unrolled differentiation supports Adam without amsgrad/maximize")
        return "Adam", _ADAM_KEYS
    raise TypeError(
        f"unrolled differentiation supports torch.optim.SGD and torch.optim.Adam, got "
        f"{type(optimizer).__name__}: use IFT(...) (any optimizer) or one of those two"
    )


def _names(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[Tensor, str]:
    by_id = {id(p): k for k, p in model.named_parameters()}
    out = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in by_id:
                raise ValueError("the inner optimizer holds a tensor that is not a parameter of model")
            out[p] = by_id[id(p)]
    return out
