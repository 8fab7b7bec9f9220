"""Differentiable games: players with their own parameters and losses, the optimizers that find
their equilibria (complex momentum, extragradient, optimistic, simultaneous or alternating
gradient descent-ascent), and the spectral analysis that predicts their linear rates.

After Lorraine, Acuna, Vicol & Duvenaud, "Complex Momentum for Optimization in Games"
(AISTATS 2022). The update rules themselves are pure ``(init, update)`` pairs in
:mod:`nestopt.updates`; :mod:`.optim` holds their ``torch.optim`` faces.
"""

from . import gan, spectral, zoo
from .game import Game, JointTree, Player, flatten, unflatten
from .optim import ComplexAdam, ComplexMomentum, ExtraAdam, ExtraGradient, OptimisticGradient, RuleOptimizer

__all__ = [
    "ComplexAdam",
    "ComplexMomentum",
    "ExtraAdam",
    "ExtraGradient",
    "Game",
    "JointTree",
    "OptimisticGradient",
    "Player",
    "RuleOptimizer",
    "flatten",
    "gan",
    "spectral",
    "unflatten",
    "zoo",
]
