"""Helpers shared by the benchmarks: the per-weight-decay MLP problem, interleaved timing with
ratios to a unit measured in the same run, peak memory in fresh processes, machine facts.

Timings are only meaningful on otherwise idle cores: with 2 threads per process, a second busy
process makes PyTorch's thread pool wait on descheduled threads and steps get 10-100x slower;
:func:`busy_warning` says when the load or the spread of the unit says so.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor, nn

from nestopt.bilevel import IFT, Bilevel, Unrolled
from nestopt.data import BatchStream, Split, mnist1d
from nestopt.hparams import WeightDecay

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# The MLP problem (benchmarks/hypergrad.py, benchmarks/peers.py): per-weight decay on MNIST-1D.
SEED = 0
INNER_LR = 0.1  # SGD on the weights; also the Neumann alpha
OUTER_LR = 0.01  # Adam on the hyperparameters
INNER_STEPS = 5
SOLVER_STEPS = 10  # Neumann terms / CG iterations
CG_DAMPING = 1.0  # the Hessian of this ReLU MLP is indefinite: CG refuses it below ~0.3
TRAIN_BATCH, VAL_BATCH = 128, 512
PRETRAIN_STEPS = 100  # plain SGD steps before anything is measured (warm-started weights)

Tree = dict[str, Tensor]


# --------------------------------------------------------------------------- problem
def seed_everything(seed: int = SEED) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_loss(model: Callable[..., Tensor], batch: Any) -> Tensor:
    x, y, _ = batch
    return F.cross_entropy(model(x), y, reduction="none")


def val_loss(model: Callable[..., Tensor], batch: Any) -> Tensor:
    x, y, _ = batch
    return F.cross_entropy(model(x), y)


def make_mlp(n_in: int, n_out: int, width: int = 300) -> nn.Module:
    return nn.Sequential(
        nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, n_out)
    )


def make_trainer(model: nn.Module, hparams: WeightDecay, hypergradient: IFT | Unrolled) -> Bilevel:
    return Bilevel(
        model,
        hparams,
        inner_optimizer=torch.optim.SGD(model.parameters(), lr=INNER_LR),
        outer_optimizer=torch.optim.Adam(hparams.parameters(), lr=OUTER_LR),
        train_loss=train_loss,
        val_loss=val_loss,
        hypergradient=hypergradient,
        inner_steps=INNER_STEPS,
    )


@dataclass
class Base:
    """Data and a briefly pre-trained model; every measurement starts from copies of them."""

    split: Split
    model: nn.Module
    hparams: WeightDecay

    def copies(self) -> tuple[nn.Module, WeightDecay]:
        return copy.deepcopy(self.model), copy.deepcopy(self.hparams)

    def streams(self) -> tuple[BatchStream, BatchStream]:
        """Fresh train / validation streams, the same batches for every caller."""
        train = BatchStream(*self.split.train, batch_size=TRAIN_BATCH, seed=SEED + 1)
        val = BatchStream(*self.split.val, batch_size=VAL_BATCH, seed=SEED + 2)
        return train, val

    def trainer(self, hypergradient: IFT | Unrolled) -> Bilevel:
        return make_trainer(*self.copies(), hypergradient)


def build_base(width: int = 300) -> Base:
    seed_everything()
    split = mnist1d()
    model = make_mlp(split.n_features, split.n_classes, width)
    hparams = WeightDecay(model, init=1e-4, per="weight")
    trainer = make_trainer(model, hparams, IFT())
    stream = BatchStream(*split.train, batch_size=TRAIN_BATCH, seed=SEED + 100)
    for _ in range(PRETRAIN_STEPS):
        trainer.inner_step(next(stream))
    return Base(split, model, hparams)


# --------------------------------------------------------------------------- timing
@dataclass
class Measurement:
    name: str
    fn: Callable[[], Any]
    calls: int = 1  # calls per timed block, calibrated in warm-up
    error: str | None = None


def calibrate(m: Measurement, settings: Any) -> None:
    """Warm up (at least 3 calls) and pick the calls per block from the warm-up speed
    (``settings`` has ``warmup_seconds`` and ``block_seconds``)."""
    start, calls = time.perf_counter(), 0
    while calls < 3 or time.perf_counter() - start < settings.warmup_seconds:
        m.fn()
        calls += 1
    per_call = (time.perf_counter() - start) / calls
    m.calls = max(2, round(settings.block_seconds / per_call))


def time_block(m: Measurement) -> float:
    start = time.perf_counter()
    for _ in range(m.calls):
        m.fn()
    return (time.perf_counter() - start) / m.calls


def run_interleaved(
    measurements: list[Measurement], unit: Measurement, repeats: int
) -> dict[str, list[float]]:
    """``repeats`` rounds; each times the unit, every measurement, then the unit again."""
    times: dict[str, list[float]] = {m.name: [] for m in [unit, *measurements]}
    for _ in range(repeats):
        before = time_block(unit)
        for m in measurements:
            if m.error is None:
                try:
                    times[m.name].append(time_block(m))
                except Exception as error:  # e.g. CG meeting negative curvature mid-run
                    m.error = f"{type(error).__name__}: {error}"
        times[unit.name].append(0.5 * (before + time_block(unit)))
    return times


def stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"median": None, "min": None, "max": None, "values": []}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def ratios(values: list[float], units: list[float]) -> list[float]:
    return [v / u for v, u in zip(values, units, strict=False)]


def median_time(fn: Callable[[], Any], repeats: int, min_seconds: float = 0.0) -> dict[str, Any]:
    """``stats`` of ``repeats`` single calls (after one warm-up call), at least ``min_seconds`` in all."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return stats(times)


