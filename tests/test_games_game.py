"""Game: the gradient field, its Jacobian products and dense Jacobian against closed forms, the
pure update against the torch.optim face, and one-line errors."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

import nestopt as nest
from nestopt.games import Game, Player, flatten, unflatten, zoo

F64 = torch.float64


def quadratic_game(seed=0, m=3, n=2):
    generator = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=generator, dtype=F64)
    Sx = torch.randn(m, m, generator=generator, dtype=F64)
    Sy = torch.randn(n, n, generator=generator, dtype=F64)
    Sx, Sy = Sx @ Sx.T, Sy @ Sy.T
    x, y = torch.randn(m, generator=generator, dtype=F64), torch.randn(n, generator=generator, dtype=F64)
    return zoo.quadratic(A, Sx, Sy, x, y), (A, Sx, Sy)


def test_gradient_field_is_each_players_gradient_of_its_own_loss():
    game, (A, Sx, Sy) = quadratic_game()
    p = game.params()
    x, y = p["x"]["w"], p["y"]["w"]
    field = game.gradients(p)
    assert torch.allclose(field["x"]["w"], Sx @ x + A @ y)
    assert torch.allclose(field["y"]["w"], Sy @ y - A.T @ x)


def test_jacobian_is_the_block_matrix_of_the_quadratic_game():
    game, (A, Sx, Sy) = quadratic_game()
    expected = torch.cat([torch.cat([Sx, A], 1), torch.cat([-A.T, Sy], 1)], 0)
    assert torch.allclose(game.jacobian(game.params()), expected, atol=1e-14)


def test_jvp_and_vjp_are_products_with_the_dense_jacobian():
    game, _ = quadratic_game(seed=1)
    p = game.params()
    J = game.jacobian(p)
    v = unflatten(torch.randn(5, dtype=F64), p)
    field, Jv = game.jvp(p, v)
    field_again, JTv = game.vjp(p, v)
    assert torch.allclose(flatten(Jv), J @ flatten(v))
    assert torch.allclose(flatten(JTv), J.T @ flatten(v))
    assert torch.allclose(flatten(field), flatten(field_again))


def test_bilinear_jacobian_eigenvalues_are_plus_minus_i_times_singular_values():
    values = torch.tensor([0.5, 0.8, 1.0], dtype=F64)
    game = zoo.bilinear(zoo.matrix_with_singular_values(values, seed=3))
    eig = nest.games.spectral.eigenvalues(game.jacobian(game.params()))
    assert torch.allclose(eig.real, torch.zeros(6, dtype=F64), atol=1e-12)
    assert torch.allclose(eig.imag.abs().sort().values, values.repeat_interleave(2), atol=1e-12)


def test_zero_sum_second_player_maximizes():
    A = torch.tensor([[2.0]], dtype=F64)
    game = Game.zero_sum(
        {"x": {"w": torch.ones(1, dtype=F64)}, "y": {"w": torch.full((1,), 3.0, dtype=F64)}},
        lambda p: p["x"]["w"] @ A @ p["y"]["w"],
    )
    field = game.gradients(game.params())
    assert field["x"]["w"].item() == 6.0 and field["y"]["w"].item() == -2.0


@pytest.mark.parametrize("order", ["simultaneous", "alternating"])
def test_torch_optim_step_matches_the_pure_update(order):
    """Game.step with one optimizer per player = Game.update with the optimizers' rules."""
    game, _ = quadratic_game(seed=2)
    start = game.params()
    beta = 0.8 * nest.DEFAULT_BETA
    optimizers = {p: nest.ComplexMomentum(game.parameters(p), lr=0.05, beta=beta) for p in game.players}
    for _ in range(5):
        game.step(optimizers, order)
    rule = nest.complex_momentum(0.05, beta)
    params, states = start, game.init(rule, start)
    for _ in range(5):
        params, states = game.update(rule, params, states, order)
    assert torch.allclose(flatten(game.params()), flatten(params), rtol=1e-12)


