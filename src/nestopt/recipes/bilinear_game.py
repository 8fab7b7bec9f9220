"""Bilinear games: which optimizers reach the equilibrium, at the rate the spectral analysis predicts.

After Lorraine, Acuna, Vicol & Duvenaud, "Complex Momentum for Optimization in Games" (AISTATS
2022): min_x max_y x'Ay with A (dim x dim) of singular values spread over [sigma_min,
sigma_max] (game Jacobian eigenvalues ±iσ, purely adversarial), and the same game with each
player's own curvature gamma (eigenvalues gamma ± iσ, a mixture of cooperative and
adversarial). Methods: simultaneous and alternating gradient descent-ascent, extragradient,
optimistic gradient, heavy-ball momentum with positive and negative β, and complex momentum with
the paper's default β = 0.9 e^{iπ/8} and with the best β of a magnitude x phase grid.

Each method runs at the learning rate of --lrs with the smallest predicted rate, from the same
start. Rates are per gradient evaluation (an extragradient step costs two): the predicted rate
is the spectral radius of the method's augmented update matrix (parameters and buffers), the
measured rate the least-squares slope of log distance to the equilibrium over the second half
of the run. A rate above 1 diverges.
"""

from __future__ import annotations

import cmath
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..games import Game, spectral, zoo
from ..updates import UpdateRule, complex_momentum, extragradient, optimistic, sgd
from .runfolder import NoProgress, Progress, Result, RunFolder

NAME = "bilinear-game"
SUMMARY = (
    "GDA, extragradient, optimistic, real and complex momentum on bilinear games: measured vs predicted rates"
)
TABLE = [  # (title, metrics key, format) of the command line's table; metrics.json holds the rest
    ("lr", "lr", "{:g}"),
    ("β", "beta", "{}"),
    ("predicted rate", "predicted_rate", "{:.5f}"),
    ("measured rate", "measured_rate", "{:.5f}"),
    ("final distance", "final_distance", "{:.2e}"),
]
ORDERS = ("simultaneous", "alternating")
DIVERGED = 1e8  # a run stops once its distance grows by this factor


