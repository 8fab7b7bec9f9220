"""nestopt: nested optimization and differentiable games on PyTorch."""

from .hypergrad import Hypergradient, UnrolledHypergradient, implicit, truncated, unrolled
from .operators import Linearization, linearize
from .solvers import IndefiniteOperatorError, Solution, cg, exact, identity, neumann
from .tree import Tree
from .updates import UpdateRule, adam, sgd

__all__ = [
    "Hypergradient",
    "IndefiniteOperatorError",
    "Linearization",
    "Solution",
    "Tree",
    "UnrolledHypergradient",
    "UpdateRule",
    "adam",
    "cg",
    "exact",
    "identity",
    "implicit",
    "linearize",
    "neumann",
    "sgd",
    "truncated",
    "unrolled",
]
