"""What every recipe shares: a run folder (config.json, metrics.json, CSV, PNG), a progress
protocol the command line fills with a progress bar, and the result type recipes return."""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class Progress(Protocol):
    """How a recipe reports progress; the library and recipes never print."""

    def start(self, name: str, total: int) -> None: ...

    def advance(self, steps: int = 1, **fields: float) -> None: ...


class NoProgress:
    def start(self, name: str, total: int) -> None:
        pass

    def advance(self, steps: int = 1, **fields: float) -> None:
        pass


@dataclass
class Result:
    """A recipe's outcome: per-method metrics, learning curves and the files it wrote."""

    recipe: str
    out: Path
    metrics: dict[str, dict[str, float]]
    curves: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def default_out(recipe: str) -> Path:
    return Path("runs") / f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunFolder:
    """A recipe's output folder. ``config.json`` is written first, so ``--resume DIR`` can
    rebuild the configuration; finished pieces of work are saved under ``parts/``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def file(self, name: str) -> Path:
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_json(self, name: str, data: Any) -> Path:
        path = self.file(name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
        tmp.replace(path)
        return path

    def read_json(self, name: str) -> Any | None:
        path = self.path / name
        return json.loads(path.read_text()) if path.exists() else None

    def write_config(self, config: Any) -> Path:
        return self.write_json("config.json", dataclasses.asdict(config))

    def write_csv(self, name: str, rows: Iterable[dict[str, Any]]) -> Path:
        rows = list(rows)
        columns = list(dict.fromkeys(k for row in rows for k in row))
        path = self.file(name)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        return path

    def save_figure(self, name: str, figure: Any) -> Path:
        path = self.file(name)
        figure.savefig(path, dpi=120, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(figure)
        return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
