"""The bilevel trainer: tune a family of hyperparameters of any ``nn.Module`` trained by any
``torch.optim`` optimizer, by hypergradient descent.

One outer step = ``inner_steps`` steps of the user's inner optimizer on the training loss,
then one hypergradient (:class:`IFT` or :class:`Unrolled`), then one step of the user's outer
optimizer on the hyperparameters. ``start="warm"`` carries the weights over between outer
steps; ``start="cold"`` re-initialises them (and the inner optimizer) before every outer step.

The model is called directly for plain inner steps and through ``torch.func.functional_call``
with explicit ``(params, buffers)`` inside hypergradients; BatchNorm statistics move only in
inner training steps. Validation runs the model in eval mode.
"""

from __future__ import annotations

import copy
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from .data import concat_batches
from .hparams import HyperParameters
from .hypergrad import check_problem, implicit, unrolled
from .solvers import Solver, check_solution, neumann
from .tree import Tree, check_same_dtype_device, tree_norm
from .updates import load_into_optimizer, rule_from_optimizer

TrainLoss = Callable[[Callable[..., Tensor], Any], Tensor]  # (model, batch) -> per-example losses
ValLoss = Callable[[Callable[..., Tensor], Any], Tensor]  # (model, batch) -> loss (mean taken)


class DivergenceError(FloatingPointError):
    """A loss, gradient or hypergradient became NaN or infinite."""


@dataclass
class OuterStep:
    """What one hypergradient strategy hands back to the trainer for one outer step."""

    grads: Tree
    scalars: dict[str, Tensor]
    checks: list[tuple[str, Tensor]] = field(default_factory=list)  # (quantity, finite flag)


@dataclass(frozen=True)
class IFT:
    """Implicit-function-theorem hypergradient after the inner steps (see :func:`nestopt.implicit`).

    The stochastic estimate uses ``val_batches`` validation batches for the validation gradient,
    ``hvp_batches`` fresh training batches for the Hessian-vector products, and ``mixed_batches``
    fresh training batches for the mixed product (0: the HVP batches, sharing one linearization).
    ``compile=True`` (default) compiles the whole hypergradient with ``torch.compile``: the
    fastest choice measured (``benchmarks/hypergrad.py``: 12x a train step against 19x eager on
    the benchmark MLP), at the price of a one-time compilation (seconds) in each process; where
    compiling fails it warns once and continues eagerly. Before the first compiled call the
    inputs are checked once eagerly (the compiled path cannot tell an unused hyperparameter).
    """

    solver: Solver = field(default_factory=neumann)
    val_batches: int = 1
    hvp_batches: int = 1
    mixed_batches: int = 0
    compile: bool = True

    def __post_init__(self) -> None:
        if self.val_batches < 1 or self.hvp_batches < 1 or self.mixed_batches < 0:
            raise ValueError(f"{self!r}: val_batches and hvp_batches must be >= 1, mixed_batches >= 0")

    def outer_step(self, trainer: Bilevel, train: Iterator, val: Iterator) -> OuterStep:
        checks: list[tuple[str, Tensor]] = []
        for i in range(trainer.inner_steps):
            loss, grad_norm = trainer.inner_step(next(train))
            checks += [
                (f"inner loss (inner step {i})", loss),
                (f"inner gradient (inner step {i})", grad_norm),
            ]
        hvp_batch = concat_batches([next(train) for _ in range(self.hvp_batches)])
        mixed = (
            concat_batches([next(train) for _ in range(self.mixed_batches)]) if self.mixed_batches else None
        )
        val_batch = concat_batches([next(val) for _ in range(self.val_batches)])
        fn = trainer.cached("ift", self._build)
        hg = fn(trainer.params(), trainer.hparams.tree(), hvp_batch, val_batch, mixed_batch=mixed)
        if self.compile:  # traced code cannot raise on what it finds: CG's curvature, checked here
            check_solution(hg.solution, self.solver)
        scalars = {
            "train_loss": loss,
            "val_loss": hg.val_loss,
            "residual_norm": hg.solution.residual_norm,
            "solver_iterations": hg.solution.iterations,
        }
        checks.append(("validation loss", hg.val_loss))
        return OuterStep(hg.grads, scalars, checks)

    def _build(self, trainer: Bilevel) -> Callable:
        eager = partial(implicit, trainer.inner_loss_fn, trainer.val_loss_fn, solver=self.solver)
        if not self.compile:
            return eager
        check = partial(check_problem, trainer.inner_loss_fn, trainer.val_loss_fn)
        return _compiled_or_eager(eager, check)


