"""Registry of bilevel problems with known hypergradients, and of hypergradient methods.

Every property in ``test_registry.py`` runs over every (method, problem) pair, so a method that
is wrong on any problem (e.g. a CG with a wrong sign or scale) fails loudly (lineax's pattern).
References are computed by code independent of nestopt: autograd through a dense
``torch.linalg.solve`` of the closed-form optimum (ridge), or dense Newton plus dense
implicit-function-theorem algebra (logistic regression).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import nestopt as nest

F64 = torch.float64


@dataclass
class Problem:
    name: str
    train_loss: Callable
    val_loss: Callable
    params: dict  # the exact inner optimum w*(λ)
    hparams: dict
    train_batch: Any
    val_batch: Any
    reference: dict  # exact d val_loss(w*(λ), λ) / dλ
    lr: float  # a stable inner step size (2 / lr exceeds the largest Hessian eigenvalue)
    rho: float  # max |1 - lr * eig(H)|: Neumann and unrolled errors fall like rho**steps


def _eig_bounds(h: torch.Tensor) -> tuple[float, float]:
    eig = torch.linalg.eigvalsh(h)
    return float(eig.min()), float(eig.max())


def ridge(features: int = 50, n_train: int = 200, n_val: int = 100, seed: int = 0) -> Problem:
    """Least squares with one L2 coefficient exp(λ_j) per feature; w* in closed form."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train, features, generator=g, dtype=F64)
    xv = torch.randn(n_val, features, generator=g, dtype=F64)
    w_true = torch.randn(features, generator=g, dtype=F64)
    y = x @ w_true + 0.5 * torch.randn(n_train, generator=g, dtype=F64)
    yv = xv @ w_true + 0.5 * torch.randn(n_val, generator=g, dtype=F64)
    lam = torch.linspace(-2.0, 0.0, features, dtype=F64)

    def train_loss(p, h, batch):
        xb, yb = batch
        return 0.5 * ((xb @ p["w"] - yb) ** 2).mean() + 0.5 * (h["log_l2"].exp() * p["w"] ** 2).sum()

    def val_loss(p, h, batch):
        xb, yb = batch
        return 0.5 * ((xb @ p["w"] - yb) ** 2).mean()

    def optimum(log_l2):
        a = x.T @ x / n_train + torch.diag(log_l2.exp())
        return torch.linalg.solve(a, x.T @ y / n_train)

    lam_leaf = lam.clone().requires_grad_(True)
    ref = torch.autograd.grad(val_loss({"w": optimum(lam_leaf)}, None, (xv, yv)), lam_leaf)[0]
    lo, hi = _eig_bounds(x.T @ x / n_train + torch.diag(lam.exp()))
    lr = 1.0 / hi
    return Problem(
        "ridge",
        train_loss,
        val_loss,
        {"w": optimum(lam).detach()},
        {"log_l2": lam},
        (x, y),
        (xv, yv),
        {"log_l2": ref},
        lr,
        max(abs(1 - lr * lo), abs(1 - lr * hi)),
    )


