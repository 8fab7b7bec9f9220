"""Benchmark 2, cost: one outer step of per-weight decay in nestopt, TorchOpt, higher, Betty and plain
PyTorch, side by side, measured in one process against a plain training step.

Problem (as ``benchmarks/hypergrad.py``): an MLP 40-300-300-10 (~105k weights) on MNIST-1D
(generated offline), one log-L2-decay per weight, train batches of 128, validation batches of 512,
the same briefly pre-trained weights, the same initial decays and the same two batch streams for
every library. One outer step = 5 warm-started SGD steps (lr 0.1) on train batches b1..b5, one
hypergradient at the new weights, one Adam step (lr 0.01) on the log-decays. The hypergradient's
Hessian-vector products and mixed product use b5, the last inner batch (where Betty takes them;
nestopt's ``Bilevel`` is handed b5 again as its "fresh" batch), and one validation batch.

Methods (rows ``library/method``):

* ``neumann``: 10 Hessian-vector products, 11 terms, alpha 0.1 (nestopt, TorchOpt's
  ``solve_inv(ns=True)`` and Betty alike);
* ``cg``: 10 conjugate-gradient iterations on ``H + 1.0 I`` (this ReLU network's Hessian is
  indefinite); Betty has no damping, so its row runs undamped CG;
* ``normal-cg``: TorchOpt's default solver (CG on ``H² x = H b``, two products per iteration);
* ``identity``: ``H⁻¹ ≈ I`` (nestopt ``identity()``; Betty's ``darts``, finite differences);
* ``unrolled``: reverse mode through the 5 inner SGD steps (nestopt ``Unrolled()``, higher).

Each library is used as its documentation shows: nestopt's ``Bilevel`` (``IFT`` compiled by
default, and eager), TorchOpt's ``ImplicitMetaGradientModule`` with a ``linear_solve``, Betty's
``Engine`` over two ``ImplicitProblem``s, higher's ``innerloop_ctx``, and a plain-PyTorch
double-backward outer step (``_reference.py``).

Reports, per row: the outer step in ms and as a multiple of a plain train step measured in the
same repeats (interleaved, median [min, max]); the cosine of the first hypergradient (same start,
same batches) with nestopt's for the same method and with the plain-PyTorch reference of the
same method (in the library's own convention); peak memory above the RSS after setup, each row in
a fresh process, including the first calls (compilation) and in steady state (``--quick``: steady
state only, in the benchmark's process). At 105k weights a vector is 0.4 MB and these peaks sit
within about 1.5 MiB of allocator noise, so every row's memory is measured again on the same MLP
with hidden width 1000 (1.05M weights and decays, 4 MB a vector), and the memory targets use that.
A peer that is not installed gets a row saying so.
Writes ``benchmarks/results/peers.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import operator
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn
from torch.func import functional_call

import _reference as plain
import nestopt
from _common import (
    CG_DAMPING,
    INNER_LR,
    INNER_STEPS,
    OUTER_LR,
    RESULTS_DIR,
    SOLVER_STEPS,
    Base,
    Measurement,
    Tree,
    build_base,
    busy_warning,
    calibrate,
    compare,
    fmt,
    fmt_ms,
    fmt_ratio,
    import_peer,
    machine_at_end,
    machine_info,
    memory_in_subprocesses,
    peak_of_steps,
    ratios,
    run_interleaved,
    stats,
    versions,
    write_json,
)
from nestopt.bilevel import IFT, Unrolled

RESULTS = RESULTS_DIR / "peers.json"
MIN_COSINE = 0.999  # nestopt vs the plain-PyTorch reference of the same method


@dataclass(frozen=True)
class Settings:
    repeats: int
    block_seconds: float
    warmup_seconds: float
    memory_steps: int
    memory_fresh_process: bool  # one fresh process per row (else steady state only, in this process)
    memory_width: int | None  # also measure every row's memory on a wider MLP (vectors big enough to resolve)
    compile_all: bool  # nestopt's IFT rows compiled, as by default (else only the default row)


QUICK = Settings(
    repeats=3,
    block_seconds=0.15,
    warmup_seconds=0.1,
    memory_steps=3,
    memory_fresh_process=False,
    memory_width=None,
    compile_all=False,
)
FULL = Settings(
    repeats=7,
    block_seconds=0.4,
    warmup_seconds=0.3,
    memory_steps=10,
    memory_fresh_process=True,
    memory_width=1000,
    compile_all=True,
)


# --------------------------------------------------------------------------- plain-PyTorch pieces
def decay_dict(base: Base) -> nn.ParameterDict:
    """A plain copy of the initial log-decays, keyed like ``WeightDecay.raw`` ('0__weight')."""
    return copy.deepcopy(base.hparams.raw)


def aligned_decays(model: nn.Module, decays: nn.ParameterDict) -> list[Tensor]:
    return [decays[name.replace(".", "__")] for name, _ in model.named_parameters()]


def penalty(weights: list[Tensor], log_decays: list[Tensor]) -> Tensor:
    return 0.5 * sum((d.exp() * w * w).sum() for w, d in zip(weights, log_decays, strict=True))


def data_loss(model: Callable[..., Tensor], batch: Any) -> Tensor:
    x, y, _ = batch
    return F.cross_entropy(model(x), y)


def hparam_key(name: str) -> str:
    """'raw.0__weight' (nestopt) or '0__weight' (ParameterDict) -> '0.weight'."""
    return name.removeprefix("raw.").replace("__", ".")


class LastBatchAgain:
    """The train stream as nestopt's ``Bilevel`` should see it here: b1..b5, then b5 again (the
    batch its IFT draws for the Hessian-vector products), then b6..b10, b10, ..."""

    def __init__(self, stream: Iterator, every: int = INNER_STEPS) -> None:
        self.stream, self.every, self.count, self.last = stream, every, 0, None

    def __iter__(self) -> LastBatchAgain:
        return self

    def __next__(self) -> Any:
        if self.count == self.every:
            self.count = 0
            return self.last
        self.count += 1
        self.last = next(self.stream)
        return self.last


# --------------------------------------------------------------------------- runners
class Runner:
    """One library's outer step with its own weights, optimizers and streams. ``outer_optimizer``
    is a ``torch.optim.Adam`` over the log-decays: a step pre-hook reads the hypergradient."""

    outer_optimizer: torch.optim.Optimizer
    hparam_names: dict[int, str]  # id(log-decay tensor) -> model parameter name

    def outer_step(self) -> None:
        raise NotImplementedError

    def first_hypergradient(self) -> Tree:
        """Run one outer step and return the hypergradient its outer optimizer was given."""
        seen: dict[str, Tensor] = {}

        def record(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    seen[self.hparam_names[id(p)]] = p.grad.detach().clone()

        handle = self.outer_optimizer.register_step_pre_hook(record)
        try:
            self.outer_step()
        finally:
            handle.remove()
        return seen


class NestoptRunner(Runner):
    def __init__(self, base: Base, hypergradient: IFT | Unrolled) -> None:
        self.trainer = base.trainer(hypergradient)
        train, self.val = base.streams()
        self.train = LastBatchAgain(train) if isinstance(hypergradient, IFT) else train
        self.outer_optimizer = self.trainer.outer_optimizer
        self.hparam_names = {id(p): hparam_key(k) for k, p in self.trainer.hparams.named_parameters()}

    def outer_step(self) -> None:
        self.trainer.outer_step(self.train, self.val)


class TrainOnlyRunner(NestoptRunner):
    """The 5 inner steps and nothing else (memory baseline)."""

    def outer_step(self) -> None:
        for _ in range(INNER_STEPS):
            self.trainer.inner_step(next(self.train))


class PlainRunner(Runner):
    """The outer step in plain PyTorch, double backward (``_reference.py``); also the unit."""

    def __init__(self, base: Base, solve: plain.Solve | None = None, unroll: bool = False) -> None:
        self.model, self.decays = copy.deepcopy(base.model), decay_dict(base)
        self.log_decays = aligned_decays(self.model, self.decays)
        self.inner = torch.optim.SGD(self.model.parameters(), lr=INNER_LR)
        self.outer_optimizer = torch.optim.Adam(self.decays.parameters(), lr=OUTER_LR)
        self.hparam_names = {id(p): hparam_key(k) for k, p in self.decays.items()}
        self.train, self.val = base.streams()
        self.solve, self.unroll = solve, unroll

    def inner_loss(self, batch: Any) -> Tensor:
        return data_loss(self.model, batch) + penalty(list(self.model.parameters()), self.log_decays)

    def train_step(self, batch: Any) -> None:
        self.inner.zero_grad(set_to_none=True)
        self.inner_loss(batch).backward()
        self.inner.step()

    def hypergradient(self) -> list[Tensor]:
        batches, val = [next(self.train) for _ in range(INNER_STEPS)], next(self.val)
        if self.unroll:
            names = [k for k, _ in self.model.named_parameters()]

            def call(w: list[Tensor]) -> Callable[..., Tensor]:
                return lambda x: functional_call(self.model, dict(zip(names, w, strict=True)), (x,))

            hg, final = plain.unrolled(
                lambda w, b: data_loss(call(w), b) + penalty(w, self.log_decays),
                lambda w: data_loss(call(w), val),
                list(self.model.parameters()),
                self.log_decays,
                batches,
                INNER_LR,
            )
            with torch.no_grad():
                for p, w in zip(self.model.parameters(), final, strict=True):
                    p.copy_(w)
            return hg
        for batch in batches:
            self.train_step(batch)
        return plain.implicit(
            lambda: self.inner_loss(batches[-1]),
            lambda: data_loss(self.model, val),
            list(self.model.parameters()),
            self.log_decays,
            self.solve,
        )

    def outer_step(self) -> None:
        for p, g in zip(self.log_decays, self.hypergradient(), strict=True):
            p.grad = g
        self.outer_optimizer.step()
        self.outer_optimizer.zero_grad(set_to_none=True)


class TorchoptRunner(Runner):
    """TorchOpt's ``ImplicitMetaGradientModule``: ``solve`` runs the 5 inner steps, ``objective``
    is the inner loss on the last batch (its gradient is the optimality condition), and the
    decays, a meta-module, get their gradient by implicit differentiation through ``solve``.
    As in TorchOpt's iMAML example the module is built afresh for each outer step (here from the
    previous step's weights: warm start)."""

    def __init__(self, base: Base, solver: str) -> None:
        torchopt, _ = import_peer("torchopt")
        linear_solve = {
            "neumann": lambda: torchopt.linear_solve.solve_inv(ns=True, maxiter=SOLVER_STEPS, alpha=INNER_LR),
            "cg": lambda: torchopt.linear_solve.solve_cg(maxiter=SOLVER_STEPS, ridge=CG_DAMPING, rtol=1e-10),
            "normal-cg": lambda: torchopt.linear_solve.solve_normal_cg(maxiter=SOLVER_STEPS, rtol=1e-10),
        }[solver]()
        template = copy.deepcopy(base.model)

        class InnerNet(torchopt.nn.ImplicitMetaGradientModule, linear_solve=linear_solve):
            def __init__(self, decays: nn.ParameterDict, weights: tuple[Tensor, ...]) -> None:
                super().__init__()
                self.decays = decays  # a module in training mode: TorchOpt makes it a meta-module
                self.net = copy.deepcopy(template)
                with torch.no_grad():
                    for p, w in zip(self.net.parameters(), weights, strict=True):
                        p.copy_(w)

            def forward(self, x: Tensor) -> Tensor:
                return self.net(x)

            def loss(self, batch: Any) -> Tensor:
                log_decays = aligned_decays(self.net, self.decays)
                return data_loss(self.net, batch) + penalty(list(self.net.parameters()), log_decays)

            def objective(self, batches: list[Any]) -> Tensor:
                return self.loss(batches[-1])

            def solve(self, batches: list[Any]) -> InnerNet:
                params = tuple(self.parameters())
                optimizer = torch.optim.SGD(params, lr=INNER_LR)
                with torch.enable_grad():
                    for batch in batches:
                        loss = self.loss(batch)
                        optimizer.zero_grad()
                        loss.backward(inputs=params)
                        optimizer.step()
                return self

        self.inner_net = InnerNet
        self.decays = decay_dict(base)
        self.weights = tuple(p.detach().clone() for p in base.model.parameters())
        self.outer_optimizer = torch.optim.Adam(self.decays.parameters(), lr=OUTER_LR)
        self.hparam_names = {id(p): hparam_key(k) for k, p in self.decays.items()}
        self.train, self.val = base.streams()

    def outer_step(self) -> None:
        batches, val = [next(self.train) for _ in range(INNER_STEPS)], next(self.val)
        net = self.inner_net(self.decays, self.weights)
        net.solve(batches)
        loss = data_loss(net, val)
        self.outer_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.outer_optimizer.step()
        self.weights = tuple(p.detach() for p in net.parameters())


