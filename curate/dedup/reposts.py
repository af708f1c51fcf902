"""Repost search: embedding neighbours as candidates, geometric verification as the judge.

Mirrored, cropped, captioned, letterboxed, rotated or screenshotted copies are too far from
their original for a hash or a strict embedding threshold, and a loose threshold links
different photos of one subject. So the search runs in two steps, as copy detection does:

1. candidates: each image's `dedup.verify.candidates` most similar images by embedding
   cosine (at least `candidate_cosine`), where an image framed by bars or app chrome is also
   represented by the embedding of its content box (`curate.dedup.borders`);
2. verification of each candidate pair (`curate.dedup.verify`), which links it or not and
   says how the two frames relate.

Both steps are cached: local features per image (`<paths.cache>/features.sqlite`, 50-120 KB
per image on average) and the verdict per pair of image ids, keyed by the verification
settings and version. A rerun verifies nothing; new images cost their own features and the
verdicts of their new pairs.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from pathlib import Path

import numpy as np

from core.cache import BlobCache, ResultCache, op_key
from core.imagemap import cached_map
from core.parallel import make_executor
from curate.config import Params
from curate.dedup.borders import Box, box_area
from curate.dedup.cosine import cosine_neighbours
from curate.dedup.hashing import HASH_VERSION
from curate.dedup.verify import (
    FEATURES_VERSION,
    VERIFY_VERSION,
    Verdict,
    VerifySpec,
    packed_features,
    verify_pairs,
)

#: Content boxes smaller than this share of the image get their own embedding.
FRAMED_AREA = 0.96
_FEATURE_BATCH = 8
_PAIR_BATCH = 48


@dataclass(frozen=True)
class Photo:
    """What the search needs of one live image."""

    image_id: str
    path: Path
    width: int
    content: Box


@dataclass
class RepostResult:
    """Verdicts of the candidate pairs that linked or were wanted, keyed by (image id, image
    id) in id order (the verdict maps the second image into the first), and what they cost."""

    verdicts: dict[tuple[str, str], Verdict] = field(default_factory=dict)  # linked or wanted
    candidates: int = 0
    linked: int = 0
    pairs_computed: int = 0
    pairs_cached: int = 0
    features_computed: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # image id, or "id|id" of a pair
    seconds: float = 0.0


def framed_items(images: Sequence[Photo]) -> list[tuple[int, tuple[str, Path, Box]]]:
    """(owner index, embedding item of the content box) for the images that are framed."""
    out = []
    for k, im in enumerate(images):
        if box_area(im.content) < FRAMED_AREA:
            key = f"{im.image_id}#" + ",".join(f"{v:.4f}" for v in im.content)
            out.append((k, (key, im.path, im.content)))
    return out


def candidate_pairs(vectors: np.ndarray, owners: np.ndarray, k: int, floor: float
                    ) -> list[tuple[int, int]]:
    """Index pairs (i < j) of images among each other's `k` nearest (cosine >= floor)."""
    i, j, _ = cosine_neighbours(vectors, owners, k, floor)
    return list(zip(i.tolist(), j.tolist()))


