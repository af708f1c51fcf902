"""Benchmark the matte stage against the `rembg p` command, same images and model, one run.

Run from the repository root with the project's virtualenv, after `make demo`:

    .venv/bin/python bench/matte.py [--images 200] [--workers 2] [--models u2netp u2net]
                                    [--methods border_key grabcut]

It prints one JSON object on stdout (progress goes to stderr) and writes it, indented, to
`bench/results/matte.json`.

What is measured
----------------
* The first `--images` live RGB images of the demo (by image id) from the quality manifest,
  the matte stage's input in the pipeline (else dedup's or ingest's: those still hold the
  planted blurry, dark and off-subject outliers that quality removes), linked into one folder
  as `<image id>.<ext>`.
* For each model (u2netp, u2net), in turns on the same files:
  - peer: `rembg p -m MODEL IN OUT`, rembg's folder command (its `p_command` function run as
    the CLI would, see PEER_MAIN). It needs CLI extras the project does not install, so it
    runs from its own virtualenv, `.cache/venvs/rembg-cli`, made on first use with the same
    rembg, onnxruntime, Pillow and numpy versions as this project's; models come from the
    provisioned folder (U2NET_HOME). One process, ONNX Runtime using every core (its
    default), writing RGBA cutouts;
  - ours: `curate matte` on a manifest of the same images, with an empty cache, `--workers`
    processes (one ONNX session each, one thread each), writing the composite on white and
    the mask, then judging every matte (mask statistics, and the MobileNetV2 embedding of
    every composite for `matte_off_subject`) and writing the report: the whole stage.
  Both are timed around the whole command (interpreter start, imports, model loading
  included), so images/s is what a user gets at the command line. `ratio` = ours images/s /
  peer images/s (goal >= 1.5 on 2 cores).
  Ours runs with subject selection (the default) and without it (`before_subject_selection`,
  the backend's raw masks, what the stage did before #18):
  - `subject_selection_time_ratio`: the whole stage with selection / without, cold. At 200
    images the model's sample is the whole set, so this carries the learning's full cost;
  - `subject_selection_time_ratio_model_learned`: the same, with the subject model already in
    the cache (everything else cold): what each image costs once the model exists, as in a
    collection larger than the sample or a rerun after adding images.
* Scores against the true masks, per category, with and without selection: `iou_vs_truth`,
  `clutter_kept` (share of our foreground outside the true mask), `subject_lost` (share of the
  true mask we lost), `no_subject_left` (images that lost more than 90% of it).
* Masks: ours without selection (the saved raw mask PNG) against the peer's (the cutout's
  alpha channel, which is rembg's mask): the largest and mean absolute difference in levels,
  the share of pixels that differ by more than 1 level (rounding), and the number of images
  whose masks are identical within rounding.
* `warm_s`: ours again on the same images (everything cached).
* `matte_off_subject`: of the base images, how many mattes lost the subject (IoU < 0.3 with the
  true mask), how many the check flagged, and the overlap (its threshold was set on the demo).
* `iou_vs_truth`: per demo category, the IoU of our masks (thresholded at 128) with the
  demo's true foreground masks (data/demo/truth/masks/, base images only), for each model
  and for the model-free methods of `--methods` (border_key, grabcut; timed too, no peer).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.demo_truth import base_images, true_mask_iou
from bench.publish import publish
from core import models
from core.manifest import read_table, write_table
from curate.config import load_params
from curate.demo.generate import mask_name

BIN = Path(sys.executable).parent
PEER_VENV = ROOT / ".cache" / "venvs" / "rembg-cli"
TMP = ROOT / ".cache" / "bench" / "tmp"
DEMO = ROOT / "data" / "demo"


def log(msg: str) -> None:
    print(f"[bench matte] {msg}", file=sys.stderr, flush=True)


#: Runs rembg's `p` command function exactly as `rembg p` does. Neither the `rembg` console
#: script nor the `rembg.commands` package is imported: both import every command, and the
#: `s` (server) command pulls aiohttp, fastapi and gradio, whose releases pin Pillow against
#: this project's. `p` itself needs only click, filetype, watchdog and tqdm.
PEER_MAIN = (
    "import os, sys, types, rembg; "
    "pkg = types.ModuleType('rembg.commands'); "
    "pkg.__path__ = [os.path.join(os.path.dirname(rembg.__file__), 'commands')]; "
    "sys.modules['rembg.commands'] = pkg; "
    "from rembg.commands.p_command import p_command; "
    "p_command(sys.argv[1:], prog_name='rembg p')"
)


def ensure_peer() -> Path:
    """The peer virtualenv's interpreter, created (or aligned) on first use.

    rembg, onnxruntime, Pillow and numpy are pinned to this project's versions, so that both
    tools decode and resize the same pixels and masks can be compared level for level.
    """
    from importlib.metadata import version

    python = PEER_VENV / "bin" / "python"
    pins = {name: version(name) for name in ("rembg", "onnxruntime", "pillow", "numpy")}
    probe = ("import json, importlib.metadata as m, filetype, watchdog, click, tqdm; "
             f"print(json.dumps({{n: m.version(n) for n in {list(pins)!r}}}))")
    if not python.exists():
        log(f"creating {PEER_VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    found = subprocess.run([str(python), "-c", probe], check=False, capture_output=True, text=True)
    if found.returncode != 0 or json.loads(found.stdout) != pins:
        wanted = [f"{n}=={v}" for n, v in pins.items()] + ["click", "filetype", "watchdog",
                                                           "tqdm"]
        log(f"installing {' '.join(wanted)} into {PEER_VENV}")
        subprocess.run([str(python), "-m", "pip", "install", "-q", *wanted], check=True)
    return python


def pick_images(n: int) -> pd.DataFrame:
    source = next((p for p in (ROOT / "data/quality/manifest.parquet",
                               ROOT / "data/dedup/manifest.parquet",
                               ROOT / "data/ingest/manifest.parquet") if p.exists()), None)
    if source is None:
        sys.exit("bench/matte.py needs the demo pipeline's manifests: run `make demo` first")
    table = read_table(source)
    live = table[table["status"].eq("ok") & table["mode"].eq("RGB")].sort_values("image_id")
    if len(live) < n:
        sys.exit(f"only {len(live)} live RGB images in {source}, need {n}")
    return live.head(n).reset_index(drop=True)


def run(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def compare_masks(rows: pd.DataFrame, ours_root: Path, peer_out: Path) -> dict[str, Any]:
    max_diff, sums, pixels, over1, identical = 0, 0.0, 0, 0, 0
    manifest = read_table(ours_root / "manifest.parquet").set_index("image_id")
    for image_id in rows["image_id"]:
        ours = np.asarray(Image.open(ours_root / manifest.at[image_id, "mask_path"]), np.int16)
        with Image.open(peer_out / f"{image_id}.png") as cutout:
            theirs = np.asarray(cutout.getchannel("A"), np.int16)
        diff = np.abs(ours - theirs)
        max_diff = max(max_diff, int(diff.max()))
        sums += float(diff.sum())
        pixels += diff.size
        over1 += int((diff > 1).sum())
        identical += int(diff.max() <= 1)
    return {"max_abs_diff": max_diff, "mean_abs_diff": round(sums / pixels, 5),
            "share_pixels_diff_gt1": round(over1 / pixels, 7),
            "images_identical_within_rounding": identical, "images": len(rows)}


def run_ours(method: str, model: str, tmp: Path, workers: int, models_dir: Path, store: Path,
             env: dict[str, str], subject: bool = True, tag: str = "",
             warm: bool = True) -> tuple[float, float, Path]:
    """`curate matte` cold then warm on tmp/in.parquet; (cold s, warm s, output folder).

    `tag` names the run's cache and output folders (default: the method or model)."""
    tag = tag or (model if method == "rembg" else method) + ("" if subject else "-raw")
    params_file = tmp / f"params-{tag}.yaml"
    params_file.write_text(yaml.safe_dump({
        "workers": workers,
        "paths": {"store": str(store), "cache": str(tmp / f"cache-{tag}"),
                  "models": str(models_dir), "reports": str(tmp / "reports")},
        "matte": {"method": method, "model": model, "threads_per_worker": 1,
                  "subject": {"enabled": subject}}}))
    out = tmp / f"ours-{tag}"
    cmd = [str(BIN / "curate"), "matte", "--params", str(params_file), "--manifest",
           str(tmp / "in.parquet"), "--out", str(out), "--report", str(tmp / f"{tag}.html")]
    log(f"{tag}: curate matte ({workers} workers) ...")
    cold = run(cmd, env)
    return cold, run(cmd, env) if warm else float("nan"), out


