"""Prepare throughput against what a StyleGAN user starts from, with the settings made equal.

Every side turns the same >= 1,000 demo photos (JPEG/PNG/WebP, 300-2000 px, RGB or grey) into
a StyleGAN dataset zip of 512x512 PNGs, in alternating turns (bench/harness.py):

- ``ours_cold``: the prepare stage's public entry point, ``run_prepare``, on a project of those
  photos (a split manifest, annotator keypoints where the demo has them), empty cache:
  alignment (keypoints, else centre), one-resampling warp with area pre-shrink, reduced-scale
  JPEG decode, PNG encode at ``prepare.png_compression`` (3), ``--workers`` processes, the
  zip, card, sample grid and manifest included.
- ``pillow_same_processes``: StyleGAN's ``dataset_tool.py`` per-image work (open, centre crop,
  Lanczos resize, PNG encode, into a stored zip) as a Pillow loop across the same number of
  processes, with the same PNG compression level as ours. ``ours_cold`` against it is the
  algorithmic ratio: the process count and the PNG settings are equal.
- ``pillow_dataset_tool``: the same loop as dataset_tool runs it: one process, PNGs written
  uncompressed (``compress_level=0``, dataset_tool's setting). ``ours_cold`` against it is what
  a user of dataset_tool gets from switching, process count and PNG settings included.
- ``dataset_tool`` (only with ``--dataset-tool PATH``): NVlabs' own ``dataset_tool.py`` from
  the user's checkout of stylegan3 or stylegan2-ada-pytorch (never copied here), run as its
  README says with ``--transform=center-crop`` at 512x512 on a folder of the same photos,
  timed around the whole command (interpreter start included).

Each speed-up is the other side's time / ours (higher is better; < 1: ours is slower), the
median of the rounds. The zips' sizes are reported (compression trades size for time).
``ours_warm``: ``run_prepare`` again on the last cold run's cache (every image cached).

A demo with enough images is generated once into .cache/bench/demo-prepare. Writes
bench/results/prepare.json (--quick: 60 images, one round, to bench/results/tmp/, a smoke
run).

    python bench/prepare.py [--images 1000] [--workers N] [--repeat 3]
                            [--dataset-tool PATH/TO/dataset_tool.py] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ must not shadow the project's packages

from bench.harness import Bench, scratch
from core.config import from_mapping
from core.manifest import write_table
from curate.config import Params
from curate.demo.generate import generate_demo

DEMO = ROOT / ".cache" / "bench" / "demo-prepare"
RESOLUTION = 512
#: dataset_tool.py writes its PNGs with compress_level=0 (and optimize=False).
DATASET_TOOL_PNG_LEVEL = 0


def demo_images(n: int, workers: int) -> pd.DataFrame:
    """>= n decodable RGB or grey demo photos (base and duplicates): id, path, size, keypoints."""
    # ~1.06 usable photos per base image (plus near and exact duplicates) minus archive members
    summary = generate_demo(DEMO, seed=11, n_base=int(n / 1.04) + 10, workers=workers)
    truth = pd.read_parquet(summary.out_dir / "ground_truth.parquet")
    rows = truth[truth.kind.isin(["base", "near_duplicate", "exact_duplicate"])
                 & ~truth.file.str.contains("!")].reset_index(drop=True)
    keep = []
    for r in rows.itertuples():
        with Image.open(summary.out_dir / "raw" / r.file) as img:
            if img.mode in ("RGB", "L"):  # dataset_tool refuses other modes
                keep.append(r.Index)
        if len(keep) == max(n, 1):
            break
    rows = rows.loc[keep].reset_index(drop=True)
    return pd.DataFrame({
        "image_id": [f"{i:04d}{sha[:60]}" for i, sha in enumerate(rows.sha256)],
        "store_path": rows.file, "path": [str(summary.out_dir / "raw" / f) for f in rows.file],
        "width": rows.width.astype(int), "height": rows.height.astype(int),
        "keypoints": pd.notna(rows.ls_task_id) & pd.notna(rows.heel_x),
        "heel_x": rows.heel_x, "heel_y": rows.heel_y, "toe_x": rows.toe_x, "toe_y": rows.toe_y})


# ------------------------------------------------------------------------------------ ours

#: `run_prepare` in a fresh interpreter, timed around the call (imports excluded, the worker
#: pool's start included); its pool's workers then start from this light program, as under
#: the `curate` command, not from the bench script.
OURS_RUNNER = """
import json, sys, time
from pathlib import Path
from core.config import from_mapping
from core.console import console
from curate.config import Params
from curate.stages.prepare import PrepareOptions, run_prepare
args = json.loads(Path(sys.argv[1]).read_text())
console.quiet = True
params = from_mapping(Params, args["params"], "bench")
options = PrepareOptions(**{k: v if k == "workers" else Path(v)
                            for k, v in args["options"].items()})