def test_alternating_update_lets_the_second_player_see_the_first_players_move():
    game = zoo.bilinear(torch.eye(1, dtype=F64), x=torch.ones(1, dtype=F64), y=torch.ones(1, dtype=F64))
    rule = nest.sgd(0.5)
    p = game.params()
    sim, _ = game.update(rule, p, game.init(rule, p), "simultaneous")
    alt, _ = game.update(rule, p, game.init(rule, p), "alternating")
    # x <- 1 - 0.5 * 1 = 0.5 both ways; y ascends on x: 1 + 0.5 * x
    assert sim["x"]["w"].item() == alt["x"]["w"].item() == 0.5
    assert sim["y"]["w"].item() == 1.5 and alt["y"]["w"].item() == 1.25


def test_players_can_be_modules_called_through_functional_call():
    torch.manual_seed(0)
    generator, critic = nn.Linear(2, 2).double(), nn.Linear(2, 1).double()
    z = torch.randn(8, 2, dtype=F64)

    def critic_score(p):
        fake = functional_call(generator, p["g"], (z,))
        return functional_call(critic, p["c"], (fake,)).mean()

    game = Game.zero_sum({"g": generator, "c": critic}, critic_score)
    optimizers = {p: torch.optim.SGD(game.parameters(p), lr=0.1) for p in game.players}
    before = game.params()
    expected = game.gradients(before)
    losses = game.step(optimizers)
    assert set(losses) == {"g", "c"} and losses["g"] == -losses["c"]
    for name, p in generator.named_parameters():
        assert torch.allclose(p.detach(), before["g"][name] - 0.1 * expected["g"][name])


def test_distance_to_the_known_equilibrium():
    game = zoo.bilinear(torch.eye(2, dtype=F64))
    assert game.distance(game.params()).item() == pytest.approx(2.0)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (
            lambda: Game({"x": Player(nn.ReLU(), lambda p: p)}),
            ValueError,
            r"player 'x' has no parameters: give it an nn.Module with parameters or a non-empty dict",
        ),
        (lambda: Game({"x": Player({}, lambda p: p)}), ValueError, r"player 'x' has no parameters"),
        (lambda: Game({}), ValueError, r"a game needs at least one player"),
        (
            lambda: Game({"x": Player({"w": torch.ones(2)}, 3.0)}),
            TypeError,
            r"player 'x' loss is a float: pass a function of the joint params",
        ),
    ],
)
def test_bad_games_raise_one_line_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_bad_calls_raise_one_line_errors_naming_the_fix():
    game = zoo.bilinear(torch.eye(2, dtype=F64))
    p = game.params()
    with pytest.raises(ValueError, match=r"unknown order 'together': use 'simultaneous' or 'alternating'"):
        game.update(nest.sgd(0.1), p, game.init(nest.sgd(0.1), p), "together")
    with pytest.raises(
        ValueError, match=r"dense 4 x 4 matrix: use game.jvp for products, or pass max_size=4"
    ):
        game.jacobian(p, max_size=3)
    with pytest.raises(ValueError, match=r"no optimizer for players \['y'\]: pass one torch.optim optimizer"):
        game.step({"x": torch.optim.SGD(game.parameters("x"), lr=0.1)})
    with pytest.raises(ValueError, match=r"no update rule for players \['y'\]"):
        game.init({"x": nest.sgd(0.1)}, p)
    with pytest.raises(KeyError, match=r"no player 'z' in this game: its players are \['x', 'y'\]"):
        game.parameters("z")
    bad = Game({"x": Player({"w": torch.ones(2)}, lambda p: p["x"]["w"] * 2)})
    with pytest.raises(
        ValueError, match=r"player 'x' loss must return a scalar tensor, got \(2,\): reduce it"
    ):
        bad.gradients(bad.params())


def test_load_writes_a_joint_tree_into_the_live_parameters():
    game = zoo.bilinear(torch.eye(2, dtype=F64))
    live = game.parameters("x")[0]
    target = {"x": {"w": torch.tensor([3.0, 4.0], dtype=F64)}, "y": {"w": torch.zeros(2, dtype=F64)}}
    game.load(target)
    assert game.parameters("x")[0] is live and live.tolist() == [3.0, 4.0]
    assert game.distance(game.params()).item() == pytest.approx(5.0)
