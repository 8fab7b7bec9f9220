"""Linear solvers for ``A x = b`` over parameter trees, where ``A`` is only available as ``v -> A v``.

A solver is a small frozen value (``neumann(steps=10, alpha=0.1)``) called as
``solver(operator, b) -> Solution``. Solvers never call ``.item()`` or branch on tensor values
while traced, so they run under ``torch.compile`` and ``torch.func`` transforms; in eager mode
CG may stop early once converged (the only host sync, one per iteration).

Every solver accepts ``damping`` ``δ >= 0`` and solves ``(A + δ I) x = b``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ._runtime import can_sync
from .tree import Tree, tree_add, tree_dot, tree_flatten, tree_norm, tree_scale, tree_size, tree_unflatten

Matvec = Callable[[Tree], Tree]


class Solution(NamedTuple):
    """Result of a linear solve.

    ``residual_norm`` is ``||b - (A + δI) x||`` (NaN where the solver does not compute it),
    ``min_curvature`` the smallest ``pᵀAp / pᵀp`` CG met (NaN for other solvers); a value
    ``<= 0`` means the operator is not positive definite along the search directions.
    """

    x: Tree
    iterations: Tensor
    residual_norm: Tensor
    min_curvature: Tensor


class IndefiniteOperatorError(ValueError):
    """CG met a direction of non-positive curvature: the operator is not positive definite."""


def check_solution(solution: Solution, solver: object) -> None:
    """Raise :class:`IndefiniteOperatorError` if CG saw non-positive curvature (one host sync)."""
    curvature = float(solution.min_curvature)
    if curvature <= 0:
        damping = getattr(solver, "damping", 0.0)
        raise IndefiniteOperatorError(
            f"{solver!r} met curvature pᵀ(H + δI)p/pᵀp = {curvature:.3g} <= 0: the Hessian is not "
            f"positive definite at these weights; use neumann(...) or more damping, e.g. "
            f"cg(damping={_round_up(2 * damping + 2 * -curvature + 1e-3)})"
        )


def _round_up(x: float) -> float:
    """``x`` rounded up to two significant digits (a suggestion that is never below ``x``)."""
    scale = 10 ** (math.floor(math.log10(x)) - 1)
    return round(math.ceil(x / scale) * scale, 12)


def _damped(matvec: Matvec, damping: float) -> Matvec:
    if damping == 0:
        return matvec
    return lambda v: tree_add(matvec(v), v, damping)


def _scalar(value: float, like: Tree) -> Tensor:
    first = next(iter(like.values()))
    return torch.tensor(value, dtype=first.real.dtype, device=first.device)


@dataclass(frozen=True)
class neumann:
    r"""Truncated Neumann series: :math:`x = \alpha \sum_{j=0}^{steps} (I - \alpha A)^j b`.

    Uses ``steps`` operator products for ``steps + 1`` terms (the convention of Lorraine, Vicol &
    Duvenaud, AISTATS 2020, Algorithm 3, and of TorchOpt and Betty). Converges to
    :math:`A^{-1} b` when all eigenvalues of ``alpha * A`` lie in (0, 2); the error is
    :math:`-(I - \alpha A)^{steps + 1} A^{-1} b`, i.e. it falls like :math:`\rho^{steps}` with
    :math:`\rho = \max_i |1 - \alpha \lambda_i|`. With ``alpha`` the inner learning rate, the
    result equals differentiating through ``steps + 1`` SGD steps started at the optimum (the
    paper's Theorem 1). Needs no definiteness.

    ``Solution.residual_norm`` is :math:`\|(I - \alpha A)^{steps} b\|`, the exact residual of
    the series without its last term, which costs nothing; it bounds the returned estimate's
    residual from above whenever :math:`\|I - \alpha A\| \le 1` (the exact value would cost one
    more product).
    """

    steps: int = 10
    alpha: float = 0.1
    damping: float = 0.0

    def __post_init__(self) -> None:
        _check_steps(self, self.steps, minimum=0)
        if not self.alpha > 0:
            raise ValueError(f"neumann(alpha={self.alpha}): alpha must be > 0 (try the inner lr)")
        _check_damping(self, self.damping)

    def __call__(self, matvec: Matvec, b: Tree) -> Solution:
        matvec = _damped(matvec, self.damping)
        v, total = b, b
        for _ in range(self.steps):
            v = tree_add(v, matvec(v), -self.alpha)
            total = tree_add(total, v)
        x = tree_scale(total, self.alpha)
        nan = _scalar(math.nan, b)
        return Solution(x, torch.tensor(self.steps), tree_norm(v), nan)


@dataclass(frozen=True)
class cg:
    r"""Conjugate gradients for symmetric positive-definite ``A`` (Hestenes & Stiefel, 1952).

    Runs at most ``steps`` operator products from ``x0 = 0`` and stops once
    ``||r|| <= tol * ||b||``. Assumes ``A`` symmetric positive definite; if it meets a direction
    with ``pᵀAp <= 0`` it stops there and reports it in ``Solution.min_curvature`` (the
    hypergradient then refuses with :class:`IndefiniteOperatorError`).
    """

    steps: int = 50
    tol: float = 1e-10
    damping: float = 0.0

    def __post_init__(self) -> None:
        _check_steps(self, self.steps)
        if not self.tol >= 0:
            raise ValueError(f"cg(tol={self.tol}): tol must be >= 0")
        _check_damping(self, self.damping)

    def __call__(self, matvec: Matvec, b: Tree) -> Solution:
        matvec = _damped(matvec, self.damping)
        return self._eager(matvec, b) if can_sync() else self._traced(matvec, b)

    def _eager(self, matvec: Matvec, b: Tree) -> Solution:
        """Plain CG with Python scalars: one host sync per iteration, early exit."""
        x = {k: torch.zeros_like(v) for k, v in b.items()}
        r, p = b, b
        rs = float(tree_dot(r, r).real)
        threshold = (self.tol**2) * rs
        min_curv, iterations = math.inf, 0
        for _ in range(self.steps if rs > threshold else 0):
            ap = matvec(p)
            pap, pp = torch.stack([tree_dot(p, ap).real, tree_dot(p, p).real]).tolist()
            min_curv = min(min_curv, pap / pp)
            if pap <= 0:
                break
            step = rs / pap
            x, r = tree_add(x, p, step), tree_add(r, ap, -step)
            rs_old, rs = rs, float(tree_dot(r, r).real)
            iterations += 1
            if rs <= threshold:
                break
            p = tree_add(r, p, rs / rs_old)
        return Solution(x, torch.tensor(iterations), _scalar(math.sqrt(rs), b), _scalar(min_curv, b))

    def _traced(self, matvec: Matvec, b: Tree) -> Solution:
        """The same iterations without host syncs: converged (or stopped) iterations are masked,
        so all ``steps`` products run (for torch.compile and torch.func transforms)."""
        x = {k: torch.zeros_like(v) for k, v in b.items()}
        r, p = b, b
        rs = tree_dot(r, r).real
        threshold = (self.tol**2) * rs
        done = rs <= threshold
        min_curv = _scalar(math.inf, b)
        iterations = torch.zeros((), dtype=torch.long, device=rs.device)
        for _ in range(self.steps):
            ap = matvec(p)
            pap = tree_dot(p, ap).real
            curvature = pap / torch.where(done, 1.0, tree_dot(p, p).real)
            min_curv = torch.where(done, min_curv, torch.minimum(min_curv, curvature))
            active = ~done & (pap > 0)
            step = torch.where(active, rs / torch.where(active, pap, 1.0), 0.0)
            x = tree_add(x, p, step)
            r = tree_add(r, ap, -step)
            rs_new = tree_dot(r, r).real
            beta = torch.where(active, rs_new / torch.where(active, rs, 1.0), 0.0)
            p = tree_add(r, p, beta)
            iterations = iterations + active.long()
            rs = torch.where(active, rs_new, rs)
            done = done | ~active | (rs_new <= threshold)
        residual = torch.sqrt(tree_dot(r, r).real)
        return Solution(x, iterations, residual, min_curv)


@dataclass(frozen=True)
class identity:
    r"""The cheapest approximation :math:`A^{-1} \approx \text{scale} \cdot I` (no operator product).

    As a hypergradient this is the one-step "greedy" estimate (e.g. Luketina et al., 2016).
    The residual is not computed (NaN) since that would cost the product this solver avoids.
    """

    scale: float = 1.0

    def __call__(self, matvec: Matvec, b: Tree) -> Solution:
        nan = _scalar(math.nan, b)
        return Solution(tree_scale(b, self.scale), torch.tensor(0), nan, nan)


@dataclass(frozen=True)
class exact:
    """Dense solve in float64: materialise ``A`` column by column (n products), then LU.

    For tests and small problems; refuses above ``max_size`` unknowns since it needs n products
    and an n-by-n matrix.
    """

    max_size: int = 4096
    damping: float = 0.0

    def __post_init__(self) -> None:
        _check_damping(self, self.damping)

    def __call__(self, matvec: Matvec, b: Tree) -> Solution:
        n = tree_size(b)
        if n > self.max_size:
            raise ValueError(
                f"exact() would build a dense {n}x{n} matrix (max_size={self.max_size}): use "
                f"cg(...) or neumann(...), or raise the limit with exact(max_size={n})"
            )
        b_flat = tree_flatten(b)
        eye = torch.eye(n, dtype=b_flat.dtype, device=b_flat.device)
        columns = [tree_flatten(matvec(tree_unflatten(eye[i], b))) for i in range(n)]
        a = torch.stack(columns, dim=1).to(torch.float64)
        a = a + self.damping * torch.eye(n, dtype=a.dtype, device=a.device)
        b64 = b_flat.to(torch.float64)
        x64 = torch.linalg.solve(a, b64)
        residual = torch.linalg.vector_norm(b64 - a @ x64)
        x = tree_unflatten(x64.to(b_flat.dtype), b)
        return Solution(x, torch.tensor(n), residual.to(b_flat.real.dtype), _scalar(math.nan, b))


def _check_steps(solver: object, steps: int, minimum: int = 1) -> None:
    if not isinstance(steps, int) or steps < minimum:
        raise ValueError(f"{solver!r}: steps must be an integer >= {minimum}")


def _check_damping(solver: object, damping: float) -> None:
    if not damping >= 0:
        raise ValueError(f"{solver!r}: damping must be >= 0")


Solver = Callable[[Matvec, Tree], Solution]
