r"""Generative adversarial networks as a two-player :class:`~nestopt.games.Game`, and the
measures of what a generator has learned.

The *non-saturating* GAN (Goodfellow et al., 2014): the discriminator :math:`D` (logits) and the
generator :math:`G` minimize

    :math:`L_D = \mathbb E_x[\operatorname{softplus}(-D(x))] + \mathbb E_z[\operatorname{softplus}(D(G(z)))]`
    (binary cross-entropy, real = 1, fake = 0),

    :math:`L_G = \mathbb E_z[\operatorname{softplus}(-D(G(z)))]` (fake labelled real),

a general-sum game whose rotational dynamics near equilibrium are what complex momentum,
extragradient and optimistic methods address. :func:`gan` builds it from two ``nn.Module``\ s; the
real batch and the noise of each step come through a :class:`Feed` the training loop fills, so
simultaneous updates see the same batch for both players.

Measures: :func:`ring_mixture` (the 2-D mixture of Gaussians on a ring of Metz et al., 2017,
"Unrolled GANs") with :func:`mode_coverage` (modes covered, share of high-quality samples);
:func:`wasserstein_1` between two samples; :func:`frechet_distance` between two sets of features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F

from .game import Game, JointTree, Player

DISCRIMINATOR, GENERATOR = "discriminator", "generator"


# --------------------------------------------------------------------------- the game
def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Binary cross-entropy of the discriminator, real labelled 1 and fake 0 (mean over each batch)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss: binary cross-entropy of the fakes labelled real."""
    return F.softplus(-fake_logits).mean()


@dataclass
class Feed:
    """The data of the next step: a real batch and the generator's noise, set by the training loop
    before each :meth:`~nestopt.games.Game.step`."""

    real: Tensor | None = None
    noise: Tensor | None = None


def gan(generator: nn.Module, discriminator: nn.Module, feed: Feed) -> Game:
    """The non-saturating GAN as a :class:`Game` of players ``"discriminator"`` and ``"generator"``
    (in that order, so ``order="alternating"`` updates the discriminator first).

    Each loss reads ``feed.real`` and ``feed.noise`` when called. The modules are called through
    ``torch.func.functional_call`` with the joint parameters; their buffers are not players'
    parameters (use layers without running statistics)."""

    def fake_logits(p: JointTree) -> Tensor:
        if feed.real is None or feed.noise is None:
            raise ValueError("the GAN's feed is empty: set feed.real and feed.noise before each step")
        fake = functional_call(generator, p[GENERATOR], (feed.noise,))
        return functional_call(discriminator, p[DISCRIMINATOR], (fake,))

    def loss_d(p: JointTree) -> Tensor:
        fake = fake_logits(p)
        return discriminator_loss(functional_call(discriminator, p[DISCRIMINATOR], (feed.real,)), fake)

    def loss_g(p: JointTree) -> Tensor:
        return generator_loss(fake_logits(p))

    return Game({DISCRIMINATOR: Player(discriminator, loss_d), GENERATOR: Player(generator, loss_g)})


# --------------------------------------------------------------------------- a mixture of Gaussians
def ring_centers(modes: int = 8, radius: float = 2.0) -> Tensor:
    """``modes`` points evenly spaced on a circle of ``radius`` (shape ``(modes, 2)``)."""
    if modes < 1 or radius <= 0:
        raise ValueError(f"need modes >= 1 and radius > 0, got {modes} and {radius}")
    angles = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
    return (radius * torch.stack([angles.cos(), angles.sin()], 1)).to(torch.get_default_dtype())


def ring_mixture(n: int, centers: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """``n`` samples of the equal-weight mixture of isotropic Gaussians of ``std`` at ``centers``."""
    which = torch.randint(len(centers), (n,), generator=generator)
    return centers[which] + std * torch.randn(n, centers.shape[1], generator=generator, dtype=centers.dtype)


def mode_coverage(samples: Tensor, centers: Tensor, std: float, threshold: float = 0.2) -> dict[str, float]:
    """How well ``samples`` cover a mixture of Gaussians of ``std`` at ``centers``.

    A sample is *high quality* when it lies within 3 ``std`` of its nearest center (Metz et al.,
    2017); a mode is *covered* when at least ``threshold`` times its fair share
    (``threshold * n / modes``) of the samples land on it as high-quality samples
    (``threshold = 0.2`` is PacGAN's "20 of 2,500 samples on each of 25 modes"). Returns
    ``modes`` (how many are covered) and ``high_quality`` (the fraction of samples).
    """
    if samples.dim() != 2 or samples.shape[1] != centers.shape[1]:
        raise ValueError(f"samples must be (n, {centers.shape[1]}), got {tuple(samples.shape)}")
    nearest, which = torch.cdist(samples.to(centers.dtype), centers).min(1)
    good = nearest <= 3 * std
    counts = torch.bincount(which[good], minlength=len(centers))
    return {
        "modes": int((counts >= threshold * len(samples) / len(centers)).sum()),
        "high_quality": float(good.double().mean()),
    }


def wasserstein_1(x: Tensor, y: Tensor) -> float:
    """Earth mover's distance between two equal-size samples ``(n, d)`` (Euclidean ground cost):
    the mean distance of the optimal one-to-one matching, solved exactly (scipy's
    ``linear_sum_assignment``, :math:`O(n^3)`: keep ``n`` to a few thousand)."""
    from scipy.optimize import linear_sum_assignment

    if x.dim() != 2 or x.shape != y.shape:
        raise ValueError(f"need two (n, d) samples of the same shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    cost = torch.cdist(x.detach().double(), y.detach().double()).numpy()
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


# --------------------------------------------------------------------------- Fréchet distance
def frechet_distance(x: Tensor, y: Tensor) -> float:
    r"""Fréchet distance between Gaussians fitted to two sets of features ``(n, d)``:

    :math:`\lVert\mu_x - \mu_y\rVert^2 + \operatorname{tr}(\Sigma_x + \Sigma_y - 2(\Sigma_x\Sigma_y)^{1/2})`,

    with :math:`\operatorname{tr}(\Sigma_x\Sigma_y)^{1/2} = \sum_i \sqrt{\lambda_i}`, :math:`\lambda_i`
    the eigenvalues of the symmetric :math:`\Sigma_x^{1/2}\Sigma_y\Sigma_x^{1/2}` (float64, negative
    round-off clipped). With Inception features this is FID (Heusel et al., 2017); here the features
    are whatever the caller passes.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need two (n, d) feature sets of equal d, got {tuple(x.shape)}, {tuple(y.shape)}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("each feature set needs at least 2 rows for a covariance")
    x, y = x.detach().double(), y.detach().double()
    mean_x, mean_y = x.mean(0), y.mean(0)
    cov_x, cov_y = torch.cov(x.T).reshape(x.shape[1], -1), torch.cov(y.T).reshape(y.shape[1], -1)
    values, vectors = torch.linalg.eigh(cov_x)
    root_x = (vectors * values.clamp_min(0).sqrt()) @ vectors.T
    middle = root_x @ cov_y @ root_x
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return float((mean_x - mean_y).square().sum() + cov_x.trace() + cov_y.trace() - 2 * cross)
