r"""Hypergradients :math:`\frac{d}{dλ} L_V(w^*(λ), λ)` of a bilevel problem.

The problem is two plain functions of ``(params, hparams, batch)`` returning scalars:
``train_loss`` (inner objective, minimised over the weights ``w``) and ``val_loss`` (outer
objective). Trees are ``dict[str, Tensor]``.

* :func:`implicit` — implicit function theorem at (approximately) optimal weights:
  :math:`\frac{dL_V}{dλ} = \partial_λ L_V - (\partial^2_{wλ} L_T)^\top H^{-1} \partial_w L_V`
  with :math:`H = \partial^2_{ww} L_T`, the solve done by any solver of :mod:`nestopt.solvers`
  (Lorraine, Vicol & Duvenaud, AISTATS 2020, Algorithm 1).
* :func:`unrolled` — reverse-mode through K steps of an update rule (Maclaurin et al., 2015;
  Franceschi et al., 2017); ``window=T`` keeps only the last T steps in the graph (truncated
  back-propagation, Shaban et al., 2019); :func:`truncated` is that call by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ._runtime import can_sync
from .operators import Backend, Loss, default_backend, linearize, scalar_loss, value_and_grads
from .solvers import Solution, Solver, check_solution, neumann
from .tree import Tree, check_same_dtype_device, check_tree
from .updates import State, UpdateRule


class Hypergradient(NamedTuple):
    """``grads``: d val_loss / d hparams (a tree like hparams); ``val_loss`` at the weights used;
    ``solution``: the linear solve's diagnostics (``None`` for unrolled)."""

    grads: Tree
    val_loss: Tensor
    solution: Solution | None


class UnrolledHypergradient(NamedTuple):
    """As :class:`Hypergradient`, plus the weights and rule state after the K steps (detached)
    and the K training losses met on the way."""

    grads: Tree
    val_loss: Tensor
    params: Tree
    state: State
    train_losses: Tensor


def implicit(
    train_loss: Loss,
    val_loss: Loss,
    params: Tree,
    hparams: Tree,
    train_batch: Any,
    val_batch: Any,
    *,
    solver: Solver = neumann(),
    mixed_batch: Any = None,
    backend: Backend | None = None,
) -> Hypergradient:
    """Implicit-function-theorem hypergradient at ``params`` (assumed near an inner optimum).

    ``train_batch`` feeds the Hessian-vector products of the solve and, unless ``mixed_batch``
    is given, the mixed second-derivative product too (then one linearization serves both, the
    cheaper choice). ``backend`` is ``"autograd"`` in eager mode and ``"func"`` while traced
    (``torch.compile``, ``torch.func``); both give the same numbers. CG refuses an indefinite
    Hessian with :class:`nestopt.solvers.IndefiniteOperatorError` (checked in eager mode).
    """
    backend = backend or default_backend()
    if can_sync():
        _check_inputs(params, hparams)
    value, v_w, direct = value_and_grads(val_loss, params, hparams, val_batch, backend)
    inner = linearize(train_loss, params, hparams, train_batch, backend)
    solution = solver(inner.hvp, v_w)
    mixed_op = inner if mixed_batch is None else linearize(train_loss, params, hparams, mixed_batch, backend)
    mixed = mixed_op.mixed_vjp(solution.x)
    if can_sync():
        _check_reached(hparams, direct, mixed)
        check_solution(solution, solver)
    return Hypergradient(_combine(hparams, direct, mixed), value, solution)


def check_problem(
    train_loss: Loss, val_loss: Loss, params: Tree, hparams: Tree, train_batch: Any, val_batch: Any
) -> None:
    """Check, eagerly and once, what a traced :func:`implicit` cannot: trees well formed, losses
    scalar, every hyperparameter reaching train_loss's gradient or val_loss. Costs about one
    hypergradient with a single operator product; the random state is left untouched."""
    _check_inputs(params, hparams)
    with torch.random.fork_rng():
        _, _, direct = value_and_grads(val_loss, params, hparams, val_batch, "autograd")
        inner = linearize(train_loss, params, hparams, train_batch, "autograd")
        mixed = inner.mixed_vjp(inner.grad)
    _check_reached(hparams, direct, mixed)


