"""What the GAN recipes share: one training loop over optimizers and seeds, its checkpoints, the
summary over seeds, and the plots.

A recipe describes its experiment as a :class:`Setup` (networks, real data, evaluation, how to
draw samples) and its optimizers as :class:`Contender`\\ s; :func:`compare` trains every contender
with every seed in the same loop — the non-saturating GAN of :func:`nestopt.games.gan.gan`, one
``torch.optim`` optimizer per player, :meth:`nestopt.games.Game.step` simultaneous or alternating
— so optimizers differ only by the optimizer objects and the update order.

A seed fixes the initial networks, the real batches and the noise, so every contender starts
from the same networks and sees the same data. Each finished (contender, seed) run is saved under
``parts/``; the running one is checkpointed every ``checkpoint_every`` steps (networks, optimizer
states, random-number state, curves), so ``--resume`` gives the result an uninterrupted run gives.
"""

from __future__ import annotations

import cmath
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor, nn

from ..bilevel import DivergenceError
from ..games import ComplexAdam, ExtraAdam
from ..games.gan import Feed, gan
from .runfolder import Progress, RunFolder

REFERENCE = "real data (reference)"


@dataclass(frozen=True)
class Setup:
    """A GAN experiment: fresh networks (built after the seed is set), real batches drawn with a
    ``torch.Generator``, the metrics of a set of generated samples, and how to draw samples."""

    generator: Callable[[], nn.Module]
    discriminator: Callable[[], nn.Module]
    real_batch: Callable[[int, torch.Generator], Tensor]
    noise_dim: int
    evaluate: Callable[[Tensor], dict[str, float]]
    draw: Callable[..., None]  # draw(axis, samples): one panel of the sample plots
    eval_samples: int = 1000
    snapshot_samples: int = 64


@dataclass(frozen=True)
class Schedule:
    """How long and how often: ``steps`` are :meth:`~nestopt.games.Game.step` calls, one gradient
    evaluation per player each (an extragradient update takes two)."""

    steps: int
    batch_size: int
    eval_every: int
    snapshots: int
    checkpoint_every: int
    seeds: int

    def snapshot_steps(self) -> list[int]:
        return sorted({max(1, round(self.steps * (i + 1) / self.snapshots)) for i in range(self.snapshots)})


@dataclass(frozen=True)
class Contender:
    """One optimizer of a comparison: ``make(params)`` builds a player's ``torch.optim`` optimizer;
    ``order`` is the update order of :meth:`nestopt.games.Game.step`; ``key`` names its files."""

    name: str
    key: str
    make: Callable[[list[Tensor]], torch.optim.Optimizer]
    order: str = "alternating"


def contenders(
    lr: float,
    adam_beta1s: Sequence[float],
    beta_magnitude: float,
    beta_phase: float,
    beta2: float,
    order: str,
    extra_adam: bool,
) -> list[Contender]:
    """Adam at each β1 of ``adam_beta1s``, complex Adam at β1 = ``beta_magnitude`` e^{iπ
    ``beta_phase``} (both in ``order``), and Extra-Adam at the first Adam β1 (simultaneous: an
    extragradient update extrapolates both players, then updates both), all at one ``lr``."""
    beta1 = cmath.rect(beta_magnitude, beta_phase * math.pi)
    out = [
        Contender(
            f"Adam (β1={b:g})",
            f"adam-{b:g}",
            lambda ps, b=b: torch.optim.Adam(ps, lr=lr, betas=(b, beta2)),
            order,
        )
        for b in adam_beta1s
    ]
    out.append(
        Contender(
            f"complex Adam (β1={beta_magnitude:g}·e^(iπ{_fraction(beta_phase)}))",
            "complex-adam",
            lambda ps: ComplexAdam(ps, lr=lr, betas=(beta1, beta2)),
            order,
        )
    )
    if extra_adam:
        b = adam_beta1s[0] if adam_beta1s else beta_magnitude
        out.append(
            Contender(
                f"Extra-Adam (β1={b:g})",
                f"extra-adam-{b:g}",
                lambda ps: ExtraAdam(ps, lr=lr, betas=(b, beta2)),
                "simultaneous",
            )
        )
    return out


def contenders_of(config) -> list[Contender]:
    """:func:`contenders` from a recipe config's fields of the same names."""
    return contenders(
        config.lr,
        config.adam_beta1s,
        config.beta_magnitude,
        config.beta_phase,
        config.beta2,
        config.order,
        config.extra_adam,
    )


def schedule_of(config) -> Schedule:
    return Schedule(
        config.steps,
        config.batch_size,
        config.eval_every,
        config.snapshots,
        config.checkpoint_every,
        config.seeds,
    )