def keep_only_subject_model(tmp: Path, source_tag: str, tag: str) -> None:
    """A cache for run `tag` holding nothing but the subject model run `source_tag` learned:
    the next run mattes and cleans every image with a model that already exists, the state
    of a collection larger than the model's sample."""
    (tmp / f"cache-{tag}").mkdir()
    target = tmp / f"cache-{tag}" / "cache.sqlite"
    shutil.copyfile(tmp / f"cache-{source_tag}" / "cache.sqlite", target)
    with sqlite3.connect(target) as db:
        db.execute("DELETE FROM results WHERE op NOT LIKE 'matte.subject_model:%'")


def ious_vs_truth(rows: pd.DataFrame, out: Path) -> pd.DataFrame:
    """Per base image: category, IoU of our mask with the demo's true mask, the share of our
    foreground outside the true mask (clutter kept), the share of the true subject we lost,
    and whether the stage flagged the matte `matte_off_subject`."""
    truth = base_images(DEMO)
    manifest = read_table(out / "manifest.parquet").set_index("image_id")
    found = []
    for image_id in rows["image_id"]:
        if image_id not in truth.index or pd.isna(manifest.at[image_id, "mask_path"]):
            continue
        scores = mask_scores(out / manifest.at[image_id, "mask_path"], DEMO,
                             truth.at[image_id, "file"])
        if scores is not None:
            found.append((str(truth.at[image_id, "category"]), *scores,
                          "matte_off_subject" in list(manifest.at[image_id, "matte_reasons"])))
    return pd.DataFrame(found, columns=["category", "iou", "clutter", "lost", "flagged"])


