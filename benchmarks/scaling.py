"""Benchmark 3, scaling (nestopt alone): time and memory of one hypergradient as the number of
hyperparameters grows from 1e3 to 1e7, and as the Neumann / CG steps grow.

Problem: per-weight decay (one log-decay per weight, so hyperparameters = weights) on an MLP
40-h-h-10 on MNIST-1D, train batch 128, validation batch 512; h is chosen so the MLP has at least
1e3, 3e3, ..., 1e7 weights (h = 15 ... 3137). One hypergradient = ``nestopt.implicit`` with
``neumann(10, alpha=0.1)`` (eager, autograd backend) at the initial weights; a plain train step at
the same size (forward, backward, SGD, on a copy of the weights) is timed alongside as the unit.
Then, at about 1e6 hyperparameters, ``neumann(K)`` and ``cg(K, damping=5, tol=0)`` for K = 1 ... 100
(damping 5 keeps the randomly initialised MLP's Hessian positive definite for CG).

Time: median [min, max] of repeated calls after a warm-up call. Memory: peak RSS of the calls
above the RSS after setup (model, data, hyperparameters allocated), in a fresh process per point
(``--quick``: all points in one child process, smallest first, the peak reset between points).
The log-log slopes are least-squares fits: over all sizes, and over sizes >= 1e5 where fixed
per-call overheads no longer dominate. Writes ``benchmarks/results/scaling.json`` and the plots
``scaling_hparams.png`` and ``scaling_steps.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import Tensor

import nestopt as nest
from _common import (
    INNER_LR,
    RESULTS_DIR,
    SOLVER_STEPS,
    TRAIN_BATCH,
    VAL_BATCH,
    fmt,
    fmt_ms,
    machine_at_end,
    machine_info,
    make_mlp,
    median_time,
    memory_in_subprocesses,
    peak_of_steps,
    seed_everything,
    write_json,
)
from nestopt.data import mnist1d

RESULTS = RESULTS_DIR / "scaling.json"
CG_DAMPING = 5.0  # at its random initial weights the MLP's Hessian has curvature down to about -1
MAX_SLOPE = 1.1  # target: time (and memory) at most ~linear in the number of hyperparameters


@dataclass(frozen=True)
class Settings:
    sizes: tuple[float, ...]  # target numbers of hyperparameters
    steps: tuple[int, ...]  # solver steps at STEPS_SIZE
    steps_size: float
    repeats: int
    min_seconds: float
    fresh_process: bool


FULL = Settings(
    sizes=(1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7),
    steps=(1, 3, 10, 30, 100),
    steps_size=1e6,
    repeats=5,
    min_seconds=1.0,
    fresh_process=True,
)
QUICK = Settings(
    sizes=(1e3, 1e4, 1e5, 1e6, 1e7),
    steps=(1, 3, 10, 30),
    steps_size=1e5,
    repeats=2,
    min_seconds=0.2,
    fresh_process=False,
)


def width_for(n: float, n_in: int = 40, n_out: int = 10) -> int:
    """Smallest hidden width h with (n_in + 1) h + (h + 1) h + (h + 1) n_out >= n weights."""
    a, b, c = 1.0, n_in + 2 + n_out, n_out - n
    return max(1, math.ceil((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)))


def n_weights(h: int, n_in: int = 40, n_out: int = 10) -> int:
    return (n_in + 1) * h + (h + 1) * h + (h + 1) * n_out


class Point:
    """Everything one hypergradient at width ``h`` needs; built once, called many times."""

    def __init__(self, h: int, data: Any) -> None:
        seed_everything()
        (x, y), (xv, yv) = data.train, data.val
        self.train_batch, self.val_batch = (
            (x[:TRAIN_BATCH], y[:TRAIN_BATCH]),
            (xv[:VAL_BATCH], yv[:VAL_BATCH]),
        )
        self.model = make_mlp(data.n_features, data.n_classes, width=h)
        self.params = {
            k: p.detach().clone() for k, p in self.model.named_parameters()
        }  # the unit moves model's
        self.hparams = {k: torch.full_like(p, math.log(1e-4)) for k, p in self.params.items()}
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=INNER_LR)
        self.n = sum(p.numel() for p in self.params.values())

    def forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        return torch.func.functional_call(self.model, params, (x,))

    def train_loss(self, params: dict[str, Tensor], hparams: dict[str, Tensor], batch: Any) -> Tensor:
        x, y = batch
        decay = sum((hparams[k].exp() * w * w).sum() for k, w in params.items())
        return F.cross_entropy(self.forward(params, x), y) + 0.5 * decay

    def val_loss(self, params: dict[str, Tensor], hparams: dict[str, Tensor], batch: Any) -> Tensor:
        x, y = batch
        return F.cross_entropy(self.forward(params, x), y)

    def hypergradient(self, solver: Any) -> Any:
        return nest.implicit(
            self.train_loss,
            self.val_loss,
            self.params,
            self.hparams,
            self.train_batch,
            self.val_batch,
            solver=solver,
        )

    def train_step(self) -> None:
        """The unit: a plain PyTorch step of the same network on the same batch (decay included)."""
        x, y = self.train_batch
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(x), y)
        loss = loss + 0.5 * sum(
            (h.exp() * p * p).sum()
            for p, h in zip(self.model.parameters(), self.hparams.values(), strict=True)
        )
        loss.backward()
        self.optimizer.step()


def solver_for(kind: str, steps: int) -> Any:
    if kind == "neumann":
        return nest.neumann(steps, INNER_LR)
    return nest.cg(steps, tol=0.0, damping=CG_DAMPING)  # exactly ``steps`` iterations (if definite)


def key(h: int, kind: str, steps: int) -> str:
    return f"{h}:{kind}:{steps}"


def memory_of(keys: list[str], repeats: int) -> dict[str, Any]:
    """Child process: per point, setup then the peak of ``repeats`` hypergradients (1 warm-up)."""
    data = mnist1d()

    def measure(k: str) -> dict[str, Any]:
        h, kind, steps = k.split(":")
        point, solver = Point(int(h), data), solver_for(kind, int(steps))
        return peak_of_steps(lambda: point.hypergradient(solver), repeats, warmup=1)

    return {k: measure(k) for k in keys}


def time_point(point: Point, solver: Any, settings: Settings) -> dict[str, Any]:
    hg = point.hypergradient(solver)
    finite = bool(all(torch.isfinite(g).all() for g in hg.grads.values()))
    seconds = median_time(lambda: point.hypergradient(solver), settings.repeats, settings.min_seconds)
    unit = median_time(point.train_step, max(settings.repeats, 3), settings.min_seconds / 4)
    return {
        "seconds": seconds,
        "train_step_seconds": unit,
        "ratio_to_train_step": seconds["median"] / unit["median"],
        "finite": finite,
        "solver_iterations": int(hg.solution.iterations),
    }


def fit_slope(xs: list[float], ys: list[float]) -> float | None:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x and y and y > 0]
    if len(pairs) < 2:
        return None
    lx, ly = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return float(np.polyfit(lx, ly, 1)[0])


def run(settings: Settings, console: Console) -> dict[str, Any]:
    data = mnist1d()
    widths = [width_for(n) for n in settings.sizes]
    h_steps = width_for(settings.steps_size)
    size_rows, step_rows = [], []
    for h in widths:
        console.log(f"width {h}: {n_weights(h):,} hyperparameters")
        point = Point(h, data)
        size_rows.append(
            {"width": h, "hyperparameters": point.n}
            | time_point(point, solver_for("neumann", SOLVER_STEPS), settings)
        )
        del point
    point = Point(h_steps, data)
    for kind in ("neumann", "cg"):
        for steps in settings.steps:
            console.log(f"width {h_steps}: {kind}({steps})")
            step_rows.append(
                {"width": h_steps, "hyperparameters": point.n, "solver": kind, "steps": steps}
                | time_point(point, solver_for(kind, steps), settings)
            )
    del point
    keys = [key(r["width"], "neumann", SOLVER_STEPS) for r in size_rows]
    keys += [key(r["width"], r["solver"], r["steps"]) for r in step_rows]
    memory = memory_rows(keys, settings, console)
    for r in size_rows:
        r["memory"] = memory.get(key(r["width"], "neumann", SOLVER_STEPS), {})
    for r in step_rows:
        r["memory"] = memory.get(key(r["width"], r["solver"], r["steps"]), {})
    return {"sizes": size_rows, "steps": step_rows, "slopes": slopes(size_rows, step_rows)}


def memory_rows(keys: list[str], settings: Settings, console: Console) -> dict[str, Any]:
    script = Path(__file__).resolve()
    if settings.fresh_process:
        return memory_in_subprocesses(script, keys, 2, console)
    console.log(f"memory (one child process, points one after the other): {len(keys)} points")
    joined = ",".join(keys)
    out = memory_in_subprocesses(script, [joined], 2, Console(quiet=True))[joined]
    return out if "error" not in out else dict.fromkeys(keys, out)


def slopes(size_rows: list[dict], step_rows: list[dict]) -> dict[str, Any]:
    def column(rows: list[dict], x: str, y: Any) -> tuple[list, list]:
        return [r[x] for r in rows], [y(r) for r in rows]

    def seconds(r: dict) -> float:
        return r["seconds"]["median"]

    def memory(r: dict) -> float | None:
        return r["memory"].get("peak_above_setup_mib")

    large = [r for r in size_rows if r["hyperparameters"] >= 1e5]
    out = {
        "time_vs_hyperparameters": fit_slope(*column(size_rows, "hyperparameters", seconds)),
        "time_vs_hyperparameters_from_1e5": fit_slope(*column(large, "hyperparameters", seconds)),
        "memory_vs_hyperparameters": fit_slope(*column(size_rows, "hyperparameters", memory)),
        "memory_vs_hyperparameters_from_1e5": fit_slope(*column(large, "hyperparameters", memory)),
    }
    for kind in ("neumann", "cg"):
        rows = [r for r in step_rows if r["solver"] == kind]
        out[f"time_vs_{kind}_steps"] = fit_slope(*column(rows, "steps", seconds))
        out[f"memory_vs_{kind}_steps"] = fit_slope(*column(rows, "steps", memory))
    return out


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    s = result["slopes"]
    biggest = max(result["sizes"], key=lambda r: r["hyperparameters"])
    rows = [
        ("log-log slope of time vs hyperparameters (all sizes)", s["time_vs_hyperparameters"], MAX_SLOPE),
        (
            "log-log slope of time vs hyperparameters (>= 1e5)",
            s["time_vs_hyperparameters_from_1e5"],
            MAX_SLOPE,
        ),
        (
            "log-log slope of memory vs hyperparameters (>= 1e5)",
            s["memory_vs_hyperparameters_from_1e5"],
            MAX_SLOPE,
        ),
    ]
    out = [
        {"target": t, "value": v, "bound": f"<= {b}", "pass": v is not None and v <= b} for t, v, b in rows
    ]
    ran = biggest["hyperparameters"] >= 1e7 and biggest["finite"]
    out.append(
        {
            "target": "1e7 hyperparameters run (finite hypergradient)",
            "value": biggest["hyperparameters"],
            "bound": ">= 1e7",
            "pass": ran,
        }
    )
    return out


# --------------------------------------------------------------------------- plots and report
def plot(result: dict[str, Any], directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    s, written = result["slopes"], []
    rows = result["sizes"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    n = np.array([r["hyperparameters"] for r in rows], dtype=float)
    series = [
        (
            axes[0],
            [r["seconds"]["median"] for r in rows],
            "seconds per hypergradient",
            "time_vs_hyperparameters",
        ),
        (
            axes[1],
            [r["memory"].get("peak_above_setup_mib") for r in rows],
            "peak MiB above setup",
            "memory_vs_hyperparameters",
        ),
    ]
    for ax, ys, label, slope_key in series:
        y = np.array([np.nan if v is None else v for v in ys], dtype=float)
        ax.loglog(n, y, "o-", label="nestopt neumann(10)")
        ok = np.isfinite(y) & (y > 0)
        if ok.sum() >= 2:
            big = ok & (n >= 1e5)
            fit = big if big.sum() >= 2 else ok
            coef = np.polyfit(np.log(n[fit]), np.log(y[fit]), 1)
            ax.loglog(
                n[fit],
                np.exp(np.polyval(coef, np.log(n[fit]))),
                "--",
                label=f"fit >= 1e5: slope {coef[0]:.2f}",
            )
        ax.set_xlabel("hyperparameters (= weights)")
        ax.set_ylabel(label)
        ax.set_title(f"{label}\nslope over all sizes: {fmt(s[slope_key], '.2f')}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = directory / "scaling_hparams.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(str(path))

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for kind, marker in (("neumann", "o-"), ("cg", "s-")):
        steps_rows = [r for r in result["steps"] if r["solver"] == kind]
        k = np.array([r["steps"] for r in steps_rows], dtype=float)
        t = np.array([r["seconds"]["median"] for r in steps_rows], dtype=float)
        m = np.array([r["memory"].get("peak_above_setup_mib") or np.nan for r in steps_rows], dtype=float)
        axes[0].loglog(k, t, marker, label=f"{kind}: slope {fmt(s[f'time_vs_{kind}_steps'], '.2f')}")
        axes[1].semilogx(
            k, m, marker, label=f"{kind}: log-log slope {fmt(s[f'memory_vs_{kind}_steps'], '.2f')}"
        )
    size = result["steps"][0]["hyperparameters"] if result["steps"] else 0
    axes[0].set_ylabel("seconds per hypergradient")
    axes[1].set_ylabel("peak MiB above setup")
    for ax in axes:
        ax.set_xlabel("solver steps (Hessian-vector products)")
        ax.set_title(f"{size:,} hyperparameters")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    axes[1].set_ylim(bottom=0)
    fig.tight_layout()
    path = directory / "scaling_steps.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(str(path))
    return written


def print_report(console: Console, result: dict[str, Any]) -> None:
    table = Table(title="One hypergradient, neumann(10), vs number of hyperparameters")
    for col in ("width", "hyperparameters", "ms", "x train step", "peak MiB"):
        table.add_column(col, justify="right")
    for r in result["sizes"]:
        table.add_row(
            str(r["width"]),
            f"{r['hyperparameters']:,}",
            fmt_ms(r["seconds"]),
            f"{r['ratio_to_train_step']:.1f}",
            fmt(r["memory"].get("peak_above_setup_mib"), ".1f"),
        )
    console.print(table)
    table = Table(title="One hypergradient vs solver steps")
    for col in ("solver", "steps", "iterations run", "ms", "x train step", "peak MiB"):
        table.add_column(col, justify="right")
    for r in result["steps"]:
        table.add_row(
            r["solver"],
            str(r["steps"]),
            str(r["solver_iterations"]),
            fmt_ms(r["seconds"]),
            f"{r['ratio_to_train_step']:.1f}",
            fmt(r["memory"].get("peak_above_setup_mib"), ".1f"),
        )
    console.print(table)
    console.print({k: None if v is None else round(v, 3) for k, v in result["slopes"].items()})
    for t in result["targets"]:
        status = "[green]PASS[/green]" if t["pass"] else "[red]FAIL[/red]"
        console.print(f"{status} {t['target']}: {fmt(t['value'], '.4g')} ({t['bound']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and steps, memory in one child")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    parser.add_argument("--memory-steps", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:  # child process: one JSON line on stdout
        keys = args.memory_of.split(",")
        out = memory_of(keys, args.memory_steps)
        print(json.dumps(out[keys[0]] if len(keys) == 1 else out))
        return
    settings = QUICK if args.quick else FULL
    console = Console() if sys.stdout.isatty() else Console(width=150)
    start = time.perf_counter()
    result = {"machine": machine_info(), "settings": asdict(settings), **run(settings, console)}
    result["machine"] |= machine_at_end(result["machine"])
    result["targets"] = targets(result)
    result["plots"] = plot(result, args.output.parent)
    result["total_seconds"] = time.perf_counter() - start
    print_report(console, result)
    write_json(args.output, result)
    console.print(f"wrote {args.output} and {', '.join(result['plots'])} ({result['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
