"""Repost search: embedding neighbours as candidates, geometric verification as the judge.

Mirrored, cropped, captioned, letterboxed, rotated or screenshotted copies are too far from
their original for a hash or a strict embedding threshold, and a loose threshold links
different photos of one subject. So the search runs in two steps, as copy detection does:

1. candidates: each image's `dedup.verify.candidates` most similar images by embedding
   cosine (at least `candidate_cosine`), where an image framed by bars or app chrome is also
   represented by the embedding of its content box (`curate.dedup.borders`);
2. verification of each candidate pair (`curate.dedup.verify`), which links it or not and
   says how the two frames relate.

Both steps are cached: local features per image and the verdict per pair of image ids, keyed
by the verification settings and version. A rerun verifies nothing; new images cost their own
features and the verdicts of their new pairs.

The features (50-120 KB per image) are files, `<paths.cache>/dedup-features/<version>/ab/cd/
<image id>.sft`, written by the worker that computes them and read by the workers that verify
a pair (each verification batch names its images, and its worker reads their files), with
their sizes in the result cache. They never pass through the coordinator: each image's
features are read by a dozen verification batches, which as task arguments were about 0.7 GB
per 1,000 images, and Dask's scheduler deserialises every task's arguments.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from pathlib import Path

from core.cache import ResultCache, op_key
from core.imagemap import cached_map
from core.parallel import make_executor
from core.store import Store
from curate.config import Params
from curate.dedup.borders import Box, box_area
from curate.dedup.hashing import HASH_VERSION
from curate.dedup.verify import (
    FEATURES_EXT,
    FEATURES_VERSION,
    VERIFY_VERSION,
    FeatureItem,
    Verdict,
    VerifySpec,
    store_features,
    verify_pairs,
)

#: Content boxes smaller than this share of the image get their own embedding.
FRAMED_AREA = 0.96
_FEATURE_BATCH = 8
_PAIR_BATCH = 48
#: Under `paths.cache`: one folder of feature files per features version and settings.
FEATURES_SUBDIR = "dedup-features"


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
        _, version, digest = self.features_op.split(":")
        self.features = Store(Path(params.paths.cache) / FEATURES_SUBDIR / f"{version}-{digest}")

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
                needed = sorted({x for pair in todo for x in pair})
                result.errors = self._features(executor, [by_id[i] for i in needed], result)
                todo = [(a, b) for a, b in todo
                        if a not in result.errors and b not in result.errors]
                self._pairs(executor, todo, result, keep)
            finally:
                executor.shutdown(cancel_futures=True)
        result.seconds = time.perf_counter() - started
        return result

    def _features(self, executor: Executor, images: list[Photo], result: RepostResult
                  ) -> dict[str, str]:
        """Compute the feature files that are missing (or not the size the cache recorded);
        errors by image id."""
        items = [(im.image_id, str(im.path), im.width, im.content) for im in images]
        errors: dict[str, str] = {}

        def revisit(item: FeatureItem, kept: dict[str, int]) -> FeatureItem | None:
            return None if self.features.has(item[0], FEATURES_EXT, kept["bytes"]) else item

        for outcome in cached_map(self.features_op, items,
                                  partial(store_features, spec=self.spec,
                                          root=str(self.features.root)), self.cache,
                                  key=itemgetter(0), revisit=revisit, workers=self.workers,
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

    def _pairs(self, executor: Executor, todo: list[tuple[str, str]], result: RepostResult,
               keep: set[tuple[str, str]]) -> None:
        """Verify the uncached pairs (their workers read the feature files)."""
        for outcome in cached_map(self.pairs_op, todo,
                                  partial(verify_pairs, spec=self.spec,
                                          root=str(self.features.root)),
                                  self.cache, key="|".join, workers=self.workers,
                                  batch=_PAIR_BATCH, batched=True, executor=executor,
                                  description="verify pairs"):
            a, b = outcome.item
            if outcome.ok:  # without a verdict the pair stays unlinked, retried next run
                self._keep(result, (a, b), outcome.value, keep)
                result.pairs_computed += 1
            else:
                result.errors.setdefault(f"{a}|{b}", outcome.failure.describe())
