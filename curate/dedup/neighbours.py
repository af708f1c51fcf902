"""Embedding neighbours of every row, kept between runs and updated with the new rows only.

Dedup asks two things of the embeddings: every pair of images at or above
`dedup.cosine_threshold` (embedding links), and each row's nearest rows (repost candidates;
a framed image has a second row, its content box). One exact pass over all pairs gives both,
n^2 d / 2 multiply-adds: 44 s at 40k images on two cores (`bench/scale.py`), six times that at
100k. A rerun after adding 1% of the images would pay it again whole, so the result is kept
(`save`, one file per settings) and the next run (`search` with `previous`) compares only
its new rows with all rows: the new rows get their lists, and a kept row's list takes in the
new rows that beat its last entry. A row whose vector changed counts as removed and new.
Removed rows leave the lists they were in; a list that can no longer prove its first `width`
entries (below) is searched again, alone.

Each list holds `width + MARGIN` rows and a `bound`: no row outside the list is more similar
than `bound`. Its first `width` entries are exact when the `width`-th is above `bound`;
otherwise (near-ties at the edge, after removals) the row is searched again against all.

The answer does not depend on the path taken: similarities come from blockwise float32
matrix products, whose last bits depend on the block shapes, so they only select candidates
(with a margin `EPS` above their error) and every decision and stored value uses the
canonical similarity (`canonical`: one fixed loop, whatever the path), with ties broken by
row key. A search from scratch and any sequence of updates give the same pairs and the same
first `width` rows of every list (tested); the margin past them may differ where rows tie.

Memory: the lists (width + margin entries per row, 9 bytes each) and one tile of
`_ROWS` x `_COLS` similarities, whatever the row count.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations, pairwise
from pathlib import Path

import numpy as np

from core import atomic

#: Rows listed beyond `width`, so that a near-tie at the edge rarely forces a search again.
MARGIN = 8
#: Larger than any difference between a float32 matrix product's similarity and the
#: canonical one for unit vectors of up to 1,600 dimensions: each is within d * 2^-24 of the
#: true value (1e-4 at 1,600, worst case; measured differences are below 1e-6). `MAX_DIM`
#: keeps that true.
EPS = 2e-4
MAX_DIM = 1600
#: Tile of similarities computed at once (float32): 32 MB.
_ROWS, _COLS = 2048, 4096
#: Pairs whose canonical similarity is computed at once (a gathered copy of each side).
_CANONICAL_CHUNK = 2048
#: Share of the rows above which an update would cost about a search from scratch.
_REBUILD_SHARE = 0.5
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SearchSpec:
    """What a search finds: `width` nearest rows of each row (other owners only, at least
    `floor` similar), and every pair of primary rows at least `threshold` similar."""

    width: int
    floor: float
    threshold: float


@dataclass
class Neighbours:
    """A search's result, and the state the next run starts from.

    Row `r` is `keys[r]`; `lists[r]` are row indices, most similar first (-1 pads), with
    canonical similarities `sims[r]`; `bound[r]` bounds the similarity of every row not in
    the list. `pairs` are (i, j) with i < j, `pair_sims` their similarities.
    """

    spec: SearchSpec
    keys: np.ndarray  # bytes, one per row
    digests: np.ndarray  # uint64 digest of each row's vector
    lists: np.ndarray  # int32 (rows, width + MARGIN)
    sims: np.ndarray  # float32, same shape
    bound: np.ndarray  # float32 (rows,)
    pairs: np.ndarray  # int32 (n, 2)
    pair_sims: np.ndarray  # float32 (n,)
    searched: int = 0  # rows compared with all rows in this run (new, changed or re-proved)
    rows: np.ndarray | None = None  # the caller's number of each row (`search`'s valid rows)
    owners: np.ndarray | None = None  # the caller's owner of each row (set by `search`)

    def caller_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`pairs` as (i, j, similarity) in the caller's row numbers, sorted by (i, j) (the
        valid rows keep the caller's order, so the search's order carries over)."""
        rows = self.rows if self.rows is not None else np.arange(len(self.keys))
        i, j = rows[self.pairs[:, 0]], rows[self.pairs[:, 1]]
        return i.astype(np.int64), j.astype(np.int64), self.pair_sims


