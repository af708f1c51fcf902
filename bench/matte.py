"""Benchmark the matte stage against the `rembg p` command, same images and model, one run.

Run from the repository root with the project's virtualenv, after `make demo`:

    .venv/bin/python bench/matte.py [--images 200] [--workers 2] [--models u2netp u2net]
                                    [--methods border_key grabcut] [--repeat 1]
                                    [--project DIR] [--params FILE] [--quick]

It prints one JSON object on stdout (progress goes to stderr) and writes it, indented, to
`bench/results/matte.json` (`--quick`: 20 images, u2netp, no model-free methods, to
bench/results/tmp/). `--project` reads another checkout's demo outputs, read-only.

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
    rembg, onnxruntime, Pillow and numpy versions as this project's (made by
    bench/harness.py); models come from the provisioned folder (U2NET_HOME). One process,
    ONNX Runtime using every core (its default), writing RGBA cutouts;
  - ours: `curate matte` on a manifest of the same images, with an empty cache, `--workers`
    processes (one ONNX session each, one thread each), writing the composite on white and
    the mask, then judging every matte (mask statistics, and the MobileNetV2 embedding of
    every composite for `matte_off_subject`) and writing the report: the whole stage.
  Both are timed around the whole command (interpreter start, imports, model loading
  included), so images/s is what a user gets at the command line. The peer, ours and ours
  without subject selection take alternating turns (bench/harness.py), `--repeat` rounds;
  `speedup` = peer time / ours (higher is better, < 1: ours is slower; goal >= 1.5 on 2
  cores).
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
import os
import shutil
import sqlite3
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
from bench.harness import Bench, PeerEnv, median, python_env, scratch
from core import models
from core.manifest import read_table, write_table
from curate.config import load_params
from curate.demo.generate import mask_name

BIN = Path(sys.executable).parent
DEMO = ROOT / "data" / "demo"  # main() points it at --project's

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


def peer_env() -> PeerEnv:
    """The peer's virtualenv: rembg, onnxruntime, Pillow and numpy pinned to this project's
    versions, so that both tools decode and resize the same pixels and masks can be compared
    level for level; plus what `rembg p` needs (click, filetype, watchdog, tqdm)."""
    from importlib.metadata import version

    pins = tuple(f"{n}=={version(n)}" for n in ("rembg", "onnxruntime", "pillow", "numpy"))
    return PeerEnv("rembg-cli", (*pins, "click", "filetype", "watchdog", "tqdm"),
                   probe="import rembg, filetype, watchdog, click, tqdm",
                   report=("rembg", "onnxruntime", "pillow", "numpy"))


def pick_images(n: int, project: Path) -> pd.DataFrame:
    source = next((p for p in (project / "data/quality/manifest.parquet",
                               project / "data/dedup/manifest.parquet",
                               project / "data/ingest/manifest.parquet") if p.exists()), None)
    if source is None:
        sys.exit("bench/matte.py needs the demo pipeline's manifests: run `make demo` first")
    table = read_table(source)
    live = table[table["status"].eq("ok") & table["mode"].eq("RGB")].sort_values("image_id")
    if len(live) < n:
        sys.exit(f"only {len(live)} live RGB images in {source}, need {n}")
    return live.head(n).reset_index(drop=True)


BENCH: Bench  # this run's (main() makes it)


def run(cmd: list[str], env: dict[str, str], label: str | None = None) -> float:
    """Seconds of the whole command (interpreter start and imports included)."""
    t0 = time.perf_counter()
    BENCH.run(cmd, env=env, label=label)
    return time.perf_counter() - t0


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
    BENCH.log(f"{tag}: curate matte ({workers} workers) ...")
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
                models_dir: Path, store: Path, env: dict[str, str], repeat: int,
                peer: Path) -> dict[str, Any]:
    """rembg p, ours and ours without subject selection in alternating turns; then ours with
    the subject model already learned, and the scores of the last turns' masks."""
    turn = iter(range(10**6))
    outs: dict[str, Path] = {}

    def rembg_p() -> float:
        peer_out = tmp / f"peer-{model}-{next(turn)}"
        seconds = run([str(peer), "-c", PEER_MAIN, "-m", model, str(folder), str(peer_out)], env,
                      label=f"rembg p -m {model} IN OUT (bench/matte.py PEER_MAIN)")
        outs["peer"] = peer_out
        return seconds

    def ours() -> dict[str, float]:
        k = next(turn)
        cold, warm, outs["ours"] = run_ours("rembg", model, tmp, workers, models_dir, store, env,
                                            tag=f"{model}-{k}")
        outs["ours_tag"] = tmp / f"{model}-{k}"
        return {"seconds": cold, "warm_s": warm}

    def ours_raw() -> float:
        cold, _, outs["raw"] = run_ours("rembg", model, tmp, workers, models_dir, store, env,
                                        subject=False, tag=f"{model}-raw-{next(turn)}",
                                        warm=False)
        return cold

    BENCH.log(f"{model}: rembg p, ours and ours without subject selection on {len(rows)} "
              f"images, {repeat} round(s)")
    comparison = BENCH.compare({"rembg_p": rembg_p, "ours": ours, "ours_raw": ours_raw}, repeat)
    keep_only_subject_model(tmp, outs["ours_tag"].name, f"{model}-model-kept")
    steady_s, _, _ = run_ours("rembg", model, tmp, workers, models_dir, store, env,
                              tag=f"{model}-model-kept", warm=False)
    ious = ious_vs_truth(rows, outs["ours"])
    raw_ious = ious_vs_truth(rows, outs["raw"])
    n = len(rows)
    ours_s = median(comparison.seconds("ours"), 2)
    raw_s = median(comparison.seconds("ours_raw"), 2)
    peer_s = median(comparison.seconds("rembg_p"), 2)
    table = comparison.to_dict(ours="ours")
    return {
        **truth_scores(ious),
        "before_subject_selection": {"seconds": raw_s, **truth_scores(raw_ious)},
        "subject_selection_time_ratio": round(median(comparison.ratios("ours", "ours_raw")), 3),
        "subject_selection_time_ratio_model_learned": round(steady_s / raw_s, 3),
        "peer": {"seconds": peer_s, "images_per_s": round(n / peer_s, 3)},
        "ours": {"seconds": ours_s, "images_per_s": round(n / ours_s, 3),
                 "warm_s": median((e["warm_s"] for e in comparison.extras("ours")), 2)},
        "speedup": table["speedup_other_time_over_ours"]["rembg_p"]["median"],
        "speedup_without_subject_selection": comparison.speedup("rembg_p", "ours_raw")["median"],
        "masks": compare_masks(rows, outs["raw"], outs["peer"]),
        "matte_off_subject": lost_subject(ious),
        "comparison": table,
    }


