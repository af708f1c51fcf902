"""Benchmark the quality stage on the demo's planted outliers, against cleanvision, in one run.

Run from the repository root with the project's virtualenv, after `make demo` (it needs the
demo's ground truth and the live images of the dedup manifest, or of ingest's):

    .venv/bin/python bench/quality.py [--workers 2] [--skip-peer]

It prints one JSON object on stdout (progress goes to stderr) and writes it, indented, to
`bench/results/quality.json`.

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
  `.cache/venvs/cleanvision`, made on first use) on the same files: `Imagelab(filepaths=...)
  .find_issues(n_jobs=--workers)` with the issue types that match ours (dark, light, blurry,
  low_information, grayscale, odd_aspect_ratio, odd_size; duplicates are dedup's job) and its
  default thresholds; the same precision/recall figures from its `is_<type>_issue` columns.
* **Time**, each timed inside its own process around the call (imports excluded):
  - peer: `find_issues`;
  - ours `cold`: `run_quality` with an empty cache, MobileNetV2 embeddings included;
  - ours `pipeline`: empty quality cache, embeddings already cached, as in `dvc repro` where
    the dedup stage has embedded every image before quality runs (the headline ratio);
  - ours `warm` (everything cached) and `rethreshold` (a threshold changed: re-scoring only,
    the number of images decoded is reported and must be 0).
  `speed_ratio` = peer time / ours pipeline time (goal >= 2), `speed_ratio_cold` likewise with
  ours cold. Caches live in temporary folders under `.cache/bench/tmp/`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.publish import publish
from core.manifest import read_table
from curate.config import Params, Threshold, load_params

PEER_VENV = ROOT / ".cache" / "venvs" / "cleanvision"
PEER_REQUIREMENT = "cleanvision==0.3.7"
TMP = ROOT / ".cache" / "bench" / "tmp"
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
paths, issues, n_jobs, out = json.loads(sys.argv[1])
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


def log(msg: str) -> None:
    print(f"[bench quality] {msg}", file=sys.stderr, flush=True)


def ensure_peer() -> Path:
    """The cleanvision venv's interpreter, creating the venv on first use."""
    python = PEER_VENV / "bin" / "python"
    ok = python.exists() and subprocess.run(
        [str(python), "-c", "import cleanvision"], check=False, capture_output=True).returncode == 0
    if not ok:
        log(f"creating {PEER_VENV} with {PEER_REQUIREMENT}")
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", PEER_REQUIREMENT], check=True)
    return python


def load_inputs(params: Params) -> tuple[Path, pd.DataFrame, Path | None]:
    """(manifest path, live rows with their ground truth, tags path or None)."""
    manifest_path = next((p for p in (ROOT / "data/dedup/manifest.parquet",
                                      ROOT / "data/ingest/manifest.parquet") if p.exists()), None)
    truth_path = ROOT / "data/demo/ground_truth.parquet"
    if manifest_path is None or not truth_path.exists():
        sys.exit("bench/quality.py needs the demo pipeline's outputs: run `make demo` first")
    manifest = read_table(manifest_path)
    live = manifest[manifest["status"].eq("ok")].copy()
    truth = pd.read_parquet(truth_path).dropna(subset=["sha256"]).drop_duplicates("sha256")
    truth = truth.set_index("sha256")
    live["kind"] = live["image_id"].map(truth["kind"]).fillna("unknown")
    live["subkind"] = live["image_id"].map(truth["subkind"]).fillna("")
    live["path"] = [str(ROOT / params.paths.store / p) for p in live["store_path"]]
    tags = ROOT / "data/tags/merged.parquet"
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


def run_peer(live: pd.DataFrame, workers: int) -> tuple[dict[str, list[str]], dict[str, float]]:
    python = ensure_peer()
    with tempfile.TemporaryDirectory(dir=TMP) as tmp:
        out = Path(tmp) / "issues.json"
        payload = json.dumps([live["path"].tolist(), list(PEER_ISSUES), workers, str(out)])
        t0 = time.perf_counter()
        proc = subprocess.run([str(python), "-c", PEER_SCRIPT, payload], capture_output=True,
                              text=True, check=False)
        whole = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"cleanvision failed:\n{proc.stderr[-3000:]}")
        seconds = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
        table = json.loads(out.read_text())
    path_to_id = dict(zip(live["path"], live.index, strict=True))
    flags: dict[str, list[str]] = {}
    for key, row in table.items():
        image_id = path_to_id[live["path"].iloc[int(key)]] if key.isdigit() else path_to_id[key]
        flags[image_id] = [name for name in PEER_ISSUES if row.get(f"is_{name}_issue")]
    return flags, {"call_s": round(seconds, 2), "whole_s": round(whole, 2)}


