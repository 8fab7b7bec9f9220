r"""Second-order operators of an inner loss ``L(w, λ; batch)``, as functions over parameter trees.

:func:`linearize` differentiates the inner gradient :math:`g(w, λ) = \partial L / \partial w` once
more, at a fixed point and batch, and returns its two Jacobian products:

* ``hvp(v)``       = :math:`\partial^2 L / \partial w^2 \; v`       (Hessian-vector product)
* ``mixed_vjp(v)`` = :math:`(\partial^2 L / \partial w \partial λ)^\top v = \partial_λ \langle g, v \rangle`;
  the autograd backend leaves out hyperparameters that do not reach ``g`` (exact zeros), so
  callers can tell a hyperparameter that is not used from one with a zero product.

Two backends compute the same numbers:

* ``"autograd"`` (eager default): one ``create_graph`` gradient, then every product is one
  backward pass through that retained graph (reverse-over-reverse with the forward reused), so a
  solve of n products costs one forward and n + 1 double-backwards, and dropout masks / BatchNorm
  batch statistics are the same for every product of a solve.
* ``"func"``: the same reverse-over-reverse with ``torch.func.vjp`` closures; pure, so it composes
  with ``torch.func`` transforms and ``torch.compile`` (used automatically while traced).

Measured on CPU (``benchmarks/hypergrad.py``), reverse-over-reverse with the forward reused beats
forward-over-reverse (``jvp`` of ``grad``) in both eager and compiled mode, so it is the only one
kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from ._runtime import can_sync
from .tree import Tree

Loss = Callable[[Tree, Tree, Any], Tensor]
Backend = Literal["autograd", "func"]


class Linearization(NamedTuple):
    """The inner gradient at one point, with its Jacobian products (see module docstring)."""

    grad: Tree
    hvp: Callable[[Tree], Tree]
    mixed_vjp: Callable[[Tree], Tree]


def default_backend() -> Backend:
    """``"autograd"`` in eager mode (fastest there), ``"func"`` while traced."""
    return "autograd" if can_sync() else "func"


def scalar_loss(loss: Loss, name: str) -> Loss:
    """Wrap ``loss`` to check it returns a 0-d tensor (shapes are static, so this traces)."""

    def wrapped(params: Tree, hparams: Tree, batch: Any) -> Tensor:
        value = loss(params, hparams, batch)
        if not isinstance(value, Tensor) or value.dim() != 0:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{name} must return a scalar tensor, got {shape}: reduce it, e.g. .mean()")
        return value

    return wrapped


def linearize(
    loss: Loss, params: Tree, hparams: Tree, batch: Any, backend: Backend | None = None
) -> Linearization:
    """Linearize the inner gradient of ``loss`` at ``(params, hparams)`` on ``batch``."""
    backend = backend or default_backend()
    loss = scalar_loss(loss, "train_loss")
    if backend == "autograd":
        return _linearize_autograd(loss, params, hparams, batch)
    if backend == "func":
        return _linearize_func(loss, params, hparams, batch)
    raise ValueError(f"unknown backend {backend!r}: use 'autograd' or 'func'")


def value_and_grads(
    loss: Loss, params: Tree, hparams: Tree, batch: Any, backend: Backend | None = None
) -> tuple[Tensor, Tree, Tree]:
    """``(L, ∂L/∂w, ∂L/∂λ)``. The autograd backend leaves out of ``∂L/∂λ`` the hyperparameters
    ``loss`` does not use; the func backend cannot tell and returns zeros for them."""
    backend = backend or default_backend()
    loss = scalar_loss(loss, "val_loss")
    if backend == "func":
        (gw, gh), value = torch.func.grad_and_value(loss, argnums=(0, 1))(params, hparams, batch)
        return value.detach(), gw, gh
    w, h = _leaves(params), _leaves(hparams)
    with torch.enable_grad():
        value = loss(w, h, batch)
        grads = torch.autograd.grad(value, [*w.values(), *h.values()], allow_unused=True)
    gw = _fill(w, grads[: len(w)])
    gh = {k: g for k, g in zip(h, grads[len(w) :], strict=True) if g is not None}
    return value.detach(), gw, gh


# --------------------------------------------------------------------------- backends
def _linearize_autograd(loss: Loss, params: Tree, hparams: Tree, batch: Any) -> Linearization:
    w, h = _leaves(params), _leaves(hparams)
    with torch.enable_grad():
        value = loss(w, h, batch)
        grads = torch.autograd.grad(value, list(w.values()), create_graph=True, allow_unused=True)
    # Leaves whose gradient has no graph (unused, or the loss is linear in them) have zero curvature.
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    outputs = [grads[i] for i in live]
    keys = list(w)

    def products(v: Tree, inputs: Tree) -> list[Tensor | None]:
        if not outputs:
            return [None] * len(inputs)
        cotangents = [v[keys[i]] for i in live]
        return list(
            torch.autograd.grad(
                outputs, list(inputs.values()), cotangents, retain_graph=True, allow_unused=True
            )
        )

    def hvp(v: Tree) -> Tree:
        return _fill(w, products(v, w))

    def mixed_vjp(v: Tree) -> Tree:
        # Hyperparameters that do not reach the gradient are left out (their product is zero).
        return {k: g for k, g in zip(h, products(v, h), strict=True) if g is not None}

    gw = _fill(w, [g.detach() if g is not None else None for g in grads])
    return Linearization(gw, hvp, mixed_vjp)


def _linearize_func(loss: Loss, params: Tree, hparams: Tree, batch: Any) -> Linearization:
    def inner_grad(w: Tree, h: Tree) -> Tree:
        return torch.func.grad(loss)(w, h, batch)

    g, hvp_fn = torch.func.vjp(lambda w: inner_grad(w, hparams), params)
    mixed_fn: list[Callable] = []

    def hvp(v: Tree) -> Tree:
        return hvp_fn(v)[0]

    def mixed_vjp(v: Tree) -> Tree:
        if not mixed_fn:  # built on first use: a second forward, needed once per solve
            mixed_fn.append(torch.func.vjp(lambda h: inner_grad(params, h), hparams)[1])
        return mixed_fn[0](v)[0]

    return Linearization(g, hvp, mixed_vjp)


def _leaves(tree: Tree) -> Tree:
    return {k: v.detach().requires_grad_(True) for k, v in tree.items()}


def _fill(like: Tree, grads: list[Tensor | None] | tuple[Tensor | None, ...]) -> Tree:
    return {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(like.items(), grads, strict=True)}