def main(argv: list[str] | None = None) -> None:
    global DEMO, BENCH
    BENCH = Bench("matte", packages=("rembg",))
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--models", nargs="+", default=["u2netp", "u2net"],
                        choices=["u2netp", "u2net"])
    parser.add_argument("--methods", nargs="*", default=["border_key", "grabcut"],
                        choices=["border_key", "grabcut"],
                        help="model-free methods to time and score against the true masks")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of alternating turns")
    parser.add_argument("--project", type=Path, default=ROOT,
                        help="the checkout whose demo outputs to read (default: this one)")
    parser.add_argument("--params", type=Path,
                        help="params.yaml to read (default: the project's)")
    parser.add_argument("--quick", action="store_true",
                        help="20 images, u2netp only, no model-free methods (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.models, args.methods, args.repeat = 20, ["u2netp"], [], 1
    project = args.project.resolve()
    DEMO = project / "data" / "demo"
    params = load_params(args.params or project / "params.yaml")
    models_dir = Path(os.environ.get(models.ENV_MODELS_DIR)
                      or project / params.paths.models).resolve()
    for name in args.models:
        models.require(name, models_dir)
    store = (project / params.paths.store).resolve()
    rows = pick_images(args.images, project)
    peer = BENCH.peer(peer_env())
    result: dict[str, Any] = {"images": len(rows), "workers": args.workers,
                              "repeat": args.repeat,
                              "megapixels_mean": round(float(
                                  (rows["width"] * rows["height"]).mean() / 1e6), 3)}
    with tempfile.TemporaryDirectory(dir=scratch()) as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "images"
        folder.mkdir()
        for image_id, rel, ext in zip(rows["image_id"], rows["store_path"], rows["ext"],
                                      strict=True):
            (folder / f"{image_id}.{ext}").symlink_to(store / rel)
        write_table(rows, tmp / "in.parquet", sort_by=["image_id"])
        env = python_env({"U2NET_HOME": str(models_dir / models.U2NET_SUBDIR),
                          "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
        for model in args.models:
            result[model] = bench_model(model, rows, folder, tmp, args.workers, models_dir,
                                        store, env, args.repeat, peer)
        for method in args.methods:
            cold, warm, out = run_ours(method, "u2net", tmp, args.workers, models_dir, store, env)
            result[method] = {"seconds": round(cold, 2),
                              "images_per_s": round(len(rows) / cold, 3),
                              "warm_s": round(warm, 2),
                              "iou_vs_truth": iou_per_category(ious_vs_truth(rows, out))}
    result["goals"] = {f"{m}_speedup>=1.5": result[m]["speedup"] >= 1.5 for m in args.models}
    for m in args.models:
        r = result[m]
        result["goals"].update({
            f"{m}_pov_median_iou>=0.95": r["iou_vs_truth"].get("pov", {}).get("median", 0) >= 0.95,
            f"{m}_pov_clutter_p90<=0.05": r["clutter_kept"].get("pov", {}).get("p90", 1) <= 0.05,
            f"{m}_soles_median_iou>=0.99":
                r["iou_vs_truth"].get("soles", {}).get("median", 0) >= 0.99,
            f"{m}_subject_selection_time<=1.3x": r["subject_selection_time_ratio"] <= 1.3,
            f"{m}_subject_selection_time_model_learned<=1.3x":
                r["subject_selection_time_ratio_model_learned"] <= 1.3})
    BENCH.publish(result, quick=args.quick)


if __name__ == "__main__":
    main()