started = time.perf_counter()
result = run_prepare(params, "bench", options)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "cached": result.cached}))
"""


def project(images: pd.DataFrame, work: Path) -> tuple[Path, Path]:
    """The split manifest and merged tags a user's project would hold for these photos."""
    split = work / "split.parquet"
    write_table(pd.DataFrame({
        "image_id": images.image_id, "store_path": images.store_path,
        "width": images.width, "height": images.height, "status": "ok", "reason": None,
        "source": "demo", "distribution": "bench"}), split, sort_by=["image_id"])
    tagged = images[images.keypoints]
    tags = work / "tags.parquet"
    write_table(pd.DataFrame({
        "image_id": tagged.image_id, "kp_heel_x": tagged.heel_x, "kp_heel_y": tagged.heel_y,
        "kp_toe_x": tagged.toe_x, "kp_toe_y": tagged.toe_y}), tags, sort_by=["image_id"])
    return split, tags


def ours_params(cache: Path, workers: int) -> dict:
    """params.yaml's defaults but for the project's paths, one distribution aligned on
    keypoints else centre, the photos as they are (no matte) and no augmentation."""
    return {
        "workers": workers,
        "paths": {"store": str(DEMO / "raw"), "cache": str(cache)},
        "split": {"distributions": [{"name": "bench", "align": ["keypoints", "center"]}]},
        "prepare": {"resolution": RESOLUTION, "source": "original",
                    "augment": {"mirror": False, "copies": 0}},
    }


def ours(bench: Bench, work: Path, cache: Path, workers: int) -> dict:
    """`run_prepare` on the bench project (split manifest and tags in `work`)."""
    out = work / f"out-{cache.name}"
    job = work / f"ours-{cache.name}.json"
    job.write_text(json.dumps({
        "params": ours_params(cache, workers),
        "options": {"split_manifest": str(work / "split.parquet"),
                    "tags": str(work / "tags.parquet"), "matte_dir": str(work / "no-matte"),
                    "datasets_dir": str(out / "datasets"), "out_dir": str(out / "prepare"),
                    "workers": workers}}))
    done = bench.run([sys.executable, "-c", OURS_RUNNER, job],
                     label="bench/prepare.py OURS_RUNNER: run_prepare(params, 'bench', options)")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["zip_mb"] = round((out / "datasets" / "bench.zip").stat().st_size / 1e6, 1)
    shutil.rmtree(out)
    return figures


def pillow(bench: Bench, images: pd.DataFrame, work: Path, processes: int, level: int) -> dict:
    """bench/pillow_loop.py in its own interpreter (timed inside, around the loop)."""
    job = work / f"pillow-{processes}-{level}.json"
    dest = work / f"pillow-{processes}-{level}.zip"
    job.write_text(json.dumps({"paths": images.path.tolist(), "dest": str(dest),
                               "processes": processes, "level": level,
                               "resolution": RESOLUTION}))
    done = bench.run([sys.executable, "-m", "bench.pillow_loop", job], cwd=ROOT)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    dest.unlink()
    return {"seconds": figures["seconds"], "zip_mb": round(figures["zip_bytes"] / 1e6, 1)}


# ------------------------------------------------------------------- NVlabs' dataset_tool


def dataset_tool_argv(tool: Path, python: str, folder: Path, dest: Path) -> list[str]:
    """The command stylegan3's or stylegan2-ada-pytorch's README gives (their options
    differ: --resolution=WxH in stylegan3, --width/--height in stylegan2-ada-pytorch)."""
    text = tool.read_text(errors="replace")
    size = ([f"--resolution={RESOLUTION}x{RESOLUTION}"] if "--resolution" in text
            else [f"--width={RESOLUTION}", f"--height={RESOLUTION}"])
    return [python, str(tool), f"--source={folder}", f"--dest={dest}", *size,
            "--transform=center-crop"]