@dataclass(frozen=True)
class Unrolled:
    """Differentiate through the inner steps themselves (see :func:`nestopt.unrolled`), using the
    functional twin of the inner optimizer (``torch.optim.SGD`` or ``Adam``); ``window=T`` keeps
    only the last T inner steps in the graph (truncated back-propagation)."""

    window: int | None = None
    val_batches: int = 1

    def outer_step(self, trainer: Bilevel, train: Iterator, val: Iterator) -> OuterStep:
        rule, state = rule_from_optimizer(trainer.inner_optimizer, trainer.model)
        batches = [next(train) for _ in range(trainer.inner_steps)]
        val_batch = concat_batches([next(val) for _ in range(self.val_batches)])
        trainer.model.train()
        result = unrolled(
            partial(trainer.inner_loss_fn, update_buffers=True),
            trainer.val_loss_fn,
            trainer.params(),
            trainer.hparams.tree(),
            batches,
            val_batch,
            rule=rule,
            state=state,
            window=self.window,
        )
        load_into_optimizer(trainer.inner_optimizer, trainer.model, result.params, result.state)
        checks = [(f"inner loss (inner step {i})", v) for i, v in enumerate(result.train_losses)]
        checks.append(("validation loss", result.val_loss))
        scalars = {"train_loss": result.train_losses[-1], "val_loss": result.val_loss}
        return OuterStep(result.grads, scalars, checks)


