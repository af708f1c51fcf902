"""Embedding outlier scores: how unlike the rest of the set an image looks.

Two methods over L2-normalised embeddings (MobileNetV2 pooled features):

- `knn_scores`: mean cosine distance to the k nearest reference images. With tags, each
  distribution (tagged category) is its own reference set and an image keeps its distance to
  the *closest* distribution, so two legitimately different looks (soles on plain backgrounds,
  top views with clutter) do not make each other outliers. Without tags the reference set is
  every judged image. The unit (cosine distance, 0..2) is stable, so an absolute threshold
  carries over between datasets of the same kind.
- `isolation_forest_scores`: scikit-learn's IsolationForest anomaly score (higher = more
  anomalous), fitted on the judged images; its scale is relative, so use a percentile
  threshold with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Similarities held at once (float32): queries per chunk = _BLOCK_FLOATS / references.
_BLOCK_FLOATS = 1 << 25


def _knn_mean_distance(queries: np.ndarray, refs: np.ndarray, k: int,
                       self_index: np.ndarray) -> np.ndarray:
    """Mean cosine distance of each query to its k nearest refs, itself excluded.

    `self_index[i]` is the position of query i inside `refs`, or -1 when it is not a ref.
    A query with no other ref gets NaN. Chunked so that at most _BLOCK_FLOATS similarities
    (128 MB) are held at once, whatever the set size.
    """
    n_ref = refs.shape[0]
    out = np.full(queries.shape[0], np.nan, dtype=np.float64)
    kk = min(k, n_ref)
    if kk == 0:
        return out
    # Rows of NaN (no embedding) must rank last, not first as NaN does in a partition; the
    # callers pass finite vectors, which saves two passes over every block.
    finite = bool(np.isfinite(queries).all() and np.isfinite(refs).all())
    chunk = max(1, _BLOCK_FLOATS // n_ref)
    for start in range(0, queries.shape[0], chunk):
        sims = queries[start:start + chunk] @ refs.T
        if not finite:
            sims[np.isnan(sims)] = -np.inf
        own = self_index[start:start + chunk]
        mine = np.flatnonzero(own >= 0)
        sims[mine, own[mine]] = -np.inf  # never one's own neighbour
        if kk < n_ref:
            sims = np.partition(sims, n_ref - kk, axis=1)[:, n_ref - kk:]
        top = np.sort(sims, axis=1)  # summed in one order, whatever the partition left
        found = np.isfinite(top)
        counts = found.sum(axis=1)
        total = np.where(found, top, 0.0).sum(axis=1, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + chunk] = np.where(counts > 0, 1.0 - total / counts, np.nan)
    return out


#: Fewest judged members for a tagged distribution to be a reference set of its own: a
#: distance to the 5 nearest of a handful of tagged images (or their median colour) is noise.
MIN_GROUP = 8


def reference_sets(rows: np.ndarray, groups: Sequence[object] | None,
                   min_group: int = MIN_GROUP) -> list[np.ndarray]:
    """The row sets the judged `rows` are compared with.

    Each tagged distribution (`groups[i]`; None/NaN/"" = untagged) with at least `min_group`
    judged members, plus the whole judged set when there is no such distribution or when a
    tagged one is too small to stand alone: its members, and the untagged images like them,
    would otherwise be compared only with other distributions and all look like outliers.
    """
    if groups is None:
        return [rows]
    labels = np.array([g if isinstance(g, str) and g else "" for g in groups], dtype=object)
    refs, too_small = [], False
    for name in sorted(set(labels[rows]) - {""}):
        members = rows[labels[rows] == name]
        if members.size >= min_group:
            refs.append(members)
        else:
            too_small = True
    if too_small or not refs:
        refs.append(rows)
    return refs


def knn_scores(embeddings: np.ndarray, judged: np.ndarray, k: int = 5,
               groups: Sequence[object] | None = None, max_refs: int = 20_000,
               seed: int = 0, min_group: int = MIN_GROUP) -> np.ndarray:
    """kNN distance per row of `embeddings` (NaN for rows not judged).

    `judged` (bool) selects the rows scored; `groups[i]` is the distribution of row i when
    known (None/NaN otherwise). The reference sets are those of `reference_sets`, and each row
    keeps its smallest distance over them. A reference set larger than `max_refs` is replaced by
    a seeded random sample of that size: exact search costs n x refs dot products, and the
    distance to the k nearest of 20,000 samples ranks outliers the same way as to the k nearest
    of all.
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    judged = np.asarray(judged, dtype=bool)
    scores = np.full(emb.shape[0], np.nan)
    rows = np.flatnonzero(judged)
    if rows.size == 0:
        return scores
    ref_sets = reference_sets(rows, groups, min_group)
    rng = np.random.default_rng(seed)
    ref_sets = [np.sort(rng.choice(r, max_refs, replace=False)) if r.size > max_refs else r
                for r in ref_sets]
    best = np.full(rows.size, np.inf)
    for ref_rows in ref_sets:
        position = np.full(emb.shape[0], -1)
        position[ref_rows] = np.arange(ref_rows.size)
        d = _knn_mean_distance(emb[rows], emb[ref_rows], k, position[rows])
        best = np.fmin(best, d)
    best[~np.isfinite(best)] = np.nan
    scores[rows] = best
    return scores


def isolation_forest_scores(embeddings: np.ndarray, judged: np.ndarray,
                            n_estimators: int = 200, seed: int = 0) -> np.ndarray:
    """IsolationForest anomaly score (higher = more anomalous) for judged rows, NaN elsewhere."""
    from sklearn.ensemble import IsolationForest

    emb = np.asarray(embeddings, dtype=np.float32)
    judged = np.asarray(judged, dtype=bool)
    scores = np.full(emb.shape[0], np.nan)
    if judged.sum() < 2:
        return scores
    forest = IsolationForest(n_estimators=n_estimators, random_state=seed)
    forest.fit(emb[judged])
    scores[judged] = -forest.score_samples(emb[judged])
    return scores


#: Raw columns that describe an image's colour style.
STYLE_COLUMNS = ("mean_l", "mean_a", "mean_b", "colourfulness")


def robust_centre_and_sd(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and robust standard deviation (1.4826 x MAD, the SD of a normal sample) of
    `values` along its first axis, NaN ignored."""
    med = np.nanmedian(values, axis=0)
    return med, 1.4826 * np.nanmedian(np.abs(values - med), axis=0)


def _robust_distance(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """RMS over features of |x - median| / (1.4826 MAD) of `ref` (robust z-scores)."""
    med, mad = robust_centre_and_sd(ref)
    scale = np.where(mad > 1e-6, mad, 1.0)
    z = (x - med) / scale
    return np.sqrt(np.nanmean(z * z, axis=1))


def colour_style_distance(style: np.ndarray, judged: np.ndarray,
                          groups: Sequence[object] | None = None,
                          min_group: int = MIN_GROUP) -> np.ndarray:
    """How far each judged row's colour style is from its closest reference set's median
    (`style` is rows x STYLE_COLUMNS; reference sets as in `reference_sets`)."""
    style = np.asarray(style, dtype=np.float64)
    judged = np.asarray(judged, dtype=bool)
    out = np.full(style.shape[0], np.nan)
    rows = np.flatnonzero(judged)
    if rows.size == 0:
        return out
    refs = reference_sets(rows, groups, min_group)
    dist = np.min(np.stack([_robust_distance(style[rows], style[r]) for r in refs]), axis=0)
    out[rows] = dist
    return out