def mask_scores(mask_path: Path, demo: Path, file: str) -> tuple[float, float, float] | None:
    """(IoU, clutter kept, subject lost) of a mask against the demo's true mask."""
    iou = true_mask_iou(mask_path, demo, file)
    if iou is None:
        return None
    ours = np.asarray(Image.open(mask_path).convert("L")) >= 128
    true = np.asarray(Image.open(demo / "truth" / "masks" / mask_name(file)).convert("L")) >= 128
    return (iou, float((ours & ~true).sum() / max(1, ours.sum())),
            float((true & ~ours).sum() / max(1, true.sum())))


def _summary(values: pd.Series) -> dict[str, float]:
    return {"median": round(float(values.median()), 4), "mean": round(float(values.mean()), 4),
            "p90": round(float(values.quantile(0.9)), 4)}


def iou_per_category(ious: pd.DataFrame) -> dict[str, Any]:
    """IoU of our masks with the demo's true foreground masks, per category."""
    return {cat: {"images": len(g), **_summary(g.iou)} for cat, g in ious.groupby("category")}


def truth_scores(ious: pd.DataFrame) -> dict[str, Any]:
    """Every score against the true masks, per category (the issue's goals read these)."""
    return {"iou_vs_truth": iou_per_category(ious),
            "clutter_kept": {c: _summary(g.clutter) for c, g in ious.groupby("category")},
            "subject_lost": {c: _summary(g.lost) for c, g in ious.groupby("category")},
            "no_subject_left": {c: int((g.lost > 0.9).sum()) for c, g in
                                ious.groupby("category")}}


def lost_subject(ious: pd.DataFrame) -> dict[str, Any]:
    """How well `matte_off_subject` finds mattes that lost the subject (IoU < 0.3 with the
    true mask): the threshold was set on the demo, so this is in-sample."""
    lost = ious.iou < 0.3
    return {"images": len(ious), "lost": int(lost.sum()), "flagged": int(ious.flagged.sum()),
            "flagged_and_lost": int((ious.flagged & lost).sum()),
            "flagged_with_iou>=0.8": int((ious.flagged & (ious.iou >= 0.8)).sum())}


