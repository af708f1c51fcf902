"""Benchmark the quality stage on the demo's planted outliers, against cleanvision, in one run.

Run from the repository root with the project's virtualenv, after `make demo` (it needs the
demo's ground truth and the live images of the dedup manifest, or of ingest's):

    .venv/bin/python bench/quality.py [--workers 2] [--repeat 3] [--skip-peer]
                                      [--project DIR] [--quick]

It prints one JSON object on stdout (progress goes to stderr) and writes it, indented, to
`bench/results/quality.json` (`--quick`: one round, to bench/results/tmp/). `--project` reads
another checkout's demo outputs (data/, params.yaml), read-only.

What is measured
----------------
* **Detection** with default params (params.yaml), on every live image of the input manifest
  (duplicates removed by dedup are not judged), against the demo's ground truth:
  - overall precision (flagged images that are planted outliers) and recall (planted outliers
    flagged for any reason); goal >= 0.9 and >= 0.9;
  - per reason: how many images it flags and its precision (flagged images that are planted
    outliers of any kind);
  - per planted kind: recall for any reason, and recall for the reason meant for that kind
    (blurry -> blurry, noise -> noisy, off_subject -> off_subject, ...).
  Annotator rejects from data/tags/merged.parquet count as a reason when the file exists, as
  in the pipeline.
* **cleanvision** (the peer, `cleanvision` from PyPI in its own virtualenv
  `.cache/venvs/cleanvision`, made on first use by bench/harness.py) on the same files:
  `Imagelab(filepaths=...).find_issues(n_jobs=--workers)` with the issue types that match
  ours (dark, light, blurry, low_information, grayscale, odd_aspect_ratio, odd_size;
  duplicates are dedup's job) and its default thresholds; the same precision/recall figures
  from its `is_<type>_issue` columns.
* **Time**, each side in its own fresh interpreter, timed there around the call (imports
  excluded), in alternating turns (bench/harness.py), `--repeat` rounds:
  - `cleanvision`: `Imagelab(...)` and `find_issues` (it starts cold: nothing is cached);
  - `ours_cold`: `run_quality` with an empty cache, MobileNetV2 embeddings included: the
    same start as the peer's, so `speedup_cold` = cleanvision time / ours cold time is the
    headline (goal >= 2; higher is better, < 1 means ours is slower);
  - `ours_pipeline`: an empty quality cache but the embeddings already cached, as in
    `dvc repro`, where the dedup stage has embedded every image before quality runs:
    `speedup_pipeline_embeddings_cached`, reported separately and labelled so, since the
    embedding work was done (and paid) by another stage;
  - then once, ours `warm` (everything cached) and `rethreshold` (a threshold changed:
    re-scoring only, the number of images decoded is reported and must be 0).
  Caches live in temporary folders under `.cache/bench/tmp/`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Bench, PeerEnv, median, scratch
from core.manifest import read_table
from curate.config import Params, load_params

PEER = PeerEnv("cleanvision", ("cleanvision==0.3.7",), probe="import cleanvision",
               report=("cleanvision", "numpy", "pandas", "pillow"))
PEER_ISSUES = ("dark", "light", "blurry", "low_information", "grayscale", "odd_aspect_ratio",
               "odd_size")
#: planted kind -> the reason meant for it (ours, cleanvision's; None: no such check)
EXPECTED = {
    "blurry": ("blurry", "blurry"),
    "dark": ("dark", "dark"),
    "overexposed": ("overexposed", "light"),
    "tiny": ("tiny", "odd_size"),
    "extreme_aspect": ("extreme_aspect", "odd_aspect_ratio"),
    "grayscale": ("grayscale", "grayscale"),
    "noise": ("noisy", None),
    "off_subject": ("off_subject", None),
}

PEER_SCRIPT = r"""
import json, sys, time
import pandas as pd
from cleanvision import Imagelab
with open(sys.argv[1]) as fh:
    paths, issues, n_jobs, out = json.load(fh)
t0 = time.perf_counter()
lab = Imagelab(filepaths=paths, verbose=False)
lab.find_issues({name: {} for name in issues}, n_jobs=n_jobs, verbose=False)
seconds = time.perf_counter() - t0
cols = [f"is_{name}_issue" for name in issues]
flags = lab.issues[cols].astype(bool)
flags.index = flags.index.astype(str)
flags.to_json(out, orient="index")
print(json.dumps({"seconds": seconds}))
"""

#: `run_quality` in a fresh interpreter, timed around the call (imports excluded).
OURS_SCRIPT = r"""
import dataclasses, json, sys, time
from pathlib import Path
from curate.config import load_params
from curate.quality.config import Threshold
from curate.stages.quality import QualityOptions, run_quality
a = json.loads(Path(sys.argv[1]).read_text())
params = load_params(Path(a["params"]))
params = dataclasses.replace(params, workers=a["workers"], paths=dataclasses.replace(
    params.paths, cache=Path(a["cache"]), store=Path(a["store"])))