def link_folder(images: pd.DataFrame, folder: Path) -> None:
    folder.mkdir(parents=True)
    for k, path in enumerate(images.path):
        (folder / f"img{k:08d}{Path(path).suffix.lower()}").symlink_to(path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of alternating turns")
    parser.add_argument("--dataset-tool", type=Path,
                        help="dataset_tool.py in your checkout of NVlabs/stylegan3 or "
                             "stylegan2-ada-pytorch: also time the real tool")
    parser.add_argument("--dataset-tool-python", default=sys.executable,
                        help="the interpreter that runs it (needs click, numpy, Pillow, tqdm)")
    parser.add_argument("--quick", action="store_true",
                        help="60 images, one round, written to bench/results/tmp/ (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeat = 60, 1
    bench = Bench("prepare", packages=("pillow", "numpy"))
    images = demo_images(args.images, args.workers)
    n = len(images)
    bench.log(f"{n} photos, {args.workers} workers, {args.repeat} rounds")
    work = Path(tempfile.mkdtemp(prefix="prepare-", dir=scratch()))
    project(images, work)
    level = from_mapping(Params, ours_params(work, args.workers), "bench").prepare.png_compression
    turn = iter(range(10**6))
    sides = {
        "ours_cold": lambda: ours(bench, work, work / f"cache-{next(turn)}", args.workers),
        "pillow_same_processes": lambda: pillow(bench, images, work, args.workers, level),
        "pillow_dataset_tool": lambda: pillow(bench, images, work, 1, DATASET_TOOL_PNG_LEVEL),
    }
    if args.dataset_tool:
        folder = work / "folder"
        link_folder(images, folder)
        cmd = dataset_tool_argv(args.dataset_tool.resolve(), args.dataset_tool_python, folder,
                                work / "nvlabs.zip")

        def nvlabs() -> dict:
            started = time.perf_counter()
            bench.run(cmd, env=dict(os.environ))  # the user's environment, not ours
            seconds = time.perf_counter() - started
            size = (work / "nvlabs.zip").stat().st_size
            (work / "nvlabs.zip").unlink()
            return {"seconds": seconds, "zip_mb": round(size / 1e6, 1)}

        sides["dataset_tool"] = nvlabs
    try:
        comparison = bench.compare(sides, args.repeat)
        last_cache = max(work.glob("cache-*"), key=lambda p: int(p.name.split("-")[1]))
        warm = ours(bench, work, last_cache, args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = comparison.to_dict(ours="ours_cold")
    speed = table["speedup_other_time_over_ours"]
    result = {
        "images": n, "resolution": RESOLUTION, "workers": args.workers, "repeat": args.repeat,
        "keypoint_images": int(images.keypoints.sum()),
        "settings": {
            "ours_cold": {"processes": args.workers, "png_compress_level": level,
                          "align": ["keypoints", "center"], "cache": "empty",
                          "timed": "inside its interpreter, around run_prepare"},
            "pillow_same_processes": {"processes": args.workers, "png_compress_level": level,
                                      "timed": "inside its interpreter, around the loop"},
            "pillow_dataset_tool": {"processes": 1,
                                    "png_compress_level": DATASET_TOOL_PNG_LEVEL,
                                    "timed": "inside its interpreter, around the loop"},
            **({"dataset_tool": {"script": str(args.dataset_tool), "transform": "center-crop",
                                 "timed": "the whole command (interpreter start included)"}}
               if args.dataset_tool else {}),
        },
        "img_s": {side: round(n / table["sides"][side]["median"], 2) for side in sides},
        "zip_mb": {side: comparison.extras(side)[-1]["zip_mb"] for side in sides},
        "ours_warm_s": round(warm["seconds"], 3), "ours_warm_cached": warm["cached"],
        "speedup_algorithmic": speed["pillow_same_processes"]["median"],
        "speedup_vs_dataset_tool_loop": speed["pillow_dataset_tool"]["median"],
        **({"speedup_vs_dataset_tool": speed["dataset_tool"]["median"]}
           if args.dataset_tool else {}),
        "comparison": table,
    }
    bench.publish(result, quick=args.quick)
    return result


if __name__ == "__main__":
    main()
