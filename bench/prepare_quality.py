"""Alignment accuracy on the demo's known rotations (issue goal: median error <= 3 deg for
``keypoints``, <= 8 deg for ``mask``).

``keypoints`` uses the annotators' merged heel/toe points from the Label Studio snapshot
(data/tags/merged.parquet, made by `dvc repro tags`), so annotator jitter is included. ``mask``
uses the matte stage's masks (data/matte/manifest.parquet) when they exist, else the demo's
ground-truth masks, and says which. Prints one JSON object; also writes
bench/results/prepare_quality.json.

    .venv/bin/python bench/prepare_quality.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ must not shadow packages

from bench.demo_truth import base_images, true_mask_iou
from bench.harness import Bench
from curate.demo.generate import mask_name
from curate.prepare.align import angle_error
from curate.prepare.task import Settings, Task
from curate.prepare.worker import choose_crop

DEMO = Path("data/demo")


def _errors(tasks: list[tuple[Task, float]], method: str) -> list[float]:
    settings = Settings(align=(method,))
    out = []
    for task, truth in tasks:
        crop = choose_crop(task, settings)
        if crop.method == method:
            out.append(angle_error(crop.angle_deg, truth))
    return out


def _stats(errors: list[float]) -> dict:
    e = np.asarray(errors)
    return {"n": len(e), "median_deg": round(float(np.median(e)), 3),
            "p90_deg": round(float(np.percentile(e, 90)), 3),
            "over_30_deg": int((e > 30).sum())} if len(e) else {"n": 0}


def main() -> dict:
    truth = base_images(DEMO)
    tags = pd.read_parquet("data/tags/merged.parquet").set_index("image_id")
    tagged = tags.index.intersection(truth.index)
    kp_tasks = []
    for image_id in tagged:
        t, g = tags.loc[image_id], truth.loc[image_id]
        if np.isfinite([t.kp_heel_x, t.kp_heel_y, t.kp_toe_x, t.kp_toe_y]).all():
            kp_tasks.append((Task(image_id, Path(), int(g.width), int(g.height),
                                  ((t.kp_heel_x, t.kp_heel_y), (t.kp_toe_x, t.kp_toe_y))),
                             float(g.rotation_deg)))
    matte = Path("data/matte/manifest.parquet")
    mask_source = "matte stage (rembg)" if matte.exists() else "demo ground-truth masks"
    masks: dict[str, Path] = {}
    if matte.exists():
        m = pd.read_parquet(matte)
        masks = {i: Path("data/matte") / p for i, p in zip(m.image_id, m.mask_path)
                 if isinstance(p, str)}
    else:
        masks = {i: DEMO / "truth" / "masks" / mask_name(f) for i, f in truth.file.items()}
    mask_tasks: dict[str, list] = {"soles": [], "pov": []}
    by_matte: dict[str, list] = {"matte_iou>=0.8": [], "matte_iou<0.8": []}
    for image_id, path in masks.items():
        if image_id in truth.index and path.exists():
            g = truth.loc[image_id]
            item = (Task(image_id, Path(), int(g.width), int(g.height), mask=path),
                    float(g.rotation_deg))
            mask_tasks[g.category].append(item)
            iou = true_mask_iou(path, DEMO, g.file)
            if iou is not None:
                by_matte["matte_iou>=0.8" if iou >= 0.8 else "matte_iou<0.8"].append(item)
    all_mask = _errors(mask_tasks["soles"] + mask_tasks["pov"], "mask")
    result = {
        "keypoints_from_annotators": _stats(_errors(kp_tasks, "keypoints")),
        "mask": {"source": mask_source, "all": _stats(all_mask),
                 **{k: _stats(_errors(v, "mask")) for k, v in mask_tasks.items()},
                 # Whether the error comes from alignment or from a matte that kept the wrong
                 # object: the same images split by their mask's IoU with the true mask.
                 **({k: _stats(_errors(v, "mask")) for k, v in by_matte.items()}
                    if matte.exists() else {})},
        "goals": {"keypoints_median_deg": 3.0, "mask_median_deg": 8.0},
    }
    return result


if __name__ == "__main__":
    bench = Bench("prepare_quality")
    bench.record("in-process: curate.prepare.worker.choose_crop on the demo's tagged images")
    bench.publish(main())

