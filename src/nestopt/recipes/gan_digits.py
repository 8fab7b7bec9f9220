"""A small convolutional GAN on scikit-learn's 8x8 digits: complex Adam vs Adam.

After Lorraine, Acuna, Vicol & Duvenaud, "Complex Momentum for Optimization in Games" (AISTATS
2022), who train BigGAN with complex Adam; here a DCGAN-like pair of small convolutional
networks on the embedded 8x8 digits (1,797 images, pixels scaled to [-1, 1]; no download),
trained as the non-saturating GAN (nestopt.games.gan) with alternating updates by Adam at
β1 = 0.5 (the usual GAN setting) and at β1 = 0.9 (complex Adam's magnitude, no phase), and by
complex Adam at the paper's recommended β1 = 0.9 e^{iπ/8} (nestopt.DEFAULT_BETA).

Every optimizer runs the same steps from the same networks and data for a given seed, at one
learning rate. Quality is "FD in the penultimate-layer features of a digits classifier": the
Fréchet distance between 1,000 generated images and the 497 held-out images, in the 32 features
of an MLP classifier trained inside this recipe on the training images (about a second; its
held-out accuracy is reported). This is not FID (no Inception network); its scale is set by the
reference row, the FD of 1,000 real training images. Also: digit classes covered (a class counts
when at least 20% of its fair share of the generated images is classified as it). Mean ± std
over seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..games.gan import frechet_distance
from . import _gan
from .runfolder import NoProgress, Progress, Result, RunFolder

NAME = "gan-digits"
SUMMARY = "convolutional GAN on 8x8 digits: complex Adam vs Adam, Fréchet distance in classifier features"
TABLE = [  # (title, metrics key, format) of the command line's table; metrics.json holds the rest
    ("FD", "fd_mean", "{:.2f}"),
    ("±", "fd_std", "{:.2f}"),
    ("classes", "classes_mean", "{:.1f}"),
    ("±", "classes_std", "{:.1f}"),
    ("s", "seconds", "{:.0f}"),
]
KEYS = ("fd", "classes")
CLASSES = 10


@dataclass
class Config:
    seeds: int = field(default=3, metadata={"help": "runs per optimizer (seeds 0, 1, ...)"})
    steps: int = field(default=2000, metadata={"help": "Game.step calls per run"})
    batch_size: int = field(default=64, metadata={"help": "real and generated images per step"})
    lr: float = field(default=5e-4, metadata={"help": "learning rate of every optimizer, both players"})
    adam_beta1s: tuple[float, ...] = field(
        default=(0.5, 0.9), metadata={"help": "β1 of the Adam baselines (one run each)"}
    )
    beta_magnitude: float = field(default=0.9, metadata={"help": "|β1| of complex Adam (the paper's: 0.9)"})
    beta_phase: float = field(
        default=0.125, metadata={"help": "arg β1 of complex Adam, in units of π (the paper's: 1/8)"}
    )
    beta2: float = field(default=0.999, metadata={"help": "β2 of every Adam"})
    order: Literal["alternating", "simultaneous"] = field(
        default="alternating", metadata={"help": "update order of the players"}
    )
    extra_adam: bool = field(default=False, metadata={"help": "include Extra-Adam (at the first Adam β1)"})
    channels: int = field(
        default=32, metadata={"help": "channels of the discriminator's first convolution (x2 in the second)"}
    )
    noise_dim: int = field(default=32, metadata={"help": "dimension of the generator's Gaussian noise"})
    n_heldout: int = field(
        default=497, metadata={"help": "images held out from GAN and classifier training, for the FD"}
    )
    classifier_steps: int = field(default=600, metadata={"help": "Adam steps of the feature classifier"})
    threshold: float = field(
        default=0.2, metadata={"help": "a class is covered with this fraction of its fair share of images"}
    )
    eval_samples: int = field(default=1000, metadata={"help": "generated images per evaluation"})
    eval_every: int = field(default=250, metadata={"help": "steps between evaluations"})
    snapshots: int = field(default=4, metadata={"help": "sample snapshots per run (plotted for seed 0)"})
    checkpoint_every: int = field(default=500, metadata={"help": "steps between checkpoints"})

    def __post_init__(self) -> None:
        _gan.check_config(self)
        for name in ("channels", "classifier_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 2 <= self.n_heldout <= 1797 - 100:
            raise ValueError(f"--n-heldout must be in [2, 1697], got {self.n_heldout}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"--threshold must be in (0, 1], got {self.threshold}")
        if self.eval_samples < 2:
            raise ValueError(f"--eval-samples must be >= 2, got {self.eval_samples}")


def run(config: Config, out: str | Path, progress: Progress | None = None) -> Result:
    progress = progress or NoProgress()
    folder = RunFolder(out)
    folder.write_config(config)
    train, heldout = _images(config.n_heldout)
    classifier = _classifier(config, train, folder)
    setup = _setup(config, train, heldout, classifier)
    runs = _gan.compare(setup, _gan.contenders_of(config), _gan.schedule_of(config), folder, progress)
    reference = setup.evaluate(
        train[0][torch.randperm(len(train[0]), generator=_rng(5))[: config.eval_samples]]
    )
    metrics = _gan.summarize(runs, KEYS, reference)
    metrics[_gan.REFERENCE]["classifier_heldout_accuracy"] = _accuracy(classifier, *heldout)
    files = [
        folder.write_json("metrics.json", metrics),
        folder.write_csv("curves.csv", _gan.curve_rows(runs)),
        folder.save_figure(
            "samples.png",
            _gan.plot_snapshots(runs, setup, "Generated digits over training (seed 0)", size=2.6),
        ),
        folder.save_figure(
            "curves.png",
            _gan.plot_curves(
                runs,
                [("fd", "FD (classifier features)", "log"), ("classes", "classes covered", "linear")],
                reference,
            ),
        ),
    ]
    for one in (run for run in runs if run["seed"] == 0):
        title = f"{one['optimizer']}, seed 0, step {config.steps}: FD {one['metrics']['fd']:.2f}"
        files.append(folder.save_figure(f"samples_{one['key']}.png", _gan.plot_samples(one, setup, title)))
    return Result(NAME, folder.path, metrics, _gan.curve_rows(runs), files)


# ---------------------------------------------------------------------- data and networks
def _images(n_heldout: int) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """(train, held-out) pairs of (images as 64 pixels in [-1, 1], labels), a fixed split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.as_tensor(data.data, dtype=torch.get_default_dtype()) / 8 - 1  # pixels 0..16
    y = torch.as_tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=_rng(0))
    train, heldout = order[n_heldout:], order[:n_heldout]
    return (x[train], y[train]), (x[heldout], y[heldout])


