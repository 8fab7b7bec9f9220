"""Plain-PyTorch hypergradients (no nestopt, no peer library): the references that every library's
result is compared with, method for method.

Implicit: ``d L_V / d λ = ∂_λ L_V - (∂²_{wλ} L_T)ᵀ x`` with ``x ≈ H⁻¹ ∂_w L_V``, ``H = ∂²_{ww} L_T``;
one ``create_graph`` gradient of the training loss, then every Hessian-vector product and the
mixed product is one backward pass through it (double backward). The solves are written out in
the textbook form, one function each. Unrolled: reverse mode through K SGD steps built with
``create_graph=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

Vector = list[Tensor]
Matvec = Callable[[Vector], Vector]
Solve = Callable[[Matvec, Vector], Vector]


def _dot(a: Vector, b: Vector) -> Tensor:
    return sum(
        (torch.vdot(x.reshape(-1), y.reshape(-1)) for x, y in zip(a, b, strict=True)), torch.tensor(0.0)
    )


def neumann(products: int, alpha: float) -> Solve:
    """Truncated Neumann series ``x = α Σ_{j<=products} (I - αH)^j b``: ``products``
    Hessian-vector products, ``products + 1`` terms (nestopt's ``neumann``, TorchOpt's ``ns``,
    Betty's ``neumann``); equal to differentiating ``products + 1`` SGD steps of size α taken
    from the optimum."""

    def solve(hvp: Matvec, b: Vector) -> Vector:
        v, total = list(b), list(b)
        for _ in range(products):
            v = [vi - alpha * hi for vi, hi in zip(v, hvp(v), strict=True)]
            total = [t + vi for t, vi in zip(total, v, strict=True)]
        return [alpha * t for t in total]

    return solve


def cg(iterations: int, damping: float = 0.0, old_residual_direction: bool = False) -> Solve:
    """Conjugate gradients on ``(H + δI) x = b`` from ``x = 0`` (Hestenes & Stiefel), exactly
    ``iterations`` products. ``old_residual_direction=True`` builds the next direction from the
    previous residual, ``p ← r_k + β p`` instead of ``p ← r_{k+1} + β p``: the mistake of
    Betty 0.1.1's ``betty/hypergradient/cg.py`` (leopard-ai/betty#15), kept to show it is the cause."""

    def solve(hvp: Matvec, b: Vector) -> Vector:
        x = [torch.zeros_like(bi) for bi in b]
        r, p = list(b), list(b)
        rs = _dot(r, r)
        for _ in range(iterations):
            ap = hvp(p)
            if damping:
                ap = [a + damping * pi for a, pi in zip(ap, p, strict=True)]
            step = rs / _dot(p, ap)
            x = [xi + step * pi for xi, pi in zip(x, p, strict=True)]
            r_new = [ri - step * a for ri, a in zip(r, ap, strict=True)]
            rs_new = _dot(r_new, r_new)
            base = r if old_residual_direction else r_new
            p = [bi + (rs_new / rs) * pi for bi, pi in zip(base, p, strict=True)]
            r, rs = r_new, rs_new
        return x

    return solve


def normal_cg(iterations: int) -> Solve:
    """CG on the normal equations ``H² x = H b`` (TorchOpt's default ``solve_normal_cg``): two
    products per iteration, squared condition number, but no definiteness needed."""
    inner = cg(iterations)

    def solve(hvp: Matvec, b: Vector) -> Vector:
        return inner(lambda v: hvp(hvp(v)), hvp(b))

    return solve


def identity(scale: float = 1.0) -> Solve:
    """``H⁻¹ ≈ scale · I``: the one-step (DARTS-style, greedy) hypergradient."""
    return lambda hvp, b: [scale * bi for bi in b]


def implicit(
    inner_loss: Callable[[], Tensor],
    outer_loss: Callable[[], Tensor],
    weights: Sequence[Tensor],
    hparams: Sequence[Tensor],
    solve: Solve,
) -> Vector:
    """IFT hypergradient w.r.t. ``hparams`` (leaf tensors requiring grad) at ``weights`` (leaves
    requiring grad that both losses read); ``inner_loss()`` / ``outer_loss()`` evaluate the losses."""
    weights, hparams = list(weights), list(hparams)
    with torch.enable_grad():
        outer = outer_loss()
        b = list(torch.autograd.grad(outer, weights, retain_graph=True))
        direct = torch.autograd.grad(outer, hparams, allow_unused=True)
        g = torch.autograd.grad(inner_loss(), weights, create_graph=True)

        def hvp(v: Vector) -> Vector:
            return list(torch.autograd.grad(g, weights, v, retain_graph=True))

        x = solve(hvp, b)
        mixed = torch.autograd.grad(g, hparams, x)
    return [-m if d is None else d - m for d, m in zip(direct, mixed, strict=True)]


def unrolled(
    inner_loss: Callable[[Vector, Any], Tensor],
    outer_loss: Callable[[Vector], Tensor],
    weights: Sequence[Tensor],
    hparams: Sequence[Tensor],
    batches: Sequence[Any],
    lr: float,
) -> tuple[Vector, Vector]:
    """Reverse mode through ``w ← w - lr ∇_w inner_loss(w, batch)`` over ``batches`` from ``weights``
    (held constant); returns the hypergradient and the final weights (detached).
    ``inner_loss(w, batch)`` and ``outer_loss(w)`` take the weights as a list."""
    w = [wi.detach().requires_grad_(True) for wi in weights]
    with torch.enable_grad():
        for batch in batches:
            grads = torch.autograd.grad(inner_loss(w, batch), w, create_graph=True)
            w = [wi - lr * gi for wi, gi in zip(w, grads, strict=True)]
        hg = torch.autograd.grad(outer_loss(w), list(hparams))
    return list(hg), [wi.detach() for wi in w]