def run_ours(params: Params, manifest: Path, tags: Path | None, cache: Path, out: Path,
             workers: int) -> tuple[Any, float]:
    from curate.stages.quality import QualityOptions, run_quality

    params = dataclasses.replace(params, paths=dataclasses.replace(params.paths, cache=cache),
                                 workers=workers)
    options = QualityOptions(manifest=manifest, tags=tags, out_dir=out, report=out / "r.html",
                             workers=workers)
    t0 = time.perf_counter()
    result = run_quality(params, options)
    return result, time.perf_counter() - t0


def ours_flags(out: Path) -> dict[str, list[str]]:
    table = read_table(out / "manifest.parquet")
    return {i: list(r) for i, r in zip(table["image_id"], table["quality_reasons"], strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-peer", action="store_true", help="measure curate only")
    args = parser.parse_args()
    os.chdir(ROOT)
    params = load_params(ROOT / "params.yaml")
    manifest, live, tags = load_inputs(params)
    TMP.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"bench": "quality", "images": len(live), "workers": args.workers,
                              "cpus": os.cpu_count(), "machine": platform.machine(),
                              "load_average_1min_start": round(os.getloadavg()[0], 2),
                              "input": str(manifest.relative_to(ROOT)),
                              "tags": str(tags.relative_to(ROOT)) if tags else None}
    peer_flags = None
    if not args.skip_peer:
        log(f"cleanvision on {len(live)} images ...")
        peer_flags, peer_time = run_peer(live, args.workers)
        result["cleanvision"] = {"version": PEER_REQUIREMENT, "time": peer_time,
                                 **evaluate(peer_flags, live, 1)}
    with tempfile.TemporaryDirectory(dir=TMP) as tmp:
        tmp_path = Path(tmp)
        log("ours, cold (empty cache, embeddings included) ...")
        cold, cold_s = run_ours(params, manifest, tags, tmp_path / "c1", tmp_path / "o1",
                                args.workers)
        # pipeline: the embeddings cache as dedup leaves it, an empty quality cache
        (tmp_path / "c2").mkdir()
        shutil.copy2(tmp_path / "c1" / "embeddings.sqlite", tmp_path / "c2" / "embeddings.sqlite")
        log("ours, pipeline (embeddings cached by dedup) ...")
        pipe, pipe_s = run_ours(params, manifest, tags, tmp_path / "c2", tmp_path / "o2",
                                args.workers)
        log("ours, warm ...")
        _, warm_s = run_ours(params, manifest, tags, tmp_path / "c2", tmp_path / "o3",
                             args.workers)
        changed = dataclasses.replace(params, quality=dataclasses.replace(
            params.quality, checks=dataclasses.replace(params.quality.checks,
                                                       blurry=Threshold("percentile", 5.0))))
        log("ours, a threshold changed ...")
        rethr, rethr_s = run_ours(changed, manifest, tags, tmp_path / "c2", tmp_path / "o4",
                                  args.workers)
        flags = ours_flags(tmp_path / "o2")
        result["ours"] = {
            "time": {"cold_s": round(cold_s, 2), "pipeline_s": round(pipe_s, 2),
                     "warm_s": round(warm_s, 2), "rethreshold_s": round(rethr_s, 2),
                     "decoded_cold": cold.decoded, "decoded_pipeline": pipe.decoded,
                     "decoded_rethreshold": rethr.decoded},
            **evaluate(flags, live, 0)}
    if peer_flags is not None:
        peer_s = result["cleanvision"]["time"]["call_s"]
        result["speed_ratio"] = round(peer_s / max(1e-9, result["ours"]["time"]["pipeline_s"]), 2)
        result["speed_ratio_cold"] = round(peer_s / max(1e-9, result["ours"]["time"]["cold_s"]), 2)
        result["recall_ratio"] = round(result["ours"]["recall"]
                                       / max(1e-9, result["cleanvision"]["recall"]), 2)
    ours = result["ours"]
    result["goals"] = {"precision>=0.9": ours["precision"] >= 0.9,
                       "recall>=0.9": ours["recall"] >= 0.9,
                       "speed_ratio>=2": result.get("speed_ratio", 0) >= 2}
    result["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    publish("quality", result)


if __name__ == "__main__":
    main()