def digests(vectors: np.ndarray) -> np.ndarray:
    """A 64-bit digest of each row's float32 bytes: a changed vector is a new row."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    return np.array([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(),
                                    "little") for row in v], dtype=np.uint64)


def canonical(vectors: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Similarity of rows i[k] and j[k] by one fixed loop (numpy's einsum, not BLAS, whose
    kernels depend on the matrix shapes): the same bits whichever search path asked."""
    out = np.empty(len(i), dtype=np.float32)
    for a in range(0, len(i), _CANONICAL_CHUNK):
        out[a:a + _CANONICAL_CHUNK] = np.einsum("ij,ij->i", vectors[i[a:a + _CANONICAL_CHUNK]],
                                                vectors[j[a:a + _CANONICAL_CHUNK]])
    return out


class _Lists:
    """The lists under construction: values are canonical where `exact`, else a matrix
    product's (within EPS)."""

    def __init__(self, n: int, size: int) -> None:
        self.size = size
        self.idx = np.full((n, size), -1, dtype=np.int32)
        self.val = np.full((n, size), -np.inf, dtype=np.float32)
        self.exact = np.zeros((n, size), dtype=bool)
        self.bound = np.full(n, -np.inf, dtype=np.float32)

    def bar(self, rows: np.ndarray, floor: float) -> np.ndarray:
        """The similarity a candidate must reach to enter each row's list."""
        return np.maximum(self.val[rows, -1], np.float32(floor - EPS))

    def offer(self, rows: np.ndarray, cols: np.ndarray, sims: np.ndarray, floor: float,
              by_column: bool = False) -> None:
        """Offer a tile of similarities (`sims[r, c]`: row `rows[r]` to row `cols[c]`, -inf
        where not allowed) to the lists of `rows`, or of `cols` when `by_column`; each list
        keeps its `size` largest. The tile is read in its own layout either way."""
        if self.size == 0 or sims.size == 0:
            return
        owners, others, axis = (cols, rows, 0) if by_column else (rows, cols, 1)
        bar = self.bar(owners, floor)
        hit = sims >= (bar[None, :] if by_column else bar[:, None])
        many = np.flatnonzero(hit.sum(axis=axis) > self.size)
        if many.size:  # first fills: those lists take their `size` best by partition
            if by_column:
                hit[:, many] = False
            else:
                hit[many] = False
        ti, tj = np.nonzero(hit)
        mine, theirs = (tj, ti) if by_column else (ti, tj)
        values = sims[ti, tj]
        if many.size:
            part = sims[:, many].T if by_column else sims[many]
            best = np.argpartition(-part, self.size - 1, axis=1)[:, :self.size]
            mine = np.concatenate([mine, np.repeat(many, self.size)])
            theirs = np.concatenate([theirs, best.ravel()])
            values = np.concatenate([values, np.take_along_axis(part, best, axis=1).ravel()])
        if mine.size == 0:
            return
        counts = np.bincount(mine, minlength=len(owners))
        touched = np.flatnonzero(counts)
        slot = np.zeros(len(owners), dtype=np.int64)
        slot[touched] = np.arange(touched.size)
        order = np.argsort(mine, kind="stable")
        mine, theirs, values = mine[order], theirs[order], values[order]
        starts = np.zeros(len(owners) + 1, dtype=np.int64)
        np.cumsum(counts, out=starts[1:])
        pos = np.arange(mine.size) - starts[mine]
        cand_idx = np.full((touched.size, int(counts.max())), -1, dtype=np.int32)
        cand_val = np.full(cand_idx.shape, -np.inf, dtype=np.float32)
        cand_idx[slot[mine], pos] = others[theirs]
        cand_val[slot[mine], pos] = values
        self._merge(owners[touched], cand_idx, cand_val)

    def _merge(self, rows: np.ndarray, idx: np.ndarray, val: np.ndarray) -> None:
        all_idx = np.concatenate([self.idx[rows], idx], axis=1)
        all_val = np.concatenate([self.val[rows], val], axis=1)
        all_exact = np.concatenate([self.exact[rows], np.zeros(idx.shape, dtype=bool)], axis=1)
        best = np.argsort(-all_val, axis=1, kind="stable")[:, :self.size]
        self.idx[rows] = np.take_along_axis(all_idx, best, axis=1)
        self.val[rows] = np.take_along_axis(all_val, best, axis=1)
        self.exact[rows] = np.take_along_axis(all_exact, best, axis=1)