class BettyRunner(Runner):
    """Betty: an ``Engine`` over an inner ``ImplicitProblem`` (the MLP, SGD, ``unroll_steps=5``,
    the hypergradient method in its config) and an outer one (the decays, Adam, validation
    batches); 5 ``engine.train_step()`` calls are one outer step."""

    def __init__(self, base: Base, config: dict[str, Any]) -> None:
        betty, _ = import_peer("betty")
        from betty.configs import Config, EngineConfig
        from betty.engine import Engine
        from betty.problems import ImplicitProblem

        betty.logging.get_logger().setLevel(logging.WARNING)  # Betty logs INFO lines to stdout

        class Inner(ImplicitProblem):
            def training_step(self, batch: Any) -> Tensor:
                log_decays = aligned_decays(self.module, self.outer.module)
                return data_loss(self.module, batch) + penalty(list(self.module.parameters()), log_decays)

        class Outer(ImplicitProblem):
            def training_step(self, batch: Any) -> Tensor:
                return data_loss(self.inner.module, batch)

        self.model, self.decays = copy.deepcopy(base.model), decay_dict(base)
        train, val = base.streams()
        inner = Inner(
            name="inner",
            module=self.model,
            optimizer=torch.optim.SGD(self.model.parameters(), lr=INNER_LR),
            train_data_loader=train,
            config=Config(unroll_steps=INNER_STEPS, **config),
            device="cpu",
        )
        self.outer_optimizer = torch.optim.Adam(self.decays.parameters(), lr=OUTER_LR)
        outer = Outer(
            name="outer",
            module=self.decays,
            optimizer=self.outer_optimizer,
            train_data_loader=val,
            config=Config(retain_graph=True),
            device="cpu",
        )
        self.engine = Engine(
            problems=[outer, inner],
            config=EngineConfig(train_iters=10**9),
            dependencies={"u2l": {outer: [inner]}, "l2u": {inner: [outer]}},
        )
        self.hparam_names = {id(p): hparam_key(k) for k, p in self.decays.items()}

    def outer_step(self) -> None:
        for _ in range(INNER_STEPS):
            self.engine.train_step()


