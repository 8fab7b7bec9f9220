"""A GAN on a 2-D mixture of 8 Gaussians on a ring: complex Adam vs Adam vs Extra-Adam.

After Lorraine, Acuna, Vicol & Duvenaud, "Complex Momentum for Optimization in Games" (AISTATS
2022), on the mixture of Metz et al., "Unrolled Generative Adversarial Networks" (2017): 8
Gaussians of std 0.02 evenly spaced on a circle of radius 2. Generator and discriminator are
ReLU MLPs, trained as the non-saturating GAN (nestopt.games.gan) by one optimizer per player:
Adam at β1 = 0.9 (the magnitude of the complex β1, no phase) and complex Adam at the paper's
recommended β1 = 0.9 e^{iπ/8} (nestopt.DEFAULT_BETA), both with alternating updates, and
Extra-Adam (Gidel et al., 2019: extragradient whose two half-steps are Adam steps) with
simultaneous updates.

Every optimizer runs the same number of Game.step calls (gradient evaluations per player; an
Extra-Adam update takes two), from the same networks and data for a given seed, at one learning
rate. Measures on 2,500 samples: modes covered (a mode counts when at least 20% of its fair share
of the samples land within 3 std of it), the share of high-quality samples (within 3 std of a
mode) and the earth mover's distance W1 between 500 generated and 500 real samples; mean ± std
over seeds, with real data's values as a reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from ..games.gan import mode_coverage, ring_centers, ring_mixture, wasserstein_1
from . import _gan
from .runfolder import NoProgress, Progress, Result, RunFolder

NAME = "gan-mixture"
SUMMARY = "GAN on 8 Gaussians on a ring: complex Adam vs Adam vs Extra-Adam, modes covered and quality"
TABLE = [  # (title, metrics key, format) of the command line's table; metrics.json holds the rest
    ("modes", "modes_mean", "{:.2f}"),
    ("±", "modes_std", "{:.2f}"),
    ("high quality", "high_quality_mean", "{:.1%}"),
    ("±", "high_quality_std", "{:.1%}"),
    ("W1", "w1_mean", "{:.3f}"),
    ("±", "w1_std", "{:.3f}"),
    ("s", "seconds", "{:.0f}"),
]
KEYS = ("modes", "high_quality", "w1")
W1_SAMPLES = 500


@dataclass
class Config:
    seeds: int = field(default=3, metadata={"help": "runs per optimizer (seeds 0, 1, ...)"})
    steps: int = field(
        default=4000, metadata={"help": "Game.step calls per run (an Extra-Adam update takes two)"}
    )
    batch_size: int = field(default=256, metadata={"help": "real and generated samples per step"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate of every optimizer, both players"})
    adam_beta1s: tuple[float, ...] = field(
        default=(0.9,),
        metadata={"help": "β1 of the Adam baselines (one run each); the first is Extra-Adam's"},
    )
    beta_magnitude: float = field(default=0.9, metadata={"help": "|β1| of complex Adam (the paper's: 0.9)"})
    beta_phase: float = field(
        default=0.125, metadata={"help": "arg β1 of complex Adam, in units of π (the paper's: 1/8)"}
    )
    beta2: float = field(default=0.999, metadata={"help": "β2 of every Adam"})
    order: Literal["alternating", "simultaneous"] = field(
        default="alternating",
        metadata={"help": "update order of Adam and complex Adam (Extra-Adam is simultaneous)"},
    )
    extra_adam: bool = field(default=True, metadata={"help": "include Extra-Adam"})
    modes: int = field(default=8, metadata={"help": "Gaussians on the ring"})
    radius: float = field(default=2.0, metadata={"help": "radius of the ring"})
    std: float = field(default=0.02, metadata={"help": "standard deviation of each Gaussian"})
    hidden: int = field(default=128, metadata={"help": "width of the two hidden layers of both networks"})
    noise_dim: int = field(default=16, metadata={"help": "dimension of the generator's Gaussian noise"})
    threshold: float = field(
        default=0.2, metadata={"help": "a mode is covered with this fraction of its fair share of samples"}
    )
    eval_samples: int = field(default=2500, metadata={"help": "generated samples per evaluation"})
    eval_every: int = field(default=250, metadata={"help": "steps between evaluations"})
    snapshots: int = field(default=4, metadata={"help": "sample snapshots per run (plotted for seed 0)"})
    checkpoint_every: int = field(default=1000, metadata={"help": "steps between checkpoints"})

    def __post_init__(self) -> None:
        _gan.check_config(self)
        if self.modes < 1 or self.radius <= 0 or self.std <= 0:
            raise ValueError(
                f"need --modes >= 1, --radius > 0 and --std > 0, got {self.modes}, {self.radius}, {self.std}"
            )
        if not 0 < self.threshold <= 1:
            raise ValueError(f"--threshold must be in (0, 1], got {self.threshold}")
        if self.eval_samples < 2:
            raise ValueError(f"--eval-samples must be >= 2, got {self.eval_samples}")


def run(config: Config, out: str | Path, progress: Progress | None = None) -> Result:
    progress = progress or NoProgress()
    folder = RunFolder(out)
    folder.write_config(config)
    setup = _setup(config)
    runs = _gan.compare(setup, _gan.contenders_of(config), _gan.schedule_of(config), folder, progress)
    real = ring_mixture(config.eval_samples, ring_centers(config.modes, config.radius), config.std, _rng(7))
    reference = setup.evaluate(real)
    metrics = _gan.summarize(runs, KEYS, reference)
    files = [
        folder.write_json("metrics.json", metrics),
        folder.write_csv("curves.csv", _gan.curve_rows(runs)),
        folder.save_figure(
            "samples.png",
            _gan.plot_snapshots(
                runs, setup, f"Generated samples (seed 0; red: the {config.modes} modes)", size=2.0
            ),
        ),
        folder.save_figure(
            "curves.png",
            _gan.plot_curves(
                runs,
                [
                    ("modes", "modes covered", "linear"),
                    ("high_quality", "high-quality samples", "linear"),
                    ("w1", "W1 to the data", "log"),
                ],
                reference,
            ),
        ),
    ]
    return Result(NAME, folder.path, metrics, _gan.curve_rows(runs), files)


def _setup(config: Config) -> _gan.Setup:
    centers = ring_centers(config.modes, config.radius)
    real_w1 = ring_mixture(W1_SAMPLES, centers, config.std, _rng(3))

    def evaluate(samples: Tensor) -> dict[str, float]:
        return {
            **mode_coverage(samples, centers, config.std, config.threshold),
            "w1": wasserstein_1(samples[:W1_SAMPLES], real_w1[: len(samples)]),
        }

    limit = 1.3 * config.radius

    def draw(axis, samples: Tensor) -> None:
        axis.scatter(*samples.T.numpy(), s=2, alpha=0.5, color="tab:blue", linewidths=0)
        axis.scatter(*centers.T.numpy(), s=12, color="tab:red", marker="x", linewidths=1)
        axis.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal", xticks=[], yticks=[])

    def real_batch(n: int, generator: torch.Generator) -> Tensor:
        return ring_mixture(n, centers, config.std, generator)

    return _gan.Setup(
        generator=lambda: _mlp(config.noise_dim, config.hidden, 2),
        discriminator=lambda: _mlp(2, config.hidden, 1),
        real_batch=real_batch,
        noise_dim=config.noise_dim,
        evaluate=evaluate,
        draw=draw,
        eval_samples=config.eval_samples,
        snapshot_samples=min(512, config.eval_samples),
    )


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, outputs)
    )


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
