"""The duplicate graph: edges between images from their features, clusters, and the columns
each image gets (kept or duplicate, and the link that explains it).

No I/O here: the stage (`curate.stages.dedup`) computes the features, the decoded-pixel
digests and the repost verdicts (all cached per image or pair) and hands them in.
Images are indices into ``Features.ids``; an edge's key is a pair of indices, smaller first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from curate.dedup import clusters as cl
from curate.dedup.borders import Box
from curate.dedup.config import DedupConfig
from curate.dedup.hamming import hamming_pairs

if TYPE_CHECKING:
    from curate.dedup.verify import Verdict

Pair = tuple[int, int]

#: Columns the dedup stage adds to the manifest, in order.
DEDUP_COLUMNS = ("perceptual_hash", "cluster_id", "cluster_size", "duplicate_of", "dup_kind",
                 "distance", "linked_to", "hash_distance", "cosine", "kept_because",
                 "transform", "transform_scale", "transform_rotation_deg", "transform_mirror",
                 "transform_box", "framing")
#: Pairs this close (and of one size) get their decoded pixels compared: two decoders of
#: identical pixels (a JPEG decoded at reduced scale, its PNG copy) can differ by a bit or two.
EXACT_MAX_BITS = 2


@dataclass
class Features:
    """Per live image: hash, sharpness, embedding (row-aligned with `ids`)."""

    ids: list[str]
    hashes: np.ndarray
    sharpness: np.ndarray
    blank: np.ndarray  # no perceptual content: compared by exact pixels only
    vectors: np.ndarray | None
    errors: dict[str, str] = field(default_factory=dict)
    content: list[Box] = field(default_factory=list)  # photo inside added framing
    framed_vectors: np.ndarray | None = None  # embeddings of the framed images' content ...
    framed_owners: np.ndarray | None = None  # ... whose they are (indices into ids) ...
    framed_keys: list[str] = field(default_factory=list)  # ... and their embedding keys


def edges(feats: Features, dims: list[tuple[int, int]], cfg: DedupConfig, hash_bits: int,
          pixel_digests: Callable[[list[int]], Mapping[str, str]],
          similar: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
          ) -> dict[Pair, cl.Edge]:
    """Hash, exact-pixel and embedding edges between live images.

    ``dims`` are the images' (width, height); ``pixel_digests(indices)`` returns the decoded
    pixels' digest by image id, asked only for pairs that may be identical (hashes within
    `EXACT_MAX_BITS` and one size, or two blank images of one size). ``similar``: the pairs
    (i, j, cosine) of images at least `cfg.cosine_threshold` similar by embedding
    (`curate.dedup.neighbours`), given when ``feats.vectors`` is.
    """
    live = np.flatnonzero(~feats.blank)
    hi, hj, hd = hamming_pairs(feats.hashes[live], cfg.hash_threshold, hash_bits)
    pairs: dict[Pair, list[Any]] = {
        (int(live[a]), int(live[b])): ["hash", int(d), None] for a, b, d in zip(hi, hj, hd)}
    same = [(a, b) for (a, b), (_, d, _) in pairs.items()
            if d <= EXACT_MAX_BITS and dims[a] == dims[b]]
    by_dims: dict[tuple[int, int], list[int]] = {}
    for k in np.flatnonzero(feats.blank):  # blank images: candidates when sizes match
        by_dims.setdefault(dims[k], []).append(int(k))
    for group in by_dims.values():
        for b in group[1:]:
            pairs[(group[0], b)] = ["blank", popcount(feats.hashes, group[0], b), None]
            same.append((group[0], b))
    if same:
        digests = pixel_digests(sorted({x for pair in same for x in pair}))
        for a, b in same:
            da, db = digests.get(feats.ids[a]), digests.get(feats.ids[b])
            if da is not None and da == db:
                pairs[(a, b)][0] = "exact"
        pairs = {k: v for k, v in pairs.items() if v[0] != "blank"}
    if feats.vectors is not None:
        assert similar is not None, "embedding pairs are searched by the caller"
        for a, b, s in zip(*similar):
            key = (int(a), int(b))
            if key in pairs:
                pairs[key][2] = float(s)
            else:
                pairs[key] = ["embedding", popcount(feats.hashes, a, b), float(s)]
        for (a, b), entry in pairs.items():
            if entry[2] is None:
                entry[2] = cosine(feats.vectors, a, b)
    return {k: cl.Edge(kind, d, cos) for k, (kind, d, cos) in pairs.items()}


def pairs_to_verify(feats: Features, found: dict[Pair, cl.Edge], near: list[Pair]) -> list[Pair]:
    """The embedding neighbours ``near`` and the hash-linked pairs, neither blank nor of
    identical pixels: the pairs repost verification judges."""
    hashed = [k for k, e in found.items() if e.kind == "hash"]
    exact = {k for k, e in found.items() if e.kind == "exact"}
    return sorted({p for p in near + hashed
                   if p not in exact and not feats.blank[p[0]] and not feats.blank[p[1]]})


def apply_verdicts(feats: Features, found: dict[Pair, cl.Edge], pairs: list[Pair],
                   verdicts: Mapping[tuple[str, str], Verdict]) -> int:
    """Fold the repost verdicts (keyed by image ids, smaller first) into ``found``; return how
    many links they contradicted.

    A linked verdict adds a ``verified`` edge or upgrades an ``embedding`` one; a hash edge
    keeps its kind and gains the verdict's framing. A hash or embedding link between two
    feature-rich images that share no features at all (two halves of one texture) is
    dropped: `Verdict.contradicts`.
    """
    assert feats.vectors is not None
    vetoed = 0
    for a, b in pairs:
        ia, ib = feats.ids[a], feats.ids[b]
        verdict = verdicts.get((ia, ib) if ia < ib else (ib, ia))
        if verdict is None:
            continue
        if ia > ib:  # stored mapping the larger id into the smaller: orient b into a
            verdict = verdict.flipped()
        known = found.get((a, b))
        if known is not None and verdict.contradicts:  # feature-rich, nothing in common
            del found[(a, b)]
            vetoed += 1
        elif known is not None and known.kind == "hash":  # linked anyway: keep framing
            found[(a, b)] = cl.Edge("hash", known.hash_distance, known.cosine, verdict)
        elif verdict.linked:
            found[(a, b)] = cl.Edge("verified", popcount(feats.hashes, a, b),
                                    cosine(feats.vectors, a, b), verdict)
    return vetoed


def assign(frame: pd.DataFrame, feats: Features, found: dict[Pair, cl.Edge],
           cfg: DedupConfig, hash_bits: int) -> pd.DataFrame:
    """Per live image (rows of ``frame``, in ``feats.ids`` order): cluster, kept or duplicate,
    and the link that explains it, as the `DEDUP_COLUMNS`."""
    n = len(feats.ids)
    keys = np.array(list(found), dtype=np.int64).reshape(-1, 2)
    labels = cl.components(n, keys[:, 0], keys[:, 1])
    adj = cl.adjacency(found)
    flags = cl.framing_flags(found)
    out: dict[str, list[Any]] = {c: [None] * n for c in DEDUP_COLUMNS}
    out["perceptual_hash"] = [f"{int(h):0{-(-hash_bits // 4)}x}" for h in feats.hashes]
    out["cluster_size"] = [1] * n
    members: dict[int, list[int]] = {}
    for idx, label in enumerate(labels):
        members.setdefault(int(label), []).append(idx)
    for group in members.values():
        if len(group) < 2:
            continue
        cands = [_candidate(frame.iloc[i], feats.sharpness[i], flags.get(i)) for i in group]
        best = cl.choose_kept(cands, cfg.keep, cfg.source_priority, cfg.sharpness_tolerance)
        kept = group[cands.index(best)]
        links = cl.link_paths(kept, adj)
        by_index = dict(zip(group, cands))
        for i in group:
            out["cluster_id"][i] = feats.ids[kept]
            out["cluster_size"][i] = len(group)
            out["framing"][i] = flags.get(i)
            if i == kept:
                continue
            via, edge = links[i]
            if edge.verdict is not None and edge.verdict.linked:
                # stored mapping the larger index into the smaller: orient it i -> via
                v = edge.verdict if i > via else edge.verdict.flipped()
                out["transform"][i] = v.describe()
                out["transform_scale"][i] = round(v.scale, 4)
                out["transform_rotation_deg"][i] = round(v.rotation_deg, 2)
                out["transform_mirror"][i] = v.mirror
                out["transform_box"][i] = [round(x, 4) for x in v.a_box]
            out["duplicate_of"][i] = feats.ids[kept]
            out["dup_kind"][i] = edge.kind
            out["distance"][i] = edge.distance
            out["linked_to"][i] = feats.ids[via]
            out["hash_distance"][i] = popcount(feats.hashes, i, kept)
            if feats.vectors is not None:
                out["cosine"][i] = cosine(feats.vectors, i, kept)
            out["kept_because"][i] = cl.decide(best, by_index[i], cfg.keep, cfg.source_priority,
                                               cfg.sharpness_tolerance)[1]
    return pd.DataFrame(out, index=frame.index)


def popcount(hashes: np.ndarray, a: int, b: int) -> int:
    """Hamming distance between the hashes of images ``a`` and ``b``."""
    return (int(hashes[a]) ^ int(hashes[b])).bit_count()


def cosine(vectors: np.ndarray, a: int, b: int) -> float | None:
    """Cosine similarity of two unit embeddings; None where either has none (blank)."""
    value = float(np.dot(vectors[a], vectors[b]))
    return None if np.isnan(value) else round(value, 6)


def _candidate(row: pd.Series, sharp: float, framing: str | None) -> cl.Candidate:
    uris = row.get("source_uris")
    uris = tuple(uris) if uris is not None and len(uris) else (str(row["source_uri"]),)
    return cl.Candidate(row["image_id"], int(row["width"]), int(row["height"]), float(sharp),
                        int(row["bytes"]), uris, framing)
