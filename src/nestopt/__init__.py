"""nestopt: nested optimization and differentiable games on PyTorch."""

from .games import ComplexAdam, ComplexMomentum, ExtraAdam, ExtraGradient, Game, OptimisticGradient, Player
from .hypergrad import Hypergradient, UnrolledHypergradient, implicit, truncated, unrolled
from .operators import Linearization, linearize
from .solvers import IndefiniteOperatorError, Solution, cg, exact, identity, neumann
from .tree import Tree
from .updates import (
    DEFAULT_BETA,
    UpdateRule,
    adam,
    complex_adam,
    complex_momentum,
    complex_momentum_two_buffer,
    extragradient,
    extrapolated,
    optimistic,
    sgd,
)

__all__ = [
    "DEFAULT_BETA",
    "ComplexAdam",
    "ComplexMomentum",
    "ExtraAdam",
    "ExtraGradient",
    "Game",
    "Hypergradient",
    "IndefiniteOperatorError",
    "Linearization",
    "OptimisticGradient",
    "Player",
    "Solution",
    "Tree",
    "UnrolledHypergradient",
    "UpdateRule",
    "adam",
    "cg",
    "complex_adam",
    "complex_momentum",
    "complex_momentum_two_buffer",
    "exact",
    "extragradient",
    "extrapolated",
    "identity",
    "implicit",
    "linearize",
    "neumann",
    "optimistic",
    "sgd",
    "truncated",
    "unrolled",
]
