r"""A differentiable game: players, each with its own parameters and its own loss.

Player :math:`p` owns parameters :math:`\theta_p` and minimizes :math:`L_p(\theta)` over them,
where :math:`\theta = (\theta_1, \dots, \theta_n)` are the joint parameters. The *gradient
field* (Letcher et al., 2019; Balduzzi et al., 2018) stacks each player's gradient of its own
loss with respect to its own parameters,

    :math:`\hat g(\theta) = (\nabla_{\theta_1} L_1, \dots, \nabla_{\theta_n} L_n)`,

and the *game Jacobian* is :math:`J = \partial \hat g / \partial \theta`. Its eigenvalues decide
how gradient-based learning behaves near a fixed point: real positive ones are cooperative
(minimization-like), imaginary ones adversarial (rotation). A zero-sum game has
:math:`L_2 = -L_1`.

Joint parameters are a ``dict[player, Tree]``; every function here is pure and composes with
``torch.func``. :meth:`Game.step` is the face for players held as ``nn.Module``\ s and trained by
``torch.optim`` optimizers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from ..tree import Tree, check_tree, tree_flatten, tree_sub, tree_unflatten
from ..updates import State, UpdateRule

JointTree = dict[str, Tree]
Order = Literal["simultaneous", "alternating"]
ORDERS = ("simultaneous", "alternating")


class Player(NamedTuple):
    """One player: its parameters (an ``nn.Module`` or a ``dict[str, Tensor]``) and its loss, a
    function of the *joint* parameters ``{player: tree}`` returning a scalar tensor."""

    params: nn.Module | Mapping[str, Tensor]
    loss: Callable[[JointTree], Tensor]


class Game:
    """Players and their losses; ``equilibrium`` (joint tree), when known, serves distances.

    ``Game({"x": Player(x_params, loss_x), "y": Player(y_params, loss_y)})``; losses take the
    joint tree, e.g. ``lambda p: p["x"]["w"] @ A @ p["y"]["w"]``. A player held as an
    ``nn.Module`` is called inside its loss through ``torch.func.functional_call(module,
    p[name], inputs)``. Buffers (BatchNorm statistics) are not part of a game's parameters.
    """

    def __init__(self, players: Mapping[str, Player], equilibrium: JointTree | None = None) -> None:
        if not players:
            raise ValueError("a game needs at least one player: pass {name: Player(params, loss)}")
        self._live: JointTree = {}
        self._losses: dict[str, Callable[[JointTree], Tensor]] = {}
        for name, player in players.items():
            params, loss = player
            tree = dict(params.named_parameters()) if isinstance(params, nn.Module) else params
            if not isinstance(tree, Mapping) or not tree:
                raise ValueError(
                    f"player {name!r} has no parameters: give it an nn.Module with parameters or a "
                    f"non-empty dict[str, Tensor]"
                )
            check_tree(tree, f"player {name!r} params")
            if not callable(loss):
                raise TypeError(
                    f"player {name!r} loss is a {type(loss).__name__}: pass a function of the joint params"
                )
            self._live[name], self._losses[name] = dict(tree), loss
        self.equilibrium = equilibrium

    @classmethod
    def zero_sum(
        cls, params: Mapping[str, nn.Module | Mapping[str, Tensor]], loss: Callable[[JointTree], Tensor], **kw
    ) -> Game:
        """Two players: the first minimizes ``loss``, the second maximizes it (minimizes ``-loss``)."""
        if len(params) != 2:
            raise ValueError(f"a zero-sum game here has two players, got {len(params)}: {list(params)}")
        first, second = params
        return cls(
            {first: Player(params[first], loss), second: Player(params[second], lambda p: -loss(p))}, **kw
        )

    # ------------------------------------------------------------------ parameters
    @property
    def players(self) -> list[str]:
        return list(self._live)

    def params(self) -> JointTree:
        """A detached copy of the current joint parameters (the pure API's starting point)."""
        return {p: {k: v.detach().clone() for k, v in tree.items()} for p, tree in self._live.items()}

    def parameters(self, player: str) -> list[Tensor]:
        """The live tensors of ``player``, for its ``torch.optim`` optimizer."""
        return list(self._live[self._check_player(player)].values())

    @torch.no_grad()
    def load(self, params: JointTree) -> None:
        """Copy ``params`` into the live parameters."""
        for p, tree in self._live.items():
            for k, v in tree.items():
                v.copy_(params[p][k])

    def distance(self, params: JointTree, to: JointTree | None = None) -> Tensor:
        """Euclidean distance of ``params`` to ``to`` (default: the known equilibrium)."""
        to = self.equilibrium if to is None else to
        if to is None:
            raise ValueError("this game has no known equilibrium: pass to=joint params")
        return torch.linalg.vector_norm(flatten({p: tree_sub(params[p], to[p]) for p in self._live}))

    # ------------------------------------------------------------------ the gradient field
    def loss(self, player: str, params: JointTree) -> Tensor:
        """:math:`L_p(\\theta)`, checked to be a scalar."""
        value = self._losses[self._check_player(player)](params)
        if not isinstance(value, Tensor) or value.dim() != 0:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"player {player!r} loss must return a scalar tensor, got {shape}: reduce it")
        return value

    def gradient(self, player: str, params: JointTree) -> Tree:
        """:math:`\\nabla_{\\theta_p} L_p(\\theta)`: the player's gradient of its own loss."""
        return self._gradient_and_loss(player, params)[0]

    def gradients(self, params: JointTree) -> JointTree:
        """The gradient field :math:`\\hat g(\\theta)`, one tree per player."""
        return {p: self.gradient(p, params) for p in self._live}

    def jvp(self, params: JointTree, tangents: JointTree) -> tuple[JointTree, JointTree]:
        """``(ĝ(θ), J v)``: the gradient field and the game Jacobian times ``tangents``."""
        return torch.func.jvp(self.gradients, (params,), (tangents,))

    def vjp(self, params: JointTree, cotangents: JointTree) -> tuple[JointTree, JointTree]:
        """``(ĝ(θ), Jᵀ u)``: the gradient field and the transposed game Jacobian times ``cotangents``."""
        field, pullback = torch.func.vjp(self.gradients, params)
        return field, pullback(cotangents)[0]

    def jacobian(self, params: JointTree, max_size: int = 4096) -> Tensor:
        """The dense game Jacobian :math:`J`, rows and columns in :func:`flatten` order."""
        size = sum(v.numel() for tree in params.values() for v in tree.values())
        if size > max_size:
            raise ValueError(
                f"game.jacobian builds a dense {size} x {size} matrix: use game.jvp for products, or "
                f"pass max_size={size}"
            )

        def field(vector: Tensor) -> Tensor:
            return flatten(self.gradients(unflatten(vector, params)))

        return torch.func.jacfwd(field)(flatten(params))

    # ------------------------------------------------------------------ playing: pure
    def init(self, rule: UpdateRule | Mapping[str, UpdateRule], params: JointTree) -> dict[str, State]:
        """Each player's initial rule state (one rule for all players, or one per player)."""
        rules = self._rules(rule)
        return {p: rules[p].init(params[p]) for p in self._live}

    def update(
        self,
        rule: UpdateRule | Mapping[str, UpdateRule],
        params: JointTree,
        states: Mapping[str, State],
        order: Order = "simultaneous",
    ) -> tuple[JointTree, dict[str, State]]:
        """One step of every player's rule: all at the current point (``"simultaneous"``), or one
        after another in player order, each seeing the players updated before it (``"alternating"``)."""
        rules, order = self._rules(rule), _check_order(order)
        params, states = dict(params), dict(states)
        if order == "simultaneous":
            grads = self.gradients(params)
            for p in self._live:
                params[p], states[p] = rules[p].update(grads[p], states[p], params[p])
        else:
            for p in self._live:
                params[p], states[p] = rules[p].update(self.gradient(p, params), states[p], params[p])
        return params, states

    # ------------------------------------------------------------------ playing: torch.optim face
    def step(
        self, optimizers: Mapping[str, torch.optim.Optimizer], order: Order = "simultaneous"
    ) -> dict[str, Tensor]:
        """Set each player's ``.grad`` to its own gradient field entry and step its optimizer,
        simultaneously or alternating (see :meth:`update`). Returns each player's loss (before
        its step)."""
        order = _check_order(order)
        missing = [p for p in self._live if p not in optimizers]
        if missing:
            raise ValueError(f"no optimizer for players {missing}: pass one torch.optim optimizer per player")
        losses = {}
        if order == "simultaneous":
            params = self.params()
            for p in self._live:
                grads, losses[p] = self._gradient_and_loss(p, params)
                self._set_grads(p, grads)
            for p in self._live:
                optimizers[p].step()
        else:
            for p in self._live:
                grads, losses[p] = self._gradient_and_loss(p, self.params())
                self._set_grads(p, grads)
                optimizers[p].step()
        return losses

    # ------------------------------------------------------------------ helpers
    def _gradient_and_loss(self, player: str, params: JointTree) -> tuple[Tree, Tensor]:
        def own_loss(own: Tree) -> Tensor:
            return self.loss(player, {**params, player: own})

        return torch.func.grad_and_value(own_loss)(params[player])

    def _set_grads(self, player: str, grads: Tree) -> None:
        for k, v in self._live[player].items():
            v.grad = grads[k].detach()

    def _rules(self, rule: UpdateRule | Mapping[str, UpdateRule]) -> dict[str, UpdateRule]:
        if isinstance(rule, UpdateRule):
            return dict.fromkeys(self._live, rule)
        missing = [p for p in self._live if p not in rule]
        if missing:
            raise ValueError(f"no update rule for players {missing}: pass one rule, or one per player")
        return dict(rule)

    def _check_player(self, player: str) -> str:
        if player not in self._live:
            raise KeyError(f"no player {player!r} in this game: its players are {self.players}")
        return player


def flatten(params: JointTree) -> Tensor:
    """Joint parameters as one vector: players in order, each player's leaves in key order."""
    return torch.cat([tree_flatten(tree) for tree in params.values()])


def unflatten(vector: Tensor, like: JointTree) -> JointTree:
    """Inverse of :func:`flatten`."""
    out, start = {}, 0
    for p, tree in like.items():
        size = sum(v.numel() for v in tree.values())
        out[p] = tree_unflatten(vector[start : start + size], tree)
        start += size
    return out


def _check_order(order: str) -> str:
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}: use 'simultaneous' or 'alternating'")
    return order
