"""Spectral analysis: every (method, game) pair of one registry has its closed-form update
matrix equal (in spectrum) to the linearization of the implemented rule, and its iterates
contract at the predicted rate; simultaneous GDA diverges on a bilinear game."""

import cmath
import itertools
import math
from typing import NamedTuple

import pytest
import torch

import nestopt as nest
from nestopt.games import spectral as sp
from nestopt.games import zoo

F64 = torch.float64
SIZES = (3, 3)
CM_BETA = 0.7 * cmath.exp(0.36j * math.pi)  # near the best phase of this bilinear game


class Method(NamedTuple):
    name: str
    rule: nest.UpdateRule
    matrix: object  # J -> closed-form matrix of one period
    order: str = "simultaneous"
    calls: int = 1  # gradient evaluations per period


def methods(lr=0.3):
    return [
        Method("GDA", nest.sgd(lr), lambda J: sp.gda_matrix(J, lr)),
        Method(
            "alternating GDA",
            nest.sgd(lr),
            lambda J: sp.alternating(sp.gda_matrix(J, lr), SIZES, 1),
            "alternating",
        ),
        Method("extragradient", nest.extragradient(lr), lambda J: sp.extragradient_matrix(J, lr), calls=2),
        Method("optimistic", nest.optimistic(lr), lambda J: sp.optimistic_matrix(J, lr)),
        Method("heavy ball", nest.complex_momentum(lr, 0.5), lambda J: sp.momentum_matrix(J, lr, 0.5)),
        Method(
            "alternating negative momentum",
            nest.complex_momentum(lr, -0.5),
            lambda J: sp.alternating(sp.momentum_matrix(J, lr, -0.5), SIZES, 3),
            "alternating",
        ),
        Method(
            "complex momentum",
            nest.complex_momentum(lr, CM_BETA),
            lambda J: sp.momentum_matrix(J, lr, CM_BETA),
        ),
        Method(
            "complex momentum, two buffers",
            nest.complex_momentum_two_buffer(lr, CM_BETA),
            lambda J: sp.momentum_matrix(J, lr, CM_BETA),
        ),
        Method(
            "alternating complex momentum",
            nest.complex_momentum(lr, CM_BETA),
            lambda J: sp.alternating(sp.momentum_matrix(J, lr, CM_BETA), SIZES, 3),
            "alternating",
        ),
    ]


def games():
    A = zoo.matrix_with_singular_values(torch.linspace(0.5, 1.0, 3, dtype=F64), seed=0)
    return {
        "bilinear": zoo.bilinear(A),
        "quadratic": zoo.quadratic(A, 0.1 * torch.eye(3, dtype=F64), 0.1 * torch.eye(3, dtype=F64)),
    }


CASES = [pytest.param(g, m, id=f"{g}-{m.name}") for g in games() for m in methods()]


def distances(game, method, steps):
    params = game.params()
    states = game.init(method.rule, params)
    out = []
    for _ in range(steps):
        params, states = game.update(method.rule, params, states, method.order)
        out.append(game.distance(params).item())
    return out


@pytest.mark.parametrize("game_name, method", CASES)
def test_closed_form_matrix_has_the_spectrum_of_the_implemented_step(game_name, method):
    game = games()[game_name]
    params = game.params()
    closed = method.matrix(game.jacobian(params))
    linearized = sp.step_matrix(game, method.rule, params, method.order, calls=method.calls)
    assert sp.spectral_radius(closed).item() == pytest.approx(
        sp.spectral_radius(linearized).item(), rel=1e-10
    )
    # The implementation may carry state the closed form leaves out (extragradient's anchor, overwritten
    # every period): its extra eigenvalues are zero.
    moduli = [sp.eigenvalues(M).abs().sort(descending=True).values for M in (closed, linearized)]
    padded = torch.cat([moduli[0], torch.zeros(len(moduli[1]) - len(moduli[0]), dtype=F64)])
    assert torch.allclose(padded, moduli[1], atol=1e-7)


@pytest.mark.parametrize("game_name, method", CASES)
def test_iterates_contract_at_the_predicted_spectral_radius(game_name, method):
    game = games()[game_name]
    predicted = sp.rate_per_evaluation(method.matrix(game.jacobian(game.params())), method.calls).item()
    measured = sp.fit_rate(distances(game, method, 400))
    assert measured == pytest.approx(predicted, abs=2e-3)


def test_simultaneous_gda_diverges_on_a_bilinear_game_at_every_step_size():
    game = games()["bilinear"]
    J = game.jacobian(game.params())
    for lr in (1e-3, 0.01, 0.1, 1.0):
        assert sp.spectral_radius(sp.gda_matrix(J, lr)).item() > 1
    d = distances(game, Method("GDA", nest.sgd(0.3), None), 200)
    assert all(b > a for a, b in itertools.pairwise(d))
    assert d[-1] > 5 * d[0]


def test_complex_momentum_converges_where_real_momentum_of_either_sign_diverges():
    """Bilinear game, simultaneous updates (Lorraine et al., 2022, Section 4.1)."""
    J = games()["bilinear"].jacobian(games()["bilinear"].params())
    assert sp.spectral_radius(sp.momentum_matrix(J, 0.3, CM_BETA)).item() < 1
    for beta in (-0.9, -0.5, 0.0, 0.5, 0.9):
        assert sp.spectral_radius(sp.momentum_matrix(J, 0.3, beta)).item() > 1


def test_rate_grid_matches_the_momentum_matrix_at_each_beta():
    J = games()["quadratic"].jacobian(games()["quadratic"].params())
    magnitudes, phases = torch.linspace(0, 0.95, 4, dtype=F64), torch.linspace(0, math.pi, 5, dtype=F64)
    for sizes in (None, SIZES):
        grid = sp.momentum_rate_grid(J, 0.2, magnitudes, phases, sizes)
        assert grid.shape == (4, 5)
        i, j = 2, 3
        beta = cmath.rect(magnitudes[i].item(), phases[j].item())
        M = sp.momentum_matrix(J, 0.2, beta)
        M = M if sizes is None else sp.alternating(M, sizes, 3)
        assert grid[i, j].item() == pytest.approx(sp.spectral_radius(M).item(), rel=1e-10)


def test_zero_momentum_is_gradient_descent_ascent():
    J = games()["quadratic"].jacobian(games()["quadratic"].params())
    assert sp.spectral_radius(sp.momentum_matrix(J, 0.2, 0.0)).item() == pytest.approx(
        sp.spectral_radius(sp.gda_matrix(J, 0.2)).item(), rel=1e-12
    )


def test_fit_rate_recovers_a_geometric_sequence_and_stops_at_overflow():
    assert sp.fit_rate([0.9**t for t in range(50)]) == pytest.approx(0.9, rel=1e-12)
    assert sp.fit_rate([2.0**t for t in range(20)] + [math.inf] * 5) == pytest.approx(2.0, rel=1e-12)
    assert math.isnan(sp.fit_rate([math.inf]))


def test_alternating_needs_the_matrix_size_of_its_copies():
    with pytest.raises(ValueError, match=r"M is 6 wide but copies \* sum\(sizes\) = 3 \* 6 = 18"):
        sp.alternating(torch.eye(6, dtype=F64), SIZES, 3)
