"""Benchmark 1, exactness: hypergradients of every library against a closed form.

Problem: the test suite's ridge regression (``tests/problems.py``): 50 features, 200 training and
100 validation examples, one L2 coefficient ``exp(λ_j)`` per feature, float64. The inner optimum
``w*(λ)`` is closed-form, and the exact hypergradient is autograd through ``torch.linalg.solve``
of it. Every hypergradient is taken at ``w*`` with the full training set, step size
``α = 1/λ_max(H)`` (contraction ``ρ = max|1 - αλ(H)| ≈ 0.77``).

Methods, each with K = 10 and K = 100 Hessian-vector products (or SGD steps):

* ``neumann``: truncated Neumann series, alpha = α;
* ``cg``: conjugate gradients, exactly K iterations (no early stop); ``cg, default tol``: nestopt's
  ``cg(K)`` with its default ``tol=1e-10`` (stops once ``||r|| <= 1e-10 ||b||``);
* ``unrolled``: reverse mode through K SGD steps of size α started at ``w*`` (equal to the K-term
  Neumann series, so it converges like ``ρ^K``);
* ``identity``: ``H⁻¹ ≈ I``, the one-step / DARTS-style estimate (a biased method, shown for scale).

Libraries, each used as its documentation shows: nestopt (``implicit`` / ``unrolled``), plain
PyTorch double backward (``_reference.py``), TorchOpt (``custom_root`` with ``solve_inv(ns=True)``,
``solve_cg`` and its default ``solve_normal_cg``; ``MetaSGD`` unrolled), higher (``innerloop_ctx``),
Betty (an ``Engine`` over two ``ImplicitProblem``s, ``type="neumann" | "cg" | "darts"``).
A peer that is not installed gets rows saying so. Betty's CG also runs with its step-size
setting ``cg_alpha = α`` (default 1), and a last row reproduces Betty's CG result in plain PyTorch
by making one change to textbook CG, which locates its error.

Reports the cosine and the relative error to the exact hypergradient and the time of one call
(median [min, max]); writes ``benchmarks/results/exactness.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

import _reference as plain
import nestopt as nest
from _common import (
    RESULTS_DIR,
    fmt,
    fmt_ms,
    import_peer,
    machine_at_end,
    machine_info,
    median_time,
    versions,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = RESULTS_DIR / "exactness.json"
STEPS = (10, 100)
METHODS = ("neumann", "cg", "cg, default tol", "unrolled", "identity")
TARGET_CG_ERROR = 1e-12  # nestopt cg(100): relative error to the closed form


def load_ridge() -> Any:
    """The ridge problem of the test suite's registry (one definition, shared with the tests)."""
    spec = importlib.util.spec_from_file_location("nestopt_test_problems", ROOT / "tests" / "problems.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.ridge()


Builder = Callable[[Any, str, int], Callable[[], Tensor] | None]  # (problem, method, K) -> call


# --------------------------------------------------------------------------- nestopt
def nestopt_call(p: Any, method: str, k: int) -> Callable[[], Tensor] | None:
    if method == "unrolled":
        batches = [p.train_batch] * k
        return lambda: nest.unrolled(
            p.train_loss, p.val_loss, p.params, p.hparams, batches, p.val_batch, rule=nest.sgd(p.lr)
        ).grads["log_l2"]
    solver = {
        "neumann": nest.neumann(k, p.lr),
        "cg": nest.cg(k, tol=0.0),  # exactly k iterations, like the peers
        "cg, default tol": nest.cg(k),
        "identity": nest.identity(),
    }[method]
    return lambda: nest.implicit(
        p.train_loss, p.val_loss, p.params, p.hparams, p.train_batch, p.val_batch, solver=solver
    ).grads["log_l2"]


# --------------------------------------------------------------------------- plain PyTorch
def plain_call(p: Any, method: str, k: int, solve: plain.Solve | None = None) -> Callable[[], Tensor] | None:
    def leaves() -> tuple[Tensor, Tensor]:
        return p.params["w"].clone().requires_grad_(True), p.hparams["log_l2"].clone().requires_grad_(True)

    if method == "unrolled":

        def call() -> Tensor:
            w, lam = leaves()
            hg, _ = plain.unrolled(
                lambda ws, batch: p.train_loss({"w": ws[0]}, {"log_l2": lam}, batch),
                lambda ws: p.val_loss({"w": ws[0]}, {"log_l2": lam}, p.val_batch),
                [w],
                [lam],
                [p.train_batch] * k,
                p.lr,
            )
            return hg[0]

        return call
    solve = solve or {"neumann": plain.neumann(k, p.lr), "cg": plain.cg(k), "identity": plain.identity()}.get(
        method
    )
    if solve is None:
        return None

    def call() -> Tensor:
        w, lam = leaves()
        return plain.implicit(
            lambda: p.train_loss({"w": w}, {"log_l2": lam}, p.train_batch),
            lambda: p.val_loss({"w": w}, {"log_l2": lam}, p.val_batch),
            [w],
            [lam],
            solve,
        )[0]

    return call


# --------------------------------------------------------------------------- TorchOpt
def torchopt_call(p: Any, method: str, k: int, normal: bool = False) -> Callable[[], Tensor] | None:
    torchopt, _ = import_peer("torchopt")
    lam0 = p.hparams["log_l2"]
    if method == "unrolled" and not normal:  # TorchOpt's differentiable optimizer over an nn.Module

        def call() -> Tensor:
            net, lam = Linear(p.params["w"]), lam0.clone().requires_grad_(True)
            optimizer = torchopt.MetaSGD(net, lr=p.lr)
            for _ in range(k):
                optimizer.step(p.train_loss({"w": net.w}, {"log_l2": lam}, p.train_batch))
            return torch.autograd.grad(p.val_loss({"w": net.w}, None, p.val_batch), lam)[0]

        return call
    solve = {
        "neumann": torchopt.linear_solve.solve_inv(ns=True, maxiter=k, alpha=p.lr),
        "cg": torchopt.linear_solve.solve_cg(maxiter=k, rtol=0.0),
    }.get(method)
    if normal:
        solve = torchopt.linear_solve.solve_normal_cg(maxiter=k, rtol=0.0) if method == "cg" else None
    if solve is None:
        return None

    def optimality(w: Tensor, log_l2: Tensor) -> Tensor:  # KKT residual: the inner gradient
        return torch.func.grad(lambda v: p.train_loss({"w": v}, {"log_l2": log_l2}, p.train_batch))(w)

    @torchopt.diff.implicit.custom_root(optimality, argnums=1, solve=solve)
    def inner_solver(w: Tensor, log_l2: Tensor) -> Tensor:
        return p.params["w"].clone()  # the inner problem is solved in closed form

    def call() -> Tensor:
        lam = lam0.clone().requires_grad_(True)
        w = inner_solver(torch.zeros_like(p.params["w"]), lam)
        return torch.autograd.grad(p.val_loss({"w": w}, None, p.val_batch), lam)[0]

    return call


class Linear(nn.Module):
    """The ridge model as a module (for the module-based peers)."""

    def __init__(self, w: Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.w


class LogDecay(nn.Module):
    def __init__(self, lam: Tensor) -> None:
        super().__init__()
        self.log_l2 = nn.Parameter(lam.clone())


# --------------------------------------------------------------------------- higher
def higher_call(p: Any, method: str, k: int) -> Callable[[], Tensor] | None:
    if method != "unrolled":
        return None
    higher, _ = import_peer("higher")

    def call() -> Tensor:
        model, lam = Linear(p.params["w"]), p.hparams["log_l2"].clone().requires_grad_(True)
        optimizer = torch.optim.SGD(model.parameters(), lr=p.lr)
        with higher.innerloop_ctx(model, optimizer, copy_initial_weights=True) as (fmodel, diffopt):
            for _ in range(k):
                diffopt.step(p.train_loss({"w": fmodel.w}, {"log_l2": lam}, p.train_batch))
            return torch.autograd.grad(p.val_loss({"w": fmodel.w}, None, p.val_batch), lam)[0]

    return call


# --------------------------------------------------------------------------- Betty
def endless(batch: Any):
    while True:
        yield batch


class BettyRidge:
    """Betty's two-level set-up: the inner problem trains ``w`` (one SGD step of size α, which
    leaves ``w*`` in place), then the outer problem's step computes the hypergradient with the
    inner problem's ``type``; a ``custom_optimizer_step`` records it before the (zero) update."""

    def __init__(self, p: Any, config: dict[str, Any]) -> None:
        betty, _ = import_peer("betty")
        from betty.configs import Config, EngineConfig
        from betty.engine import Engine
        from betty.problems import ImplicitProblem

        betty.logging.get_logger().setLevel(logging.WARNING)  # Betty logs INFO lines to stdout
        recorded: list[Tensor] = []
        self.recorded = recorded

        class Inner(ImplicitProblem):
            def training_step(self, batch: Any) -> Tensor:
                return p.train_loss({"w": self.module.w}, {"log_l2": self.outer.module.log_l2}, batch)

        class Outer(ImplicitProblem):
            def training_step(self, batch: Any) -> Tensor:
                return p.val_loss({"w": self.inner.module.w}, None, batch)

            def custom_optimizer_step(self) -> None:
                recorded.append(self.module.log_l2.grad.detach().clone())
                self.optimizer.step()

        self.w = Linear(p.params["w"])
        decay = LogDecay(p.hparams["log_l2"])
        inner = Inner(
            name="inner",
            module=self.w,
            optimizer=torch.optim.SGD(self.w.parameters(), lr=p.lr),
            train_data_loader=endless(p.train_batch),
            config=Config(unroll_steps=1, **config),
            device="cpu",
        )
        outer = Outer(
            name="outer",
            module=decay,
            optimizer=torch.optim.SGD(decay.parameters(), lr=0.0),
            train_data_loader=endless(p.val_batch),
            config=Config(retain_graph=True),
            device="cpu",
        )
        self.engine = Engine(
            problems=[outer, inner],
            config=EngineConfig(train_iters=1),
            dependencies={"u2l": {outer: [inner]}, "l2u": {inner: [outer]}},
        )

    def __call__(self) -> Tensor:
        self.engine.train_step()
        return self.recorded[-1]


def betty_call(p: Any, method: str, k: int, cg_alpha: float = 1.0) -> Callable[[], Tensor] | None:
    config = {
        "neumann": {"type": "neumann", "neumann_iterations": k, "neumann_alpha": p.lr},
        "cg": {"type": "cg", "cg_iterations": k, "cg_alpha": cg_alpha},  # Betty has no tolerance
        "identity": {"type": "darts"},  # finite differences of the mixed product, R = 0.01
    }.get(method)
    return None if config is None else BettyRidge(p, config)


# --------------------------------------------------------------------------- runs
LIBRARIES: dict[str, tuple[str | None, Builder]] = {  # label -> (peer import name, builder)
    "nestopt": (None, nestopt_call),
    "plain PyTorch": (None, plain_call),
    "TorchOpt": ("torchopt", torchopt_call),
    "TorchOpt normal-CG (default solver)": ("torchopt", lambda p, m, k: torchopt_call(p, m, k, normal=True)),
    "higher": ("higher", higher_call),
    "Betty": ("betty", betty_call),
    "Betty, cg_alpha = α": (
        "betty",
        lambda p, m, k: betty_call(p, m, k, cg_alpha=p.lr) if m == "cg" else None,
    ),
    "plain CG with Betty's direction update": (
        None,
        lambda p, m, k: plain_call(p, m, k, plain.cg(k, old_residual_direction=True)) if m == "cg" else None,
    ),
}


def measure(call: Callable[[], Tensor], exact: Tensor, w_star: Tensor, repeats: int) -> dict[str, Any]:
    first = call().detach()
    row = {
        "cosine": float(F.cosine_similarity(first, exact, dim=0)),
        "relative_error": float((first - exact).norm() / exact.norm()),
        "error": None,
    }
    if isinstance(call, BettyRidge):  # did the hypergradient leave w* where it was?
        row["weights_moved"] = float((call.w.w.detach() - w_star).norm())
    row["seconds"] = median_time(call, repeats, min_seconds=0.05 if repeats < 10 else 0.3)
    return row


def run(repeats: int, console: Console) -> dict[str, Any]:
    p = load_ridge()
    exact = p.reference["log_l2"]
    rows = []
    for label, (peer, builder) in LIBRARIES.items():
        missing = import_peer(peer)[1] if peer else None
        for method in METHODS:
            for k in (None,) if method == "identity" else STEPS[-1:] if "tol" in method else STEPS:
                row: dict[str, Any] = {"library": label, "method": method, "steps": k}
                if missing:
                    if method == "neumann" and k == STEPS[0]:
                        rows.append(row | {"error": missing})
                    continue
                call = builder(p, method, k or 1)
                if call is None:
                    continue
                console.log(f"{label}: {method} {k or ''}")
                try:
                    row |= measure(call, exact, p.params["w"], repeats)
                except Exception as error:  # a peer failing on one method keeps the rest running
                    row["error"] = f"{type(error).__name__}: {str(error)[:200]}"
                rows.append(row)
    return {
        "problem": {"name": "ridge", "features": 50, "n_train": 200, "n_val": 100, "dtype": "float64"},
        "alpha": p.lr,
        "rho": p.rho,
        "rows": rows,
        "targets": targets(rows),
    }


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    value = next(
        (
            r.get("relative_error")
            for r in rows
            if (r["library"], r["method"], r["steps"]) == ("nestopt", "cg", 100)
        ),
        None,
    )
    return [
        {
            "target": "nestopt cg(100) relative error to the closed form",
            "value": value,
            "bound": f"<= {TARGET_CG_ERROR}",
            "pass": value is not None and value <= TARGET_CG_ERROR,
        }
    ]


def print_table(console: Console, result: dict[str, Any]) -> None:
    table = Table(
        title=f"Ridge (50 hyperparameters, float64): error to the closed form, ρ = {result['rho']:.3f}"
    )
    for col in ("library", "method", "K", "cosine", "relative error", "ms per call", "note"):
        table.add_column(col, justify="left" if col in ("library", "method", "note") else "right")
    for r in result["rows"]:
        note = r.get("error") or ""
        if r.get("weights_moved", 0) > 1e-8:  # more than the rounding of one SGD step at w*
            note += f"leaves w moved by {r['weights_moved']:.2g}"
        table.add_row(
            r["library"],
            r["method"],
            fmt(r["steps"], "d"),
            fmt(r.get("cosine"), ".6f"),
            fmt(r.get("relative_error"), ".2e"),
            fmt_ms(r.get("seconds", {})),
            note[:70],
        )
    console.print(table)
    for t in result["targets"]:
        console.print(f"target: {t['target']} = {fmt(t['value'], '.2e')} ({t['bound']}): ", end="")
        console.print("[green]PASS[/green]" if t["pass"] else "[red]FAIL[/red]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed repeats")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # functorch.vjp in TorchOpt
    warnings.filterwarnings("ignore", category=UserWarning)
    console = Console() if sys.stdout.isatty() else Console(width=150)
    result = {"machine": machine_info(), "versions": versions(), **run(3 if args.quick else 15, console)}
    result["machine"] |= machine_at_end(result["machine"])
    print_table(console, result)
    write_json(args.output, result)
    console.print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
