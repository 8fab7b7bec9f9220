"""Recipes: one module per experiment, each a ``Config`` dataclass and ``run(config, out, progress)``.

A recipe module defines ``NAME`` (the command), ``SUMMARY`` (one line for ``nestopt list``),
``Config`` (every field a command-line option; ``metadata={"help": ...}``), ``run(config, out,
progress=None) -> Result`` and optionally ``TABLE`` (the columns the command line prints).
Register it in ``RECIPES`` below.

Recipes use only the public library and return their results as data (and write them into a
run folder); the command line lists, configures and runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from . import bilinear_game, gan_digits, gan_mixture, weight_decay


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    module: ModuleType

    @property
    def config(self) -> type:
        return self.module.Config

    def run(self, *args, **kwargs):
        return self.module.run(*args, **kwargs)


RECIPES = {
    m.NAME: Recipe(m.NAME, m.SUMMARY, m) for m in (weight_decay, bilinear_game, gan_mixture, gan_digits)
}


def get(name: str) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"no recipe named {name!r}: `nestopt list` shows {sorted(RECIPES)}")
    return RECIPES[name]
