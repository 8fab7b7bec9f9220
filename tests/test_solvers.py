import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nestopt as nest
from nestopt.solvers import IndefiniteOperatorError, check_solution

F64 = torch.float64


def matrix_operator(a):
    return lambda v: {"x": a @ v["x"]}


def random_spd(n, condition, seed):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    eig = torch.logspace(0, math.log10(condition), n, dtype=F64)
    return q @ torch.diag(eig) @ q.T, eig


@given(n=st.integers(1, 30), condition=st.floats(1.0, 1e3), seed=st.integers(0, 10_000))
def test_cg_matches_dense_solve_on_spd_operator(n, condition, seed):
    a, _ = random_spd(n, condition, seed)
    b = torch.randn(n, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)
    solution = nest.cg(steps=4 * n, tol=1e-14)(matrix_operator(a), {"x": b})
    expected = torch.linalg.solve(a, b)
    assert torch.linalg.norm(solution.x["x"] - expected) <= 1e-9 * torch.linalg.norm(expected)
    assert float(solution.min_curvature) > 0


def test_cg_stops_once_converged_and_reports_residual():
    a, _ = random_spd(10, 10.0, 0)
    b = torch.ones(10, dtype=F64)
    solution = nest.cg(steps=100, tol=1e-12)(matrix_operator(a), {"x": b})
    assert int(solution.iterations) <= 15
    true_residual = torch.linalg.norm(b - a @ solution.x["x"])
    assert float(solution.residual_norm) == pytest.approx(float(true_residual), abs=1e-12)
    assert float(true_residual) <= 1e-12 * float(torch.linalg.norm(b)) * 10


def test_cg_refuses_indefinite_operator_with_clear_error():
    a = torch.diag(torch.tensor([2.0, -1.0, 3.0], dtype=F64))
    solver = nest.cg(steps=10)
    solution = solver(matrix_operator(a), {"x": torch.ones(3, dtype=F64)})
    assert float(solution.min_curvature) <= 0
    with pytest.raises(IndefiniteOperatorError, match=r"not positive definite.*damping"):
        check_solution(solution, solver)


def test_implicit_with_cg_refuses_an_indefinite_hessian():
    def train_loss(p, h, b):  # a saddle in w
        return 0.5 * (p["w"][0] ** 2 - p["w"][1] ** 2) + h["a"] * p["w"].sum()

    def val_loss(p, h, b):
        return (p["w"] ** 2).sum()

    params, hparams = {"w": torch.tensor([1.0, 2.0], dtype=F64)}, {"a": torch.tensor(0.5, dtype=F64)}
    with pytest.raises(IndefiniteOperatorError, match="cg"):
        nest.implicit(train_loss, val_loss, params, hparams, None, None, solver=nest.cg(steps=5))


def test_compiled_cg_runs_masked_iterations_to_the_same_answer():
    a, _ = random_spd(6, 20.0, 3)
    b = {"x": torch.arange(1.0, 7.0, dtype=F64)}
    solver = nest.cg(steps=30, tol=1e-13)
    eager = solver(matrix_operator(a), b)
    compiled = torch.compile(lambda rhs: solver(matrix_operator(a), rhs))(b)
    assert torch.allclose(compiled.x["x"], eager.x["x"], rtol=1e-10, atol=1e-12)
    assert int(compiled.iterations) == int(eager.iterations)


@given(steps=st.integers(1, 60), alpha=st.floats(0.05, 0.45))
def test_neumann_error_equals_theory(steps, alpha):
    """x = alpha * sum_{j<=n} (I - alpha A)^j b = A^{-1} (I - (I - alpha A)^(n+1)) b, exactly; the
    reported residual is the one of the series without its last term, (I - alpha A)^n b."""
    eig = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=F64)
    b = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)
    solution = nest.neumann(steps=steps, alpha=alpha)(matrix_operator(torch.diag(eig)), {"x": b})
    expected = (1 - (1 - alpha * eig) ** (steps + 1)) / eig * b
    assert torch.allclose(solution.x["x"], expected, rtol=1e-12, atol=1e-14)
    reported = torch.linalg.norm((1 - alpha * eig) ** steps * b)
    assert float(solution.residual_norm) == pytest.approx(float(reported), rel=1e-9, abs=1e-14)
    true_residual = torch.linalg.norm(b - eig * solution.x["x"])
    assert float(true_residual) <= float(solution.residual_norm) * (1 + 1e-9)  # here |1 - alpha eig| <= 1


def test_neumann_error_falls_like_rho_to_the_steps():
    a, eig = random_spd(8, 10.0, 1)
    alpha = 1.0 / float(eig.max())
    rho = 1 - alpha * float(eig.min())
    b = {"x": torch.ones(8, dtype=F64)}
    exact = torch.linalg.solve(a, b["x"])
    errors = [
        float(torch.linalg.norm(nest.neumann(steps=n, alpha=alpha)(matrix_operator(a), b).x["x"] - exact))
        for n in (20, 40, 80)
    ]
    assert errors[0] > errors[1] > errors[2]
    for n, error in zip((20, 40, 80), errors, strict=True):
        assert error <= rho ** (n + 1) * float(torch.linalg.norm(exact)) * (1 + 1e-9)
    # asymptotically the slowest eigen-direction dominates: the ratio is rho ** 40
    assert errors[2] / errors[1] == pytest.approx(rho**40, rel=0.05)


def test_damping_solves_the_shifted_system():
    a, _ = random_spd(5, 5.0, 2)
    b = {"x": torch.ones(5, dtype=F64)}
    expected = torch.linalg.solve(a + 0.3 * torch.eye(5, dtype=F64), b["x"])
    for solver in (nest.cg(steps=50, tol=1e-14, damping=0.3), nest.exact(damping=0.3)):
        assert torch.allclose(solver(matrix_operator(a), b).x["x"], expected, rtol=1e-10)


def test_exact_refuses_above_its_size_limit():
    with pytest.raises(ValueError, match=r"dense 10x10 .*cg\(\.\.\.\).*max_size=10"):
        nest.exact(max_size=9)(lambda v: v, {"x": torch.ones(10)})


def test_identity_returns_scaled_right_hand_side():
    solution = nest.identity(scale=2.0)(lambda v: 1 / 0, {"x": torch.ones(3)})
    assert torch.equal(solution.x["x"], torch.full((3,), 2.0))
    assert int(solution.iterations) == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: nest.neumann(steps=-1), "steps must be an integer >= 0"),
        (lambda: nest.cg(steps=0), "steps must be an integer >= 1"),
        (lambda: nest.neumann(alpha=-1.0), "alpha must be > 0"),
        (lambda: nest.cg(tol=-1.0), "tol must be >= 0"),
        (lambda: nest.cg(damping=-1.0), "damping must be >= 0"),
    ],
)
def test_bad_solver_arguments_raise_one_line_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()
