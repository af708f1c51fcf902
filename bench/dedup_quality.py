"""Dedup quality on planted copies, in the demo and on real photos it never saw, and its cost.

Run from the repository root with the project's virtualenv, after `dvc repro` (or `curate
ingest`) has built data/ingest/manifest.parquet from data/demo:

    .venv/bin/python bench/dedup_quality.py [--workers N] [--no-sweep] [--no-unseen]
                                            [--no-timing]

It prints one JSON object on stdout and writes it, indented, to
`bench/results/dedup_quality.json`.

Ground truth. Demo (data/demo/ground_truth.parquet): easy near-duplicates (resized,
re-encoded, cropped by up to 5%, brighter or darker by 10%) and hard reposts (mirrored,
rotated, cropped by 10-25%, captioned, letterboxed, in an app screenshot, colour-graded, two
of these), each a copy of one base image. Unseen (`bench/unseen_photos.py`): the photos
scikit-image and scikit-learn ship, each with one copy of every easy and hard kind made by
the same edit code, plus the hardest negatives: the two halves of one photo or texture. The
two views of a stereo pair are counted as one scene (kind ``second_view``, outside the goals).

Measured with the default params (params.yaml's dedup section):
* copy recall per kind = copies that end in their original's cluster;
* link precision = duplicate rows whose kept image is truly a copy of the same original;
  every false link is listed with both files, its kind and transform;
* pair precision / recall = over every two images of one cluster (what the manifest implies,
  transitive links included, so one wrong link between two clusters of 14 costs 196 pairs);
* keep rate per kind = copies whose cluster kept the original;
* fast_decode_same_hash = images whose hash from the half-scale JPEG decode equals the
  full-decode hash (the issue asks for at least 99%).

`timing` runs the stage cold (fresh caches) twice on the demo in this process, with repost
verification off (the stage before it existed) and on, and reports both and their ratio.
`sweep` repeats the link and pair measures over a grid of hash and cosine thresholds (repost
verification on, from the cached features and verdicts), to show how much margin the
defaults have on each side.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import unseen_photos
from bench.harness import Bench, load_avg
from core.cache import ResultCache
from core.manifest import read_table
from curate.config import Params, load_params
from curate.demo.generate import NEAR_KINDS
from curate.demo.reposts import REPOST_KINDS
from curate.ingest.config import SourceConfig
from curate.stages.dedup import DedupOptions, DedupRun
from curate.stages.ingest import IngestOptions, run_ingest

KINDS = NEAR_KINDS + REPOST_KINDS


def truth_groups(demo: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(root of each stored image id, kind of each planted copy's id)."""
    t = pd.read_parquet(demo / "ground_truth.parquet")
    t = t[t["expected"] == "stored"]
    file_to_id = dict(zip(t["file"], t["sha256"]))
    root = {sha: sha for sha in t["sha256"]}
    kind = {}
    for r in t.itertuples():
        if r.kind in ("near_duplicate", "repost"):
            root[r.sha256] = file_to_id[r.duplicate_of]
            kind[r.sha256] = r.subkind
    return root, kind


