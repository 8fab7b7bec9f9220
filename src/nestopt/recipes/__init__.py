"""Recipes: one module per experiment, each a ``Config`` dataclass and ``run(config, out, progress)``.

Recipes use only the public library and return their results as data (and write them into a
run folder); the command line lists, configures and runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from . import weight_decay


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


RECIPES = {m.NAME: Recipe(m.NAME, m.SUMMARY, m) for m in (weight_decay,)}


def get(name: str) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"no recipe named {name!r}: `nestopt list` shows {sorted(RECIPES)}")
    return RECIPES[name]
