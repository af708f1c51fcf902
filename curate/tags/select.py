"""Which images `curate tags push` sends to annotators: a registry of selection strategies.

A strategy gets the candidate rows (images that are live, not yet in the project and not yet
tagged; every column of the manifest push reads, so a later stage's scores come along), the
wanted count (None = all), a seeded generator and the run's params (paths, models, embedding
settings: what a strategy that computes something needs), and returns image ids in the order
to push.
Later stages add theirs with ``@strategy("uncertain")`` (least confident propagated category
first) or ``@strategy("diverse")`` (cluster representatives) in a module of their own, list that
module in `PROVIDERS` (imported only when its strategy is asked for, so a push does not load a
later stage's dependencies otherwise) and add the name to the ``tags.push.strategy`` choices of
`curate.tags.config.TagsPushConfig`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from curate.config import Params

Strategy = Callable[[pd.DataFrame, "int | None", np.random.Generator, "Params"], list[str]]
STRATEGIES: dict[str, Strategy] = {}
#: strategy name -> module whose import registers it (e.g. "uncertain": "curate.split.select")
PROVIDERS: dict[str, str] = {"uncertain": "curate.split.select",
                             "diverse": "curate.split.select"}


class SelectionError(ValueError):
    """The strategy cannot run with what it was given; the message says what to change."""


def strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Register a selection strategy under ``name``."""
    def register(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn
    return register


@strategy("untagged")
def all_untagged(candidates: pd.DataFrame, n: int | None, rng: np.random.Generator,
                 params: Params) -> list[str]:
    """Every untagged image (the first n by image id when n is given: stable across runs)."""
    ids = sorted(candidates["image_id"].astype(str))
    return ids if n is None else ids[:n]


@strategy("random")
def random_sample(candidates: pd.DataFrame, n: int | None, rng: np.random.Generator,
                  params: Params) -> list[str]:
    """A uniform random sample of n untagged images (seeded: same seed, same sample)."""
    if n is None:
        raise SelectionError("strategy 'random' needs a sample size: pass -n N or set "
                             "tags.push.n in params.yaml")
    ids = sorted(candidates["image_id"].astype(str))
    if n >= len(ids):
        return ids
    picked = rng.choice(len(ids), size=n, replace=False)
    return [ids[i] for i in sorted(picked)]


def select(name: str, candidates: pd.DataFrame, n: int | None, seed: int, params: Params
           ) -> list[str]:
    """Run strategy ``name`` on the candidates."""
    if name not in STRATEGIES and name in PROVIDERS:
        importlib.import_module(PROVIDERS[name])
    fn = STRATEGIES.get(name)
    if fn is None:
        raise SelectionError(f"unknown selection strategy {name!r}; available: "
                             f"{', '.join(sorted({*STRATEGIES, *PROVIDERS}))}")
    if candidates.empty:
        return []
    return fn(candidates, n, np.random.default_rng(seed), params)