class HigherRunner(Runner):
    """higher: ``innerloop_ctx`` unrolls the 5 inner steps with a differentiable copy of the SGD
    optimizer; the final fast weights are copied back into the model (warm start)."""

    def __init__(self, base: Base) -> None:
        self.higher, _ = import_peer("higher")
        self.model, self.decays = copy.deepcopy(base.model), decay_dict(base)
        self.log_decays = aligned_decays(self.model, self.decays)
        self.inner = torch.optim.SGD(self.model.parameters(), lr=INNER_LR)
        self.outer_optimizer = torch.optim.Adam(self.decays.parameters(), lr=OUTER_LR)
        self.hparam_names = {id(p): hparam_key(k) for k, p in self.decays.items()}
        self.train, self.val = base.streams()

    def outer_step(self) -> None:
        batches, val = [next(self.train) for _ in range(INNER_STEPS)], next(self.val)
        self.outer_optimizer.zero_grad(set_to_none=True)
        with self.higher.innerloop_ctx(self.model, self.inner, copy_initial_weights=True) as (
            fmodel,
            diffopt,
        ):
            for batch in batches:
                diffopt.step(data_loss(fmodel, batch) + penalty(list(fmodel.parameters()), self.log_decays))
            data_loss(fmodel, val).backward()
            with torch.no_grad():
                for p, fast in zip(self.model.parameters(), fmodel.parameters(), strict=True):
                    p.copy_(fast)
        self.outer_optimizer.step()


