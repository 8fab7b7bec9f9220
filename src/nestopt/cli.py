"""``nestopt list`` and ``nestopt run NAME [--field value ...] [--out DIR] [--resume DIR]``.

The command line only parses and calls: every option of ``run NAME`` is generated from the
recipe's ``Config`` dataclass, and the recipe's returned data is rendered as a table.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .bilevel import DivergenceError
from .recipes import RECIPES, Recipe
from .recipes.runfolder import Result, default_out

# Piped output (logs, CI) gets a wide table instead of rich's 80-column default.
console = Console() if sys.stdout.isatty() else Console(width=140)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """nestopt: nested optimization and differentiable games on PyTorch."""


@main.command("list")
def list_recipes() -> None:
    """List the recipes, one line each."""
    width = max(len(name) for name in RECIPES)
    for name, recipe in sorted(RECIPES.items()):
        click.echo(f"{name:<{width}}  {recipe.summary}")


class _RecipeGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(RECIPES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return _command(RECIPES[name]) if name in RECIPES else None


main.add_command(_RecipeGroup("run", help="Run a recipe; `nestopt run NAME --help` lists its options."))


# ---------------------------------------------------------------------- options from Config
class _FloatTuple(click.ParamType):
    name = "FLOATS"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[float, ...]:
        if isinstance(value, tuple | list):
            return tuple(float(v) for v in value)
        try:
            return tuple(float(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers, e.g. 1e-4,1e-3", param, ctx)


def _option(f: dataclasses.Field, annotation: Any) -> click.Option:
    flag = "--" + f.name.replace("_", "-")
    help_text = f.metadata.get("help", "")
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if annotation is bool:
        no = "--no-" + f.name.replace("_", "-")
        return click.Option([f"{flag}/{no}", f.name], default=default, show_default=True, help=help_text)
    if typing.get_origin(annotation) is typing.Literal:
        kind: Any = click.Choice([str(a) for a in typing.get_args(annotation)])
    elif typing.get_origin(annotation) is tuple:
        kind, default = _FloatTuple(), ",".join(f"{v:g}" for v in default)
    else:
        kind = {int: click.INT, float: click.FLOAT, str: click.STRING}[annotation]
    return click.Option([flag, f.name], type=kind, default=default, show_default=True, help=help_text)


def _command(recipe: Recipe) -> click.Command:
    hints = typing.get_type_hints(recipe.config)
    fields = dataclasses.fields(recipe.config)
    params: list[click.Parameter] = [_option(f, hints[f.name]) for f in fields]
    params += [
        click.Option(
            ["--out"], type=click.Path(path_type=Path), help="run folder [default: runs/NAME-TIMESTAMP]"
        ),
        click.Option(
            ["--resume"],
            type=click.Path(path_type=Path, exists=True, file_okay=False),
            help="continue the run in this folder (its config.json; options given here override it)",
        ),
    ]

    def callback(out: Path | None, resume: Path | None, **values: Any) -> None:
        ctx = click.get_current_context()
        if resume is not None:
            saved = json.loads((resume / "config.json").read_text())
            given = {k: v for k, v in values.items() if ctx.get_parameter_source(k).name == "COMMANDLINE"}
            values = {**saved, **given}
            out = resume
        try:
            config = recipe.config(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
        except (TypeError, ValueError) as error:
            raise click.UsageError(str(error)) from error
        out = out or default_out(recipe.name)
        try:
            with _RichProgress() as progress:
                result = recipe.run(config, out, progress)
        except DivergenceError as error:
            raise click.ClickException(
                f"{error}; continue with: nestopt run {recipe.name} --resume {out}"
            ) from error
        _print_result(result, recipe)

    return click.Command(recipe.name, params=params, callback=callback, help=recipe.module.__doc__)


# ---------------------------------------------------------------------- rendering
class _RichProgress:
    """Fills the recipes' Progress protocol with a rich progress bar."""

    def __enter__(self) -> _RichProgress:
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=False,
        )
        self._bar.__enter__()
        self._task = None
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bar.__exit__(*exc)

    def start(self, name: str, total: int) -> None:
        self._task = self._bar.add_task(name, total=total, info="")

    def advance(self, steps: int = 1, **fields: float) -> None:
        info = "  ".join(f"{k} {v:.4g}" for k, v in fields.items())
        self._bar.update(self._task, advance=steps, info=info)


def _columns(result: Result, recipe: Recipe) -> list[tuple[str, str, str]]:
    """(title, metrics key, format): the recipe's ``TABLE`` if it has one, else every numeric
    metric shared by all rows."""
    table = getattr(recipe.module, "TABLE", None)
    if table is not None:
        return table
    rows = list(result.metrics.values())
    keys = [k for k in rows[0] if all(isinstance(r.get(k), int | float) for r in rows)] if rows else []
    return [(k.replace("_", " "), k, "{:.4g}") for k in keys]


def _print_result(result: Result, recipe: Recipe) -> None:
    columns = _columns(result, recipe)
    table = Table(title=f"{result.recipe}: results")
    table.add_column("method")
    for title, _, _ in columns:
        table.add_column(title, justify="right")
    for method, m in result.metrics.items():
        table.add_row(method, *(fmt.format(m[key]) if key in m else "-" for _, key, fmt in columns))
    console.print(table)
    console.print(f"run folder: {result.out}")
    for path in result.files:
        console.print(f"  {path}")


if __name__ == "__main__":  # pragma: no cover
    main()
