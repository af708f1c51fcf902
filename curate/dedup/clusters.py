"""Duplicate clusters: union-find over all edges, one image kept per cluster.

Edges come from three detectors (identical pixels, close perceptual hashes, close
embeddings); any chain of edges puts images in one cluster (A~B and B~C means A, B and C are
one photo), which is what union-find computes in near-linear time. Within a cluster the kept
image is chosen by an ordered list of criteria (params `dedup.keep`), best first:

* ``framing``: not a crop of another member, not framed by added bars, a caption strip, a
  canvas or app chrome, no text laid over (known for pairs linked by verification:
  `framing_flags`);
* ``resolution``: more pixels (a downscaled copy loses detail that cannot come back);
* ``sharpness``: crisper (`curate.dedup.hashing.sharpness`, contrast-normalised);
* ``bytes``: larger file (at equal size, usually the less compressed encode);
* ``source_priority``: the source URI matching the earliest glob of `dedup.source_priority`.

Ties after all criteria go to the smaller image id, so the choice is deterministic. Every
other member records the kept image, and the edge through which it joined the cluster
(a breadth-first walk from the kept image), so a person can see why it was linked.
"""

from __future__ import annotations

import fnmatch
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

from curate.dedup.verify import MARKED, Verdict

#: Edge kinds, strongest evidence first (a pair found by several detectors keeps the first).
KINDS = ("exact", "hash", "verified", "embedding")


@numba.njit(cache=True)
def _find(parent: np.ndarray, x: int) -> int:
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@numba.njit(cache=True)
def _union_all(n: int, edges_i: np.ndarray, edges_j: np.ndarray) -> np.ndarray:
    parent = np.arange(n)
    for k in range(edges_i.shape[0]):
        a = _find(parent, edges_i[k])
        b = _find(parent, edges_j[k])
        if a != b:  # the smaller index becomes the root: labels do not depend on edge order
            if a < b:
                parent[b] = a
            else:
                parent[a] = b
    for x in range(n):
        parent[x] = _find(parent, x)
    return parent


def components(n: int, edges_i: np.ndarray, edges_j: np.ndarray) -> np.ndarray:
    """Union-find: label of each of n nodes = smallest node index of its cluster."""
    return _union_all(n, np.asarray(edges_i, dtype=np.int64), np.asarray(edges_j, dtype=np.int64))


@dataclass(frozen=True)
class Edge:
    """Why two images are duplicates: kind, and the distance that decided it."""

    kind: str
    hash_distance: int | None
    cosine: float | None
    verdict: Verdict | None = None  # verification's, for pairs it judged (curate.dedup.verify)

    @property
    def distance(self) -> float:
        """One number per kind: 0 for exact, bits for hash, 1 - cosine for embedding, the share
        of disagreeing patches for verified."""
        if self.kind == "exact":
            return 0.0
        if self.kind == "hash":
            return float(self.hash_distance or 0)
        if self.kind == "verified" and self.verdict is not None:
            return round(1.0 - self.verdict.agreement, 6)
        return round(1.0 - float(self.cosine or 0.0), 6)


@dataclass(frozen=True)
class Candidate:
    """What the keep policy looks at for one image."""

    image_id: str
    width: int
    height: int
    sharpness: float
    bytes: int
    source_uris: tuple[str, ...]
    framing: str | None = None  # "cropped", "framed" or "marked" (framing_flags); None: clean


def source_rank(uris: Sequence[str], patterns: Sequence[str]) -> int:
    """Index of the first glob any URI matches (len(patterns) when none does)."""
    for rank, pattern in enumerate(patterns):
        if any(fnmatch.fnmatchcase(u, pattern) for u in uris):
            return rank
    return len(patterns)


def compare(a: Candidate, b: Candidate, keep: Sequence[str], patterns: Sequence[str],
            sharpness_tolerance: float = 0.0) -> int:
    """-1 when `a` is the better image to keep, 1 when `b` is (criteria in `keep` order).

    Sharpness values within `sharpness_tolerance` (relative) are a tie: the measure is
    noisy at the percent level, and JPEG block edges make a low-quality re-encode look a
    little sharper than its original.
    """
    return decide(a, b, keep, patterns, sharpness_tolerance)[0]