# --------------------------------------------------------------------------- configurations
@dataclass(frozen=True)
class Config:
    library: str  # nestopt, plain PyTorch, TorchOpt, Betty, higher
    method: str  # neumann, cg, normal-cg, identity, unrolled
    make: Callable[[Base], Runner]
    reference: str  # key of the plain-PyTorch reference hypergradient of the same method
    peer: str | None = None  # import name of the peer library
    ift: bool = True
    note: str = ""


def nestopt_ift(solver: Any, compile: bool = True) -> Callable[[Base], Runner]:
    return lambda base: NestoptRunner(base, IFT(solver, compile=compile))


NEUMANN = nestopt.neumann(SOLVER_STEPS, INNER_LR)
CG = nestopt.cg(SOLVER_STEPS, damping=CG_DAMPING)
CONFIGS: dict[str, Config] = {
    "nestopt/neumann": Config(
        "nestopt", "neumann", nestopt_ift(NEUMANN), "neumann", note="compiled (default)"
    ),
    "nestopt/neumann-eager": Config(
        "nestopt", "neumann", nestopt_ift(NEUMANN, False), "neumann", note="eager"
    ),
    "nestopt/cg": Config("nestopt", "cg", nestopt_ift(CG), "cg", note="compiled (default)"),
    "nestopt/identity": Config(
        "nestopt", "identity", nestopt_ift(nestopt.identity()), "identity", note="compiled (default)"
    ),
    "nestopt/unrolled": Config(
        "nestopt", "unrolled", lambda b: NestoptRunner(b, Unrolled()), "unrolled", ift=False
    ),
    "plain/neumann": Config(
        "plain PyTorch",
        "neumann",
        lambda b: PlainRunner(b, plain.neumann(SOLVER_STEPS, INNER_LR)),
        "neumann",
    ),
    "plain/cg": Config(
        "plain PyTorch", "cg", lambda b: PlainRunner(b, plain.cg(SOLVER_STEPS, CG_DAMPING)), "cg"
    ),
    "plain/identity": Config(
        "plain PyTorch", "identity", lambda b: PlainRunner(b, plain.identity()), "identity"
    ),
    "plain/unrolled": Config(
        "plain PyTorch", "unrolled", lambda b: PlainRunner(b, unroll=True), "unrolled", ift=False
    ),
    "torchopt/neumann": Config(
        "TorchOpt",
        "neumann",
        lambda b: TorchoptRunner(b, "neumann"),
        "neumann",
        "torchopt",
    ),
    "torchopt/cg": Config("TorchOpt", "cg", lambda b: TorchoptRunner(b, "cg"), "cg", "torchopt"),
    "torchopt/normal-cg": Config(
        "TorchOpt",
        "normal-cg",
        lambda b: TorchoptRunner(b, "normal-cg"),
        "normal-cg",
        "torchopt",
        note="default",
    ),
    "betty/neumann": Config(
        "Betty",
        "neumann",
        lambda b: BettyRunner(
            b, {"type": "neumann", "neumann_iterations": SOLVER_STEPS, "neumann_alpha": INNER_LR}
        ),
        "neumann",
        "betty",
    ),
    "betty/cg": Config(
        "Betty",
        "cg",
        lambda b: BettyRunner(b, {"type": "cg", "cg_iterations": SOLVER_STEPS}),
        "cg-undamped",
        "betty",
        note="no damping option",
    ),
    "betty/darts": Config(
        "Betty", "identity", lambda b: BettyRunner(b, {"type": "darts"}), "identity", "betty", note="darts"
    ),
    "higher/unrolled": Config("higher", "unrolled", HigherRunner, "unrolled", "higher", ift=False),
}
EAGER_IN_QUICK = {  # --quick skips compiling these two (tens of seconds with a cold compiler cache)
    "nestopt/cg": Config("nestopt", "cg", nestopt_ift(CG, False), "cg", note="eager (--quick)"),
    "nestopt/identity": Config(
        "nestopt", "identity", nestopt_ift(nestopt.identity(), False), "identity", note="eager (--quick)"
    ),
}
NESTOPT_OF = {  # the nestopt row each method is compared with
    "neumann": "nestopt/neumann",
    "cg": "nestopt/cg",
    "normal-cg": "nestopt/cg",
    "identity": "nestopt/identity",
    "unrolled": "nestopt/unrolled",
}
DEFAULT = "nestopt/neumann"