def logistic(features: int = 8, n_train: int = 120, n_val: int = 80, seed: int = 1) -> Problem:
    """Logistic regression with a bias, per-feature L2 on the weights, and a validation loss that
    also depends on λ directly (so the direct term is exercised); w* by Newton in float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train, features, generator=g, dtype=F64)
    xv = torch.randn(n_val, features, generator=g, dtype=F64)
    w_true = torch.randn(features, generator=g, dtype=F64)
    y = (x @ w_true + 0.3 * torch.randn(n_train, generator=g, dtype=F64) > 0).double()
    yv = (xv @ w_true > 0).double()
    hp = {
        "log_l2": torch.linspace(-3.0, -1.0, features, dtype=F64),
        "temperature": torch.tensor(0.2, dtype=F64),
    }

    def unpack(theta):
        return {"w": theta[:features], "b": theta[features]}

    def train_loss(p, h, batch):
        xb, yb = batch
        logits = xb @ p["w"] + p["b"]
        data = torch.nn.functional.binary_cross_entropy_with_logits(logits, yb)
        return data + 0.5 * (h["log_l2"].exp() * p["w"] ** 2).sum() + 0.05 * p["b"] ** 2

    def val_loss(p, h, batch):
        xb, yb = batch
        logits = (xb @ p["w"] + p["b"]) * h["temperature"].exp()
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, yb)

    def flat_train(theta, h):
        return train_loss(unpack(theta), h, (x, y))

    theta = torch.zeros(features + 1, dtype=F64)
    for _ in range(50):  # Newton to machine precision (strictly convex)
        grad = torch.func.grad(flat_train)(theta, hp)
        theta = theta - torch.linalg.solve(torch.func.hessian(flat_train)(theta, hp), grad)
    assert float(torch.func.grad(flat_train)(theta, hp).norm()) < 1e-13
    # Dense IFT: dθ*/dλ = -H^{-1} ∂²L/∂θ∂λ;  dL_V/dλ = ∂L_V/∂λ + (dθ*/dλ)ᵀ ∂L_V/∂θ.
    hess = torch.func.hessian(flat_train)(theta, hp)
    cross = torch.func.jacrev(torch.func.grad(flat_train), argnums=1)(theta, hp)

    def flat_val(theta, h):
        return val_loss(unpack(theta), h, (xv, yv))

    gv_theta, gv_h = torch.func.grad(flat_val, argnums=(0, 1))(theta, hp)
    z = torch.linalg.solve(hess, gv_theta)
    ref = {k: gv_h[k] - torch.einsum("i,i...->...", z, cross[k]) for k in hp}
    lo, hi = _eig_bounds(hess)
    lr = 1.0 / hi
    return Problem(
        "logistic",
        train_loss,
        val_loss,
        unpack(theta.detach().clone()),
        hp,
        (x, y),
        (xv, yv),
        ref,
        lr,
        max(abs(1 - lr * lo), abs(1 - lr * hi)),
    )


PROBLEMS: dict[str, Callable[[], Problem]] = {"ridge": ridge, "logistic": logistic}


@dataclass(frozen=True)
class Method:
    """How to get a hypergradient of a problem, and the relative error it must reach."""

    name: str
    compute: Callable[..., dict]  # (problem, backend=None) -> hypergradient tree
    tolerance: Callable[[Problem], float]
    implicit: bool = True


def _implicit(solver):
    def compute(p: Problem, backend=None) -> dict:
        return nest.implicit(
            p.train_loss,
            p.val_loss,
            p.params,
            p.hparams,
            p.train_batch,
            p.val_batch,
            solver=solver(p),
            backend=backend,
        ).grads

    return compute


def _unrolled_from_optimum(steps: int):
    def compute(p: Problem, backend=None) -> dict:
        batches = [p.train_batch] * steps
        return nest.unrolled(
            p.train_loss, p.val_loss, p.params, p.hparams, batches, p.val_batch, rule=nest.sgd(p.lr)
        ).grads

    return compute


METHODS: list[Method] = [
    Method("implicit-exact", _implicit(lambda p: nest.exact()), lambda p: 1e-10),
    Method("implicit-cg", _implicit(lambda p: nest.cg(steps=200, tol=1e-15)), lambda p: 1e-10),
    Method(
        "implicit-neumann-150",
        _implicit(lambda p: nest.neumann(steps=150, alpha=p.lr)),
        lambda p: 1e-10 + 50 * p.rho**150,
    ),
    Method(
        "unrolled-150-from-optimum",
        _unrolled_from_optimum(150),
        lambda p: 1e-10 + 50 * p.rho**150,
        implicit=False,
    ),
]


def relative_error(estimate: dict, reference: dict) -> float:
    num = sum(float((estimate[k] - reference[k]).norm() ** 2) for k in reference)
    den = sum(float(reference[k].norm() ** 2) for k in reference)
    return (num / den) ** 0.5