def search(keys: Sequence[str], owners: np.ndarray, vectors: np.ndarray, primary: np.ndarray,
           spec: SearchSpec, previous: Neighbours | None = None) -> Neighbours:
    """Lists and pairs of `vectors` (L2-normalised rows; rows of NaN take part in nothing),
    from `previous` where it still holds.

    `owners[r]`: the image row r belongs to (rows of one owner are never listed for each
    other); `primary[r]`: whether the row takes part in `pairs` (an image, not a crop of one).
    The result numbers the valid rows only; `Neighbours.rows` maps them back.
    """
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2 or v.shape[1] > MAX_DIM:
        raise ValueError(f"vectors must be (rows, at most {MAX_DIM}), got {v.shape}")
    valid = ~np.isnan(v).any(axis=1) if len(v) else np.zeros(0, dtype=bool)
    rows = np.flatnonzero(valid)
    found = _search_valid([keys[r] for r in rows], np.asarray(owners)[rows], v[rows],
                          np.asarray(primary, dtype=bool)[rows], spec, previous)
    found.rows, found.owners = rows, np.asarray(owners, dtype=np.int64)[rows]
    return found


def _search_valid(keys: list[str], owners: np.ndarray, v: np.ndarray, primary: np.ndarray,
                  spec: SearchSpec, previous: Neighbours | None) -> Neighbours:
    n = len(keys)
    size = spec.width + MARGIN if spec.width else 0
    key_bytes = np.array([k.encode() for k in keys], dtype=bytes)
    rank = np.empty(n, dtype=np.int64)  # tie-break: row key order
    rank[np.argsort(key_bytes, kind="stable")] = np.arange(n)
    dig = digests(v)
    lists = _Lists(n, size)
    new = np.ones(n, dtype=bool)
    kept_pairs = np.empty((0, 2), dtype=np.int32)
    kept_sims = np.empty(0, dtype=np.float32)
    if previous is not None and previous.spec == spec:
        old_to_new, new = _carry(previous, key_bytes, dig, lists)
        if new.sum() > _REBUILD_SHARE * n:
            lists, new = _Lists(n, size), np.ones(n, dtype=bool)
        else:
            kept_pairs, kept_sims = _carry_pairs(previous, old_to_new)
    queries = np.flatnonzero(new)
    siblings = _Siblings(owners)
    found_pairs = _scan(v, siblings, primary, queries, ~new, lists, spec)
    pair_list, pair_sims = _exact_pairs(v, found_pairs, spec.threshold)
    pairs = np.concatenate([kept_pairs, pair_list])
    psims = np.concatenate([kept_sims, pair_sims])
    order = np.lexsort((pairs[:, 1], pairs[:, 0])) if len(pairs) else np.zeros(0, np.int64)
    searched = queries.size
    if size:
        _finish(v, lists, rank, spec)
        unsure = _unproven(lists, spec)
        if unsure.size:
            _search_rows(v, siblings, unsure, lists, rank, spec)
        searched += int(np.setdiff1d(unsure, queries).size)
    return Neighbours(spec, key_bytes, dig, lists.idx, lists.val, lists.bound,
                      pairs[order].astype(np.int32), psims[order], searched)


