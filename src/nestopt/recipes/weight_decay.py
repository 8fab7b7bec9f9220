"""Per-weight L2 decay tuned by IFT + Neumann, against no decay and the best global decay.

After Lorraine, Vicol & Duvenaud, "Optimizing Millions of Hyperparameters by Implicit
Differentiation" (AISTATS 2020): an MLP on scikit-learn's digits (embedded, no download) with
one weight-decay hyperparameter per weight, tuned by hypergradient descent on the validation
loss (warm start: inner_steps SGD steps, then one implicit hypergradient with a Neumann
series, then one Adam step on the log-decays). Baselines train the same network for the same
number of SGD steps with no decay and with each global decay of a grid (the best on validation
loss is reported). Every method sees the same initial weights and minibatch sequence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..bilevel import IFT, Bilevel, train_step
from ..data import BatchStream, Split, digits
from ..hparams import HyperParameters, WeightDecay
from ..solvers import neumann
from .runfolder import NoProgress, Progress, Result, RunFolder

NAME = "weight-decay"
PER_WEIGHT = "per-weight decay (IFT)"
TABLE = [  # (title, metrics key, format) of the command line's table; metrics.json holds the rest
    ("hparams", "n_hparams", "{:,}"),
    ("train loss", "train_loss", "{:.3f}"),
    ("val loss", "val_loss", "{:.3f}"),
    ("test loss", "test_loss", "{:.3f}"),
    ("test acc", "test_accuracy", "{:.1%}"),
    ("s", "seconds", "{:.1f}"),
]
SUMMARY = "per-weight L2 decay by IFT + Neumann on digits vs no decay and the best global decay"


@dataclass
class Config:
    seed: int = field(default=0, metadata={"help": "seed of the data split, initial weights and batches"})
    n_train: int = field(
        default=300, metadata={"help": "training examples (the rest after validation is test)"}
    )
    n_val: int = field(default=400, metadata={"help": "validation examples"})
    hidden: int = field(default=128, metadata={"help": "width of the two hidden layers"})
    batch_size: int = field(default=64, metadata={"help": "training minibatch size"})
    val_batch_size: int = field(default=200, metadata={"help": "validation minibatch of each hypergradient"})
    inner_lr: float = field(default=0.1, metadata={"help": "SGD learning rate of the weights"})
    inner_steps: int = field(default=5, metadata={"help": "SGD steps per outer step (warm start)"})
    outer_steps: int = field(default=300, metadata={"help": "hyperparameter steps"})
    outer_lr: float = field(default=0.05, metadata={"help": "Adam learning rate of the log-decays"})
    init_decay: float = field(default=1e-4, metadata={"help": "initial value of every per-weight decay"})
    neumann_steps: int = field(default=10, metadata={"help": "Neumann terms per hypergradient"})
    grid: tuple[float, ...] = field(
        default=(1e-4, 1e-3, 1e-2, 3e-2, 1e-1), metadata={"help": "global decays tried by the baseline"}
    )
    compile: bool = field(default=False, metadata={"help": "compile the hypergradient with torch.compile"})
    eval_every: int = field(default=10, metadata={"help": "outer steps between full-set evaluations"})
    checkpoint_every: int = field(default=50, metadata={"help": "outer steps between checkpoints"})

    def __post_init__(self) -> None:
        for name in (
            "n_train",
            "n_val",
            "hidden",
            "batch_size",
            "val_batch_size",
            "inner_steps",
            "outer_steps",
            "neumann_steps",
            "eval_every",
            "checkpoint_every",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.grid or min(self.grid) <= 0:
            raise ValueError(f"--grid must list positive decays, got {self.grid}")


def run(config: Config, out: str | Path, progress: Progress | None = None) -> Result:
    progress = progress or NoProgress()
    folder = RunFolder(out)
    folder.write_config(config)
    data = digits(config.n_train, config.n_val, config.seed)
    methods = {"no decay": [0.0], "best global decay": list(config.grid)}
    metrics, curves = {}, []
    for method, decays in methods.items():
        part = folder.read_json(f"parts/{_slug(method)}.json")
        if part is None:
            part = _best_of(config, data, decays, progress, method)
            folder.write_json(f"parts/{_slug(method)}.json", part)
        metrics[method], curves = part["metrics"], curves + part["curves"]
    part = _per_weight(config, data, folder, progress)
    metrics[PER_WEIGHT], curves = part["metrics"], curves + part["curves"]
    files = [
        folder.write_json("metrics.json", metrics),
        folder.write_csv("curves.csv", curves),
        folder.save_figure("val_loss.png", _plot_curves(curves)),
        folder.save_figure("decays.png", _plot_decays(part["decays"], metrics)),
    ]
    return Result(NAME, folder.path, metrics, curves, files)


# ---------------------------------------------------------------------- methods
def _model(config: Config, data: Split) -> nn.Module:
    torch.manual_seed(config.seed)
    h = config.hidden
    return nn.Sequential(
        nn.Linear(data.n_features, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, data.n_classes)
    )


def _train_loss(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1], reduction="none")


def _val_loss(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1])


def _train_stream(config: Config, data: Split) -> BatchStream:
    return BatchStream(*data.train, batch_size=config.batch_size, seed=config.seed + 1)


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    model.eval()
    logits = model(x)
    return {
        "loss": float(F.cross_entropy(logits, y)),
        "accuracy": float((logits.argmax(1) == y).double().mean()),
    }


def _summary(
    model: nn.Module, data: Split, n_hparams: int, seconds: float, extra: dict | None = None
) -> dict:
    out = {}
    for split in ("train", "val", "test"):
        scores = _evaluate(model, *getattr(data, split))
        out[f"{split}_loss"], out[f"{split}_accuracy"] = scores["loss"], scores["accuracy"]
    return {**out, "n_hparams": n_hparams, "seconds": seconds, **(extra or {})}


def _best_of(config: Config, data: Split, decays: list[float], progress: Progress, method: str) -> dict:
    """Plain SGD with each fixed global decay; keep the one with the lowest validation loss."""
    runs = []
    for decay in decays:
        started = time.perf_counter()
        model = _model(config, data)
        family = WeightDecay(model, init=decay, per="global") if decay > 0 else HyperParameters()
        optimizer = torch.optim.SGD(model.parameters(), lr=config.inner_lr)
        stream = _train_stream(config, data)
        progress.start(f"{method}: decay {decay:g}", config.outer_steps)
        curve = []
        for step in range(1, config.outer_steps + 1):
            for _ in range(config.inner_steps):
                train_step(model, family, optimizer, _train_loss, next(stream))
            if step % config.eval_every == 0 or step == config.outer_steps:
                curve.append(
                    {
                        "method": method,
                        "decay": decay,
                        "outer_step": step,
                        "val_loss": _evaluate(model, *data.val)["loss"],
                    }
                )
            progress.advance()
        n_hparams = 1 if decay > 0 else 0
        runs.append(
            (_summary(model, data, n_hparams, time.perf_counter() - started, {"decay": decay}), curve)
        )
    metrics, curve = min(runs, key=lambda run: run[0]["val_loss"])
    if len(runs) > 1:
        metrics["grid_val_loss"] = {str(m["decay"]): m["val_loss"] for m, _ in runs}
        metrics["seconds"] = sum(m["seconds"] for m, _ in runs)
    return {"metrics": metrics, "curves": curve}


def _per_weight(config: Config, data: Split, folder: RunFolder, progress: Progress) -> dict:
    method = PER_WEIGHT
    model = _model(config, data)
    decay = WeightDecay(model, init=config.init_decay, per="weight")
    trainer = Bilevel(
        model,
        decay,
        inner_optimizer=torch.optim.SGD(model.parameters(), lr=config.inner_lr),
        outer_optimizer=torch.optim.Adam(decay.parameters(), lr=config.outer_lr),
        train_loss=_train_loss,
        val_loss=_val_loss,
        hypergradient=IFT(neumann(config.neumann_steps, config.inner_lr), compile=config.compile),
        inner_steps=config.inner_steps,
    )
    val = BatchStream(*data.val, batch_size=config.val_batch_size, seed=config.seed + 2)

    def on_step(record: dict) -> None:
        step = record["step"] + 1
        if step % config.eval_every == 0 or step == config.outer_steps:
            record["full_val_loss"] = _evaluate(model, *data.val)["loss"]
        progress.advance(val_loss=record["val_loss"])

    progress.start(method, config.outer_steps)
    checkpoint = folder.file("checkpoints/per-weight.pt")
    resumed = checkpoint.exists()
    if resumed:
        trainer.load(checkpoint)
        progress.advance(trainer.step)
    history = trainer.fit(
        _train_stream(config, data),
        val,
        config.outer_steps,
        checkpoint=checkpoint,
        checkpoint_every=config.checkpoint_every,
        resume=resumed,
        callback=on_step,
    )
    seconds = sum(r["seconds"] for r in history)
    curves = [
        {
            "method": method,
            "outer_step": r["step"] + 1,
            "val_loss": r["full_val_loss"],
            "minibatch_val_loss": r["val_loss"],
            "hypergrad_norm": r["hypergrad_norm"],
        }
        for r in history
        if "full_val_loss" in r
    ]
    decays = {k: v.detach().flatten() for k, v in decay.decays().items()}
    return {
        "metrics": _summary(model, data, sum(p.numel() for p in decay.parameters()), seconds),
        "curves": curves,
        "decays": decays,
    }


# ---------------------------------------------------------------------- plots
def _plot_curves(curves: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4))
    for method in dict.fromkeys(c["method"] for c in curves):
        rows = [c for c in curves if c["method"] == method]
        label = method + (f" ({rows[0]['decay']:g})" if rows[0].get("decay") else "")
        axis.plot([r["outer_step"] for r in rows], [r["val_loss"] for r in rows], label=label)
    axis.set(
        xlabel="outer step (baselines: SGD steps / inner_steps)",
        ylabel="validation loss (full set)",
        yscale="log",
    )
    axis.set_title("Validation loss during training")
    axis.legend()
    axis.grid(alpha=0.3)
    return figure


def _plot_decays(decays: dict[str, torch.Tensor], metrics: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(decays))
    rows = -(-len(decays) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.8 * rows), squeeze=False)
    axes = axes.flatten()
    for axis in axes[len(decays) :]:
        axis.set_visible(False)
    best = metrics["best global decay"]["decay"]
    for axis, (name, values) in zip(axes, decays.items(), strict=False):
        axis.hist(torch.log10(values).numpy(), bins=40, color="tab:blue")
        axis.axvline(
            torch.log10(torch.tensor(best)).item(), color="tab:red", linestyle="--", label="best global"
        )
        axis.set(title=name, xlabel="log10 decay")
    axes[0].set_ylabel("count")
    axes[0].legend(fontsize=8)
    figure.suptitle("Learned per-weight decays by layer")
    figure.tight_layout()
    return figure


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")
