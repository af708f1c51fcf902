"""Prepare throughput against the floor a StyleGAN user starts from (issue goal: >= 1.8x).

Both sides read the same >= 1,000 demo photos (JPEG/PNG/WebP, 300-2000 px) and write a 512x512 PNG
per image to disk:

- ``baseline``: what StyleGAN's ``dataset_tool.py`` does per image, a plain single-process Pillow
  loop: open, centre crop, Lanczos resize, PNG save (Pillow's default compression);
- ``curate``: the prepare stage's per-image path (`curate.stages.prepare._prepare_all`): alignment
  (annotator keypoints where tagged, else centre), one-resampling warp with area pre-shrink,
  reduced-scale JPEG decode, PNG encode at ``png_compression`` 3, across a process pool, writing
  the per-image cache; cold cache, then a warm rerun.

A demo with enough images is generated once into .cache/bench/demo-prepare. Prints one JSON object
and writes bench/results/prepare.json.

    .venv/bin/python bench/prepare.py [--images 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ must not shadow packages

from bench.publish import publish
from core.cache import ResultCache
from core.console import StageSummary
from curate.demo.generate import generate_demo
from curate.prepare.augment import AugmentConfig
from curate.prepare.task import Settings, Task
from curate.stages.prepare import PreparedPngs, _prepare_all

DEMO = Path(".cache/bench/demo-prepare")
RESOLUTION = 512


def demo_images(n: int) -> list[tuple[str, Path, int, int, tuple | None]]:
    """(id, path, width, height, keypoints) of >= n decodable demo photos (base and duplicates)."""
    # ~1.06 usable photos per base image (plus near and exact duplicates) minus archive members
    summary = generate_demo(DEMO, seed=11, n_base=int(n / 1.04) + 10, workers=os.cpu_count() or 2)
    truth = pd.read_parquet(summary.out_dir / "ground_truth.parquet")
    rows = truth[truth.kind.isin(["base", "near_duplicate", "exact_duplicate"])
                 & ~truth.file.str.contains("!")]
    out = []
    for r in rows.itertuples():
        kp = ((r.heel_x, r.heel_y), (r.toe_x, r.toe_y)) if pd.notna(r.ls_task_id) else None
        out.append((f"{r.sha256}-{len(out)}", summary.out_dir / "raw" / r.file, int(r.width),
                    int(r.height), kp))
    return out[:max(n, 1)]


def baseline(images: list, out: Path) -> float:
    """dataset_tool.py's per-image work, single process."""
    start = time.perf_counter()
    for k, (_, path, *_rest) in enumerate(images):
        with Image.open(path) as img:
            img = img.convert("RGB")
            side = min(img.size)
            left, top = (img.width - side) // 2, (img.height - side) // 2
            img = img.crop((left, top, left + side, top + side))
            img = img.resize((RESOLUTION, RESOLUTION), Image.LANCZOS)
            img.save(out / f"{k:08d}.png")
    return time.perf_counter() - start


def curate_run(images: list, cache_dir: Path, workers: int) -> tuple[float, int]:
    tasks = [Task(i, p, w, h, kp) for i, p, w, h, kp in images]
    settings = Settings(resolution=RESOLUTION, align=("keypoints", "center"),
                        augment=AugmentConfig(mirror=False))
    start = time.perf_counter()
    with ResultCache(cache_dir / "results.sqlite") as cache:
        summary = StageSummary("bench")
        _prepare_all(tasks, settings, PreparedPngs(cache_dir / "png", cache, "bench"), workers,
                     summary)
    return time.perf_counter() - start, summary.cached


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    images = demo_images(args.images)
    work = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    try:
        (work / "baseline").mkdir()
        base_s = baseline(images, work / "baseline")
        cold_s, _ = curate_run(images, work / "curate", args.workers)
        warm_s, cached = curate_run(images, work / "curate", args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = len(images)
    return {
        "images": n, "resolution": RESOLUTION, "cores": os.cpu_count(), "workers": args.workers,
        "baseline_pillow_loop_img_s": round(n / base_s, 2),
        "curate_cold_img_s": round(n / cold_s, 2),
        "curate_warm_img_s": round(n / warm_s, 2), "warm_cached": cached,
        "ratio_cold_curate_over_baseline": round(base_s / cold_s, 2),
        "goal_ratio": 1.8,
    }


if __name__ == "__main__":
    publish("prepare", main())