def check_config(config) -> None:
    """One-line errors for the fields every GAN recipe shares."""
    for name in ("seeds", "steps", "batch_size", "eval_every", "snapshots", "checkpoint_every", "noise_dim"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")
    if not config.lr > 0:
        raise ValueError(f"--lr must be > 0, got {config.lr}")
    if any(not 0 <= b < 1 for b in config.adam_beta1s) or len(set(config.adam_beta1s)) < len(
        config.adam_beta1s
    ):
        raise ValueError(f"--adam-beta1s must be distinct values in [0, 1), got {config.adam_beta1s}")
    if not 0 <= config.beta_magnitude < 1:
        raise ValueError(f"--beta-magnitude must be in [0, 1), got {config.beta_magnitude}")
    if not 0 <= config.beta2 < 1:
        raise ValueError(f"--beta2 must be in [0, 1), got {config.beta2}")


def _fraction(x: float) -> str:
    """A phase in units of π as the exponent's tail: 0.125 -> "/8", 0.375 -> "·3/8"."""
    fraction = Fraction(x).limit_denominator(64)
    if abs(float(fraction) - x) > 1e-9:
        return f"·{x:g}"
    return "" if fraction == 1 else f"/{fraction.denominator}" if fraction.numerator == 1 else f"·{fraction}"


def compare(
    setup: Setup, contenders: Sequence[Contender], schedule: Schedule, folder: RunFolder, progress: Progress
) -> list[dict]:
    """Train every contender with every seed (finished runs are read back from ``parts/``)."""
    runs = []
    for contender in contenders:
        for seed in range(schedule.seeds):
            name = f"parts/{contender.key}-seed{seed}.json"
            run = folder.read_json(name)
            if run is None:
                run = train(setup, contender, seed, schedule, folder, progress)
                folder.write_json(name, run)
                folder.file(_checkpoint_name(contender, seed)).unlink(missing_ok=True)
            runs.append(run)
    return runs


def train(
    setup: Setup, contender: Contender, seed: int, schedule: Schedule, folder: RunFolder, progress: Progress
) -> dict:
    """One GAN training run: metrics after ``schedule.steps`` steps, curves and sample snapshots."""
    torch.manual_seed(seed)
    generator, discriminator = setup.generator(), setup.discriminator()
    feed = Feed()
    game = gan(generator, discriminator, feed)
    optimizers = {player: contender.make(game.parameters(player)) for player in game.players}
    data = torch.Generator().manual_seed(1_000 + seed)
    fixed_noise = torch.randn(
        setup.eval_samples, setup.noise_dim, generator=torch.Generator().manual_seed(seed)
    )
    step, curves, snapshots, seconds = 0, [], {}, 0.0

    checkpoint = folder.file(_checkpoint_name(contender, seed))
    if checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=True)
        generator.load_state_dict(saved["generator"])
        discriminator.load_state_dict(saved["discriminator"])
        for player, optimizer in optimizers.items():
            optimizer.load_state_dict(saved["optimizers"][player])
        data.set_state(saved["data_rng"])
        step, curves, seconds = saved["step"], saved["curves"], saved["seconds"]
        snapshots = saved["snapshots"]

    progress.start(f"{contender.name}, seed {seed}", schedule.steps)
    progress.advance(step)
    snapshot_steps = schedule.snapshot_steps()
    started = time.perf_counter()
    while step < schedule.steps:
        step += 1
        feed.real = setup.real_batch(schedule.batch_size, data)
        feed.noise = torch.randn(schedule.batch_size, setup.noise_dim, generator=data)
        losses = {player: float(loss) for player, loss in game.step(optimizers, contender.order).items()}
        for player, value in losses.items():
            if not math.isfinite(value):
                raise DivergenceError(
                    f"{player} loss is {value} at step {step} of {contender.name}, seed {seed}: "
                    f"lower --lr, or resume from the last checkpoint"
                )
        if step % schedule.eval_every == 0 or step == schedule.steps:
            samples = _generate(generator, fixed_noise)
            curves.append(
                {
                    "optimizer": contender.name,
                    "seed": seed,
                    "step": step,
                    **{f"{player}_loss": value for player, value in losses.items()},
                    **setup.evaluate(samples),
                }
            )
        if step in snapshot_steps:
            snapshots[step] = _generate(generator, fixed_noise[: setup.snapshot_samples])
        if step % schedule.checkpoint_every == 0 and step < schedule.steps:
            _save(
                checkpoint,
                {
                    "generator": generator.state_dict(),
                    "discriminator": discriminator.state_dict(),
                    "optimizers": {player: opt.state_dict() for player, opt in optimizers.items()},
                    "data_rng": data.get_state(),
                    "step": step,
                    "curves": curves,
                    "snapshots": snapshots,
                    "seconds": seconds + time.perf_counter() - started,
                },
            )
        progress.advance(**{f"{player[0].upper()} loss": value for player, value in losses.items()})
    final = {k: v for k, v in curves[-1].items() if k not in ("optimizer", "seed", "step")}
    return {
        "optimizer": contender.name,
        "key": contender.key,
        "order": contender.order,
        "seed": seed,
        "metrics": {**final, "seconds": seconds + time.perf_counter() - started},
        "curves": curves,
        "snapshots": {str(s): samples.tolist() for s, samples in snapshots.items()},
    }