def _generator(config: Config) -> nn.Module:
    c = config.channels
    return nn.Sequential(
        nn.Linear(config.noise_dim, 2 * c * 4 * 4),
        nn.ReLU(),
        nn.Unflatten(1, (2 * c, 4, 4)),
        nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1),  # 4x4 -> 8x8
        nn.ReLU(),
        nn.Conv2d(c, 1, 3, padding=1),
        nn.Tanh(),
        nn.Flatten(),
    )


def _discriminator(config: Config) -> nn.Module:
    c = config.channels
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, c, 3, stride=2, padding=1),  # 8x8 -> 4x4
        nn.LeakyReLU(0.2),
        nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),  # 4x4 -> 2x2
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(2 * c * 2 * 2, 1),
    )


# ---------------------------------------------------------------------- the feature classifier
class _Classifier(nn.Module):
    """64 -> 128 -> 32 ReLU MLP (the 32 penultimate features serve the FD) -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32), nn.ReLU())
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _classifier(config: Config, train: tuple[Tensor, Tensor], folder: RunFolder) -> _Classifier:
    """Trained once per run folder (Adam, minibatches of 128) and kept in parts/ for --resume."""
    torch.manual_seed(12345)
    model = _Classifier()
    saved = folder.path / "parts" / "classifier.pt"
    if saved.exists():
        model.load_state_dict(torch.load(saved, weights_only=True))
        return model.eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = _rng(1)
    for _ in range(config.classifier_steps):
        index = torch.randint(len(train[0]), (128,), generator=generator)
        optimizer.zero_grad()
        F.cross_entropy(model(train[0][index]), train[1][index]).backward()
        optimizer.step()
    torch.save(model.state_dict(), folder.file("parts/classifier.pt"))
    return model.eval()


@torch.no_grad()
def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return float((model(x).argmax(1) == y).double().mean())


def _setup(
    config: Config, train: tuple[Tensor, Tensor], heldout: tuple[Tensor, Tensor], classifier: _Classifier
) -> _gan.Setup:
    images = train[0]
    with torch.no_grad():
        heldout_features = classifier.features(heldout[0])

    @torch.no_grad()
    def evaluate(samples: Tensor) -> dict[str, float]:
        counts = torch.bincount(classifier(samples).argmax(1), minlength=CLASSES)
        return {
            "fd": frechet_distance(classifier.features(samples), heldout_features),
            "classes": int((counts >= config.threshold * len(samples) / CLASSES).sum()),
        }

    def real_batch(n: int, generator: torch.Generator) -> Tensor:
        return images[torch.randint(len(images), (n,), generator=generator)]

    return _gan.Setup(
        generator=lambda: _generator(config),
        discriminator=lambda: _discriminator(config),
        real_batch=real_batch,
        noise_dim=config.noise_dim,
        evaluate=evaluate,
        draw=_draw,
        eval_samples=config.eval_samples,
        snapshot_samples=64,
    )


def _draw(axis, samples: Tensor) -> None:
    """Images (n, 64) as a square mosaic, ink dark, 1-pixel gaps."""
    side = int(len(samples) ** 0.5)
    tiles = torch.full((side, side, 9, 9), -1.0)  # -1: no ink (white under gray_r)
    tiles[:, :, :8, :8] = samples[: side * side].reshape(side, side, 8, 8)
    mosaic = tiles.permute(0, 2, 1, 3).reshape(side * 9, side * 9)[:-1, :-1]
    axis.imshow(mosaic.numpy(), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
    axis.set(xticks=[], yticks=[])


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