class RepostVerifier:
    """Verdicts for candidate pairs, computing only what the caches lack."""

    def __init__(self, params: Params, cache: ResultCache, workers: int) -> None:
        self.spec = VerifySpec.from_config(params.dedup.verify, params.background)
        self.cache = cache
        self.workers = workers
        # Features are computed at the scale of the image's content box, which the hash pass
        # finds: a change there (HASH_VERSION) changes them, and so every verdict.
        self.features_op = op_key("dedup.features", FEATURES_VERSION, {
            "max_side": self.spec.max_side, "features": self.spec.features,
            "background": list(self.spec.background), "content_box_version": HASH_VERSION})
        self.pairs_op = op_key("dedup.verify", VERIFY_VERSION,
                               {**self.spec.cache_params(), "features_version": FEATURES_VERSION,
                                "content_box_version": HASH_VERSION})
        self.blobs_path = Path(params.paths.cache) / "features.sqlite"

    def run(self, images: Sequence[Photo], pairs: Sequence[tuple[int, int]],
            wanted: Collection[tuple[int, int]] = ()) -> RepostResult:
        """Verdicts of `pairs` (indices into `images`). Every verdict is cached, but only the
        linked ones and those of `wanted` pairs are returned: most candidates link nothing,
        and a million verdicts (100k images) would hold a gigabyte."""
        started = time.perf_counter()
        result = RepostResult(candidates=len(pairs))
        keep = {self._key(images, i, j) for i, j in wanted}
        keyed = sorted({self._key(images, i, j) for i, j in pairs})
        found: set[str] = set()
        for key, value in self.cache.iter_many(self.pairs_op, [f"{a}|{b}" for a, b in keyed]):
            found.add(key)
            a, b = key.split("|")
            self._keep(result, (a, b), value, keep)
        result.pairs_cached = len(found)
        todo = [(a, b) for a, b in keyed if f"{a}|{b}" not in found]
        del found
        if todo:
            by_id = {im.image_id: im for im in images}
            executor = make_executor(self.workers)
            try:
                with BlobCache(self.blobs_path) as blobs:
                    needed = sorted({x for pair in todo for x in pair})
                    result.errors = self._features(executor, blobs, [by_id[i] for i in needed],
                                                   result)
                    todo = [(a, b) for a, b in todo
                            if a not in result.errors and b not in result.errors]
                    self._pairs(executor, blobs, todo, result, keep)
            finally:
                executor.shutdown(cancel_futures=True)
        result.seconds = time.perf_counter() - started
        return result

    def _features(self, executor: Executor, blobs: BlobCache, images: list[Photo],
                  result: RepostResult) -> dict[str, str]:
        """Compute and cache the features the cache lacks; errors by image id."""
        items = [(im.image_id, str(im.path), im.width, im.content) for im in images]
        errors: dict[str, str] = {}
        for outcome in cached_map(self.features_op, items,
                                  partial(packed_features, spec=self.spec), blobs,
                                  key=itemgetter(0), load_cached=False, workers=self.workers,
                                  batch=_FEATURE_BATCH, executor=executor,
                                  description="repost features"):
            if not outcome.ok:
                errors[outcome.item[0]] = outcome.failure.describe()
            elif not outcome.cached:
                result.features_computed += 1
        return errors

    @staticmethod
    def _key(images: Sequence[Photo], i: int, j: int) -> tuple[str, str]:
        a, b = images[i].image_id, images[j].image_id
        return (a, b) if a < b else (b, a)

    @staticmethod
    def _keep(result: RepostResult, pair: tuple[str, str], value: dict[str, object],
              keep: set[tuple[str, str]]) -> None:
        if value["linked"] or pair in keep:
            result.verdicts[pair] = Verdict.from_json(value)
        result.linked += bool(value["linked"])

    def _pairs(self, executor: Executor, blobs: BlobCache, todo: list[tuple[str, str]],
               result: RepostResult, keep: set[tuple[str, str]]) -> None:
        """Verify the uncached pairs; each batch carries the features it needs (read here:
        only the coordinator opens the caches)."""

        def features(batch: tuple[tuple[str, str], ...]) -> dict[str, bytes]:
            return blobs.get_many(self.features_op, {x for pair in batch for x in pair})

        for outcome in cached_map(self.pairs_op, todo, partial(verify_pairs, spec=self.spec),
                                  self.cache, key="|".join, workers=self.workers,
                                  batch=_PAIR_BATCH, batched=True, context=features,
                                  executor=executor, description="verify pairs"):
            a, b = outcome.item
            if outcome.ok:  # without a verdict the pair stays unlinked, retried next run
                self._keep(result, (a, b), outcome.value, keep)
                result.pairs_computed += 1
            else:
                result.errors.setdefault(f"{a}|{b}", outcome.failure.describe())