@dataclass
class Config:
    seed: int = field(default=0, metadata={"help": "seed of the random orthogonal factors of A"})
    dim: int = field(default=5, metadata={"help": "size of x and of y"})
    sigma_min: float = field(default=0.5, metadata={"help": "smallest singular value of A"})
    sigma_max: float = field(default=1.0, metadata={"help": "largest singular value of A"})
    gamma: float = field(
        default=0.1,
        metadata={"help": "each player's own curvature in the second game (0: bilinear game only)"},
    )
    steps: int = field(default=1000, metadata={"help": "gradient evaluations per method"})
    lrs: tuple[float, ...] = field(
        default=(0.01, 0.03, 0.1, 0.3, 0.5, 1.0),
        metadata={
            "help": "learning rates tried; each method runs at the one with the smallest predicted rate"
        },
    )
    momentum: float = field(
        default=0.5, metadata={"help": "|β| of the real momentum baselines, run with +β and -β"}
    )
    beta_magnitude: float = field(
        default=0.9, metadata={"help": "|β| of the default complex β (the paper's)"}
    )
    beta_phase: float = field(
        default=0.125, metadata={"help": "phase of the default complex β, in units of π (the paper's: 1/8)"}
    )
    grid: int = field(default=41, metadata={"help": "points per axis of the β magnitude x phase sweep"})

    def __post_init__(self) -> None:
        for name in ("dim", "steps", "grid"):
            if getattr(self, name) < 2:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 2, got {getattr(self, name)}")
        if not 0 < self.sigma_min <= self.sigma_max:
            raise ValueError(
                f"need 0 < --sigma-min <= --sigma-max, got {self.sigma_min} and {self.sigma_max}"
            )
        if not self.lrs or min(self.lrs) <= 0:
            raise ValueError(f"--lrs must list positive learning rates, got {self.lrs}")
        for name in ("momentum", "beta_magnitude"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")


@dataclass(frozen=True)
class Method:
    """An optimizer of the comparison: its rule and closed-form update matrix at a learning rate."""

    name: str
    rule: Callable[[float], UpdateRule]
    matrix: Callable[[Tensor, float], Tensor]  # (game Jacobian, lr) -> update matrix of one period
    order: str = "simultaneous"
    evaluations: int = 1  # gradient evaluations per period of the matrix
    beta: complex | None = None


def run(config: Config, out: str | Path, progress: Progress | None = None) -> Result:
    progress = progress or NoProgress()
    folder = RunFolder(out)
    folder.write_config(config)
    metrics, curves, grids = {}, [], {}
    for game_name, game in _games(config).items():
        started = time.perf_counter()
        sizes = [sum(v.numel() for v in tree.values()) for tree in game.params().values()]
        J = game.jacobian(game.params())
        grids[game_name] = {order: _best_complex_beta(config, J, sizes, order) for order in ORDERS}
        methods = _methods(config, sizes, {order: grid["beta"] for order, grid in grids[game_name].items()})
        progress.start(game_name, len(methods))
        for method in methods:
            lr, predicted = _best_lr(config, method, J)
            distances = _play(game, method.rule(lr), method.order, config.steps)
            key = f"{game_name} / {method.name}"
            metrics[key] = {
                "game": game_name,
                "optimizer": method.name,
                "order": method.order,
                "lr": lr,
                **({"beta": _beta_label(method.beta)} if method.beta is not None else {}),
                **({"beta_complex": [method.beta.real, method.beta.imag]} if method.beta is not None else {}),
                "evaluations_per_step": method.evaluations,
                "predicted_rate": predicted,
                "measured_rate": spectral.fit_rate(distances),
                "initial_distance": float(game.distance(game.params())),
                "final_distance": distances[-1],
                "evaluations_run": len(distances),
                "diverged": len(distances) < config.steps or not math.isfinite(distances[-1]),
            }
            curves += [
                {"game": game_name, "method": method.name, "evaluation": t + 1, "distance": d}
                for t, d in enumerate(distances)
            ]
            progress.advance(measured=metrics[key]["measured_rate"], predicted=predicted)
        for key in metrics:
            if metrics[key]["game"] == game_name:
                metrics[key]["seconds_for_game"] = time.perf_counter() - started
    files = [
        folder.write_json("metrics.json", metrics),
        folder.write_csv("curves.csv", curves),
        folder.save_figure("distance.png", _plot_distances(curves, metrics)),
        folder.save_figure("beta_heatmap.png", _plot_heatmaps(grids, config)),
    ]
    return Result(NAME, folder.path, metrics, curves, files)


# ---------------------------------------------------------------------- games and methods
def _games(config: Config) -> dict[str, Game]:
    values = torch.linspace(config.sigma_min, config.sigma_max, config.dim, dtype=torch.float64)
    A = zoo.matrix_with_singular_values(values, seed=config.seed)
    games = {"bilinear": zoo.bilinear(A)}
    if config.gamma:
        eye = torch.eye(config.dim, dtype=torch.float64)
        games[f"quadratic γ={config.gamma:g}"] = zoo.quadratic(A, config.gamma * eye, config.gamma * eye)
    return games


def _methods(config: Config, sizes: list[int], best_beta: dict[str, complex]) -> list[Method]:
    b, default = config.momentum, cmath.rect(config.beta_magnitude, config.beta_phase * math.pi)

    def momentum(name: str, beta: complex, order: str = "simultaneous") -> Method:
        def matrix(J: Tensor, lr: float) -> Tensor:
            M = spectral.momentum_matrix(J, lr, beta)
            return M if order == "simultaneous" else spectral.alternating(M, sizes, copies=3)

        return Method(name, lambda lr: complex_momentum(lr, beta), matrix, order, beta=beta)

    return [
        Method("GDA", sgd, spectral.gda_matrix),
        Method(
            "GDA (alternating)",
            sgd,
            lambda J, lr: spectral.alternating(spectral.gda_matrix(J, lr), sizes, copies=1),
            "alternating",
        ),
        Method("extragradient", extragradient, spectral.extragradient_matrix, evaluations=2),
        Method("optimistic", optimistic, spectral.optimistic_matrix),
        momentum(f"momentum β=+{b:g}", complex(b)),
        momentum(f"momentum β=-{b:g}", complex(-b)),
        momentum(f"momentum β=-{b:g} (alternating)", complex(-b), "alternating"),
        momentum("complex momentum", default),
        momentum("complex momentum (alternating)", default, "alternating"),
        momentum("complex momentum, best β", best_beta["simultaneous"]),
        momentum("complex momentum, best β (alternating)", best_beta["alternating"], "alternating"),
    ]


def _best_lr(config: Config, method: Method, J: Tensor) -> tuple[float, float]:
    """The learning rate of ``config.lrs`` with the smallest predicted rate, and that rate."""
    rates = {
        lr: float(spectral.rate_per_evaluation(method.matrix(J, lr), method.evaluations)) for lr in config.lrs
    }
    lr = min(rates, key=rates.get)
    return lr, rates[lr]


def _best_complex_beta(config: Config, J: Tensor, sizes: list[int], order: str) -> dict:
    """Complex momentum in ``order``: the (lr, β) of ``lrs`` x (|β|, arg β) grid with the smallest
    predicted rate, and the rate grid at that lr. Phases span [0, π]: β and its conjugate give
    the same real iterates."""
    magnitudes = torch.linspace(0, 0.99, config.grid, dtype=torch.float64)
    phases = torch.linspace(0, math.pi, config.grid, dtype=torch.float64)
    best = None
    for lr in config.lrs:
        rates = spectral.momentum_rate_grid(
            J, lr, magnitudes, phases, None if order == "simultaneous" else sizes
        )
        if best is None or rates.min() < best["rates"].min():
            i, j = divmod(int(rates.argmin()), config.grid)
            beta = cmath.rect(float(magnitudes[i]), float(phases[j]))
            best = {"rates": rates, "lr": lr, "beta": beta, "magnitudes": magnitudes, "phases": phases}
    return best


def _play(game: Game, rule: UpdateRule, order: str, steps: int) -> list[float]:
    """Distance to the equilibrium after each gradient evaluation (stops early on divergence)."""
    params = game.params()
    states = game.init(rule, params)
    start = float(game.distance(params))
    distances = []
    for _ in range(steps):
        params, states = game.update(rule, params, states, order)
        distances.append(float(game.distance(params)))
        if not distances[-1] < DIVERGED * start:
            break
    return distances


def _beta_label(beta: complex) -> str:
    if beta.imag == 0:
        return f"{beta.real:+.2f}"
    return f"{abs(beta):.2f}·e^(i{cmath.phase(beta) / math.pi:.3f}π)"


# ---------------------------------------------------------------------- plots
def _plot_distances(curves: list[dict], metrics: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = list(dict.fromkeys(c["game"] for c in curves))
    figure, axes = plt.subplots(1, len(games), figsize=(7 * len(games), 4.8), squeeze=False)
    for axis, game in zip(axes[0], games, strict=True):
        methods = list(dict.fromkeys(c["method"] for c in curves if c["game"] == game))
        colors = plt.cm.tab20(torch.linspace(0, 1, len(methods)).numpy())
        for color, method in zip(colors, methods, strict=True):
            rows = [c for c in curves if c["game"] == game and c["method"] == method]
            m = metrics[f"{game} / {method}"]
            style = "--" if m["order"] == "alternating" else "-"
            label = f"{method} (lr {m['lr']:g}): {m['measured_rate']:.5f} / {m['predicted_rate']:.5f}"
            axis.plot(
                [r["evaluation"] for r in rows],
                [r["distance"] for r in rows],
                style,
                color=color,
                label=label,
            )
        axis.set(xlabel="gradient evaluations", ylabel="distance to equilibrium", yscale="log", title=game)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, title="measured / predicted rate", title_fontsize=7)
    figure.tight_layout()
    return figure


def _plot_heatmaps(grids: dict, config: Config):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    default = cmath.rect(config.beta_magnitude, config.beta_phase * math.pi)
    figure, axes = plt.subplots(len(grids), 2, figsize=(11, 4.3 * len(grids)), squeeze=False)
    for row, (game, by_order) in zip(axes, grids.items(), strict=True):
        for axis, (order, grid) in zip(row, by_order.items(), strict=True):
            rates, magnitudes = grid["rates"].numpy(), grid["magnitudes"].numpy()
            low, high = float(rates.min()), float(rates.max())
            norm = TwoSlopeNorm(vmin=min(low, 0.999), vcenter=1.0, vmax=max(high, 1.001))
            extent = (0, 1, 0, float(magnitudes[-1]))
            image = axis.imshow(rates, origin="lower", extent=extent, aspect="auto", cmap="RdBu_r", norm=norm)
            phases = (grid["phases"] / math.pi).numpy()
            axis.contour(phases, magnitudes, rates, levels=[1.0], colors="k", linewidths=0.8)
            for beta, marker, label in ((default, "*", "default β"), (grid["beta"], "o", "best β")):
                axis.plot(
                    cmath.phase(beta) / math.pi, abs(beta), marker, color="gold", mec="k", ms=10, label=label
                )
            axis.set(xlabel="arg β / π", ylabel="|β|", title=f"{game}, {order}, lr {grid['lr']:g}")
            ticks = [norm.vmin, (norm.vmin + 1) / 2, 1.0, (1 + norm.vmax) / 2, norm.vmax]
            figure.colorbar(
                image, ax=axis, ticks=ticks, format="%.3f", label="predicted rate (black line: 1)"
            )
            axis.legend(fontsize=7, loc="lower left")
    figure.suptitle("Complex momentum: predicted linear rate over β's magnitude and phase")
    figure.tight_layout()
    return figure
