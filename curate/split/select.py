"""Selection strategies the split stage adds to `curate tags push` (see `curate.tags.select`).

Both read the split manifest, so push must be pointed at it:
``tags.push.manifest: data/split/manifest.parquet`` (or ``--manifest``).

* ``uncertain``: the untagged images whose propagated distribution is least confident first;
  tagging them helps the k-NN propagation most.
* ``diverse``: one representative per k-means cluster of the embeddings (the member closest to
  its cluster centre), so a first tagging round covers every kind of image in the set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from curate.config import Params
from curate.split.propagate import kmeans
from curate.tags.select import SelectionError, strategy

_NEEDS_SPLIT = ("strategy {name!r} needs the split stage's columns: run `dvc repro split` and "
                "push from data/split/manifest.parquet (--manifest or tags.push.manifest)")


@strategy("uncertain")
def least_confident(candidates: pd.DataFrame, n: int | None, rng: np.random.Generator,
                    params: Params) -> list[str]:
    if "dist_confidence" not in candidates.columns:
        raise SelectionError(_NEEDS_SPLIT.format(name="uncertain"))
    order = candidates.assign(conf=candidates["dist_confidence"].fillna(-1.0)).sort_values(
        ["conf", "image_id"], kind="stable")
    ids = order["image_id"].astype(str).tolist()
    return ids if n is None else ids[:n]


@strategy("diverse")
def cluster_representatives(candidates: pd.DataFrame, n: int | None, rng: np.random.Generator,
                            params: Params) -> list[str]:
    if n is None:
        raise SelectionError("strategy 'diverse' needs a count: pass -n N (one image per cluster)")
    if "store_path" not in candidates.columns:
        raise SelectionError(_NEEDS_SPLIT.format(name="diverse"))
    from curate.embeddings import embed, manifest_items

    rows = candidates.reset_index(drop=True)
    vectors = embed(params, manifest_items(params, rows))
    valid = np.flatnonzero(np.isfinite(vectors).all(axis=1))
    if len(valid) <= n:
        return sorted(rows["image_id"].astype(str).iloc[valid])
    x = vectors[valid]
    groups = kmeans(x, n, seed=int(rng.integers(2**31)))
    picked = []
    for g in range(n):
        members = np.flatnonzero(groups == g)
        if len(members):
            centre = x[members].mean(axis=0)
            picked.append(valid[members[np.argmax(x[members] @ centre)]])
    return sorted(rows["image_id"].astype(str).iloc[picked])