def pairs_of(groups: dict[str, list[str]]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for members in groups.values():
        out.update(tuple(sorted(p)) for p in itertools.combinations(members, 2))
    return out


def evaluate(out: pd.DataFrame, root: dict[str, str], kind: dict[str, str],
             files: dict[str, str]) -> dict[str, object]:
    """Copy recall, link precision, pair precision/recall and keep rate of one dedup output."""
    live = out[out["status"].isin(["ok", "duplicate"])]
    cluster_of = {i: (c if isinstance(c, str) else i)  # cluster id = kept id
                  for i, c in zip(live["image_id"], live["cluster_id"])}
    true_groups: dict[str, list[str]] = {}
    for image_id in live["image_id"]:
        true_groups.setdefault(root.get(image_id, image_id), []).append(image_id)
    pred_groups: dict[str, list[str]] = {}
    for image_id, cluster in cluster_of.items():
        pred_groups.setdefault(cluster, []).append(image_id)
    truth, predicted = pairs_of(true_groups), pairs_of(pred_groups)
    per_kind = {}
    for k in sorted(set(kind.values()), key=lambda x: KINDS.index(x) if x in KINDS else 99):
        copies = [i for i, kk in kind.items() if kk == k and i in cluster_of]
        found = [i for i in copies if cluster_of[i] == cluster_of.get(root[i])]
        per_kind[k] = {"copies": len(copies), "linked_to_original": len(found),
                       "recall": round(len(found) / len(copies), 4) if copies else None,
                       "kept_original": sum(1 for i in copies if cluster_of[i] == root[i]),
                       "missed": sorted(files.get(i, i) for i in set(copies) - set(found))[:10]}
    dups = out[out["status"] == "duplicate"]
    false_links = [
        {"duplicate": files.get(r.image_id, r.image_id),
         "kept": files.get(r.duplicate_of, r.duplicate_of), "kind": r.dup_kind,
         "transform": r.transform if isinstance(r.transform, str) else None}
        for r in dups.itertuples()
        if root.get(r.image_id, r.image_id) != root.get(r.duplicate_of, r.duplicate_of)]
    tp = len(predicted & truth)
    hard = [v for k, v in per_kind.items() if k in REPOST_KINDS and v["copies"]]
    easy = [v for k, v in per_kind.items() if k in NEAR_KINDS and v["copies"]]
    return {
        "link_precision": round(1 - len(false_links) / len(dups), 4) if len(dups) else 1.0,
        "duplicates": len(dups), "false_links": false_links,
        "hard_recall_min_per_kind": min((v["recall"] for v in hard), default=None),
        "easy_recall_min_per_kind": min((v["recall"] for v in easy), default=None),
        "per_kind": per_kind,
        "pair_precision": round(tp / len(predicted), 4) if predicted else 1.0,
        "pair_recall": round(tp / len(truth), 4) if truth else 1.0,
        "true_pairs": len(truth), "predicted_pairs": len(predicted),
    }


def goals(res: dict[str, object]) -> dict[str, bool]:
    """The issue's goals: hard kinds >= 0.9 each, easy >= 0.95 each, link precision >= 0.98."""
    return {"hard_recall_per_kind_ge_0.9": (res["hard_recall_min_per_kind"] or 0) >= 0.9,
            "easy_recall_per_kind_ge_0.95": (res["easy_recall_min_per_kind"] or 0) >= 0.95,
            "link_precision_ge_0.98": res["link_precision"] >= 0.98}


def sweep(run: DedupRun, cache: ResultCache, manifest: pd.DataFrame, root: dict[str, str],
          kind: dict[str, str], files: dict[str, str]) -> list[dict[str, object]]:
    """Pair precision/recall over a grid of thresholds, from one set of cached features."""
    live = manifest[manifest["status"] == "ok"]
    feats = run.features(cache, live)
    frame = live[live["image_id"].isin(set(feats.ids))].reset_index(drop=True)
    rows = []
    base = run.cfg
    grid = itertools.product((0, 2, 4, 6, 8, 10, 12),
                             (0.95, 0.96, 0.97, 0.975, 0.98, 0.99, 1.01))  # 1.01: no embedding
    for t, c in grid:  # a cosine threshold above 1 links nothing (verification still runs)
        run.cfg = dataclasses.replace(base, hash_threshold=t, cosine_threshold=c)
        assigned = run.assign(frame, feats, run.edges(cache, feats, frame))
        out = pd.concat([frame[["image_id"]], assigned], axis=1)
        out["status"] = "ok"
        out.loc[out["duplicate_of"].notna(), "status"] = "duplicate"
        res = evaluate(out, root, kind, files)
        rows.append({"hash_threshold": t, "cosine_threshold": c if c <= 1.0 else "off",
                     "link_precision": res["link_precision"],
                     "pair_precision": res["pair_precision"], "pair_recall": res["pair_recall"],
                     "predicted_pairs": res["predicted_pairs"]})
    run.cfg = base
    return rows


def fast_decode_agreement(manifest: pd.DataFrame, store: Path) -> dict[str, object]:
    """How many images get the same hash from the fast (half-scale JPEG) and full decodes."""
    from curate.dedup.hashing import HashSpec, hash_image

    live = manifest[manifest["status"] == "ok"]
    fast, full = HashSpec(fast_decode=True), HashSpec(fast_decode=False)
    differ = []
    for r in live.itertuples():
        path, args = store / r.store_path, (r.width, r.height)
        if (hash_image(path, *args, fast, r.exif_orientation).value
                != hash_image(path, *args, full, r.exif_orientation).value):
            differ.append(r.source_uri)
    jpegs = int((live["format"] == "JPEG").sum())
    return {"images": len(live), "jpegs": jpegs, "same_hash": len(live) - len(differ),
            "fraction": round(1 - len(differ) / max(1, len(live)), 4),
            "fraction_of_jpegs": round(1 - len(differ) / max(1, jpegs), 4), "differ": differ}


def with_cache(params: Params, cache_dir: Path) -> Params:
    return dataclasses.replace(params, paths=dataclasses.replace(params.paths, cache=cache_dir))


def cold_run(params: Params, manifest_path: Path, workers: int | None) -> tuple[float, dict]:
    """Seconds of one dedup build with empty caches (hashes, embeddings, features, verdicts)."""
    with tempfile.TemporaryDirectory(prefix="dedup-cold-") as tmp:
        p = with_cache(params, Path(tmp))
        run = DedupRun(p, DedupOptions(in_manifest=manifest_path, workers=workers))
        cache = ResultCache(Path(tmp) / "cache.sqlite")
        try:
            started = time.perf_counter()
            run.build(read_table(manifest_path), cache)
            seconds = time.perf_counter() - started
        finally:
            cache.close()
    extra = {} if run.reposts is None else {
        "repost_candidate_pairs": run.reposts.candidates,
        "repost_features_computed": run.reposts.features_computed,
        "repost_seconds": round(run.reposts.seconds, 2)}
    return seconds, extra


def timing(params: Params, manifest_path: Path, workers: int | None) -> dict[str, object]:
    """Cold stage time on the demo with repost verification off (the stage before it) and on."""
    load_before = load_avg()
    off = dataclasses.replace(params, dedup=dataclasses.replace(
        params.dedup, verify=dataclasses.replace(params.dedup.verify, enabled=False)))
    before, _ = cold_run(off, manifest_path, workers)
    after, extra = cold_run(params, manifest_path, workers)
    return {"verification_off_s": round(before, 2), "verification_on_s": round(after, 2),
            "ratio": round(after / before, 3),
            "verification_share": round(extra.get("repost_seconds", 0) / after, 3), **extra,
            "goal": "ratio <= 2", "goal_met": after <= 2 * before,
            "load_avg_before": load_before, "load_avg_after": load_avg(),
            "settings": "both cold (fresh hash, embedding, feature and verdict caches), "
                        "same process, same workers, sequential"}


def unseen(params: Params, workdir: Path, workers: int | None) -> dict[str, object]:
    """Quality on the real-photo set (`bench/unseen_photos.py`), from empty caches."""
    files = unseen_photos.build(workdir)
    with tempfile.TemporaryDirectory(prefix="dedup-unseen-") as tmp:
        root_dir = Path(tmp)
        p = dataclasses.replace(
            with_cache(params, root_dir / "cache"),
            paths=dataclasses.replace(params.paths, data=root_dir, store=root_dir / "store",
                                      cache=root_dir / "cache", reports=root_dir / "reports"),
            ingest=dataclasses.replace(params.ingest, sources=(
                SourceConfig(kind="folder", path=workdir / "raw"),)))
        run_ingest(p, IngestOptions(out_dir=root_dir / "ingest", workers=workers))
        manifest = read_table(root_dir / "ingest" / "manifest.parquet")
        run = DedupRun(p, DedupOptions(in_manifest=root_dir / "ingest" / "manifest.parquet",
                                       workers=workers))
        cache = ResultCache(root_dir / "cache" / "cache.sqlite")
        try:
            started = time.perf_counter()
            out, _ = run.build(manifest, cache)
            seconds = time.perf_counter() - started
        finally:
            cache.close()
    name_to_id = {Path(u).name: i for u, i in zip(manifest["source_uri"], manifest["image_id"])}

    def origin(f: str) -> str:
        parent = files[f]["parent"]
        return origin(str(parent)) if parent else f

    root = {name_to_id[f]: name_to_id[origin(f)] for f in files}
    kind = {name_to_id[f]: str(v["kind"]) for f, v in files.items() if v["parent"]}
    res = evaluate(out, root, kind, {i: f for f, i in name_to_id.items()})
    originals = sum(1 for v in files.values() if not v["parent"])
    return {"originals": originals, "images": len(files), "seconds": round(seconds, 2),
            **res, "goals": goals(res)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--demo", type=Path, default=REPO / "data/demo")
    ap.add_argument("--manifest", type=Path, default=REPO / "data/ingest/manifest.parquet")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--unseen-dir", type=Path, default=REPO / "data/bench/unseen_photos")
    ap.add_argument("--no-sweep", action="store_true", help="skip the threshold grid")
    ap.add_argument("--no-unseen", action="store_true", help="skip the real-photo set")
    ap.add_argument("--no-timing", action="store_true", help="skip the two cold runs")
    args = ap.parse_args()
    bench = Bench("dedup_quality")
    bench.record("in-process: curate.stages.dedup.DedupRun(params, DedupOptions(...)).build("
                 "manifest, cache); curate.stages.ingest.run_ingest for the unseen photos")

    params: Params = load_params(args.params)
    manifest = read_table(args.manifest)
    root, kind = truth_groups(args.demo)
    t = pd.read_parquet(args.demo / "ground_truth.parquet")
    files = dict(zip(t["sha256"], t["file"]))
    result: dict[str, object] = {"demo_images": len(manifest),
                                 "params": json.loads(json.dumps(
                                     dataclasses.asdict(params.dedup), default=str))}
    if not args.no_timing:
        result["timing"] = timing(params, args.manifest, args.workers)
    run = DedupRun(params, DedupOptions(in_manifest=args.manifest, workers=args.workers))
    cache = ResultCache(Path(params.paths.cache) / "cache.sqlite")
    try:
        out, _ = run.build(manifest, cache)
        demo = evaluate(out, root, kind, files)
        result["demo"] = {**demo, "goals": goals(demo)}
        result["fast_decode_same_hash"] = fast_decode_agreement(manifest,
                                                                Path(params.paths.store))
        if not args.no_sweep:
            result["sweep"] = sweep(run, cache, manifest, root, kind, files)
    finally:
        cache.close()
    if not args.no_unseen:
        result["unseen_photos"] = unseen(params, args.unseen_dir, args.workers)
    bench.publish(result)


if __name__ == "__main__":
    main()