def _carry(previous: Neighbours, key_bytes: np.ndarray, dig: np.ndarray, lists: _Lists
           ) -> tuple[np.ndarray, np.ndarray]:
    """Move the previous lists of rows with an unchanged vector into `lists` (entries of
    rows gone or changed removed); return the old-to-new row map (-1: gone) and which rows
    are new."""
    where = {k: r for r, k in enumerate(key_bytes.tolist())}
    old_to_new = np.array([where.get(k, -1) for k in previous.keys.tolist()], dtype=np.int64)
    same = old_to_new >= 0
    same[same] = dig[old_to_new[same]] == previous.digests[same]
    old_to_new[~same] = -1
    new = np.ones(len(key_bytes), dtype=bool)
    new[old_to_new[same]] = False
    if lists.size and len(previous.lists):
        old_rows = np.flatnonzero(same)
        targets = old_to_new[old_rows]
        old_lists = previous.lists[old_rows]
        mapped = np.where(old_lists >= 0, old_to_new[np.maximum(old_lists, 0)], -1)
        val = np.where(mapped >= 0, previous.sims[old_rows], -np.inf).astype(np.float32)
        order = np.argsort(-val, axis=1, kind="stable")  # gaps to the end, order kept
        lists.idx[targets] = np.take_along_axis(mapped, order, axis=1)
        lists.val[targets] = np.take_along_axis(val, order, axis=1)
        lists.exact[targets] = True
        lists.bound[targets] = previous.bound[old_rows]
    return old_to_new, new


def _carry_pairs(previous: Neighbours, old_to_new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not len(previous.pairs):
        return np.empty((0, 2), dtype=np.int32), np.empty(0, dtype=np.float32)
    mapped = old_to_new[previous.pairs]
    keep = (mapped >= 0).all(axis=1)
    both = np.sort(mapped[keep], axis=1)
    return both.astype(np.int32), previous.pair_sims[keep]


def _scan(v: np.ndarray, siblings: _Siblings, primary: np.ndarray, queries: np.ndarray,
          others: np.ndarray, lists: _Lists, spec: SearchSpec) -> np.ndarray:
    """Compare the query rows with every row (the upper triangle among the queries once) and
    offer what they find to both sides' lists; return the candidate pairs of primary rows
    at least `threshold - EPS` similar by the matrix product."""
    rest = np.flatnonzero(others)
    found: list[np.ndarray] = []
    for a in range(0, queries.size, _ROWS):
        block = queries[a:a + _ROWS]
        q = v[block]
        col_blocks = [(queries[b:b + _COLS], b == a) for b in range(a, queries.size, _COLS)]
        col_blocks += [(rest[b:b + _COLS], False) for b in range(0, rest.size, _COLS)]
        for cols, diagonal in col_blocks:
            sims = q @ v[cols].T
            siblings.mask(sims, block, cols)
            if diagonal:  # queries among themselves: each pair once, from its first row
                sims[np.tri(len(block), len(cols), dtype=bool)] = -np.inf
            found.append(_threshold_hits(sims, block, cols, primary, spec.threshold))
            lists.offer(block, cols, sims, spec.floor)
            lists.offer(block, cols, sims, spec.floor, by_column=True)
    return np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)