if a["blurry_percentile"] is not None:  # a threshold changed: re-scoring only
    params = dataclasses.replace(params, quality=dataclasses.replace(
        params.quality, checks=dataclasses.replace(
            params.quality.checks, blurry=Threshold("percentile", a["blurry_percentile"]))))
out = Path(a["out"])
options = QualityOptions(manifest=Path(a["manifest"]), tags=Path(a["tags"]) if a["tags"] else None,
                         out_dir=out, report=out / "r.html", workers=a["workers"])
started = time.perf_counter()
result = run_quality(params, options)
print(json.dumps({"seconds": time.perf_counter() - started, "decoded": result.computed}))
"""


def load_inputs(params: Params, project: Path) -> tuple[Path, pd.DataFrame, Path | None]:
    """(manifest path, live rows with their ground truth, tags path or None)."""
    manifest_path = next((p for p in (project / "data/dedup/manifest.parquet",
                                      project / "data/ingest/manifest.parquet") if p.exists()),
                         None)
    truth_path = project / "data/demo/ground_truth.parquet"
    if manifest_path is None or not truth_path.exists():
        sys.exit("bench/quality.py needs the demo pipeline's outputs: run `make demo` first")
    manifest = read_table(manifest_path)
    live = manifest[manifest["status"].eq("ok")].copy()
    truth = pd.read_parquet(truth_path).dropna(subset=["sha256"]).drop_duplicates("sha256")
    truth = truth.set_index("sha256")
    live["kind"] = live["image_id"].map(truth["kind"]).fillna("unknown")
    live["subkind"] = live["image_id"].map(truth["subkind"]).fillna("")
    live["path"] = [str(project / params.paths.store / p) for p in live["store_path"]]
    tags = project / "data/tags/merged.parquet"
    return manifest_path, live.set_index("image_id"), tags if tags.exists() else None


def evaluate(flags: dict[str, list[str]], live: pd.DataFrame, which: int) -> dict[str, Any]:
    """Precision/recall overall, per reason and per planted kind (`which`: 0 ours, 1 peer)."""
    planted = live["kind"].eq("outlier")
    flagged = pd.Series({i: bool(flags.get(i)) for i in live.index})
    tp = int((flagged & planted).sum())
    out: dict[str, Any] = {
        "images": len(live), "planted": int(planted.sum()), "flagged": int(flagged.sum()),
        "precision": round(tp / max(1, int(flagged.sum())), 4),
        "recall": round(tp / max(1, int(planted.sum())), 4),
    }
    reasons = sorted({r for rs in flags.values() for r in rs})
    per_reason = {}
    for reason in reasons:
        ids = [i for i, rs in flags.items() if reason in rs and i in live.index]
        hits = int(planted.loc[ids].sum())
        per_reason[reason] = {"flagged": len(ids), "precision": round(hits / max(1, len(ids)), 4)}
    out["per_reason"] = per_reason
    per_kind = {}
    for kind, expected in EXPECTED.items():
        ids = live.index[planted & live["subkind"].eq(kind)]
        if len(ids) == 0:
            continue
        meant = expected[which]
        per_kind[kind] = {
            "planted": len(ids),
            "recall": round(float(flagged.loc[ids].mean()), 4),
            "reason": meant,
            "recall_by_reason": (round(sum(meant in flags.get(i, []) for i in ids) / len(ids), 4)
                                 if meant else None),
        }
    out["per_kind"] = per_kind
    false_pos = live.index[flagged & ~planted]
    out["false_positives"] = [{"image_id": i[:12], "kind": live.at[i, "kind"],
                               "subkind": live.at[i, "subkind"], "reasons": flags[i]}
                              for i in false_pos]
    return out


def run_peer(bench: Bench, python: Path, live: pd.DataFrame, workers: int,
             tmp: Path) -> dict[str, Any]:
    """cleanvision on the live images in its own interpreter; its seconds and flags."""
    out, job = tmp / "issues.json", tmp / "job.json"
    job.write_text(json.dumps([live["path"].tolist(), list(PEER_ISSUES), workers, str(out)]))
    done = bench.run([python, "-c", PEER_SCRIPT, job],
                     label="bench/quality.py PEER_SCRIPT: Imagelab(filepaths).find_issues(...)")
    seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    table = json.loads(out.read_text())
    path_to_id = dict(zip(live["path"], live.index, strict=True))
    flags: dict[str, list[str]] = {}
    for key, row in table.items():
        image_id = path_to_id[live["path"].iloc[int(key)]] if key.isdigit() else path_to_id[key]
        flags[image_id] = [name for name in PEER_ISSUES if row.get(f"is_{name}_issue")]
    return {"seconds": seconds, "flags": flags}


def run_ours(bench: Bench, args: dict[str, Any], cache: Path, out: Path,
             blurry_percentile: float | None = None) -> dict[str, Any]:
    """`run_quality` in its own interpreter with `cache` and `out`; seconds, images decoded."""
    job = out.with_suffix(".json")
    job.write_text(json.dumps({**args, "cache": str(cache), "out": str(out),
                               "blurry_percentile": blurry_percentile}))
    done = bench.run([sys.executable, "-c", OURS_SCRIPT, job], cwd=ROOT,
                     label="bench/quality.py OURS_SCRIPT: run_quality(params, options)")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ours_flags(out: Path) -> dict[str, list[str]]:
    table = read_table(out / "manifest.parquet")
    return {i: list(r) for i, r in zip(table["image_id"], table["quality_reasons"], strict=True)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of alternating turns")
    parser.add_argument("--skip-peer", action="store_true", help="measure curate only")
    parser.add_argument("--project", type=Path, default=ROOT,
                        help="the checkout whose demo outputs to read (default: this one)")
    parser.add_argument("--quick", action="store_true",
                        help="one round, written to bench/results/tmp/ (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = 1
    bench = Bench("quality")
    project = args.project.resolve()
    params = load_params(project / "params.yaml")
    manifest, live, tags = load_inputs(params, project)
    job = {"params": str(project / "params.yaml"), "store": str(project / params.paths.store),
           "workers": args.workers, "manifest": str(manifest),
           "tags": str(tags) if tags else None}
    result: dict[str, Any] = {"images": len(live), "workers": args.workers,
                              "repeat": args.repeat,
                              "input": str(manifest.relative_to(project)),
                              "tags": str(tags.relative_to(project)) if tags else None}
    peer = None if args.skip_peer else bench.peer(PEER)
    tmp = Path(tempfile.mkdtemp(dir=scratch(), prefix="quality-"))
    turn = iter(range(10**6))
    last: dict[str, Any] = {}

    def peer_side() -> dict[str, Any]:
        folder = tmp / f"peer-{next(turn)}"
        folder.mkdir()
        last["peer"] = run_peer(bench, peer, live, args.workers, folder)
        return {"seconds": last["peer"]["seconds"]}

    def cold_side() -> dict[str, Any]:
        k = next(turn)
        done = run_ours(bench, job, tmp / f"cache-{k}", tmp / f"out-{k}")
        last["embeddings"] = tmp / f"cache-{k}" / "embeddings.sqlite"
        return done

    def pipeline_side() -> dict[str, Any]:
        """An empty quality cache with the embeddings a cold run left (as dedup leaves them)."""
        k = next(turn)
        if "embeddings" not in last:  # never: ours_cold runs first in the first round
            cold_side()
        (tmp / f"cache-{k}").mkdir()
        shutil.copy2(last["embeddings"], tmp / f"cache-{k}" / "embeddings.sqlite")
        done = run_ours(bench, job, tmp / f"cache-{k}", tmp / f"out-{k}")
        last["pipeline"] = k
        return done

    sides = {"ours_cold": cold_side, "ours_pipeline": pipeline_side}
    if peer is not None:
        sides = {"cleanvision": peer_side, **sides}
    try:
        bench.log(f"{len(live)} images, {args.workers} workers, {args.repeat} rounds")
        comparison = bench.compare(sides, args.repeat)
        k = last["pipeline"]
        bench.log("ours, warm, then a threshold changed ...")
        warm = run_ours(bench, job, tmp / f"cache-{k}", tmp / "out-warm")
        rethr = run_ours(bench, job, tmp / f"cache-{k}", tmp / "out-rethreshold", 5.0)
        flags = ours_flags(tmp / f"out-{k}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = comparison.to_dict(ours="ours_cold")
    cold = comparison.extras("ours_cold")[-1]
    pipe = comparison.extras("ours_pipeline")[-1]
    result["ours"] = {
        "time": {"cold_s": median(comparison.seconds("ours_cold"), 2),
                 "pipeline_s": median(comparison.seconds("ours_pipeline"), 2),
                 "warm_s": round(warm["seconds"], 2), "rethreshold_s": round(rethr["seconds"], 2),
                 "decoded_cold": cold["decoded"], "decoded_pipeline": pipe["decoded"],
                 "decoded_rethreshold": rethr["decoded"]},
        **evaluate(flags, live, 0)}
    if peer is not None:
        result["cleanvision"] = {"version": PEER.requirements[0],
                                 "time": {"call_s": median(comparison.seconds("cleanvision"), 2)},
                                 **evaluate(last["peer"]["flags"], live, 1)}
        speed = comparison.speedup("cleanvision", "ours_cold")["median"]
        result["speedup_cold"] = speed
        result["speedup_pipeline_embeddings_cached"] = comparison.speedup(
            "cleanvision", "ours_pipeline")["median"]
        result["recall_ratio"] = round(result["ours"]["recall"]
                                       / max(1e-9, result["cleanvision"]["recall"]), 2)
    result["speedup_note"] = ("cleanvision time / ours (higher is better, < 1: ours is slower); "
                              "speedup_cold is the headline: both start cold. "
                              "speedup_pipeline_embeddings_cached: ours with the embeddings "
                              "the dedup stage computed, as in dvc repro")
    ours = result["ours"]
    result["goals"] = {"precision>=0.9": ours["precision"] >= 0.9,
                       "recall>=0.9": ours["recall"] >= 0.9,
                       "speedup_cold>=2": result.get("speedup_cold", 0) >= 2}
    result["comparison"] = table
    bench.publish(result, quick=args.quick)


if __name__ == "__main__":
    main()
