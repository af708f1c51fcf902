"""Dedup stage: near-duplicate clusters, one image kept per cluster, and the report.

Reads the ingest manifest (byte-identical copies are already one row there, with every
source URI), and links the remaining images three ways:

* ``exact``: identical decoded pixels with different bytes (re-saved PNG, stripped metadata);
  checked only for pairs whose hashes (almost) agree and whose sizes match, so it costs
  nothing on unique images;
* ``hash``: perceptual hashes within `dedup.hash_threshold` bits (`curate.dedup.hashing`,
  searched exactly and sub-quadratically by `curate.dedup.hamming`);
* ``embedding``: MobileNetV2 embeddings with cosine >= `dedup.cosine_threshold`
  (`curate.embeddings`, shared with later stages; `curate.dedup.neighbours`);
* ``verified``: reposts (mirrored, cropped, captioned, letterboxed, rotated, screenshotted):
  each image's nearest images by embedding are verified geometrically, and linked when local
  features fit one transform and the aligned pixels agree (`curate.dedup.reposts`). The
  verdict's transform goes to the ``transform`` column, and it tells the keep policy which
  copy is a crop or carries added framing (``framing``).

Union-find turns the edges into clusters; the keep policy picks one image per cluster
(`curate.dedup.clusters`). Every row stays in the output manifest: duplicates get
``status = duplicate``, ``reason = duplicate_of:<id>``, the kind and distance of the link.

Incremental: hashes, pixel digests, embeddings, local features and thumbnails are cached per
image id and verdicts per pair of ids, and the embedding neighbour search is kept and updated
with the new images only (`curate.dedup.neighbours`), so a rerun after adding 1% of images
computes about 1%; the hash search and clustering are recomputed from the cached values each
run (both take seconds at 100k images).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import atomic
from core.cache import ResultCache, op_key
from core.console import StageSummary, console
from core.imagemap import cached_map
from core.manifest import read_table, write_table
from core.stage import StageResult, Status
from curate.config import Params
from curate.dedup import clusters as cl
from curate.dedup import graph
from curate.dedup import neighbours as nb
from curate.dedup.borders import FULL, Box
from curate.dedup.graph import DEDUP_COLUMNS, Features
from curate.dedup.hashing import BLANK_STD, HASH_VERSION, HashSpec, from_hex, hash_one
from curate.dedup.reposts import Photo, RepostResult, RepostVerifier, framed_items

PIXELS_OP = op_key("dedup.pixels", 1)
BATCH = 32  # images per worker task
#: Under `paths.cache`: the embedding neighbour search of the last run, one file per settings.
NEIGHBOURS_SUBDIR = "dedup-neighbours"


@dataclass(frozen=True)
class DedupOptions:
    """Run-time choices that are not part of params.yaml."""

    in_manifest: Path = Path("data/ingest/manifest.parquet")
    out_dir: Path = Path("data/dedup")
    report: Path | None = None  # default: <paths.reports>/duplicates.html
    workers: int | None = None


class DedupRun:
    """State of one dedup run: config, cache, pool and counters."""

    def __init__(self, params: Params, options: DedupOptions) -> None:
        self.params = params
        self.cfg = params.dedup
        self.options = options
        self.workers = options.workers or params.n_workers
        bg = tuple(params.background)
        self.spec = HashSpec(self.cfg.hash_method, self.cfg.hash_size, self.cfg.fast_decode,
                             (bg[0], bg[1], bg[2]))
        self.hash_op = op_key("dedup.hash", HASH_VERSION, self.spec.cache_params())
        self.store_root = Path(params.paths.store)
        self.summary = StageSummary("dedup")
        self.result_counts: dict[str, int] = {}
        self.extra: dict[str, int] = {}
        self.reposts: RepostResult | None = None
        self.neighbours: nb.Neighbours | None = None
        self.vetoed = 0  # hash or embedding links that verification contradicted

    def path(self, store_path: str) -> Path:
        return self.store_root / store_path

    # ------------------------------------------------------------------ features

    def hash_images(self, cache: ResultCache, live: pd.DataFrame) -> tuple[dict[str, Any],
                                                                            dict[str, str]]:
        """Hash (and sharpness) of every live image: cached ones read, the rest computed."""
        orientation = (live["exif_orientation"].fillna(1).astype(int) if "exif_orientation" in live
                       else pd.Series(1, index=live.index))
        todo = [(r.image_id, str(self.path(r.store_path)), int(r.width), int(r.height), int(o))
                for r, o in zip(live.itertuples(), orientation)]
        errors: dict[str, str] = {}
        found: dict[str, Any] = {}
        computed = 0
        for outcome in cached_map(self.hash_op, todo, partial(hash_one, spec=self.spec), cache,
                                  key=itemgetter(0), workers=self.workers, batch=BATCH,
                                  description="hash images"):
            image_id = outcome.item[0]
            if outcome.ok:
                found[image_id] = outcome.value
                computed += not outcome.cached
            else:
                errors[image_id] = outcome.failure.describe()
        self.result_counts["hashes_cached"] = len(found) - computed
        self.result_counts["hashes_computed"] = computed
        return found, errors

    def features(self, cache: ResultCache, live: pd.DataFrame) -> Features:
        with self.summary.phase("hashes"):
            hashed, errors = self.hash_images(cache, live)
        ok = live[live["image_id"].isin(hashed)]
        ids = list(ok["image_id"])
        hashes = np.array([from_hex(hashed[i]["h"]) for i in ids], dtype=np.uint64)
        sharp = np.array([hashed[i]["s"] for i in ids], dtype=np.float64)
        blank = np.array([hashed[i]["c"] < BLANK_STD for i in ids], dtype=bool)
        content = [tuple(hashed[i].get("b", FULL)) for i in ids]
        vectors = None
        framed_vectors = framed_owners = None
        framed_keys: list[str] = []
        if self.cfg.embeddings and ids:
            from curate.embeddings import embed_detailed

            items = [(i, self.path(p)) for i, p in zip(ok["image_id"], ok["store_path"])]
            # The photos inside framed images ride along in the same call: one worker pool,
            # one model load (a second call costs a pool start, seconds per worker).
            framed = (framed_items(self.photos(ok, content)) if self.cfg.verify.enabled
                      else [])
            with self.summary.phase("embeddings"):
                res = embed_detailed(self.params, [*items, *(item for _, item in framed)],
                                     workers=self.options.workers)
            vectors = res.vectors[:len(items)]
            vectors[blank] = np.nan
            if framed:
                framed_owners = np.array([k for k, _ in framed], dtype=np.int64)
                framed_vectors = res.vectors[len(items):]
                framed_keys = [item[0] for _, item in framed]
            self.result_counts["embeddings_computed"] = res.computed
            self.result_counts["embeddings_cached"] = res.cached
            for image_id, message in res.errors.items():
                if "#" not in image_id:  # a framed photo's error is its image's error
                    console.print(f"[yellow]warning:[/] no embedding for {image_id}: {message}")
        return Features(ids, hashes, sharp, blank, vectors, errors, content, framed_vectors,
                        framed_owners, framed_keys)

    def photos(self, rows: pd.DataFrame, content: list[Box]) -> list[Photo]:
        return [Photo(i, self.path(p), int(w), box) for i, p, w, box in
                zip(rows["image_id"], rows["store_path"], rows["width"], content)]

    # ------------------------------------------------------------------ edges

    def pixel_digests(self, cache: ResultCache, rows: pd.DataFrame) -> dict[str, str]:
        """sha256 of the fully decoded pixels (only for exact-duplicate candidates)."""
        from core.imageio import ImageRejected, decode

        found = cache.get_many(PIXELS_OP, list(rows["image_id"]))
        new = []
        for r in rows.itertuples():
            if r.image_id in found:
                continue
            try:
                img = decode(self.path(r.store_path), background=self.spec.background)
            except (ImageRejected, OSError):
                continue
            digest = hashlib.sha256(f"{img.mode}{img.size}".encode() + img.tobytes())
            found[r.image_id] = digest.hexdigest()
            new.append((r.image_id, found[r.image_id]))
        cache.put_many(PIXELS_OP, new)
        return found

    def edges(self, cache: ResultCache, feats: Features, frame: pd.DataFrame
              ) -> dict[graph.Pair, cl.Edge]:
        """All duplicate edges between live images (indices into feats.ids): hash, exact
        pixels, embedding, and (when verification is on) verified reposts."""
        similar = None
        if feats.vectors is not None:
            with self.summary.phase("embedding neighbour search"):
                self.neighbours = self.search_neighbours(feats)
            similar = self.neighbours.caller_pairs()
        with self.summary.phase("hash search and links"):
            found = graph.edges(feats, list(zip(frame["width"], frame["height"])), self.cfg,
                                self.spec.bits,
                                lambda rows: self.pixel_digests(cache, frame.iloc[rows]),
                                similar)
        if self.neighbours is not None and self.cfg.verify.enabled:
            self.add_verified(cache, feats, frame, found, self.neighbours)
        return found

    def search_neighbours(self, feats: Features) -> nb.Neighbours:
        """Embedding neighbours of the images and of the photos inside framed ones, updated
        from the last run's search (`curate.dedup.neighbours`) and saved for the next."""
        from curate.embeddings import vectors_key

        assert feats.vectors is not None
        v = self.cfg.verify
        rows, owners, keys = feats.vectors, np.arange(len(feats.ids)), list(feats.ids)
        if feats.framed_vectors is not None and len(feats.framed_vectors):
            rows = np.concatenate([rows, feats.framed_vectors])
            owners = np.concatenate([owners, feats.framed_owners])
            keys += feats.framed_keys
        # 2k + 2 rows per row: k other images even where each has a second row
        spec = nb.SearchSpec(2 * v.candidates + 2 if v.enabled else 0, v.candidate_cosine,
                             self.cfg.cosine_threshold)
        settings = op_key("dedup.neighbours", nb.FORMAT_VERSION,
                          {"vectors": vectors_key(self.params), "width": spec.width,
                           "floor": spec.floor, "threshold": spec.threshold})
        path = (Path(self.params.paths.cache) / NEIGHBOURS_SUBDIR
                / f"{settings.rsplit(':', 1)[-1]}.npz")
        found = nb.search(keys, owners, rows, np.arange(len(rows)) < len(feats.ids), spec,
                          nb.load(path, spec))
        nb.save(path, found)
        return found

    def add_verified(self, cache: ResultCache, feats: Features, frame: pd.DataFrame,
                     found: dict[graph.Pair, cl.Edge], near_rows: nb.Neighbours) -> None:
        """Verify each image's nearest candidates and the hash-linked pairs, and fold the
        verdicts into ``found`` (`graph.apply_verdicts`)."""
        near = [(int(a), int(b))
                for a, b in nb.owner_pairs(near_rows, self.cfg.verify.candidates)]
        pairs = graph.pairs_to_verify(feats, found, near)
        linked = {p for p in pairs if p in found}  # a verdict may veto these
        with self.summary.phase("repost verification"):
            result = RepostVerifier(self.params, cache, self.workers).run(
                self.photos(frame, feats.content), pairs, linked)
        self.reposts = result
        for key, message in sorted(result.errors.items())[:5]:
            console.print(f"[yellow]warning:[/] repost check skipped for {key}: {message} "
                          "(retried on the next run)")
        if len(result.errors) > 5:
            console.print(f"[yellow]warning:[/] ... and {len(result.errors) - 5} more")
        self.vetoed += graph.apply_verdicts(feats, found, pairs, result.verdicts)

    def assign(self, frame: pd.DataFrame, feats: Features,
               found: dict[graph.Pair, cl.Edge]) -> pd.DataFrame:
        """Per live image: cluster, kept or duplicate, and the link that explains it."""
        return graph.assign(frame, feats, found, self.cfg, self.spec.bits)

    # ------------------------------------------------------------------ output

    def build(self, manifest: pd.DataFrame, cache: ResultCache) -> tuple[pd.DataFrame,
                                                                         Features]:
        live_mask = manifest["status"] == Status.OK
        live = manifest[live_mask]
        feats = self.features(cache, live)
        ok = live[live["image_id"].isin(set(feats.ids))]  # same order as feats.ids
        frame = ok.reset_index(drop=True)
        edges = self.edges(cache, feats, frame)
        assigned = self.assign(frame, feats, edges)
        assigned.index = ok.index
        out = manifest.copy()
        for col in DEDUP_COLUMNS:
            out[col] = assigned[col].reindex(out.index).astype(object)
        dup = out["duplicate_of"].notna()
        out.loc[dup, "status"] = Status.DUPLICATE.value
        out.loc[dup, "reason"] = "duplicate_of:" + out.loc[dup, "duplicate_of"].astype(str)
        bad = out["image_id"].isin(feats.errors)
        out.loc[bad, "status"] = Status.UNREADABLE.value
        out.loc[bad, "reason"] = out.loc[bad, "image_id"].map(feats.errors)
        out["cluster_size"] = out["cluster_size"].astype("Int64")
        out["hash_distance"] = out["hash_distance"].astype("Int64")
        out["distance"] = out["distance"].astype("float64")
        out["cosine"] = out["cosine"].astype("float64")
        for col in ("transform_scale", "transform_rotation_deg"):
            out[col] = out[col].astype("float64")
        out["transform_mirror"] = out["transform_mirror"].astype("boolean")
        for col in ("perceptual_hash", "cluster_id", "duplicate_of", "dup_kind", "linked_to",
                    "kept_because", "transform", "framing"):
            out[col] = out[col].astype(object).where(out[col].notna(), None)
        self._count(out, manifest, live_mask, feats)
        return out, feats

    def _count(self, out: pd.DataFrame, manifest: pd.DataFrame, live_mask: pd.Series,
               feats: Features) -> None:
        """Outcomes partition the input rows; cluster figures go to `self.extra`."""
        s = self.summary
        s.count("passed_through", n=int((~live_mask).sum()))
        s.count("kept", n=int((out["status"] == Status.OK).sum()))
        kinds = out.loc[out["status"] == Status.DUPLICATE, "dup_kind"].value_counts()
        for kind, n in kinds.items():
            s.count("duplicate", f"duplicate_{kind}", int(n))
        for reason in out.loc[out["status"] == Status.UNREADABLE, "reason"]:
            s.count("unreadable", str(reason).split(":", 1)[0])
        self.extra = {
            "clusters": int(out["cluster_id"].dropna().nunique()),
            "blank_images": int(feats.blank.sum()),
            "ingest_byte_copies": int((out["n_sources"].fillna(1) - 1).sum())
            if "n_sources" in out else 0,
        }
        if self.reposts is not None:  # counts only: summary.json must not change on a rerun
            self.extra.update(
                repost_candidate_pairs=self.reposts.candidates,
                repost_pairs_linked=self.reposts.linked,
                links_contradicted=self.vetoed,
                framed_images=int(sum(1 for b in feats.content if b != FULL)))