def unrolled(
    train_loss: Loss,
    val_loss: Loss,
    params: Tree,
    hparams: Tree,
    train_batches: Sequence[Any],
    val_batch: Any,
    *,
    rule: UpdateRule,
    state: State | None = None,
    window: int | None = None,
) -> UnrolledHypergradient:
    r"""Differentiate ``val_loss(w_K, λ)`` through ``w_{k+1} = rule(∇_w train_loss(w_k, λ; b_k))``.

    ``train_batches`` holds the K batches (K = its length); ``params`` is ``w_0`` (held constant);
    ``state`` the rule's state (``rule.init(params)`` when ``None``). With ``window=T`` only the last
    T steps are differentiated, the first K - T run without a graph (truncated back-propagation).
    Memory grows linearly with the differentiated steps.
    """
    _check_inputs(params, hparams)
    steps = len(train_batches)
    if steps < 1:
        raise ValueError("unrolled needs at least one train batch (got an empty sequence)")
    if window is not None and not 1 <= window <= steps:
        raise ValueError(f"window={window} must be between 1 and the number of steps ({steps})")
    train_loss = scalar_loss(train_loss, "train_loss")
    first_differentiated = steps - (window or steps)
    h = {k: v.detach().requires_grad_(True) for k, v in hparams.items()}
    h_const = {k: v.detach() for k, v in hparams.items()}
    w = {k: v.detach() for k, v in params.items()}
    state = rule.init(w) if state is None else state
    losses = []
    with torch.enable_grad():
        for k, batch in enumerate(train_batches):
            differentiate = k >= first_differentiated
            if not any(v.requires_grad for v in w.values()):
                w = {name: v.detach().requires_grad_(True) for name, v in w.items()}
            loss = train_loss(w, h if differentiate else h_const, batch)
            losses.append(loss.detach())
            grads = torch.autograd.grad(loss, list(w.values()), create_graph=differentiate, allow_unused=True)
            grads = {
                name: torch.zeros_like(v) if g is None else g
                for (name, v), g in zip(w.items(), grads, strict=True)
            }
            if differentiate:
                w, state = rule.update(grads, state, w)
            else:
                with torch.no_grad():
                    w, state = rule.update(grads, state, {n: v.detach() for n, v in w.items()})
        value = scalar_loss(val_loss, "val_loss")(w, h, val_batch)
        hg = torch.autograd.grad(value, list(h.values()), allow_unused=True)
    unreached = [k for k, g in zip(h, hg, strict=True) if g is None]
    if len(unreached) == len(h):
        raise ValueError(
            "no hyperparameter reaches val_loss through training: make train_loss use hparams "
            "(e.g. a penalty weighted by them) or val_loss use them directly"
        )
    grads = {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(h.items(), hg, strict=True)}
    return UnrolledHypergradient(grads, value.detach(), _detach(w), _detach(state), torch.stack(losses))


def truncated(
    train_loss: Loss,
    val_loss: Loss,
    params: Tree,
    hparams: Tree,
    train_batches: Sequence[Any],
    val_batch: Any,
    *,
    rule: UpdateRule,
    window: int,
    state: State | None = None,
) -> UnrolledHypergradient:
    """:func:`unrolled` differentiating only the last ``window`` of the steps."""
    return unrolled(
        train_loss, val_loss, params, hparams, train_batches, val_batch, rule=rule, state=state, window=window
    )


def _combine(hparams: Tree, direct: Tree, mixed: Tree) -> Tree:
    """direct - mixed, where a missing key is an exact zero."""
    out = {}
    for k, h in hparams.items():
        if k in direct and k in mixed:
            out[k] = direct[k] - mixed[k]
        elif k in mixed:
            out[k] = -mixed[k]
        else:
            out[k] = direct[k] if k in direct else torch.zeros_like(h)
    return out


def _check_inputs(params: Tree, hparams: Tree) -> None:
    check_tree(params, "params")
    check_tree(hparams, "hparams")
    check_same_dtype_device({"params": params, "hparams": hparams})


def _check_reached(hparams: Tree, direct: Tree, mixed: Tree) -> None:
    unreached = [k for k in hparams if k not in mixed and k not in direct]
    if unreached:
        raise ValueError(
            f"hyperparameter(s) {unreached} reach neither the gradient of train_loss nor val_loss: "
            f"use them in train_loss (e.g. a penalty on params weighted by them) or drop them"
        )


def _detach(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.detach()
    if isinstance(x, dict):
        return {k: _detach(v) for k, v in x.items()}
    return x