def references(base: Base) -> dict[str, Tree]:
    """Plain-PyTorch hypergradients at the first outer step's point (5 SGD steps from the shared
    start on b1..b5; products on b5), one per method and convention."""
    solves = {
        "neumann": plain.neumann(SOLVER_STEPS, INNER_LR),
        "cg": plain.cg(SOLVER_STEPS, CG_DAMPING),
        "cg-undamped": plain.cg(SOLVER_STEPS),
        "cg-undamped, Betty's direction update": plain.cg(SOLVER_STEPS, old_residual_direction=True),
        "normal-cg": plain.normal_cg(SOLVER_STEPS),
        "identity": plain.identity(),
    }
    out = {}
    for key, solve in solves.items():
        runner = PlainRunner(base, solve)
        out[key] = runner.first_hypergradient()
    out["unrolled"] = PlainRunner(base, unroll=True).first_hypergradient()
    return out


# --------------------------------------------------------------------------- measurements
def first_hypergradients(
    base: Base, configs: dict[str, Config], refs: dict[str, Tree], console: Console
) -> tuple[dict[str, Runner], dict[str, dict]]:
    runners: dict[str, Runner] = {}
    info: dict[str, dict] = {}
    grads: dict[str, Tree] = {}
    for name, config in configs.items():
        row: dict[str, Any] = {"library": config.library, "method": config.method, "note": config.note}
        info[name] = row
        missing = import_peer(config.peer)[1] if config.peer else None
        if missing:
            row["error"] = missing
            continue
        console.log(f"first outer step: {name}")
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                runner = config.make(base)
                grads[name] = runner.first_hypergradient()
            runners[name] = runner
            row["error"] = None
            row["fell_back_to_eager"] = any("continuing in eager mode" in str(w.message) for w in caught)
        except Exception as error:  # one failing library or method keeps the rest running
            row["error"] = f"{type(error).__name__}: {str(error)[:200]}"
            continue
        row["first_call_seconds"] = time.perf_counter() - start
        row["reference"] = config.reference
        row |= compare(grads[name], refs[config.reference])
        own = NESTOPT_OF[config.method]
        if own in grads and own != name:
            row["cosine_vs_nestopt"] = compare(grads[name], grads[own])["cosine_vs_reference"]
        if name == "betty/cg":
            row["cosine_vs_cg_with_betty_direction_update"] = compare(
                grads[name], refs["cg-undamped, Betty's direction update"]
            )["cosine_vs_reference"]
    return runners, info


