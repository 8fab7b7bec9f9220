"""Benchmark: what does one hypergradient outer step cost, compared with plain training?

Problem: an MLP 40-300-300-10 (ReLU, ~105k weights) on MNIST-1D (generated offline), with one
L2-decay hyperparameter per weight (``WeightDecay(per="weight")``), train batches of 128,
validation batches of 512. One outer step = 5 warm-started SGD steps (lr 0.1) + one hypergradient
+ one Adam step on the hyperparameters (``Bilevel.outer_step``).

Measured in one process, interleaved, ``--repeats`` times (each time one block of N calls per
measurement, N calibrated during warm-up), and reported as median [min, max] over the repeats.
Every time is also divided by the time of a plain train step (``Bilevel.inner_step``: forward,
backward, SGD step) measured in the same repeat, so the ratios survive a noisy machine:

1. the unit: one plain train step;
   The unit is a plain PyTorch step (no nestopt code), so nestopt's own checks count against it.
2. outer steps: IFT neumann(10) eager and ``torch.compile``d (the default; compile time apart), IFT
   cg(10), IFT identity(), Unrolled() through the 5 inner steps, and a plain-PyTorch
   double-backward reference written here (no nestopt in its hypergradient), plus the cosine
   similarity of each first hypergradient with the reference's on the same weights and batches;
3. primitives: validation gradient (512), linearization (one ``create_graph`` gradient), one HVP
   per candidate implementation (nestopt's ``linearize``, double-backward fresh / reused,
   ``torch.func`` jvp-of-grad and vjp-of-grad, eager and compiled), the mixed VJP, the outer Adam
   step;
4. the sum of primitives of the eager outer step (5 train steps + val grad + linearization +
   a chain of 10 HVPs as the solve runs them + the Neumann vector arithmetic + mixed VJP + Adam
   step), eager outer step / sum (nestopt's own overhead), and both against the plain-PyTorch
   reference step;
5. peak memory of each outer step, each in a fresh subprocess (``--memory-of NAME``): peak RSS
   above the RSS after setup (2 warm-up steps, compilation included, then ``memory_steps``), and
   the steady-state peak of the later steps above the RSS after warm-up (see :class:`PeakMemory`).

Timings are only meaningful on otherwise idle cores: with 2 threads per process, a second busy
process makes PyTorch's thread pool wait on descheduled threads and steps get 10-100x slower; the
report warns when the load or the spread of the train step says so.

Writes ``benchmarks/results/hypergrad.json``. ``--quick`` runs fewer and shorter repeats and
skips the compiled HVP candidates.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import Tensor

import nestopt
from _common import (
    CG_DAMPING,
    INNER_LR,
    INNER_STEPS,
    OUTER_LR,
    RESULTS_DIR,
    SEED,
    SOLVER_STEPS,
    TRAIN_BATCH,
    VAL_BATCH,
    Base,
    Measurement,
    Tree,
    build_base,
    busy_warning,
    calibrate,
    compare,
    fmt,
    fmt_ms,
    fmt_ratio,
    machine_at_end,
    machine_info,
    memory_in_subprocesses,
    peak_of_steps,
    ratios,
    run_interleaved,
    stats,
    write_json,
)
from nestopt.bilevel import IFT, Bilevel, Unrolled
from nestopt.operators import linearize, value_and_grads
from nestopt.tree import tree_add

RESULTS = RESULTS_DIR / "hypergrad.json"

# targets of the issue
MAX_OVERHEAD = 1.05  # eager outer step / sum of its primitives
MAX_RATIO = 20.0  # outer step / train step
MIN_COSINE = 0.999  # nestopt neumann vs the plain-PyTorch reference


@dataclass(frozen=True)
class Settings:
    repeats: int
    block_seconds: float  # target duration of one timed block (N calls)
    warmup_seconds: float
    compiled_candidates: bool
    memory_steps: int


QUICK = Settings(repeats=3, block_seconds=0.15, warmup_seconds=0.1, compiled_candidates=False, memory_steps=3)
FULL = Settings(repeats=7, block_seconds=0.4, warmup_seconds=0.3, compiled_candidates=True, memory_steps=10)


# --------------------------------------------------------------------------- runners
class NestoptRunner:
    """One ``Bilevel`` with its own weights, optimizers and streams."""

    def __init__(self, base: Base, hypergradient: IFT | Unrolled) -> None:
        self.trainer = base.trainer(hypergradient)
        self.train, self.val = base.streams()

    def hypergradient(self) -> Tree:
        """Inner steps + hypergradient, without the outer update (for comparisons)."""
        return self.trainer.hypergradient.outer_step(self.trainer, self.train, self.val).grads

    def outer_step(self) -> None:
        self.trainer.outer_step(self.train, self.val)


class TrainOnlyRunner(NestoptRunner):
    """The inner steps of an outer step and nothing else (memory baseline)."""

    def outer_step(self) -> None:
        for _ in range(INNER_STEPS):
            self.trainer.inner_step(next(self.train))


class ReferenceRunner:
    """The same outer step in plain PyTorch: double-backward Neumann, no nestopt involved."""

    def __init__(self, base: Base) -> None:
        self.model, self.hparams = base.copies()
        self.raw = dict(self.hparams.named_parameters())  # "raw.<layer>" -> log-decay
        self.decay_of = {
            name: self.hparams.raw[name.replace(".", "__")] for name, _ in self.model.named_parameters()
        }
        self.inner = torch.optim.SGD(self.model.parameters(), lr=INNER_LR)
        self.outer = torch.optim.Adam(self.hparams.parameters(), lr=OUTER_LR)
        self.train, self.val = base.streams()

    def inner_loss(self, batch: Any) -> Tensor:
        x, y, _ = batch
        penalty = sum((log_decay.exp() * w * w).sum() for w, log_decay in self._pairs())
        return F.cross_entropy(self.model(x), y) + 0.5 * penalty

    def _pairs(self) -> list[tuple[Tensor, Tensor]]:
        return [(w, self.decay_of[name]) for name, w in self.model.named_parameters()]

    def train_step(self, batch: Any) -> None:
        self.inner.zero_grad(set_to_none=True)
        self.inner_loss(batch).backward()
        self.inner.step()

    def hypergradient(self) -> Tree:
        for _ in range(INNER_STEPS):
            self.train_step(next(self.train))
        train_batch, (x, y, _) = next(self.train), next(self.val)
        weights, raws = list(self.model.parameters()), list(self.raw.values())
        b = torch.autograd.grad(F.cross_entropy(self.model(x), y), weights)
        g = torch.autograd.grad(self.inner_loss(train_batch), weights, create_graph=True)
        v, total = list(b), list(b)  # x = alpha * sum_{j<=steps} (I - alpha H)^j b
        for _ in range(SOLVER_STEPS):
            hv = torch.autograd.grad(g, weights, v, retain_graph=True)
            v = [vi - INNER_LR * hvi for vi, hvi in zip(v, hv, strict=True)]
            total = [t + vi for t, vi in zip(total, v, strict=True)]
        solution = [INNER_LR * t for t in total]
        mixed = torch.autograd.grad(g, raws, solution)
        return {k: -m for k, m in zip(self.raw, mixed, strict=True)}

    def outer_step(self) -> None:
        grads = self.hypergradient()
        for k, p in self.raw.items():
            p.grad = grads[k]
        self.outer.step()
        self.outer.zero_grad(set_to_none=True)


def ift(solver: Any, compile: bool = False) -> Callable[[Base], NestoptRunner]:
    return lambda base: NestoptRunner(base, IFT(solver, compile=compile))


CONFIGS: dict[str, Callable[[Base], Any]] = {
    "ift-neumann-eager": ift(nestopt.neumann(SOLVER_STEPS, INNER_LR)),
    "ift-neumann-compiled": ift(nestopt.neumann(SOLVER_STEPS, INNER_LR), compile=True),
    "ift-cg": ift(nestopt.cg(steps=SOLVER_STEPS, damping=CG_DAMPING)),
    "ift-identity": ift(nestopt.identity()),
    "unrolled": lambda base: NestoptRunner(base, Unrolled()),
    "reference": ReferenceRunner,
}
LABELS = {
    "ift-neumann-eager": "IFT neumann(10), eager",
    "ift-neumann-compiled": "IFT neumann(10), compiled (default)",
    "ift-cg": f"IFT cg(10, damping={CG_DAMPING})",
    "ift-identity": "IFT identity()",
    "unrolled": "Unrolled(), 5 SGD steps",
    "reference": "plain PyTorch reference",
    "train": "5 train steps only",
}
EAGER, COMPILED, REFERENCE = "ift-neumann-eager", "ift-neumann-compiled", "reference"
DEFAULT = COMPILED  # IFT() compiles the whole hypergradient unless told compile=False


# --------------------------------------------------------------------------- outer steps
def first_call(runner: Any) -> tuple[Tree | None, float, dict[str, Any]]:
    """The first hypergradient from the shared initial state (compiles where asked)."""
    info: dict[str, Any] = {"error": None, "fell_back_to_eager": False}
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            grads = runner.hypergradient()
        except Exception as error:
            info["error"] = f"{type(error).__name__}: {error}"
            grads = None
    seconds = time.perf_counter() - start
    info["fell_back_to_eager"] = any("continuing in eager mode" in str(w.message) for w in caught)
    return grads, seconds, info


def outer_measurements(base: Base, console: Console) -> tuple[list[Measurement], dict[str, dict]]:
    """One runner per configuration: first hypergradient (compared to the reference), then
    a timed measurement of its outer step."""
    runners = {name: make(base) for name, make in CONFIGS.items()}
    results: dict[str, dict] = {}
    reference, ref_seconds, ref_info = first_call(runners[REFERENCE])
    if reference is None:
        raise RuntimeError(f"the reference hypergradient failed: {ref_info['error']}")
    measurements = []
    for name, runner in runners.items():
        console.log(f"first hypergradient: {name}")
        if name == REFERENCE:
            grads, seconds, info = reference, ref_seconds, ref_info
        else:
            grads, seconds, info = first_call(runner)
        if grads is not None:
            info.update(compare(grads, reference))
        results[name] = {"first_call_seconds": seconds, **info}
        measurements.append(Measurement(name, runner.outer_step, error=info["error"]))
    return measurements, results


# --------------------------------------------------------------------------- primitives
def hvp_candidates(
    trainer: Bilevel, params: Tree, hparams: Tree, batch: Any, v: Tree, compiled: bool
) -> dict:
    """Ways to compute one Hessian-vector product of the inner loss (plain PyTorch)."""
    loss = trainer.inner_loss_fn

    def leaves() -> Tree:
        return {k: w.detach().requires_grad_(True) for k, w in params.items()}

    def double_backward_fresh() -> tuple[Tensor, ...]:
        w = leaves()
        with torch.enable_grad():
            g = torch.autograd.grad(loss(w, hparams, batch), list(w.values()), create_graph=True)
            return torch.autograd.grad(g, list(w.values()), list(v.values()))

    w_reused = leaves()
    with torch.enable_grad():
        g_reused = torch.autograd.grad(
            loss(w_reused, hparams, batch), list(w_reused.values()), create_graph=True
        )

    def double_backward_reused() -> tuple[Tensor, ...]:
        return torch.autograd.grad(g_reused, list(w_reused.values()), list(v.values()), retain_graph=True)

    def inner_grad(w: Tree) -> Tree:
        return torch.func.grad(loss)(w, hparams, batch)

    def jvp_of_grad(w: Tree, v: Tree) -> Tree:
        return torch.func.jvp(inner_grad, (w,), (v,))[1]

    def vjp_of_grad(w: Tree, v: Tree) -> Tree:
        return torch.func.vjp(inner_grad, w)[1](v)[0]

    vjp_reused = torch.func.vjp(inner_grad, params)[1]
    candidates = {
        "hvp: double-backward, fresh create_graph grad": double_backward_fresh,
        "hvp: double-backward, one create_graph grad reused": double_backward_reused,
        "hvp: func jvp(grad) = fwd-over-rev, eager": lambda: jvp_of_grad(params, v),
        "hvp: func vjp(grad) = rev-over-rev, eager": lambda: vjp_of_grad(params, v),
        "hvp: func vjp(grad), closure reused, eager": lambda: vjp_reused(v)[0],
    }
    if compiled:
        jvp_c, vjp_c = torch.compile(jvp_of_grad), torch.compile(vjp_of_grad)
        candidates["hvp: func jvp(grad), compiled"] = lambda: jvp_c(params, v)
        candidates["hvp: func vjp(grad), compiled"] = lambda: vjp_c(params, v)
    return candidates


NEUMANN_UPDATE = "neumann term vector ops (2 tree_add)"
HVP_CHAIN = f"hvp chain: {SOLVER_STEPS} nestopt HVPs, each on the last output"


def neumann_update(v: Tree, hv: Tree, total: Tree) -> tuple[Tree, Tree]:
    """The vector arithmetic of one Neumann term, as :class:`nestopt.neumann` does it."""
    v = tree_add(v, hv, -INNER_LR)
    return v, tree_add(total, v)


def primitive_measurements(
    base: Base, settings: Settings, console: Console
) -> tuple[list[Measurement], dict]:
    """Each piece of the eager outer step alone, at fixed weights and batches."""
    trainer = base.trainer(IFT())
    train, val = base.streams()
    train_batch, val_batch = next(train), next(val)
    params, hparams = trainer.params(), trainer.hparams.tree()
    inner, outer = trainer.inner_loss_fn, trainer.val_loss_fn
    _, v, _ = value_and_grads(outer, params, hparams, val_batch, "autograd")  # a realistic vector
    lin = linearize(inner, params, hparams, train_batch, "autograd")
    adam_hparams = copy.deepcopy(base.hparams)
    adam = torch.optim.Adam(adam_hparams.parameters(), lr=OUTER_LR)
    grads, hv = lin.mixed_vjp(v), lin.hvp(v)

    def hvp_chain() -> Tree:
        """HVPs as a solve calls them: each on a new vector (an isolated HVP repeated on the same
        vector runs cache-hot and ~10% faster than inside a solve)."""
        w = v
        for _ in range(SOLVER_STEPS):
            w = tree_add(w, lin.hvp(w), -INNER_LR)
        return w

    def adam_step() -> None:
        for k, p in adam_hparams.named_parameters():
            p.grad = grads[k]
        adam.step()
        adam.zero_grad(set_to_none=True)

    fns = {
        "val grad (batch 512)": lambda: value_and_grads(outer, params, hparams, val_batch, "autograd"),
        "linearize (create_graph grad)": lambda: linearize(inner, params, hparams, train_batch, "autograd"),
        "hvp: nestopt linearize(...).hvp": lambda: lin.hvp(v),
        HVP_CHAIN: hvp_chain,
        "mixed vjp: nestopt linearize(...).mixed_vjp": lambda: lin.mixed_vjp(v),
        "outer Adam step": adam_step,
        NEUMANN_UPDATE: lambda: neumann_update(v, hv, v),
        **hvp_candidates(trainer, params, hparams, train_batch, v, settings.compiled_candidates),
    }
    compile_seconds = {}
    for name, fn in fns.items():
        if "compiled" in name:
            console.log(f"compiling: {name}")
            start = time.perf_counter()
            fn()
            compile_seconds[name] = time.perf_counter() - start
    return [Measurement(name, fn) for name, fn in fns.items()], compile_seconds


# --------------------------------------------------------------------------- memory
def measure_memory(name: str, steps: int) -> dict[str, Any]:
    """Runs in a fresh process: setup, 2 warm-up outer steps (compilation), ``steps`` more."""
    base = build_base()
    runner = TrainOnlyRunner(base, IFT()) if name == "train" else CONFIGS[name](base)
    return peak_of_steps(runner.outer_step, steps)


# --------------------------------------------------------------------------- report
def summarise(
    times: dict[str, list[float]],
    outer: dict[str, dict],
    primitive_names: list[str],
    compile_seconds: dict[str, float],
) -> dict[str, Any]:
    unit = times["train step"]
    out: dict[str, Any] = {"unit": {"name": "train step (plain PyTorch)", "seconds": stats(unit)}}
    for name, info in outer.items():
        info["seconds"] = stats(times[name])
        info["ratio"] = stats(ratios(times[name], unit))
        if name == COMPILED and times[name] and info["error"] is None:
            info["compile_seconds"] = info["first_call_seconds"] - statistics.median(times[name])
    out["outer_steps"] = outer
    out["primitives"] = {
        name: {"seconds": stats(times[name]), "ratio": stats(ratios(times[name], unit))}
        | ({"compile_seconds": compile_seconds[name]} if name in compile_seconds else {})
        for name in primitive_names
    }
    out["sum_of_primitives"] = sum_of_primitives(times)
    return out


SUM_TERMS = {  # the eager outer step, piece by piece (the chain includes one axpy per HVP)
    "train step": INNER_STEPS,
    "val grad (batch 512)": 1,
    "linearize (create_graph grad)": 1,
    HVP_CHAIN: 1,
    NEUMANN_UPDATE: SOLVER_STEPS // 2,  # the chain did one of the two tree_adds of each term
    "mixed vjp: nestopt linearize(...).mixed_vjp": 1,
    "outer Adam step": 1,
}


def sum_of_primitives(times: dict[str, list[float]]) -> dict[str, Any]:
    """The eager outer step's primitives summed (each measured alone, in the same repeat), the
    eager step over that sum (nestopt's own overhead), and both against the plain-PyTorch step."""
    unit = times["train step"]
    repeats = min(len(times[name]) for name in [*SUM_TERMS, EAGER, REFERENCE])
    sums = [sum(count * times[name][r] for name, count in SUM_TERMS.items()) for r in range(repeats)]
    return {
        "terms": SUM_TERMS,
        "seconds": stats(sums),
        "ratio_to_train_step": stats(ratios(sums, unit)),
        "outer_over_sum": stats(ratios(times[EAGER], sums)),
        "outer_over_reference": stats(ratios(times[EAGER], times[REFERENCE])),
        "reference_over_sum": stats(ratios(times[REFERENCE], sums)),
    }


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    outer = summary["outer_steps"]

    def ratio(name: str) -> float | None:
        return outer[name]["ratio"]["median"]

    rows = [
        (
            "eager outer step / sum of its primitives",
            summary["sum_of_primitives"]["outer_over_sum"]["median"],
            "<=",
            MAX_OVERHEAD,
        ),
        (f"outer / train step, default ({DEFAULT})", ratio(DEFAULT), "<=", MAX_RATIO),
        (f"outer / train step ({EAGER})", ratio(EAGER), "<=", MAX_RATIO),
    ]
    for name in (EAGER, COMPILED):
        rows.append(
            (f"cosine vs reference ({name})", outer[name].get("cosine_vs_reference"), ">=", MIN_COSINE)
        )
    result = []
    for label, value, op, bound in rows:
        ok = value is not None and (value <= bound if op == "<=" else value >= bound)
        result.append({"target": label, "value": value, "bound": f"{op} {bound}", "pass": ok})
    return result


def print_report(console: Console, result: dict[str, Any]) -> None:
    m, s = result["machine"], result["summary"]
    load = m["loadavg_at_start"] and ", ".join(f"{x:.2f}" for x in m["loadavg_at_start"])
    console.print(
        f"\ntorch {m['torch']}, {m['torch_threads']} threads, {m['cpu']} ({m['cpu_count']} CPUs), load {load}"
    )
    console.print(f"{result['settings']['repeats']} interleaved repeats: median [min, max]", markup=False)
    console.print(f"unit: one train step = {fmt_ms(s['unit']['seconds'])} ms\n", markup=False)
    warning = busy_warning(m, s["unit"]["seconds"])
    if warning:
        console.print(f"[yellow]warning: {warning}[/yellow]\n")
    console.print(outer_table(s["outer_steps"], result["memory"]))
    console.print(primitives_table(s["primitives"], s["sum_of_primitives"]))
    console.print(targets_table(result["targets"]))


def outer_table(outer: dict[str, dict], memory: dict[str, dict]) -> Table:
    table = Table(title="Outer step (5 SGD steps + hypergradient + Adam step)")
    for col in (
        "configuration",
        "ms",
        "x train step",
        "first call s",
        "cos vs ref",
        "peak MiB",
        "steady MiB",
    ):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for name in [*outer, "train"]:
        info, mem = outer.get(name, {}), memory.get(name, {})
        table.add_row(
            LABELS[name] + (f"\n  [red]{info['error'][:90]}[/red]" if info.get("error") else ""),
            fmt_ms(info["seconds"]) if info else "-",
            fmt_ratio(info["ratio"]) if info else "-",
            fmt(info.get("first_call_seconds"), ".2f"),
            fmt(info.get("cosine_vs_reference"), ".6f"),
            fmt(mem.get("peak_above_setup_mib"), ".1f"),
            fmt(mem.get("steady_peak_above_mib"), ".1f"),
        )
    return table


def primitives_table(primitives: dict[str, dict], total: dict[str, Any]) -> Table:
    table = Table(title="Primitives alone (fixed weights and batches)")
    for col in ("primitive", "ms", "x train step", "compile s"):
        table.add_column(col, justify="left" if col == "primitive" else "right")
    for name, info in primitives.items():
        table.add_row(
            name, fmt_ms(info["seconds"]), fmt_ratio(info["ratio"]), fmt(info.get("compile_seconds"), ".1f")
        )
    table.add_section()
    table.add_row(
        "sum: 5 train + val grad + linearize + hvp chain + 5 vector ops + mixed vjp + Adam",
        fmt_ms(total["seconds"]),
        fmt_ratio(total["ratio_to_train_step"]),
        "",
    )
    table.add_row("eager outer step / sum  (target)", "", fmt_ratio(total["outer_over_sum"]), "")
    table.add_row("plain PyTorch reference step / sum", "", fmt_ratio(total["reference_over_sum"]), "")
    table.add_row(
        "eager outer step / plain PyTorch reference step", "", fmt_ratio(total["outer_over_reference"]), ""
    )
    return table


def targets_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Targets")
    for col in ("target", "value", "bound", "status"):
        table.add_column(col)
    for row in rows:
        status = "[green]PASS[/green]" if row["pass"] else "[red]FAIL[/red]"
        table.add_row(row["target"], fmt(row["value"], ".4f"), row["bound"], status)
    return table


# --------------------------------------------------------------------------- main
def run_benchmark(settings: Settings, console: Console) -> dict[str, Any]:
    machine = machine_info()
    console.log("building data and model")
    base = build_base()
    n_weights = sum(p.numel() for p in base.model.parameters())
    n_hparams = sum(p.numel() for p in base.hparams.parameters())

    outer, outer_info = outer_measurements(base, console)
    primitives, compile_seconds = primitive_measurements(base, settings, console)
    unit_runner = ReferenceRunner(base)  # the unit: a plain PyTorch step, no nestopt code in it
    unit = Measurement("train step", lambda: unit_runner.train_step(next(unit_runner.train)))
    console.log("warm-up and calibration")
    for m in [unit, *outer, *primitives]:
        if m.error is None:
            calibrate(m, settings)
    console.log(f"timing: {settings.repeats} interleaved repeats")
    times = run_interleaved([*outer, *primitives], unit, settings.repeats)
    for m in outer:
        outer_info[m.name]["error"] = m.error
        outer_info[m.name]["calls_per_block"] = m.calls
    summary = summarise(times, outer_info, [m.name for m in primitives], compile_seconds)
    memory = memory_in_subprocesses(
        Path(__file__).resolve(), [*CONFIGS, "train"], settings.memory_steps, console
    )
    result = {
        "machine": machine | machine_at_end(machine),
        "settings": asdict(settings),
        "problem": {
            "model": "MLP 40-300-300-10 ReLU",
            "weights": n_weights,
            "hyperparameters": n_hparams,
            "train_batch": TRAIN_BATCH,
            "val_batch": VAL_BATCH,
            "inner_steps": INNER_STEPS,
            "solver_steps": SOLVER_STEPS,
            "inner_lr": INNER_LR,
            "outer_lr": OUTER_LR,
            "cg_damping": CG_DAMPING,
            "seed": SEED,
        },
        "summary": summary,
        "memory": memory,
    }
    result["targets"] = targets(summary)
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer, shorter repeats; no compiled HVP candidates"
    )
    parser.add_argument("--repeats", type=int, help="override the number of interleaved repeats")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON output (default {RESULTS})")
    parser.add_argument("--memory-of", choices=[*CONFIGS, "train"], help=argparse.SUPPRESS)
    parser.add_argument("--memory-steps", type=int, default=FULL.memory_steps, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.memory_of:  # child process of the memory measurement: one JSON line on stdout
        print(json.dumps(measure_memory(args.memory_of, args.memory_steps)))
        return
    settings = QUICK if args.quick else FULL
    if args.repeats:
        settings = Settings(**{**asdict(settings), "repeats": args.repeats})
    console = Console() if sys.stdout.isatty() else Console(width=132)
    start = time.perf_counter()
    result = run_benchmark(settings, console)
    result["total_seconds"] = time.perf_counter() - start
    print_report(console, result)
    write_json(args.output, result)
    console.print(f"\nwrote {args.output} ({result['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
