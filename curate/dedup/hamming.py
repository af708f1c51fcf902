"""All pairs of hashes within a Hamming radius: exact, and sub-quadratic in practice.

`hamming_pairs(hashes, t)` returns every pair (i < j) with popcount(h_i ^ h_j) <= t, exactly
the pairs a brute-force double loop finds (tested against `brute_force_pairs`).

Method: multi-index hashing (Norouzi, Punjani & Fleet, "Fast Search in Hamming Space with
Multi-Index Hashing", CVPR 2012). The hash bits are cut into m disjoint chunks; by the
pigeonhole principle two hashes within distance t agree to within r = floor(t / m) bits on
at least one chunk. For each chunk, the hashes are sorted by that chunk's value (a table of
buckets); a query visits, in each table, the buckets whose key is within r bits of its own
chunk, and checks the full distance of the hashes found there. A pair found through several
chunks is emitted only by the first chunk that can find it, so no pair is reported twice.

m is chosen by a cost model (bucket probes plus expected candidates for uniformly spread
hashes); when even the best m costs more than comparing all pairs, which happens for small
sets or large radii, the blockwise brute force runs instead. Both kernels are compiled with
numba and run in parallel over the queries (a counting pass, then a filling pass), with a
hardware popcount. Memory is O(n * m) plus the output: at 1M hashes, about 100 MB.
"""

from __future__ import annotations

import math
from itertools import combinations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

#: Chunks wider than this would need bucket tables too large to be worth it.
MAX_CHUNK_BITS = 24
#: Relative cost of visiting one bucket pair vs checking one candidate pair.
BUCKET_COST = 2.0


@intrinsic
def _popcount(typingctx, x):  # type: ignore[no-untyped-def]
    """LLVM's ctpop: one POPCNT instruction on x86-64."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ctpop(args[0])

    return sig, codegen


# --------------------------------------------------------------------------- brute force


@numba.njit(parallel=True, cache=True)
def _brute_count(h: np.ndarray, t: int) -> np.ndarray:
    n = h.shape[0]
    counts = np.zeros(n, dtype=np.int64)
    for i in numba.prange(n):
        hi = h[i]
        c = 0
        for j in range(i + 1, n):
            if _popcount(hi ^ h[j]) <= t:
                c += 1
        counts[i] = c
    return counts


@numba.njit(parallel=True, cache=True)
def _brute_fill(h: np.ndarray, t: int, offsets: np.ndarray, out_i: np.ndarray,
                out_j: np.ndarray, out_d: np.ndarray) -> None:
    n = h.shape[0]
    for i in numba.prange(n):
        hi = h[i]
        k = offsets[i]
        for j in range(i + 1, n):
            d = _popcount(hi ^ h[j])
            if d <= t:
                out_i[k] = i
                out_j[k] = j
                out_d[k] = d
                k += 1


def brute_force_pairs(hashes: np.ndarray, threshold: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference (and small-n) search: every pair compared, O(n^2) popcounts."""
    h = np.ascontiguousarray(hashes, dtype=np.uint64)
    counts = _brute_count(h, threshold)
    offsets, total = _offsets(counts)
    out_i, out_j, out_d = _alloc(total)
    _brute_fill(h, threshold, offsets, out_i, out_j, out_d)
    return out_i, out_j, out_d


# --------------------------------------------------------------------------- multi-index


@numba.njit(parallel=True, cache=True)
def _join_pass(sorted_h: np.ndarray, sorted_idx: np.ndarray, starts: np.ndarray, width: int,
               flips: np.ndarray, t: int, radius: int, prev_shifts: np.ndarray,
               prev_widths: np.ndarray, fill: bool, offsets: np.ndarray, out_i: np.ndarray,
               out_j: np.ndarray, out_d: np.ndarray) -> np.ndarray:
    """Count (fill=False) or write (fill=True) the pairs one chunk's table can find.

    Each bucket b is joined with the buckets b ^ f for every flip mask f (keys within
    `radius` bits); each unordered bucket pair is visited once (b <= b ^ f). Both buckets
    are contiguous runs of the sorted arrays, so the scan streams through memory.
    """
    n_buckets = np.int64(1) << np.int64(width)
    counts = np.zeros(n_buckets, dtype=np.int64)
    for b in numba.prange(n_buckets):
        lo1 = starts[b]
        hi1 = starts[b + 1]
        if lo1 == hi1:
            continue
        k = offsets[b] if fill else np.int64(0)
        c = 0
        for f in range(flips.shape[0]):
            b2 = b ^ flips[f]
            if b2 < b:
                continue
            lo2 = starts[b2]
            hi2 = starts[b2 + 1]
            for x in range(lo1, hi1):
                hx = sorted_h[x]
                for y in range(x + 1 if b2 == b else lo2, hi2):
                    diff = hx ^ sorted_h[y]
                    d = _popcount(diff)
                    if d <= t:
                        # Emit only from the first chunk within `radius` (no duplicates).
                        first = True
                        for e in range(prev_shifts.shape[0]):
                            em = (np.uint64(1) << np.uint64(prev_widths[e])) - np.uint64(1)
                            if _popcount((diff >> np.uint64(prev_shifts[e])) & em) <= radius:
                                first = False
                                break
                        if first:
                            if fill:
                                a = sorted_idx[x]
                                z = sorted_idx[y]
                                out_i[k] = min(a, z)
                                out_j[k] = max(a, z)
                                out_d[k] = d
                                k += 1
                            c += 1
        counts[b] = c
    return counts


