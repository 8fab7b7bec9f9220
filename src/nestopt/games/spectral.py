r"""Spectral analysis: which optimizer converges near a fixed point of a game, and how fast.

Near a fixed point :math:`\theta^*` of the gradient field, :math:`\hat g(\theta) \approx
J(\theta - \theta^*)` with :math:`J` the game Jacobian (exact for quadratic and bilinear games).
A first-order method then iterates a linear map :math:`z \leftarrow M z` on its *augmented* state
:math:`z` (the parameters and every buffer), and converges linearly at the rate of the spectral
radius: :math:`\|z_t\| \sim \rho(M)^t`, diverging when :math:`\rho(M) > 1` (Lorraine et al.,
2022, Section 3; Gidel et al., 2019).

Closed forms, for the simultaneous update of all players (one gradient evaluation per step
unless noted):

* gradient descent-ascent: :math:`M = I - \alpha J` on :math:`z = w`;
* extragradient: :math:`M = I - \alpha J + \alpha^2 J^2` per extragradient step (two evaluations);
* optimistic: :math:`M = \begin{pmatrix} I - 2\alpha J & \alpha I \\ J & 0\end{pmatrix}` on
  :math:`z = (w, g_{t-1})`;
* complex momentum (real :math:`\beta` is heavy ball), on :math:`z = (w, \Re\mu, \Im\mu)`:

  .. math:: M = \begin{pmatrix} I - \alpha J & \alpha\Re\beta\, I & -\alpha\Im\beta\, I \\
            -J & \Re\beta\, I & -\Im\beta\, I \\ 0 & \Im\beta\, I & \Re\beta\, I \end{pmatrix}

:func:`alternating` turns any of these (whose state is copies of the parameter vector) into
the alternating update, one player after another. :func:`step_matrix` linearizes the
*implemented* update rule instead, for any rule and order; the tests check the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..updates import UpdateRule
from .game import Game, JointTree, Order


def eigenvalues(J: Tensor) -> Tensor:
    """Eigenvalues of a (game Jacobian or update) matrix, complex."""
    return torch.linalg.eigvals(J)


def spectral_radius(M: Tensor) -> Tensor:
    """:math:`\\rho(M) = \\max |\\lambda(M)|`, over the last two dimensions (batched)."""
    return torch.linalg.eigvals(M).abs().amax(-1)


def gda_matrix(J: Tensor, lr: float) -> Tensor:
    """Gradient descent-ascent: :math:`w \\leftarrow w - \\alpha J w`."""
    return _eye(J) - lr * J


def extragradient_matrix(J: Tensor, lr: float) -> Tensor:
    """One extragradient step (two gradient evaluations): :math:`I - \\alpha J + \\alpha^2 J^2`."""
    return _eye(J) - lr * J + lr * lr * (J @ J)


def optimistic_matrix(J: Tensor, lr: float) -> Tensor:
    """Optimistic gradient descent on :math:`z = (w_t, g_{t-1})`."""
    eye, zero = _eye(J), torch.zeros_like(J)
    return torch.cat([torch.cat([eye - 2 * lr * J, lr * eye], -1), torch.cat([J, zero], -1)], -2)


def momentum_matrix(J: Tensor, lr: float, beta: complex | Tensor) -> Tensor:
    """Complex (or real) momentum on :math:`z = (w, \\Re\\mu, \\Im\\mu)`; ``beta`` a number, or a
    complex tensor of any shape (then the matrices are batched over it)."""
    beta = torch.as_tensor(beta, dtype=torch.promote_types(J.dtype, torch.complex64))
    br, bi = beta.real[..., None, None].to(J.dtype), beta.imag[..., None, None].to(J.dtype)
    eye, zero = _eye(J), torch.zeros_like(J)
    J, zero = J.expand(*beta.shape, *J.shape), zero.expand(*beta.shape, *J.shape)
    rows = [
        [eye - lr * J, lr * br * eye, -lr * bi * eye],
        [-J, br * eye, -bi * eye],
        [zero, bi * eye, br * eye],
    ]
    return torch.cat([torch.cat(torch.broadcast_tensors(*row), -1) for row in rows], -2)


def alternating(M: Tensor, sizes: Sequence[int], copies: int) -> Tensor:
    """The alternating version of a simultaneous update matrix ``M``.

    ``M`` acts on ``copies`` stacked vectors the size of the joint parameters (e.g. 3 for
    momentum's :math:`(w, \\Re\\mu, \\Im\\mu)`), each ordered by players of ``sizes``. Player
    :math:`p` alone updating its rows is :math:`M_p = I + P_p (M - I)` (:math:`P_p` selects its
    rows); alternating in player order is :math:`M_n \\cdots M_1`.
    """
    n = sum(sizes)
    if M.shape[-1] != copies * n:
        raise ValueError(f"M is {M.shape[-1]} wide but copies * sum(sizes) = {copies} * {n} = {copies * n}")
    out, start = None, 0
    for size in sizes:
        rows = torch.zeros(n, dtype=torch.bool, device=M.device)
        rows[start : start + size] = True
        start += size
        mask = rows.repeat(copies)[:, None]
        if out is None:  # M_1 = I + P_1 (M - I)
            out = torch.where(mask, M, torch.eye(M.shape[-1], dtype=M.dtype, device=M.device))
        else:  # M_p X = X + P_p (M X - X): only player p's rows change
            out = torch.where(mask, M @ out, out)
    return out


def momentum_rate_grid(
    J: Tensor,
    lr: float,
    magnitudes: Tensor,
    phases: Tensor,
    sizes: Sequence[int] | None = None,
) -> Tensor:
    """Spectral radius of complex momentum for every :math:`\\beta = |\\beta| e^{i\\theta}` of a
    grid: ``[len(magnitudes), len(phases)]`` (rows: magnitudes). ``sizes`` (the players'
    parameter counts) asks for alternating updates."""
    rates = []
    for magnitude in magnitudes:  # one batch per row keeps memory at len(phases) matrices
        beta = torch.polar(torch.full_like(phases, float(magnitude)), phases)
        M = momentum_matrix(J, lr, beta)
        rates.append(spectral_radius(M if sizes is None else alternating(M, sizes, copies=3)))
    return torch.stack(rates)


def rate_per_evaluation(M: Tensor, evaluations: int = 1) -> Tensor:
    """The rate per gradient evaluation of a method whose step ``M`` costs ``evaluations``."""
    return spectral_radius(M) ** (1.0 / evaluations)


def fit_rate(distances: Sequence[float] | Tensor, tail: float = 0.5) -> float:
    """Measured linear rate of a distance curve :math:`d_t`: :math:`e^{s}` with :math:`s` the
    least-squares slope of :math:`\\log d_t` over the last ``tail`` of its finite, positive part."""
    d = torch.as_tensor(distances, dtype=torch.float64)
    usable = torch.isfinite(d) & (d > 0)
    end = int(usable.long().cumprod(0).sum())  # first unusable entry ends the curve
    start = min(int(end * (1 - tail)), end - 2)
    if start < 0:
        return math.nan
    t = torch.arange(start, end, dtype=torch.float64)
    y = torch.log(d[start:end])
    slope = ((t - t.mean()) * (y - y.mean())).sum() / ((t - t.mean()) ** 2).sum()
    return math.exp(float(slope))


# --------------------------------------------------------------------------- any implemented rule
def step_matrix(
    game: Game,
    rule: UpdateRule | Mapping[str, UpdateRule],
    params: JointTree,
    order: Order = "simultaneous",
    calls: int = 1,
    warmup: int = 2,
) -> Tensor:
    """Jacobian of ``calls`` steps of :meth:`Game.update` with respect to the augmented state
    (the joint parameters, then every tensor of every player's rule state; complex buffers as
    (real, imaginary) pairs), by ``torch.func.jacfwd``.

    For a quadratic game this *is* the linear update map, so its spectral radius is the rate
    of the implemented method, in any order; elsewhere it linearizes the method at ``params``.
    ``warmup`` steps run first so that first-step special cases are behind; ``calls`` is the
    number of calls in one period of the rule (2 for :func:`nestopt.extragradient`).
    """
    states = game.init(rule, params)
    for _ in range(warmup):
        params, states = game.update(rule, params, states, order)
    point = (params, states)
    leaves = _tensor_leaves(point)

    def one_period(z: Tensor) -> Tensor:
        p, s = _with_leaves(point, _split(z, leaves))
        for _ in range(calls):
            p, s = game.update(rule, p, s, order)
        return _join(_tensor_leaves((p, s)))

    return torch.func.jacfwd(one_period)(_join(leaves))


def _tensor_leaves(tree: Any) -> list[Tensor]:
    if isinstance(tree, Tensor):
        return [tree]
    if isinstance(tree, Mapping):
        return [leaf for v in tree.values() for leaf in _tensor_leaves(v)]
    if isinstance(tree, tuple | list):
        return [leaf for v in tree for leaf in _tensor_leaves(v)]
    return []


def _with_leaves(tree: Any, leaves: list[Tensor]) -> Any:
    """``tree`` with its tensor leaves replaced, in :func:`_tensor_leaves` order (consumes ``leaves``)."""
    if isinstance(tree, Tensor):
        return leaves.pop(0)
    if isinstance(tree, Mapping):
        return {k: _with_leaves(v, leaves) for k, v in tree.items()}
    if isinstance(tree, tuple | list):
        return type(tree)(_with_leaves(v, leaves) for v in tree)
    return tree


def _join(leaves: list[Tensor]) -> Tensor:
    return torch.cat([(torch.view_as_real(v) if v.is_complex() else v).reshape(-1) for v in leaves])


def _split(z: Tensor, like: list[Tensor]) -> list[Tensor]:
    out, start = [], 0
    for v in like:
        size = v.numel() * (2 if v.is_complex() else 1)
        chunk = z[start : start + size]
        start += size
        if v.is_complex():
            pairs = chunk.reshape(*v.shape, 2)
            out.append(torch.complex(pairs[..., 0], pairs[..., 1]))
        else:
            out.append(chunk.reshape(v.shape))
    return out


def _eye(J: Tensor) -> Tensor:
    return torch.eye(J.shape[-1], dtype=J.dtype, device=J.device)
