"""Benchmark 4, dataset-distillation-sized hyperparameters: the hypergradient with respect to 100
distilled 28x28 images (the inner training data are the hyperparameters: 78,400 of them), by 10
unrolled SGD steps against the implicit function theorem, time and memory.

Problem: a small convnet (conv 5x5 x16, max-pool, conv 5x5 x32, max-pool, linear; 18k weights)
trained on 100 learnable images, 10 per class with fixed labels; the outer loss is the
cross-entropy on 512 real validation images: scikit-learn's digits (embedded), upsampled from 8x8
to 28x28. The distilled images start as class means of the real training images plus noise.

Rows: ``unrolled``: ``nestopt.unrolled`` through K = 10 SGD steps (lr 0.1) from a fixed
initialisation (the images enter every step's loss); ``implicit``: ``nestopt.implicit`` at
weights first trained 300 steps on the distilled images, with ``neumann(10, alpha=0.1)`` and
``cg(10, damping=1)``; ``--full`` also unrolls 100 steps (memory grows with K, the implicit
rows' does not). Each nestopt row's first hypergradient is compared with the plain-PyTorch
double-backward one of the same method (cosine). Time: median [min, max] of repeated calls and
its ratio to one plain training step on the 100 images measured alongside. Memory: peak RSS
above the RSS after setup, in a fresh process per row (``--quick``: one child for all rows).
Writes ``benchmarks/results/distill.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn
from torch.func import functional_call

import _reference as plain
import nestopt as nest
from _common import (
    CG_DAMPING,
    RESULTS_DIR,
    compare,
    fmt,
    fmt_ms,
    machine_at_end,
    machine_info,
    median_time,
    memory_in_subprocesses,
    peak_of_steps,
    seed_everything,
    write_json,
)
from nestopt.data import digits

RESULTS = RESULTS_DIR / "distill.json"
N_IMAGES, SIDE, CLASSES = 100, 28, 10
LR, UNROLL, SOLVER_STEPS, PRETRAIN, VAL_BATCH = 0.1, 10, 10, 300, 512


@dataclass(frozen=True)
class Settings:
    rows: tuple[str, ...]
    repeats: int
    min_seconds: float
    fresh_process: bool


FULL = Settings(
    rows=("unrolled-10", "implicit-neumann", "implicit-cg", "unrolled-100"),
    repeats=7,
    min_seconds=1.0,
    fresh_process=True,
)
QUICK = Settings(
    rows=("unrolled-10", "implicit-neumann", "implicit-cg"), repeats=3, min_seconds=0.2, fresh_process=False
)


def make_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, CLASSES),
    )


class Problem:
    """Distilled images (hyperparameters), the net, its initial and pre-trained weights, real data."""

    def __init__(self) -> None:
        seed_everything()
        data = digits(n_train=1000, n_val=VAL_BATCH)
        x_train, y_train = self.upsample(data.train[0]), data.train[1]
        self.val_batch = (self.upsample(data.val[0]), data.val[1])
        self.labels = torch.arange(CLASSES).repeat_interleave(N_IMAGES // CLASSES)
        means = torch.stack([x_train[y_train == c].mean(0) for c in range(CLASSES)])
        images = means[self.labels] + 0.5 * torch.randn(N_IMAGES, 1, SIDE, SIDE)
        self.hparams = {"images": images}
        self.net = make_net()
        self.init = {k: p.detach().clone() for k, p in self.net.named_parameters()}
        self.trained = self.pretrain()
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=LR)

    @staticmethod
    def upsample(x: Tensor) -> Tensor:
        return F.interpolate(x.reshape(-1, 1, 8, 8), size=(SIDE, SIDE), mode="bilinear", align_corners=False)

    def logits(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.net, params, (x,))

    def train_loss(self, params: dict[str, Tensor], hparams: dict[str, Tensor], labels: Tensor) -> Tensor:
        return F.cross_entropy(self.logits(params, hparams["images"]), labels)

    def val_loss(self, params: dict[str, Tensor], hparams: dict[str, Tensor], batch: Any) -> Tensor:
        x, y = batch
        return F.cross_entropy(self.logits(params, x), y)

    def pretrain(self) -> dict[str, Tensor]:
        """SGD on the distilled images from the initial weights: the point of the implicit rows."""
        w = {k: v.clone().requires_grad_(True) for k, v in self.init.items()}
        for _ in range(PRETRAIN):
            grads = torch.autograd.grad(self.train_loss(w, self.hparams, self.labels), list(w.values()))
            with torch.no_grad():
                for v, g in zip(w.values(), grads, strict=True):
                    v -= LR * g
        return {k: v.detach() for k, v in w.items()}

    def train_step(self) -> None:
        """The unit: one plain training step of the net on the 100 images."""
        self.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(self.net(self.hparams["images"]), self.labels).backward()
        self.optimizer.step()

    # ------------------------------------------------------------------ nestopt
    def nestopt(self, row: str) -> Tensor:
        if row.startswith("unrolled"):
            steps = int(row.split("-")[1])
            hg = nest.unrolled(
                self.train_loss,
                self.val_loss,
                self.init,
                self.hparams,
                [self.labels] * steps,
                self.val_batch,
                rule=nest.sgd(LR),
            )
        else:
            solver = (
                nest.neumann(SOLVER_STEPS, LR)
                if row == "implicit-neumann"
                else nest.cg(SOLVER_STEPS, damping=CG_DAMPING)
            )
            hg = nest.implicit(
                self.train_loss,
                self.val_loss,
                self.trained,
                self.hparams,
                self.labels,
                self.val_batch,
                solver=solver,
            )
        return hg.grads["images"]

    # ------------------------------------------------------------------ plain PyTorch
    def plain(self, row: str) -> Tensor:
        images = self.hparams["images"].clone().requires_grad_(True)
        h = {"images": images}
        names = list(self.init)
        if row.startswith("unrolled"):
            steps = int(row.split("-")[1])
            hg, _ = plain.unrolled(
                lambda w, labels: self.train_loss(dict(zip(names, w, strict=True)), h, labels),
                lambda w: self.val_loss(dict(zip(names, w, strict=True)), h, self.val_batch),
                list(self.init.values()),
                [images],
                [self.labels] * steps,
                LR,
            )
            return hg[0]
        w = {k: v.clone().requires_grad_(True) for k, v in self.trained.items()}
        solve = (
            plain.neumann(SOLVER_STEPS, LR)
            if row == "implicit-neumann"
            else plain.cg(SOLVER_STEPS, CG_DAMPING)
        )
        return plain.implicit(
            lambda: self.train_loss(w, h, self.labels),
            lambda: self.val_loss(w, h, self.val_batch),
            list(w.values()),
            [images],
            solve,
        )[0]


def memory_of(rows: list[str], repeats: int) -> dict[str, Any]:
    """Child process: per row, setup then the peak of ``repeats`` hypergradients (1 warm-up)."""
    problem = Problem()
    return {row: peak_of_steps(lambda r=row: problem.nestopt(r), repeats, warmup=1) for row in rows}


def run(settings: Settings, console: Console) -> dict[str, Any]:
    problem = Problem()
    n_weights = sum(v.numel() for v in problem.init.values())
    unit = median_time(problem.train_step, 10, settings.min_seconds / 4)
    rows = {}
    for row in settings.rows:
        console.log(f"{row}")
        grads = problem.nestopt(row)
        reference = problem.plain(row)
        seconds = median_time(lambda r=row: problem.nestopt(r), settings.repeats, settings.min_seconds)
        rows[row] = {
            "seconds": seconds,
            "ratio_to_train_step": seconds["median"] / unit["median"],
            "grad_norm": float(grads.norm()),
            "cosine_vs_plain": compare({"g": grads}, {"g": reference})["cosine_vs_reference"],
        }
    memory = memory_rows(list(settings.rows), settings, console)
    for row, info in rows.items():
        info["memory"] = memory.get(row, {})
    return {
        "problem": {
            "hyperparameters": problem.hparams["images"].numel(),
            "images": N_IMAGES,
            "side": SIDE,
            "weights": n_weights,
            "val_batch": VAL_BATCH,
            "lr": LR,
            "pretrain_steps": PRETRAIN,
            "solver_steps": SOLVER_STEPS,
        },
        "unit": unit,
        "rows": rows,
    }


def memory_rows(rows: list[str], settings: Settings, console: Console) -> dict[str, Any]:
    script = Path(__file__).resolve()
    if settings.fresh_process:
        return memory_in_subprocesses(script, rows, 3, console)
    joined = ",".join(rows)
    out = memory_in_subprocesses(script, [joined], 3, Console(quiet=True))[joined]
    return out if "error" not in out else dict.fromkeys(rows, out)


def print_report(console: Console, result: dict[str, Any]) -> None:
    p = result["problem"]
    table = Table(
        title=f"Hypergradient w.r.t. {p['images']} distilled {p['side']}x{p['side']} images "
        f"({p['hyperparameters']:,} hyperparameters, {p['weights']:,} weights)"
    )
    for col in ("row", "ms", "x train step", "cos vs plain", "peak MiB", "steady MiB"):
        table.add_column(col, justify="left" if col == "row" else "right")
    for name, r in result["rows"].items():
        table.add_row(
            name,
            fmt_ms(r["seconds"]),
            f"{r['ratio_to_train_step']:.1f}",
            fmt(r["cosine_vs_plain"], ".6f"),
            fmt(r["memory"].get("peak_above_setup_mib"), ".1f"),
            fmt(r["memory"].get("steady_peak_above_mib"), ".1f"),
        )
    console.print(f"unit: one plain train step on the 100 images = {fmt_ms(result['unit'])} ms", markup=False)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats, no 100-step unroll, memory in one child"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    parser.add_argument("--memory-steps", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:  # child process: one JSON line on stdout
        rows = args.memory_of.split(",")
        out = memory_of(rows, args.memory_steps)
        print(json.dumps(out[rows[0]] if len(rows) == 1 else out))
        return
    settings = QUICK if args.quick else FULL
    console = Console() if sys.stdout.isatty() else Console(width=150)
    start = time.perf_counter()
    result = {"machine": machine_info(), "settings": asdict(settings), **run(settings, console)}
    result["machine"] |= machine_at_end(result["machine"])
    result["total_seconds"] = time.perf_counter() - start
    print_report(console, result)
    write_json(args.output, result)
    console.print(f"wrote {args.output} ({result['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