def _flip_masks(width: int, radius: int) -> np.ndarray:
    """Every `width`-bit mask with at most `radius` bits set."""
    masks = [0]
    for r in range(1, radius + 1):
        masks.extend(sum(1 << b for b in bits) for bits in combinations(range(width), r))
    return np.asarray(masks, dtype=np.int64)


def _probes(width: int, radius: int) -> int:
    return sum(math.comb(width, r) for r in range(radius + 1))


def _chunk_widths(bits: int, m: int) -> list[int]:
    base, extra = divmod(bits, m)
    return [base + (1 if c < extra else 0) for c in range(m)]


def plan(n: int, threshold: int, bits: int = 64) -> tuple[int, float]:
    """(chunks, cost) of the cheapest multi-index layout, in pair checks.

    Per chunk of w bits and radius r: P(w, r) flip masks, each joining 2^w bucket pairs
    holding n^2 / 2^w candidate pairs between them (uniformly spread hashes), halved
    because each unordered bucket pair is visited once. Compare with brute force's n^2 / 2.
    """
    lowest = math.ceil(bits / MAX_CHUNK_BITS)
    best_m, best_cost = lowest, math.inf
    for m in range(lowest, max(lowest, min(threshold + 1, bits)) + 1):
        radius = threshold // m
        cost = sum(_probes(w, radius) * (BUCKET_COST * 2.0**w + n * n / 2.0**w) / 2.0
                   for w in _chunk_widths(bits, m))
        if cost < best_cost:
            best_m, best_cost = m, cost
    return best_m, best_cost


def mih_pairs(hashes: np.ndarray, threshold: int, m: int, bits: int = 64
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multi-index hashing search with `m` chunks (see the module docstring); unsorted."""
    h = np.ascontiguousarray(hashes, dtype=np.uint64)
    widths = _chunk_widths(bits, m)
    shifts = [sum(widths[:c]) for c in range(m)]
    radius = threshold // m
    parts = []
    for c in range(m):
        w = widths[c]
        keys = ((h >> np.uint64(shifts[c])) & np.uint64((1 << w) - 1)).astype(np.int64)
        order = np.argsort(keys, kind="stable")
        starts = np.zeros((1 << w) + 1, dtype=np.int64)
        np.cumsum(np.bincount(keys, minlength=1 << w), out=starts[1:])
        args = (h[order], order.astype(np.int64), starts, w, _flip_masks(w, radius), threshold,
                radius, np.asarray(shifts[:c], dtype=np.int64),
                np.asarray(widths[:c], dtype=np.int64))
        empty = _alloc(0)
        counts = _join_pass(*args, False, np.zeros(1 << w, dtype=np.int64), *empty)
        offsets, total = _offsets(counts)
        out = _alloc(total)
        _join_pass(*args, True, offsets, *out)
        parts.append(out)
    i, j, d = (np.concatenate([p[k] for p in parts]) for k in range(3))
    return i, j, d


# --------------------------------------------------------------------------- entry point


def _offsets(counts: np.ndarray) -> tuple[np.ndarray, int]:
    offsets = np.zeros(len(counts), dtype=np.int64)
    if len(counts):
        np.cumsum(counts[:-1], out=offsets[1:])
    return offsets, int(counts.sum())


def _alloc(total: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.empty(total, dtype=np.int64), np.empty(total, dtype=np.int64),
            np.empty(total, dtype=np.uint8))


def hamming_pairs(hashes: np.ndarray, threshold: int, bits: int = 64,
                  method: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i, j, distance) with i < j and Hamming distance <= `threshold`.

    `hashes` are integers of at most `bits` bits (uint64). Pairs come sorted by (i, j).
    `method`: "auto" (cost model), "mih" or "brute".
    """
    h = np.ascontiguousarray(hashes, dtype=np.uint64)
    if not 0 < bits <= 64:
        raise ValueError(f"bits must be 1..64, got {bits}")
    if threshold < 0:
        return _alloc(0)
    if method not in ("auto", "mih", "brute"):
        raise ValueError(f"method must be auto, mih or brute, got {method!r}")
    m, cost = plan(len(h), threshold, bits)
    brute = method == "brute" or (method == "auto" and cost >= len(h) * len(h) / 2.0)
    if brute or len(h) < 2:
        return brute_force_pairs(h, threshold)
    i, j, d = mih_pairs(h, threshold, m, bits)
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]