def measure_memory(name: str, steps: int, width: int) -> dict[str, Any]:
    """In a fresh process: setup, 2 warm-up outer steps (compilation), ``steps`` more."""
    base = build_base(width)
    runner = TrainOnlyRunner(base, IFT()) if name == "train" else CONFIGS[name].make(base)
    return peak_of_steps(runner.outer_step, steps)


def memory_in_process(runners: dict[str, Runner], steps: int, console: Console) -> dict[str, dict]:
    """Quick mode: the steady-state peak of each (already warm) runner's steps, in this process."""
    console.log(f"memory (steady state, in this process): {len(runners)} rows")
    out = {}
    for name, runner in runners.items():
        try:
            peak = peak_of_steps(runner.outer_step, steps, warmup=1)
        except Exception as error:  # a row that failed while timed fails here too
            out[name] = {"error": f"{type(error).__name__}: {error}"}
            continue
        out[name] = peak | {"peak_above_setup_mib": None, "method": "steady state only, in process (--quick)"}
    return out


def summarise(
    times: dict[str, list[float]], info: dict[str, dict], memory: dict[str, dict]
) -> dict[str, dict]:
    unit = times["train step"]
    for name, row in info.items():
        if name in times:
            row["seconds"] = stats(times[name])
            row["ratio"] = stats(ratios(times[name], unit))
        row["memory"] = memory.get(name, {})
    return info