def bench_model(model: str, rows: pd.DataFrame, folder: Path, tmp: Path, workers: int,
                models_dir: Path, store: Path, env: dict[str, str]) -> dict[str, Any]:
    peer_out = tmp / f"peer-{model}"
    log(f"{model}: rembg p on {len(rows)} images ...")
    peer_s = run([str(ensure_peer()), "-c", PEER_MAIN, "-m", model, str(folder), str(peer_out)],
                 env)
    raw_s, _, raw_out = run_ours("rembg", model, tmp, workers, models_dir, store, env,
                                 subject=False)
    ours_s, warm_s, ours_out = run_ours("rembg", model, tmp, workers, models_dir, store, env)
    keep_only_subject_model(tmp, model, f"{model}-model-kept")
    steady_s, _, _ = run_ours("rembg", model, tmp, workers, models_dir, store, env,
                              tag=f"{model}-model-kept", warm=False)
    ious = ious_vs_truth(rows, ours_out)
    raw_ious = ious_vs_truth(rows, raw_out)
    n = len(rows)
    return {
        **truth_scores(ious),
        "before_subject_selection": {"seconds": round(raw_s, 2), **truth_scores(raw_ious)},
        "subject_selection_time_ratio": round(ours_s / raw_s, 3),
        "subject_selection_time_ratio_model_learned": round(steady_s / raw_s, 3),
        "peer": {"seconds": round(peer_s, 2), "images_per_s": round(n / peer_s, 3)},
        "ours": {"seconds": round(ours_s, 2), "images_per_s": round(n / ours_s, 3),
                 "warm_s": round(warm_s, 2)},
        "ratio": round(peer_s / ours_s, 2),
        "masks": compare_masks(rows, raw_out, peer_out),
        "matte_off_subject": lost_subject(ious),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--models", nargs="+", default=["u2netp", "u2net"],
                        choices=["u2netp", "u2net"])
    parser.add_argument("--methods", nargs="*", default=["border_key", "grabcut"],
                        choices=["border_key", "grabcut"],
                        help="model-free methods to time and score against the true masks")
    args = parser.parse_args()
    os.chdir(ROOT)
    params = load_params(ROOT / "params.yaml")
    models_dir = Path(os.environ.get(models.ENV_MODELS_DIR) or params.paths.models).resolve()
    for name in args.models:
        models.require(name, models_dir)
    store = (ROOT / params.paths.store).resolve()
    rows = pick_images(args.images)
    TMP.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"bench": "matte", "images": len(rows), "workers": args.workers,
                              "cpus": os.cpu_count(), "machine": platform.machine(),
                              "load_average_1min_start": round(os.getloadavg()[0], 2),
                              "megapixels_mean": round(float(
                                  (rows["width"] * rows["height"]).mean() / 1e6), 3)}
    with tempfile.TemporaryDirectory(dir=TMP) as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "images"
        folder.mkdir()
        for image_id, rel, ext in zip(rows["image_id"], rows["store_path"], rows["ext"],
                                      strict=True):
            (folder / f"{image_id}.{ext}").symlink_to(store / rel)
        write_table(rows, tmp / "in.parquet", sort_by=["image_id"])
        env = dict(os.environ, U2NET_HOME=str(models_dir / models.U2NET_SUBDIR),
                   PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
        for model in args.models:
            result[model] = bench_model(model, rows, folder, tmp, args.workers, models_dir,
                                        store, env)
        for method in args.methods:
            cold, warm, out = run_ours(method, "u2net", tmp, args.workers, models_dir, store, env)
            result[method] = {"seconds": round(cold, 2),
                              "images_per_s": round(len(rows) / cold, 3),
                              "warm_s": round(warm, 2),
                              "iou_vs_truth": iou_per_category(ious_vs_truth(rows, out))}
    result["goals"] = {f"{m}_ratio>=1.5": result[m]["ratio"] >= 1.5 for m in args.models}
    for m in args.models:
        r = result[m]
        result["goals"].update({
            f"{m}_pov_median_iou>=0.95": r["iou_vs_truth"]["pov"]["median"] >= 0.95,
            f"{m}_pov_clutter_p90<=0.05": r["clutter_kept"]["pov"]["p90"] <= 0.05,
            f"{m}_soles_median_iou>=0.99": r["iou_vs_truth"]["soles"]["median"] >= 0.99,
            f"{m}_subject_selection_time<=1.3x": r["subject_selection_time_ratio"] <= 1.3,
            f"{m}_subject_selection_time_model_learned<=1.3x":
                r["subject_selection_time_ratio_model_learned"] <= 1.3})
    result["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    publish("matte", result)


if __name__ == "__main__":
    main()
