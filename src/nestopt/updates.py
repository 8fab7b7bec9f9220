"""Update rules as pure ``(init, update)`` pairs over parameter trees, after optax.

``rule.update(grads, state, params) -> (new_params, new_state)``. Being pure tensor code, the
same rule trains a model, is differentiated through by :func:`nestopt.unrolled`, and is
checkpointed as a plain tree. The rules reproduce ``torch.optim.SGD`` and ``torch.optim.Adam``
step for step, so :func:`rule_from_optimizer` turns a user's optimizer (and its state) into
the rule that continues it.
"""

from __future__ import annotations

import cmath
import math
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


# --------------------------------------------------------------------------- rules for games
# Lorraine, Acuna, Vicol & Duvenaud, "Complex Momentum for Optimization in Games" (AISTATS 2022).
# Its recommended default: |β| = 0.9 at phase π/8.
DEFAULT_BETA = 0.9 * cmath.exp(1j * math.pi / 8)


def complex_momentum(lr: float | Tensor, beta: complex = DEFAULT_BETA) -> UpdateRule:
    r"""Gradient descent with complex momentum, complex buffer (Lorraine et al., 2022, Algorithm 1).

    :math:`\mu \leftarrow \beta \mu - g`, :math:`w \leftarrow w + \text{lr}\,\Re(\mu)`, with
    :math:`\beta = |\beta| e^{i\theta}`, :math:`|\beta| < 1` and :math:`\mu_0 = 0`. Parameters stay
    real. A real :math:`\beta` is heavy-ball momentum (``torch.optim.SGD(momentum=β)``, whose buffer
    is :math:`-\mu`); negative :math:`\beta` is negative momentum. :func:`complex_momentum_two_buffer`
    is the same rule with two real buffers. State: ``momentum`` (complex tree of μ).
    """
    _check_lr(lr)
    beta = _check_momentum(beta, "beta")

    def init(params: Tree) -> State:
        return {"step": 0, "momentum": {k: torch.zeros_like(v, dtype=_complex(v)) for k, v in params.items()}}

    def update(grads: Tree, state: State, params: Tree) -> tuple[Tree, State]:
        mu = {k: beta * state["momentum"][k] - grads[k] for k in params}
        new_params = {k: w + lr * mu[k].real for k, w in params.items()}
        return new_params, {"step": state["step"] + 1, "momentum": mu}

    return UpdateRule(init, update)


def complex_momentum_two_buffer(lr: float | Tensor, beta: complex = DEFAULT_BETA) -> UpdateRule:
    r""":func:`complex_momentum` with two real buffers, :math:`\mu = u + iv` (same iterates).

    :math:`u \leftarrow \Re\beta\, u - \Im\beta\, v - g`, :math:`v \leftarrow \Im\beta\, u + \Re\beta\, v`,
    :math:`w \leftarrow w + \text{lr}\, u`. Real state survives what complex state does not:
    ``torch.optim.Optimizer.load_state_dict`` casts state to the parameter's (real) dtype, and
    mixed precision, ``torch.compile`` and all-reduce handle real tensors everywhere. State:
    ``momentum_real`` (u), ``momentum_imag`` (v).
    """
    _check_lr(lr)
    beta = _check_momentum(beta, "beta")
    br, bi = beta.real, beta.imag

    def init(params: Tree) -> State:
        zeros = {k: torch.zeros_like(v) for k, v in params.items()}
        return {"step": 0, "momentum_real": zeros, "momentum_imag": dict(zeros)}

    def update(grads: Tree, state: State, params: Tree) -> tuple[Tree, State]:
        u_old, v_old = state["momentum_real"], state["momentum_imag"]
        u = {k: br * u_old[k] - bi * v_old[k] - grads[k] for k in params}
        v = {k: bi * u_old[k] + br * v_old[k] for k in params}
        new_params = {k: w + lr * u[k] for k, w in params.items()}
        return new_params, {"step": state["step"] + 1, "momentum_real": u, "momentum_imag": v}

    return UpdateRule(init, update)


def complex_adam(
    lr: float | Tensor,
    betas: tuple[complex, float] = (DEFAULT_BETA, 0.999),
    eps: float = 1e-8,
) -> UpdateRule:
    r"""Adam with a complex first-moment coefficient (Lorraine et al., 2022, complex Adam variant).

    :math:`m \leftarrow \beta_1 m + (1-\beta_1) g` (complex :math:`\beta_1`, :math:`|\beta_1| < 1`),
    :math:`v \leftarrow \beta_2 v + (1-\beta_2) g^2`,
    :math:`w \leftarrow w - \text{lr}\,\Re(\hat m) / (\sqrt{\hat v} + \epsilon)` with
    :math:`\hat m = m / (1-\beta_1^t)`, :math:`\hat v = v / (1-\beta_2^t)`. Only the real part of
    the first moment moves the parameters; a real :math:`\beta_1` is ``torch.optim.Adam`` step for
    step. The first moment is kept as two real buffers (see :func:`complex_momentum_two_buffer`).
    State: ``exp_avg_real``, ``exp_avg_imag``, ``exp_avg_sq``.
    """
    _check_lr(lr)
    beta1 = _check_momentum(betas[0], "betas[0]")
    beta2 = float(betas[1])
    if not 0.0 <= beta2 < 1.0:
        raise ValueError(f"complex Adam needs 0 <= betas[1] < 1, got {beta2}: use e.g. 0.999")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}: use e.g. 1e-8")
    br, bi = beta1.real, beta1.imag
    cr, ci = 1.0 - br, -bi  # 1 - β1

    def init(params: Tree) -> State:
        zeros = {k: torch.zeros_like(v) for k, v in params.items()}
        return {"step": 0, "exp_avg_real": zeros, "exp_avg_imag": dict(zeros), "exp_avg_sq": dict(zeros)}

    def update(grads: Tree, state: State, params: Tree) -> tuple[Tree, State]:
        t = state["step"] + 1
        inverse1 = 1.0 / (1.0 - beta1**t)  # complex bias correction of the first moment
        correction2_sqrt = (1 - beta2**t) ** 0.5
        new_params, m_re, m_im, v_new = {}, {}, {}, {}
        for k, w in params.items():
            g, u, v_im = grads[k], state["exp_avg_real"][k], state["exp_avg_imag"][k]
            m_re[k] = br * u - bi * v_im + cr * g
            m_im[k] = bi * u + br * v_im + ci * g
            v_new[k] = state["exp_avg_sq"][k] * beta2 + (1 - beta2) * g * g
            m_hat_re = inverse1.real * m_re[k] - inverse1.imag * m_im[k] if bi else inverse1.real * m_re[k]
            denom = _safe_sqrt(v_new[k]) / correction2_sqrt + eps
            new_params[k] = w - lr * m_hat_re / denom
        return new_params, {"step": t, "exp_avg_real": m_re, "exp_avg_imag": m_im, "exp_avg_sq": v_new}

    return UpdateRule(init, update)