def targets(rows: dict[str, dict]) -> list[dict[str, Any]]:
    """nestopt's outer step against every peer's IFT outer step of the same method (and the default,
    Neumann, against every peer's Neumann and CG), its cosine to the same method's reference, and
    its memory against the leanest peer's."""

    def ratio(name: str) -> float | None:
        return rows.get(name, {}).get("ratio", {}).get("median")

    def row(target: str, value: float | None, op: str, bound: float | None) -> dict[str, Any]:
        holds = {"<": operator.lt, "<=": operator.le, ">=": operator.ge}[op]
        ok = value is not None and bound is not None and holds(value, bound)
        return {"target": target, "value": value, "bound": f"{op} {fmt(bound, '.4g')}", "pass": ok}

    out = []
    peers = [n for n, c in CONFIGS.items() if c.peer and c.ift and ratio(n) is not None]
    for name in peers:
        method = CONFIGS[name].method
        mine = [NESTOPT_OF[method]] + ([DEFAULT] if method in ("cg", "normal-cg") else [])
        out += [row(f"{m} outer step / train step < {name}'s", ratio(m), "<", ratio(name)) for m in mine]
    for name in dict.fromkeys(NESTOPT_OF.values()):
        cosine = rows.get(name, {}).get("cosine_vs_reference")
        out.append(row(f"{name}: cosine to the same method's plain reference", cosine, ">=", MIN_COSINE))
    wide = any("memory_wide" in r for r in rows.values())
    where = "memory_wide" if wide else "memory"
    scale = " (wide MLP)" if wide else ""

    def mib(name: str, key: str) -> float | None:
        return rows.get(name, {}).get(where, {}).get(key)

    for key, label in (("steady_peak_above_mib", "steady-state"), ("peak_above_setup_mib", "first-call")):
        for mine in [
            *dict.fromkeys(n for n in NESTOPT_OF.values() if CONFIGS[n].ift),
            "nestopt/neumann-eager",
        ]:
            group = NESTOPT_OF[CONFIGS[mine].method]
            same = {n: mib(n, key) for n in peers if NESTOPT_OF[CONFIGS[n].method] == group and mib(n, key)}
            if same and mib(mine, key) is not None:
                leanest = min(same, key=same.get)
                target = f"{mine} {label} peak MiB{scale} <= leanest same-method peer's ({leanest})"
                out.append(row(target, mib(mine, key), "<=", same[leanest]))
        every = {n: mib(n, key) for n in peers if mib(n, key) is not None}
        if every and mib(DEFAULT, key) is not None:
            leanest = min(every, key=every.get)
            target = f"{DEFAULT} {label} peak MiB{scale} <= leanest peer IFT row's, any method ({leanest})"
            out.append(row(target, mib(DEFAULT, key), "<=", every[leanest]))
    return out


# --------------------------------------------------------------------------- report
def print_report(console: Console, result: dict[str, Any]) -> None:
    s = result["summary"]
    console.print(f"unit: one plain train step = {fmt_ms(result['unit'])} ms", markup=False)
    warning = busy_warning(result["machine"], result["unit"])
    if warning:
        console.print(f"[yellow]warning: {warning}[/yellow]")
    table = Table(
        title="Outer step (5 SGD steps + hypergradient + Adam step), MLP 40-300-300-10, 105k decays"
    )
    for col in (
        "row",
        "ms",
        "x train step",
        "cos vs ref",
        "cos vs nestopt",
        "peak MiB",
        "steady MiB",
        "note",
    ):
        table.add_column(col, justify="left" if col in ("row", "note") else "right")
    for name, row in s.items():
        mem = row.get("memory", {})
        note = row.get("error") or row.get("note", "")
        table.add_row(
            name,
            fmt_ms(row.get("seconds", {})),
            fmt_ratio(row.get("ratio", {})),
            fmt(row.get("cosine_vs_reference"), ".6f"),
            fmt(row.get("cosine_vs_nestopt"), ".6f"),
            fmt(mem.get("peak_above_setup_mib"), ".1f"),
            fmt(mem.get("steady_peak_above_mib"), ".1f"),
            note[:60],
        )
    console.print(table)
    for t in result["targets"]:
        status = "[green]PASS[/green]" if t["pass"] else "[red]FAIL[/red]"
        console.print(f"{status} {t['target']}: {fmt(t['value'], '.4g')} ({t['bound']})")