@torch.no_grad()
def _generate(generator: nn.Module, noise: Tensor) -> Tensor:
    return generator(noise).detach().clone()


def _save(path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(data, tmp)
    tmp.replace(path)


def _checkpoint_name(contender: Contender, seed: int) -> str:
    return f"checkpoints/{contender.key}-seed{seed}.pt"


# ---------------------------------------------------------------------- summary over seeds
def summarize(runs: list[dict], keys: Sequence[str], reference: dict[str, float] | None = None) -> dict:
    """Per contender: ``KEY_mean``, ``KEY_std`` (sample std over seeds; 0 for one seed) and
    ``KEY_per_seed`` of each metric in ``keys``, ``seconds`` (all seeds), ``seeds`` and the update
    ``order``; plus a reference row (the metrics of real data) when given."""
    metrics = {}
    for name in dict.fromkeys(run["optimizer"] for run in runs):
        mine = [run for run in runs if run["optimizer"] == name]
        row: dict = {"order": mine[0]["order"], "seeds": len(mine)}
        for key in keys:
            values = [run["metrics"][key] for run in mine]
            row[f"{key}_mean"] = statistics.fmean(values)
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            row[f"{key}_per_seed"] = values
        row["seconds"] = sum(run["metrics"]["seconds"] for run in mine)
        metrics[name] = row
    if reference is not None:
        metrics[REFERENCE] = {
            **{f"{key}_mean": reference[key] for key in keys},
            **{f"{key}_std": 0.0 for key in keys},
        }
    return metrics


def curve_rows(runs: list[dict]) -> list[dict]:
    return [row for run in runs for row in run["curves"]]


# ---------------------------------------------------------------------- plots
def plot_snapshots(runs: list[dict], setup: Setup, title: str, seed: int = 0, size: float = 2.2):
    """A grid of generated samples: one row per optimizer, one column per snapshot step (``seed``)."""
    plt = _pyplot()
    shown = [run for run in runs if run["seed"] == seed]
    steps = sorted({int(s) for run in shown for s in run["snapshots"]})
    figure, axes = plt.subplots(
        len(shown), len(steps), figsize=(size * len(steps), size * len(shown)), squeeze=False
    )
    for row, run in zip(axes, shown, strict=True):
        for axis, step in zip(row, steps, strict=True):
            setup.draw(axis, torch.tensor(run["snapshots"][str(step)]))
            if axis is row[0]:
                axis.set_ylabel(run["optimizer"].replace(" (", "\n("), fontsize=9)
            if run is shown[0]:
                axis.set_title(f"step {step}", fontsize=9)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def plot_samples(run: dict, setup: Setup, title: str, size: float = 4.0):
    """The last snapshot of one run, on one panel."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(size, size))
    last = max(run["snapshots"], key=int)
    setup.draw(axis, torch.tensor(run["snapshots"][last]))
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def plot_curves(runs: list[dict], panels: Sequence[tuple[str, str, str]], reference: dict | None = None):
    """One panel per ``(key, label, yscale)``: mean over seeds against step, seeds' range shaded;
    a dashed line at the reference (real data) value."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    names = list(dict.fromkeys(run["optimizer"] for run in runs))
    colors = plt.cm.tab10(range(len(names)))
    for axis, (key, label, yscale) in zip(axes[0], panels, strict=True):
        for color, name in zip(colors, names, strict=True):
            mine = [run["curves"] for run in runs if run["optimizer"] == name]
            steps = [row["step"] for row in mine[0]]
            values = torch.tensor([[row[key] for row in curve] for curve in mine], dtype=torch.float64)
            axis.plot(steps, values.mean(0).numpy(), color=color, label=name)
            if len(mine) > 1:
                axis.fill_between(
                    steps, values.min(0).values.numpy(), values.max(0).values.numpy(), color=color, alpha=0.15
                )
        if reference is not None and key in reference:
            axis.axhline(reference[key], color="k", linestyle="--", linewidth=0.8, label="real data")
        axis.set(xlabel="step", ylabel=label, yscale=yscale)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.suptitle("mean over seeds (shaded: min to max)", fontsize=9)
    figure.tight_layout()
    return figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")