def run_dedup(params: Params, options: DedupOptions = DedupOptions()) -> StageResult:
    """Find duplicate clusters in the ingest manifest; write manifest, summary and report.

    ``computed``: images hashed now (``summary.cached``: hashes from the cache). ``details``:
    ``embeddings_computed``, ``embeddings_cached``, ``neighbours_searched`` (embedding rows
    compared with all rows, not updated from the last run's search), and ``reposts`` (the
    `RepostResult` of repost verification: pairs verified now and from the cache; None when it
    is off).
    """
    from curate.dedup.report import write_report

    manifest = read_table(options.in_manifest)
    run = DedupRun(params, options)
    cache = ResultCache(Path(params.paths.cache) / "cache.sqlite")
    try:
        out, _feats = run.build(manifest, cache)
        write_table(out, options.out_dir / "manifest.parquet", sort_by=["image_id"])
        atomic.write_text(options.out_dir / "summary.json",
                          json.dumps({**run.summary.metrics(), **run.extra}, indent=2) + "\n")
        report = options.report or Path(params.paths.reports) / "duplicates.html"
        with run.summary.phase("report"):
            write_report(report, out, params, cache, run.workers, run.extra)
    finally:
        cache.close()
    run.summary.cached = run.result_counts.get("hashes_cached", 0)
    run.summary.print()
    counts = run.result_counts
    console.print(
        f"dedup: hashed {counts.get('hashes_computed', 0):,} images "
        f"({counts.get('hashes_cached', 0):,} from cache), embedded "
        f"{counts.get('embeddings_computed', 0):,} ({counts.get('embeddings_cached', 0):,} "
        f"from cache); {int((out['status'] == Status.DUPLICATE).sum()):,} duplicates -> "
        f"{options.out_dir}/manifest.parquet, report {report}")
    if run.neighbours is not None:
        n = len(run.neighbours.keys)
        console.print(f"dedup: embedding neighbours: {run.neighbours.searched:,} of {n:,} rows "
                      "searched against all, the rest updated from the last run")
    if run.reposts is not None:
        r = run.reposts
        console.print(
            f"dedup: reposts: {r.candidates:,} candidate pairs, {r.pairs_computed:,} verified "
            f"now ({r.pairs_cached:,} from cache, {r.features_computed:,} images' features "
            f"computed) in {r.seconds:.1f} s")
    return StageResult(
        run.summary,
        {"manifest": options.out_dir / "manifest.parquet",
         "summary": options.out_dir / "summary.json", "report": report},
        computed=counts.get("hashes_computed", 0),
        details={"embeddings_computed": counts.get("embeddings_computed", 0),
                 "embeddings_cached": counts.get("embeddings_cached", 0),
                 "neighbours_searched": run.neighbours.searched if run.neighbours else 0,
                 "reposts": run.reposts})