class Bilevel:
    """Hypergradient descent on ``hparams`` (a :class:`~nestopt.hparams.HyperParameters`) of
    ``model``.

    ``train_loss(model, batch)`` returns the data loss, per example (``reduction="none"``) or
    reduced; the family turns it into the inner objective (adding e.g. a weight-decay penalty).
    ``val_loss(model, batch)`` returns the outer objective (its mean is taken). ``model`` in
    both is a callable running the network on the weights being differentiated.
    """

    def __init__(
        self,
        model: nn.Module,
        hparams: HyperParameters,
        *,
        inner_optimizer: torch.optim.Optimizer,
        outer_optimizer: torch.optim.Optimizer,
        train_loss: TrainLoss,
        val_loss: ValLoss,
        hypergradient: IFT | Unrolled | None = None,
        inner_steps: int = 5,
        start: Literal["warm", "cold"] = "warm",
        reinit: Callable[[nn.Module], None] | None = None,
    ) -> None:
        if start not in ("warm", "cold"):
            raise ValueError(f"start={start!r}: choose 'warm' (carry weights over) or 'cold' (re-initialise)")
        if not isinstance(inner_steps, int) or inner_steps < 1:
            raise ValueError(f"inner_steps={inner_steps!r} must be an integer >= 1")
        if not list(hparams.parameters()):
            raise ValueError("hparams has no parameters: nothing to tune")
        _check_optimizer_owns(inner_optimizer, model, "inner_optimizer", "model.parameters()")
        _check_optimizer_owns(outer_optimizer, hparams, "outer_optimizer", "hparams.parameters()")
        # Parameter objects are stable (loading a state dict copies into them): walk modules once.
        self._weights = {k: p for k, p in model.named_parameters() if p.requires_grad}
        self._hparam_leaves = dict(hparams.named_parameters())
        check_same_dtype_device({"model parameters": self._weights, "hparams": hparams.tree()})
        self.model, self.hparams = model, hparams
        self.inner_optimizer, self.outer_optimizer = inner_optimizer, outer_optimizer
        self.train_loss, self.val_loss = train_loss, val_loss
        self.hypergradient = hypergradient or IFT()
        self.inner_steps, self.start, self.reinit = inner_steps, start, reinit
        self.step, self.history = 0, []
        self._initial = {
            "model": copy.deepcopy(model.state_dict()),
            "inner_optimizer": copy.deepcopy(inner_optimizer.state_dict()),
        }
        # An eval-mode twin, called functionally with the live weights, so validation never flips
        # the training flag of the user's model (and compiled code sees no mutation).
        self._eval_model = copy.deepcopy(model).eval()
        self._cache: dict[str, Any] = {}

    # ------------------------------------------------------------------ functional views
    def params(self) -> Tree:
        """Current trainable weights (detached views)."""
        return {k: p.detach() for k, p in self._weights.items()}

    def buffers(self) -> Tree:
        return dict(self.model.named_buffers())

    def inner_loss_fn(
        self, params: Tree, hparams: Tree, batch: Any, *, update_buffers: bool = False
    ) -> Tensor:
        """The inner objective as a pure function of ``(params, hparams, batch)``."""
        buffers = self.buffers()
        if not update_buffers:
            buffers = {k: b.clone() for k, b in buffers.items()}

        def model(*args: Any, **kwargs: Any) -> Tensor:
            return functional_call(self.model, (params, buffers), args, kwargs)

        losses = self.train_loss(model, batch)
        return self.hparams.inner_loss(hparams, params, losses, batch)

    def val_loss_fn(self, params: Tree, hparams: Tree, batch: Any) -> Tensor:
        """The outer objective as a pure function of ``(params, hparams, batch)`` (eval mode)."""
        buffers = self.buffers()

        def model(*args: Any, **kwargs: Any) -> Tensor:
            return functional_call(self._eval_model, (params, buffers), args, kwargs)

        return self.val_loss(model, batch).mean()

    def cached(self, key: str, build: Callable[[Bilevel], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = build(self)
        return self._cache[key]

    # ------------------------------------------------------------------ steps
    def inner_step(self, batch: Any) -> tuple[Tensor, Tensor]:
        """One step of the inner optimizer; returns the loss and the gradient norm (no sync)."""
        return train_step(
            self.model, self.hparams, self.inner_optimizer, self.train_loss, batch, params=self._weights
        )

    def outer_step(self, train: Iterator, val: Iterator) -> dict[str, float]:
        """One outer step; returns its record (floats), also appended to :attr:`history`."""
        started = time.perf_counter()
        if self.start == "cold":
            self._reinitialise()
        out = self.hypergradient.outer_step(self, train, val)
        norm = tree_norm(out.grads)
        checks = [*out.checks, ("hypergradient", norm)]
        flags = torch.isfinite(torch.stack([v.reshape(()) for _, v in checks])).tolist()  # one sync
        if not all(flags):
            quantity = checks[flags.index(False)][0]
            raise DivergenceError(
                f"{quantity} is NaN or infinite at outer step {self.step}: lower the learning "
                f"rates or the initial hyperparameters, or resume from the last checkpoint"
            )
        params = self._hparam_leaves
        for k, g in out.grads.items():
            params[k].grad = g.detach().to(params[k].dtype)
        self.outer_optimizer.step()
        self.outer_optimizer.zero_grad(set_to_none=True)
        names = list(out.scalars)
        values = torch.stack([out.scalars[k].detach().double().reshape(()) for k in names]).tolist()
        record = {"step": self.step, **dict(zip(names, values, strict=True)), "hypergrad_norm": float(norm)}
        record["seconds"] = time.perf_counter() - started
        self.history.append(record)
        self.step += 1
        return record

    def fit(
        self,
        train: Iterator,
        val: Iterator,
        outer_steps: int,
        *,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 25,
        resume: bool = False,
        callback: Callable[[dict[str, float]], None] | None = None,
    ) -> list[dict[str, float]]:
        """Run outer steps until :attr:`step` reaches ``outer_steps``; returns :attr:`history`.

        With ``checkpoint`` (a file path) the whole state, the positions of ``train`` / ``val``
        (when they have ``state_dict``) included, is saved every ``checkpoint_every`` steps and
        at the end; ``resume=True`` first loads it if it exists, and the run then ends
        bit-identical to an uninterrupted one.
        """
        streams = {"train": train, "val": val}
        if resume and checkpoint is not None and Path(checkpoint).exists():
            self.load(checkpoint, streams)
        while self.step < outer_steps:
            record = self.outer_step(train, val)
            if callback is not None:
                callback(record)
            if checkpoint is not None and (self.step % checkpoint_every == 0 or self.step == outer_steps):
                self.save(checkpoint, streams)
        return self.history

    def _reinitialise(self) -> None:
        if self.reinit is not None:
            self.reinit(self.model)
        else:
            self.model.load_state_dict(self._initial["model"])
        self.inner_optimizer.load_state_dict(self._initial["inner_optimizer"])

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, streams: dict[str, Any] | None = None) -> dict[str, Any]:
        state = {
            "step": self.step,
            "history": list(self.history),
            "model": self.model.state_dict(),
            "hparams": self.hparams.state_dict(),
            "inner_optimizer": self.inner_optimizer.state_dict(),
            "outer_optimizer": self.outer_optimizer.state_dict(),
            "initial": self._initial,
            "rng": _rng_state(),
            "streams": {k: s.state_dict() for k, s in (streams or {}).items() if hasattr(s, "state_dict")},
        }
        return state

    def load_state_dict(self, state: dict[str, Any], streams: dict[str, Any] | None = None) -> None:
        self.step, self.history = state["step"], list(state["history"])
        self.model.load_state_dict(state["model"])
        self.hparams.load_state_dict(state["hparams"])
        self.inner_optimizer.load_state_dict(state["inner_optimizer"])
        self.outer_optimizer.load_state_dict(state["outer_optimizer"])
        self._initial = state["initial"]
        _set_rng_state(state["rng"])
        for k, s in (streams or {}).items():
            if k in state["streams"]:
                s.load_state_dict(state["streams"][k])

    def save(self, path: str | Path, streams: dict[str, Any] | None = None) -> None:
        """Write a checkpoint atomically (a crash mid-write leaves the previous one intact)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.state_dict(streams), tmp)
        tmp.replace(path)

    def load(self, path: str | Path, streams: dict[str, Any] | None = None) -> None:
        self.load_state_dict(torch.load(path, weights_only=True), streams)


# ---------------------------------------------------------------------- helpers
def train_step(
    model: nn.Module,
    hparams: HyperParameters,
    optimizer: torch.optim.Optimizer,
    train_loss: TrainLoss,
    batch: Any,
    params: dict[str, nn.Parameter] | None = None,
) -> tuple[Tensor, Tensor]:
    """One plain training step of ``model`` on the inner objective with fixed ``hparams``;
    returns the loss and the gradient norm as tensors (no host sync). ``params``: the model's
    trainable named parameters, when the caller has them at hand."""
    model.train()
    if params is None:
        params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    losses = train_loss(model, batch)
    loss = hparams.inner_loss(hparams.tree(), params, losses, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads = {k: p.grad for k, p in params.items() if p.grad is not None}
    optimizer.step()
    return loss.detach(), tree_norm(grads) if grads else loss.new_zeros(())


def _check_optimizer_owns(optimizer: Any, module: nn.Module, what: str, fix: str) -> None:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"{what} must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    owned = {id(p) for p in module.parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in owned:
                raise ValueError(f"{what} holds a tensor that is not in {fix}: build it as Optimizer({fix})")


def _compiled_or_eager(eager: Callable, check: Callable) -> Callable:
    """``torch.compile(eager)``, checking the inputs eagerly on the first call, and falling back to
    ``eager`` (with one warning) if compilation fails."""
    compiled = torch.compile(eager)
    state: dict[str, Any] = {"fn": compiled, "checked": False}

    def call(*args: Any, **kwargs: Any) -> Any:
        if not state["checked"]:
            check(*args[:4])
            state["checked"] = True
        if state["fn"] is eager:
            return eager(*args, **kwargs)
        try:
            return compiled(*args, **kwargs)
        except Exception as error:  # a compiler failure; a genuine input error fails again below
            warnings.warn(
                f"torch.compile of the hypergradient failed ({type(error).__name__}: {error}); "
                f"continuing in eager mode",
                RuntimeWarning,
                stacklevel=3,
            )
            state["fn"] = eager
            return eager(*args, **kwargs)

    return call


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