class _Siblings:
    """Rows that share an owner (an image and its content box): never each other's
    neighbours. Few, so a tile masks them from a list instead of comparing every owner."""

    def __init__(self, owners: np.ndarray) -> None:
        order = np.argsort(owners, kind="stable")
        starts = np.flatnonzero(np.r_[True, owners[order][1:] != owners[order][:-1], True])
        pairs = [pair for lo, hi in pairwise(starts) if hi - lo > 1
                 for pair in combinations(order[lo:hi].tolist(), 2)]
        both = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        self.pairs = np.concatenate([both, both[:, ::-1]])
        self.n = len(owners)

    def mask(self, sims: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
        if not len(self.pairs):
            return
        at_row = np.full(self.n, -1, dtype=np.int64)
        at_row[rows] = np.arange(len(rows))
        at_col = np.full(self.n, -1, dtype=np.int64)
        at_col[cols] = np.arange(len(cols))
        r, c = at_row[self.pairs[:, 0]], at_col[self.pairs[:, 1]]
        inside = (r >= 0) & (c >= 0)
        sims[r[inside], c[inside]] = -np.inf


def _threshold_hits(sims: np.ndarray, rows: np.ndarray, cols: np.ndarray, primary: np.ndarray,
                    threshold: float) -> np.ndarray:
    rr, cc = np.nonzero(sims >= np.float32(threshold - EPS))
    keep = primary[rows[rr]] & primary[cols[cc]]
    pairs = np.stack([rows[rr[keep]], cols[cc[keep]]], axis=1)
    return np.sort(pairs, axis=1)


def _exact_pairs(v: np.ndarray, candidates: np.ndarray, threshold: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    sims = canonical(v, candidates[:, 0], candidates[:, 1])
    keep = sims >= np.float32(threshold)
    return candidates[keep].astype(np.int32), sims[keep]


def _finish(v: np.ndarray, lists: _Lists, rank: np.ndarray, spec: SearchSpec) -> None:
    """Canonical similarities for the entries that lack them, lists sorted by (similarity
    descending, key), entries under `floor` dropped, and each full list's bound raised to
    what it may have turned away (its last matrix-product value, plus EPS)."""
    full = lists.idx[:, -1] >= 0  # a full list turned away rows below its last entry
    edge = np.where(full, lists.val[:, -1] + np.float32(EPS), -np.inf).astype(np.float32)
    lists.bound = np.maximum(lists.bound, edge)
    rr, cc = np.nonzero(~lists.exact & (lists.idx >= 0))
    if rr.size:
        lists.val[rr, cc] = canonical(v, rr, lists.idx[rr, cc])
        lists.exact[rr, cc] = True
    _sort_rows(lists, np.unique(rr), rank, spec.floor)


def _sort_rows(lists: _Lists, rows: np.ndarray, rank: np.ndarray, floor: float) -> None:
    if not rows.size:
        return
    idx, val = lists.idx[rows], lists.val[rows]
    val = np.where((idx >= 0) & (val >= np.float32(floor)), val, -np.inf).astype(np.float32)
    idx = np.where(np.isfinite(val), idx, -1)
    tie = np.where(idx >= 0, rank[np.maximum(idx, 0)], np.iinfo(np.int64).max)
    order = np.lexsort((tie, -val), axis=1) if val.size else np.zeros_like(idx, np.int64)
    lists.idx[rows] = np.take_along_axis(idx, order, axis=1)
    lists.val[rows] = np.take_along_axis(val, order, axis=1)


def _unproven(lists: _Lists, spec: SearchSpec) -> np.ndarray:
    """Rows whose first `width` entries may miss a row outside the list: the `width`-th is
    not above the bound (or the list ran short while the bound reaches the floor)."""
    w = spec.width
    nth = lists.val[:, w - 1]
    short = lists.idx[:, w - 1] < 0
    doubt = np.where(short, lists.bound >= np.float32(spec.floor), nth <= lists.bound)
    return np.flatnonzero(doubt)


def _search_rows(v: np.ndarray, siblings: _Siblings, rows: np.ndarray, lists: _Lists,
                 rank: np.ndarray, spec: SearchSpec) -> None:
    """Search `rows` again against every row, deciding on canonical similarities: every
    row that may rank in the first `width` is scored exactly."""
    size = lists.size
    step = int(np.clip(2**23 // max(len(v), 1), 16, _ROWS))  # ~32 MB of similarities
    for a in range(0, rows.size, step):
        block = rows[a:a + step]
        sims = v[block] @ v.T
        siblings.mask(sims, block, np.arange(len(v)))
        sims[np.arange(len(block)), block] = -np.inf  # never one's own neighbour
        for r, row in enumerate(block):
            s = sims[r]
            above = np.flatnonzero(s >= np.float32(spec.floor - EPS))
            if above.size > spec.width:
                nth = np.partition(s[above], above.size - spec.width)[above.size - spec.width]
                cut = max(float(nth) - 3 * EPS, spec.floor - EPS)
            else:
                cut = spec.floor - EPS
            cand = np.flatnonzero(s >= np.float32(cut))
            exact = canonical(v, np.full(cand.size, row), cand)
            ok = exact >= np.float32(spec.floor)
            cand, exact = cand[ok], exact[ok]
            order = np.lexsort((rank[cand], -exact))
            cand, exact = cand[order], exact[order]
            lists.idx[row] = -1
            lists.val[row] = -np.inf
            lists.idx[row, :min(size, cand.size)] = cand[:size]
            lists.val[row, :min(size, cand.size)] = exact[:size]
            lists.exact[row] = True
            outside = exact[size:].max() if cand.size > size else -np.inf
            lists.bound[row] = max(float(outside), cut + EPS if cut > spec.floor - EPS
                                   else -np.inf)


def owner_pairs(found: Neighbours, k: int) -> np.ndarray:
    """Pairs (a, b), a < b, of owners (the caller's, as `search` was given them) among each
    other's `k` nearest: each row's list walked in order, its first `k` distinct owners
    taken (`found.spec.width` rows per row cover `k` owners even where images have two)."""
    idx = found.lists[:, :found.spec.width]
    if not idx.size:
        return np.empty((0, 2), dtype=np.int64)
    assert found.owners is not None, "owner_pairs needs a result of `search`"
    owner = found.owners
    listed = idx >= 0
    theirs = np.where(listed, owner[np.maximum(idx, 0)], -1)
    repeat = np.zeros_like(listed)
    for p in range(1, theirs.shape[1]):
        repeat[:, p] = (theirs[:, :p] == theirs[:, p:p + 1]).any(axis=1)
    take = listed & ~repeat
    take &= np.cumsum(take, axis=1) <= k
    rr, cc = np.nonzero(take)
    pairs = np.sort(np.stack([owner[rr], theirs[rr, cc]], axis=1), axis=1)
    return np.unique(pairs, axis=0)


# --------------------------------------------------------------------------- persistence


def save(path: Path, found: Neighbours) -> None:
    """Write `found` for the next run (atomically: a killed run leaves the previous file)."""
    s = found.spec
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, version=FORMAT_VERSION, spec=np.array([s.width, s.floor, s.threshold]),
                 keys=found.keys, digests=found.digests, lists=found.lists, sims=found.sims,
                 bound=found.bound, pairs=found.pairs, pair_sims=found.pair_sims)


def load(path: Path, spec: SearchSpec) -> Neighbours | None:
    """The state `save` wrote for `spec`, or None (none, another format or settings, or
    unreadable: the search then starts from scratch)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            width, floor, threshold = z["spec"].tolist()
            saved = SearchSpec(int(width), float(floor), float(threshold))
            if int(z["version"]) != FORMAT_VERSION or saved != spec:
                return None
            found = Neighbours(spec, z["keys"], z["digests"], z["lists"], z["sims"], z["bound"],
                               z["pairs"].reshape(-1, 2), z["pair_sims"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return found if _consistent(found) else None


def _consistent(found: Neighbours) -> bool:
    """Shapes and row numbers that `search` can use (a file written by another tool, or
    damaged inside an intact archive, is not)."""
    n, size = len(found.keys), found.spec.width + MARGIN if found.spec.width else 0
    return (found.digests.shape == (n,) and found.lists.shape == (n, size)
            and found.sims.shape == (n, size) and found.bound.shape == (n,)
            and len(found.pair_sims) == len(found.pairs)
            and bool(((found.lists >= -1) & (found.lists < n)).all())
            and bool(((found.pairs >= 0) & (found.pairs < n)).all()))