# --------------------------------------------------------------------------- comparisons
def flat(tree: Tree, keys: list[str]) -> Tensor:
    return torch.cat([tree[k].detach().reshape(-1).double() for k in keys])


def compare(grads: Tree, reference: Tree) -> dict[str, float]:
    """Cosine, norm ratio and relative error of ``grads`` against ``reference`` (same keys)."""
    keys = list(reference)
    a, b = flat(grads, keys), flat(reference, keys)
    return {
        "cosine_vs_reference": float(F.cosine_similarity(a, b, dim=0)),
        "norm_ratio_vs_reference": float(a.norm() / b.norm()),
        "relative_error_vs_reference": float((a - b).norm() / b.norm()),
    }


# --------------------------------------------------------------------------- memory
def proc_status_mib(field: str) -> float | None:
    """``VmRSS`` (current) or ``VmHWM`` (peak since start or last reset) in MiB, Linux only."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def ru_maxrss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def release_free_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc), so RSS is what is in use."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak_rss() -> bool:
    """Reset the peak RSS ``VmHWM`` (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak RSS above the RSS at :meth:`start`.

    Building the data set has a transient peak of its own (~150 MiB), which ``ru_maxrss`` keeps
    for the life of the process, so on Linux the peak is reset at :meth:`start` and read from
    ``VmHWM`` (``ru_maxrss`` cannot be reset reliably: exiting threads fold the old peak into
    it). Elsewhere this falls back to ``ru_maxrss`` above the RSS after setup, an upper bound.
    """

    def start(self) -> None:
        release_free_memory()
        self.resettable = reset_peak_rss() and proc_status_mib("VmHWM") is not None
        self.base = proc_status_mib("VmRSS") if self.resettable else ru_maxrss_mib()

    def above(self) -> float:
        peak = proc_status_mib("VmHWM") if self.resettable else ru_maxrss_mib()
        return peak - self.base


def peak_of_steps(step: Callable[[], Any], steps: int, warmup: int = 2) -> dict[str, Any]:
    """Peak RSS of ``warmup`` calls (compilation included) then ``steps`` more, above the RSS
    before them; and the steady-state peak of the later calls above the RSS after warm-up."""
    total, steady = PeakMemory(), PeakMemory()
    total.start()
    for _ in range(warmup):
        step()
    warmup_peak = total.above()
    steady.start()  # resets the peak: from here on ``total`` reads the peak since this point
    for _ in range(steps):
        step()
    steady_peak = steady.above()
    return {
        "setup_rss_mib": total.base,
        "peak_above_setup_mib": max(warmup_peak, steady_peak + steady.base - total.base),
        "steady_peak_above_mib": steady_peak if steady.resettable else None,
        "method": "VmHWM reset after setup" if total.resettable else "ru_maxrss (not resettable)",
        "steps": steps,
    }


def memory_in_subprocesses(
    script: str | Path, names: list[str], steps: int, console: Console, extra: list[str] | None = None
) -> dict[str, dict]:
    """Run ``script --memory-of NAME --memory-steps STEPS`` in a fresh process per name; each
    prints one JSON line last on stdout."""
    results = {}
    for name in names:
        console.log(f"memory (fresh process): {name}")
        cmd = [sys.executable, str(script), "--memory-of", name, "--memory-steps", str(steps), *(extra or [])]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = done.stdout.strip().splitlines()
        try:
            results[name] = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            results[name] = {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return results


# --------------------------------------------------------------------------- report
def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_at_start": loadavg(),
        "cpu_at_start": cpu_snapshot(),
    }


def loadavg() -> tuple[float, float, float] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def cpu_snapshot() -> dict[str, float] | None:
    """CPU seconds used so far by the whole machine (``/proc/stat``, Linux) and by this process with
    its finished children, and the wall clock: two snapshots tell how much CPU *other* processes
    took in between (the load average cannot: it counts this benchmark too)."""
    try:
        with open("/proc/stat") as f:
            ticks = [
                int(v) for v in f.readline().split()[1:9]
            ]  # user nice system idle iowait irq softirq steal
    except OSError:
        return None
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    usages = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    own = sum(u.ru_utime + u.ru_stime for u in usages)
    return {"busy": busy, "own": own, "wall": time.time()}


def machine_at_end(machine: dict[str, Any]) -> dict[str, Any]:
    """Load at the end, and the CPU cores other processes used on average since ``machine_info()``."""
    start, end = machine.get("cpu_at_start"), cpu_snapshot()
    other = None
    if start and end and end["wall"] > start["wall"]:
        others = (end["busy"] - start["busy"]) - (end["own"] - start["own"])
        other = max(0.0, others) / (end["wall"] - start["wall"])
    return {"loadavg_at_end": loadavg(), "other_processes_cores": other}


OTHER_CORES_LIMIT = 0.1  # average cores used by other processes above which timings are suspect


def busy_warning(machine: dict[str, Any], unit: dict[str, Any]) -> str | None:
    """A warning when other processes took CPU during the run (or, before the end, the load at
    start says so), or when the spread of the unit says the machine was busy."""
    spread = unit["max"] / unit["min"] if unit.get("min") else 1.0
    other, load = machine.get("other_processes_cores"), machine.get("loadavg_at_start")
    busy = other > OTHER_CORES_LIMIT if other is not None else bool(load and load[0] > 0.7)
    if spread > 1.3 or busy:
        return (
            f"the machine looks busy (unit max/min {spread:.2f}, other processes used "
            f"{fmt(other, '.2f')} cores on average, load at start {load}); other processes on these "
            f"cores inflate times a lot"
        )
    return None


def fmt_ms(s: dict[str, Any]) -> str:
    if s.get("median") is None:
        return "-"
    return f"{1e3 * s['median']:.2f} [{1e3 * s['min']:.2f}, {1e3 * s['max']:.2f}]"


def fmt_ratio(s: dict[str, Any]) -> str:
    if s.get("median") is None:
        return "-"
    return f"{s['median']:.2f} [{s['min']:.2f}, {s['max']:.2f}]"


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


# --------------------------------------------------------------------------- peers
PEERS = {"torchopt": "torchopt", "higher": "higher", "betty": "betty-ml"}  # import name -> pip name


def import_peer(name: str) -> tuple[Any, str | None]:
    """``(module, None)``, or ``(None, why)`` when the peer is not installed or fails to import
    (``pip install -e .[bench]`` installs them)."""
    import importlib
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(name), None
    except Exception as error:  # any import-time failure makes the peer's rows say so
        return None, f"not available ({type(error).__name__}: {str(error)[:120]}); pip install -e .[bench]"


def versions() -> dict[str, str | None]:
    """Installed versions of nestopt and the peers (``None`` where absent)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pip_name in ["nestopt", *PEERS.values()]:
        try:
            out[pip_name] = version(pip_name)
        except PackageNotFoundError:
            out[pip_name] = None
    return out
