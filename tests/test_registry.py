"""Every hypergradient method against every problem with a known answer (see problems.py)."""

import pytest
import torch

import nestopt as nest
from problems import METHODS, PROBLEMS, relative_error

PAIRS = [(m, p) for m in METHODS for p in PROBLEMS]
IDS = [f"{m.name}-{p}" for m, p in PAIRS]


@pytest.fixture(scope="module")
def problems():
    return {name: make() for name, make in PROBLEMS.items()}


@pytest.mark.parametrize(("method", "problem"), PAIRS, ids=IDS)
def test_method_matches_exact_hypergradient(method, problem, problems):
    p = problems[problem]
    error = relative_error(method.compute(p), p.reference)
    assert error <= method.tolerance(p), f"{method.name} on {problem}: relative error {error:.2e}"


@pytest.mark.parametrize(
    ("method", "problem"),
    [pair for pair in PAIRS if pair[0].implicit],
    ids=[i for i, pair in zip(IDS, PAIRS, strict=True) if pair[0].implicit],
)
def test_func_backend_equals_autograd_backend(method, problem, problems):
    p = problems[problem]
    a, f = method.compute(p, backend="autograd"), method.compute(p, backend="func")
    assert relative_error(f, a) <= 1e-12


@pytest.mark.parametrize(("method", "problem"), PAIRS, ids=IDS)
def test_method_leaves_its_inputs_unchanged(method, problem, problems):
    p = problems[problem]
    before = {k: v.clone() for k, v in {**p.params, **p.hparams}.items()}
    method.compute(p)
    after = {**p.params, **p.hparams}
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_sign_or_scale_bug_in_a_solver_is_caught(problems):
    """The registry must fail a CG that returns a wrongly scaled solution (a peer's bug class)."""
    p = problems["ridge"]

    def halved_cg(matvec, b):
        solution = nest.cg(steps=200, tol=1e-15)(matvec, b)
        return solution._replace(x={k: 0.5 * v for k, v in solution.x.items()})

    grads = nest.implicit(
        p.train_loss, p.val_loss, p.params, p.hparams, p.train_batch, p.val_batch, solver=halved_cg
    ).grads
    assert relative_error(grads, p.reference) > 0.1


def test_compiled_implicit_equals_eager(problems):
    p = problems["logistic"]
    solver = nest.neumann(steps=20, alpha=p.lr)

    def hypergradient(params, hparams):
        return nest.implicit(
            p.train_loss, p.val_loss, params, hparams, p.train_batch, p.val_batch, solver=solver
        ).grads

    eager = hypergradient(p.params, p.hparams)
    compiled = torch.compile(hypergradient)(p.params, p.hparams)
    assert relative_error(compiled, eager) <= 1e-12


@pytest.mark.parametrize("solver", [nest.cg(steps=60, tol=0.0), nest.neumann(steps=30, alpha=0.3)])
def test_implicit_composes_with_torch_func_vmap(problems, solver):
    """Hypergradients at several hyperparameter settings at once, batched by vmap."""
    p = problems["ridge"]
    settings = torch.stack([p.hparams["log_l2"] + shift for shift in (0.0, 0.5, -0.5)])

    def hypergradient(log_l2):
        return nest.implicit(
            p.train_loss, p.val_loss, p.params, {"log_l2": log_l2}, p.train_batch, p.val_batch, solver=solver
        ).grads["log_l2"]

    batched = torch.func.vmap(hypergradient)(settings)
    looped = torch.stack([hypergradient(s) for s in settings])
    assert torch.allclose(batched, looped, rtol=1e-10, atol=1e-14)