def decide(a: Candidate, b: Candidate, keep: Sequence[str], patterns: Sequence[str],
           sharpness_tolerance: float = 0.0) -> tuple[int, str]:
    """`compare`'s answer and the criterion that decided it ("image_id" for a full tie)."""
    for key in keep:
        if key == "framing":
            x, y = FRAMING_RANK[a.framing], FRAMING_RANK[b.framing]
        elif key == "resolution":
            x, y = b.width * b.height, a.width * a.height
        elif key == "sharpness":
            hi, lo = max(a.sharpness, b.sharpness), min(a.sharpness, b.sharpness)
            if hi <= lo * (1.0 + sharpness_tolerance):
                continue
            x, y = b.sharpness, a.sharpness
        elif key == "bytes":
            x, y = b.bytes, a.bytes
        else:
            x, y = source_rank(a.source_uris, patterns), source_rank(b.source_uris, patterns)
        if x != y:
            return (-1 if x < y else 1), key
    return (-1 if a.image_id < b.image_id else (1 if a.image_id > b.image_id else 0)), "image_id"


def choose_kept(members: Sequence[Candidate], keep: Sequence[str], patterns: Sequence[str],
                sharpness_tolerance: float = 0.0) -> Candidate:
    """The member to keep: the best by `compare`, scanning members in image id order."""
    ordered = sorted(members, key=lambda c: c.image_id)
    best = ordered[0]
    for cand in ordered[1:]:
        if compare(cand, best, keep, patterns, sharpness_tolerance) < 0:
            best = cand
    return best


#: An image shows a good part the other lacks when the other covers less than this share of
#: it (a crop of 10% or a bar of a tenth of the height is well clear of it).
_PARTLY = 0.9


def framing_flags(edges: dict[tuple[int, int], Edge]) -> dict[int, str]:
    """Members shown to be a crop of another ("cropped"), another plus added framing
    ("framed"), or another with text or a logo laid over it ("marked"), from verified edges
    whose verdict maps the second index into the first.

    Where one image shows a good part that the other lacks, verification says whether that
    part looks added (bars, a caption strip, a canvas, app chrome: that image is framed),
    photographed (the scene goes on: the other image is a crop of it), or flat without
    telling (no flag: resolution and the rest decide). A copy can be both, cropped and then
    screenshotted; each side is judged on its own.
    """
    flags: dict[int, str] = {}
    for (i, j), edge in edges.items():
        v = edge.verdict
        if v is None or not v.linked:
            continue
        for me, other, covered, added, flat in (
                (i, j, v.a_covered, v.a_rest_added, v.a_rest_flat),
                (j, i, v.b_covered, v.b_rest_added, v.b_rest_flat)):
            if covered < _PARTLY and not flat:  # `me` shows a good part `other` lacks
                flags.setdefault(me if added else other, "framed" if added else "cropped")
        if min(v.a_covered, v.b_covered) < _PARTLY:
            continue  # marks are judged between copies of one framing (resampling adds some)
        for marked, mine, theirs in ((i, v.a_marked, v.b_marked), (j, v.b_marked, v.a_marked)):
            if mine >= MARKED and mine >= 3 * theirs:
                flags.setdefault(marked, "marked")
    return flags


#: How much each framing flag counts against a copy: geometry (a crop, added framing) is
#: stronger evidence than marks, which a copy's own sharpening can imitate.
FRAMING_RANK = {None: 0, "marked": 1, "cropped": 2, "framed": 2}


def adjacency(edges: dict[tuple[int, int], Edge]) -> dict[int, list[tuple[int, Edge]]]:
    """Neighbour lists, strongest evidence first (kind, then distance, then index)."""
    adj: dict[int, list[tuple[int, Edge]]] = {}
    for (a, b), edge in edges.items():
        adj.setdefault(a, []).append((b, edge))
        adj.setdefault(b, []).append((a, edge))
    for neighbours in adj.values():
        neighbours.sort(key=lambda ne: (KINDS.index(ne[1].kind), ne[1].distance, ne[0]))
    return adj


def link_paths(kept: int, adj: dict[int, list[tuple[int, Edge]]]) -> dict[int, tuple[int, Edge]]:
    """For each other member of kept's cluster: (neighbour towards kept, edge), breadth-first.

    Direct edges to the kept image are found first, and a node's strongest edges are tried
    first, so each link is explained with the best evidence available.
    """
    links: dict[int, tuple[int, Edge]] = {}
    queue = deque([kept])
    seen = {kept}
    while queue:
        node = queue.popleft()
        for other, edge in adj.get(node, ()):
            if other not in seen:
                seen.add(other)
                links[other] = (node, edge)
                queue.append(other)
    return links