def extragradient(lr: float | Tensor) -> UpdateRule:
    r"""Extragradient (Korpelevich, 1976), one gradient evaluation per call.

    Calls alternate: an odd call extrapolates, :math:`\bar w = w - \text{lr}\, g(w)` (and keeps
    :math:`w` as the anchor); an even call updates from the anchor with the gradient at the
    extrapolated point, :math:`w \leftarrow w - \text{lr}\, g(\bar w)`. Two calls are one
    extragradient step, :math:`w \leftarrow w - \text{lr}\, g(w - \text{lr}\, g(w))`. State:
    ``anchor``.
    """
    _check_lr(lr)

    def init(params: Tree) -> State:
        return {"step": 0, "anchor": {k: torch.zeros_like(v) for k, v in params.items()}}

    def update(grads: Tree, state: State, params: Tree) -> tuple[Tree, State]:
        extrapolating = state["step"] % 2 == 0
        anchor = params if extrapolating else state["anchor"]
        new_params = {k: torch.add(anchor[k], grads[k], alpha=-lr) for k in params}
        return new_params, {"step": state["step"] + 1, "anchor": dict(anchor)}

    return UpdateRule(init, update)


def extrapolated(rule: UpdateRule) -> UpdateRule:
    r"""Extragradient over any rule (Gidel et al., 2019, "A Variational Inequality Perspective on
    GANs": Extra-Adam is ``extrapolated(adam(lr))``), one gradient evaluation per call.

    Calls alternate: an odd call applies ``rule`` at :math:`w` to reach the extrapolated point
    :math:`\bar w` (keeping :math:`w` as the anchor); an even call applies ``rule`` to the anchor
    with the gradient at :math:`\bar w`. Both calls advance the rule's own state (moments, step
    count), as Gidel et al.'s Extra-Adam does. ``extrapolated(sgd(lr))`` is :func:`extragradient`.
    State: the rule's, plus ``anchor`` and ``extrapolation_calls``.
    """
    own = ("anchor", "extrapolation_calls")

    def init(params: Tree) -> State:
        state = rule.init(params)
        clash = [k for k in own if k in state]
        if clash:
            raise ValueError(f"extrapolated() cannot wrap a rule whose state already has {clash}")
        return {**state, "anchor": {k: torch.zeros_like(v) for k, v in params.items()}, own[1]: 0}

    def update(grads: Tree, state: State, params: Tree) -> tuple[Tree, State]:
        extrapolating = state[own[1]] % 2 == 0
        anchor = params if extrapolating else state["anchor"]
        inner = {k: v for k, v in state.items() if k not in own}
        new_params, inner = rule.update(grads, inner, anchor)
        return new_params, {**inner, "anchor": dict(anchor), own[1]: state[own[1]] + 1}

    return UpdateRule(init, update)


def optimistic(lr: float | Tensor) -> UpdateRule:
    r"""Optimistic gradient descent (Popov, 1980; Daskalakis et al., 2018).

    :math:`w \leftarrow w - \text{lr}\,(2 g_t - g_{t-1})`; the first step is plain gradient descent
    (:math:`g_{-1} = g_0`). One gradient evaluation per step. State: ``previous_grad``.
    """
    _check_lr(lr)

    def init(params: Tree) -> State:
        return {"step": 0, "previous_grad": {k: torch.zeros_like(v) for k, v in params.items()}}

    def update(grads: Tree, state: State, params: Tree) -> tuple[Tree, State]:
        previous = state["previous_grad"] if state["step"] else grads
        new_params = {k: w - lr * (2 * grads[k] - previous[k]) for k, w in params.items()}
        return new_params, {"step": state["step"] + 1, "previous_grad": dict(grads)}

    return UpdateRule(init, update)


def _check_lr(lr: float | Tensor) -> None:
    if not isinstance(lr, Tensor) and lr < 0:
        raise ValueError(f"lr must be >= 0, got {lr}: pass a non-negative learning rate")


def _check_momentum(beta: complex | float, name: str) -> complex:
    beta = complex(beta)
    if abs(beta) >= 1:
        raise ValueError(
            f"{name} needs |{name}| < 1, got |{name}| = {abs(beta):.4g}: shrink it, e.g. "
            f"0.9 * cmath.exp(1j * math.pi / 8)"
        )
    return beta


def _complex(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.complex64)
