"""The GAN game and its measures: losses at known points, the feed, mode coverage on hand-made
samples, the Fréchet and earth mover's distances against closed forms; Extra-Adam as a rule."""

import math

import pytest
import torch
from torch import nn

import nestopt as nest
from nestopt.games import gan

F64 = torch.float64


def constant_discriminator(value: float) -> nn.Module:
    net = nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.fill_(value)
    return net


def test_gan_losses_at_a_constant_discriminator_are_the_cross_entropies_of_one_half():
    feed = gan.Feed(real=torch.randn(16, 2), noise=torch.randn(16, 3))
    game = gan.gan(nn.Linear(3, 2), constant_discriminator(0.0), feed)
    assert game.players == ["discriminator", "generator"]
    params = game.params()
    assert game.loss("discriminator", params) == pytest.approx(2 * math.log(2))
    assert game.loss("generator", params) == pytest.approx(math.log(2))


def test_discriminator_gradient_reaches_only_the_discriminator_and_the_generator_gets_one():
    torch.manual_seed(0)
    feed = gan.Feed(real=torch.randn(16, 2), noise=torch.randn(16, 3))
    game = gan.gan(nn.Linear(3, 2), nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)), feed)
    grads = game.gradients(game.params())
    assert set(grads["discriminator"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert set(grads["generator"]) == {"weight", "bias"}
    assert all(torch.linalg.vector_norm(g) > 0 for tree in grads.values() for g in tree.values())


def test_an_empty_feed_is_a_one_line_error():
    game = gan.gan(nn.Linear(3, 2), nn.Linear(2, 1), gan.Feed())
    with pytest.raises(ValueError, match="feed is empty"):
        game.gradients(game.params())


def test_simultaneous_gan_step_moves_both_players_from_the_same_batch():
    torch.manual_seed(0)
    generator, discriminator = nn.Linear(3, 2), nn.Linear(2, 1)
    feed = gan.Feed(real=torch.randn(16, 2), noise=torch.randn(16, 3))
    game = gan.gan(generator, discriminator, feed)
    expected = game.gradients(game.params())
    optimizers = {p: torch.optim.SGD(game.parameters(p), lr=0.1) for p in game.players}
    before = game.params()
    game.step(optimizers, "simultaneous")
    after = game.params()
    for player in game.players:
        for k, g in expected[player].items():
            assert torch.allclose(after[player][k], before[player][k] - 0.1 * g, atol=1e-7)


# ---------------------------------------------------------------------- mode coverage
CENTERS = gan.ring_centers(8, 2.0)
STD = 0.02


def test_samples_of_the_mixture_cover_every_mode_and_are_high_quality():
    samples = gan.ring_mixture(4000, CENTERS, STD, torch.Generator().manual_seed(0))
    coverage = gan.mode_coverage(samples, CENTERS, STD)
    assert coverage["modes"] == 8
    # 2-D Gaussian: P(|z| <= 3 std) = 1 - exp(-9/2) = 0.9889
    assert coverage["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)


def test_samples_on_one_mode_cover_one_mode():
    samples = CENTERS[3] + STD * torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    coverage = gan.mode_coverage(samples, CENTERS, STD)
    assert coverage["modes"] == 1 and coverage["high_quality"] > 0.95


def test_samples_between_the_modes_cover_none():
    samples = torch.zeros(500, 2)  # the ring's centre: 2 from every mode
    assert gan.mode_coverage(samples, CENTERS, STD) == {"modes": 0, "high_quality": 0.0}


def test_a_mode_counts_only_with_its_threshold_share_of_the_samples():
    # 800 samples: fair share 100; 19 on mode 0 (< 20) and 781 on mode 1
    samples = torch.cat([CENTERS[0].expand(19, 2), CENTERS[1].expand(781, 2)])
    assert gan.mode_coverage(samples, CENTERS, STD, threshold=0.2)["modes"] == 1
    assert gan.mode_coverage(samples, CENTERS, STD, threshold=0.19)["modes"] == 2


def test_ring_centers_lie_on_the_circle_evenly():
    assert torch.allclose(CENTERS.norm(dim=1), torch.full((8,), 2.0))
    assert torch.allclose(
        (CENTERS[1:] - CENTERS[:-1]).norm(dim=1), torch.full((7,), 4 * math.sin(math.pi / 8))
    )


# ---------------------------------------------------------------------- distances
def features(n=400, d=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator, dtype=F64) @ torch.randn(
        d, d, generator=generator, dtype=F64
    )


def test_frechet_distance_of_a_set_to_itself_is_zero():
    x = features()
    assert gan.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_a_shifted_set_is_the_squared_shift():
    x = features()
    for size in (0.1, 1.0, 3.0):
        shift = torch.full((6,), size, dtype=F64)
        assert gan.frechet_distance(x, x + shift) == pytest.approx(6 * size**2, rel=1e-6, abs=1e-8)


def test_frechet_distance_of_a_scaled_set_matches_the_closed_form():
    """y = 2x + c: Σ_y = 4Σ_x, (Σ_x Σ_y)^{1/2} = 2Σ_x, so FD = |μ_x - μ_y|² + tr Σ_x."""
    x = features()
    y = 2 * x + 1.0
    closed = float((x.mean(0) - y.mean(0)).square().sum() + torch.cov(x.T).trace())
    assert gan.frechet_distance(x, y) == pytest.approx(closed, rel=1e-8)


def test_earth_movers_distance_of_a_translated_sample_is_the_translation():
    x = features(n=200, d=2)
    shift = torch.tensor([0.3, -0.4], dtype=F64)
    assert gan.wasserstein_1(x, x + shift) == pytest.approx(0.5, rel=1e-9)
    assert gan.wasserstein_1(x, x.flip(0)) == pytest.approx(0.0, abs=1e-8)


def test_distances_refuse_mismatched_shapes_in_one_line():
    with pytest.raises(ValueError, match="equal d"):
        gan.frechet_distance(torch.randn(5, 3), torch.randn(5, 4))
    with pytest.raises(ValueError, match="same shape"):
        gan.wasserstein_1(torch.randn(5, 2), torch.randn(6, 2))


# ---------------------------------------------------------------------- Extra-Adam
def test_extrapolated_sgd_is_extragradient():
    H = torch.tensor([[0.0, 1.0], [-1.0, 0.5]], dtype=F64)
    w0 = {"w": torch.tensor([1.0, -2.0], dtype=F64)}
    results = []
    for rule in (nest.extrapolated(nest.sgd(0.3)), nest.extragradient(0.3)):
        params, state = w0, rule.init(w0)
        for _ in range(6):
            params, state = rule.update({"w": H @ params["w"]}, state, params)
        results.append(params["w"])
    assert torch.allclose(results[0], results[1], rtol=1e-14)


def test_extra_adam_updates_from_the_anchor_with_both_half_steps_in_adams_moments():
    """Two calls: Adam from w to w̄ with g(w), then Adam (second step of its moments) from w with g(w̄)."""
    w0 = {"w": torch.tensor([1.0, -2.0], dtype=F64)}
    g1, g2 = {"w": torch.tensor([0.5, 0.1], dtype=F64)}, {"w": torch.tensor([-0.2, 0.3], dtype=F64)}
    rule = nest.extrapolated(nest.adam(0.1))
    state = rule.init(w0)
    bar, state = rule.update(g1, state, w0)
    new, state = rule.update(g2, state, bar)
    adam = nest.adam(0.1)
    expected_bar, adam_state = adam.update(g1, adam.init(w0), w0)
    expected_new, _ = adam.update(g2, adam_state, w0)
    assert torch.allclose(bar["w"], expected_bar["w"], rtol=1e-14)
    assert torch.allclose(new["w"], expected_new["w"], rtol=1e-14)
    assert torch.equal(state["anchor"]["w"], w0["w"])


def test_extrapolated_refuses_a_rule_whose_state_has_its_keys():
    with pytest.raises(ValueError, match="anchor"):
        nest.extrapolated(nest.extragradient(0.1)).init({"w": torch.zeros(2)})