def profile(name: str, steps: int = 10) -> None:
    """Where one row's outer step spends its time: torch.profiler's operator table over ``steps``
    warm outer steps (``--profile nestopt/cg``; ``eager:nestopt/cg`` for the eager variant)."""
    eager = name.startswith("eager:")
    config = EAGER_IN_QUICK[name.removeprefix("eager:")] if eager else CONFIGS[name]
    runner = config.make(build_base())
    for _ in range(3):  # compile and warm up
        runner.outer_step()
    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            runner.outer_step()
    print(f"{name}: {1e3 * (time.perf_counter() - start) / steps:.2f} ms per outer step (profiled)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def run_benchmark(settings: Settings, console: Console) -> dict[str, Any]:
    machine = machine_info()
    console.log("building data and model")
    base = build_base()
    console.log("plain-PyTorch references")
    refs = references(base)
    configs = CONFIGS if settings.compile_all else {**CONFIGS, **EAGER_IN_QUICK}
    runners, info = first_hypergradients(base, configs, refs, console)
    unit_runner = PlainRunner(base)
    unit = Measurement("train step", lambda: unit_runner.train_step(next(unit_runner.train)))
    measurements = [Measurement(name, runner.outer_step) for name, runner in runners.items()]
    console.log("warm-up and calibration")
    for m in [unit, *measurements]:
        calibrate(m, settings)
    console.log(f"timing: {settings.repeats} interleaved repeats")
    times = run_interleaved(measurements, unit, settings.repeats)
    for m in measurements:
        if m.error:
            info[m.name]["error"] = m.error
    names = [*[n for n in info if info[n].get("error") is None], "train"]
    script, wide = Path(__file__).resolve(), {}
    if settings.memory_fresh_process:
        del runners, measurements
        memory = memory_in_subprocesses(script, names, settings.memory_steps, console)
    else:
        train_only = TrainOnlyRunner(base, IFT())
        memory = memory_in_process({**runners, "train": train_only}, settings.memory_steps, console)
    if settings.memory_width:
        console.log(f"memory again with hidden width {settings.memory_width}")
        extra = ["--memory-width", str(settings.memory_width)]
        wide = memory_in_subprocesses(script, names, 3, console, extra)
    rows = summarise(times, info, memory)
    rows["train"] = {"library": "-", "method": "5 train steps only", "memory": memory.get("train", {})}
    for name, row in rows.items():
        if name in wide:
            row["memory_wide"] = wide[name]
    return {
        "memory_width": settings.memory_width,
        "machine": machine | machine_at_end(machine),
        "versions": versions(),
        "settings": asdict(settings),
        "unit": stats(times["train step"]),
        "summary": rows,
        "reference_keys": list(refs),
        "targets": targets(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats; memory in one child")
    parser.add_argument("--repeats", type=int, help="override the number of interleaved repeats")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON output (default {RESULTS})")
    parser.add_argument("--profile", metavar="ROW", help="print torch.profiler's table for one row and exit")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    parser.add_argument("--memory-steps", type=int, default=FULL.memory_steps, help=argparse.SUPPRESS)
    parser.add_argument("--memory-width", type=int, default=300, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # functorch.vjp in TorchOpt
    if args.profile:
        profile(args.profile)
        return
    if args.memory_of:  # child process: one JSON line on stdout (several rows: one after the other)
        print(json.dumps(measure_memory(args.memory_of, args.memory_steps, args.memory_width)))
        return
    settings = QUICK if args.quick else FULL
    if args.repeats:
        settings = Settings(**{**asdict(settings), "repeats": args.repeats})
    console = Console() if sys.stdout.isatty() else Console(width=150)
    start = time.perf_counter()
    result = run_benchmark(settings, console)
    result["total_seconds"] = time.perf_counter() - start
    print_report(console, result)
    write_json(args.output, result)
    console.print(f"wrote {args.output} ({result['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
