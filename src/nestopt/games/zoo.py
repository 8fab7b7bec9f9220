r"""Small games with known equilibria and known game Jacobians.

* :func:`bilinear` — :math:`\min_x \max_y x^\top A y`: purely adversarial; the game Jacobian
  :math:`\begin{pmatrix} 0 & A \\ -A^\top & 0 \end{pmatrix}` has eigenvalues :math:`\pm i\sigma_k(A)`,
  so simultaneous gradient descent-ascent spirals outwards (Lorraine et al., 2022, Section 4.1).
* :func:`quadratic` — :math:`L_x = \tfrac12 x^\top S_x x + x^\top A y`,
  :math:`L_y = \tfrac12 y^\top S_y y - x^\top A y`: the bilinear game plus each player's own
  curvature, a mixture of cooperative and adversarial eigenvalues
  (:math:`\gamma \pm i\sigma_k` for :math:`S_x = S_y = \gamma I`).

Both have their equilibrium at the origin (when the Jacobian is invertible), stored as
``game.equilibrium``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .game import Game, Player


def quadratic(
    A: Tensor,
    Sx: Tensor | None = None,
    Sy: Tensor | None = None,
    x: Tensor | None = None,
    y: Tensor | None = None,
) -> Game:
    """Two-player quadratic game (see module docstring) with players ``"x"`` and ``"y"``, each a
    tree ``{"w": vector}``; ``x``, ``y`` are the starting points (default: all ones)."""
    if A.dim() != 2:
        raise ValueError(f"A must be a matrix, got shape {tuple(A.shape)}")
    m, n = A.shape
    Sx = torch.zeros(m, m, dtype=A.dtype) if Sx is None else Sx
    Sy = torch.zeros(n, n, dtype=A.dtype) if Sy is None else Sy
    if Sx.shape != (m, m) or Sy.shape != (n, n):
        raise ValueError(f"Sx must be {m}x{m} and Sy {n}x{n} for A of shape {m}x{n}")
    x = torch.ones(m, dtype=A.dtype) if x is None else x
    y = torch.ones(n, dtype=A.dtype) if y is None else y

    def coupling(p):
        return p["x"]["w"] @ A @ p["y"]["w"]

    def loss_x(p):
        return 0.5 * p["x"]["w"] @ Sx @ p["x"]["w"] + coupling(p)

    def loss_y(p):
        return 0.5 * p["y"]["w"] @ Sy @ p["y"]["w"] - coupling(p)

    equilibrium = {"x": {"w": torch.zeros_like(x)}, "y": {"w": torch.zeros_like(y)}}
    players = {"x": Player({"w": x.clone()}, loss_x), "y": Player({"w": y.clone()}, loss_y)}
    return Game(players, equilibrium=equilibrium)


def bilinear(A: Tensor, x: Tensor | None = None, y: Tensor | None = None) -> Game:
    """:math:`\\min_x \\max_y x^\\top A y`, players ``"x"`` and ``"y"`` (see :func:`quadratic`)."""
    return quadratic(A, x=x, y=y)


def matrix_with_singular_values(values: Tensor, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """A random square matrix :math:`U \\operatorname{diag}(s) V^\\top` with the given singular
    values (:math:`U`, :math:`V` random orthogonal), so that a game's rates can be set."""
    generator = torch.Generator().manual_seed(seed)
    n = len(values)
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=dtype))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=dtype))
    return U @ torch.diag(values.to(dtype)) @ V.T
