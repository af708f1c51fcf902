"""In-sample vs out-of-sample quality, and the second subject, with thresholds frozen.

Each run generates a demo into its own project folder, runs the pipeline's stage commands
(ingest, dedup, tags, quality, matte, split, prepare; dvc.yaml's commands, without dvc and
without training) and measures against the demo's ground truth:

* ``in_sample``: feet, default generator, seed 0 (the demo every threshold was tuned on), with
  the repository's params.yaml;
* ``out_of_sample``: feet, ``--variant shifted`` (other backdrops, lighting, scale, camera
  tilt, JPEG mix, duplicate edits and outlier kinds), seed 1, the *same* params.yaml;
* ``figures``: ``--subject figures``, seed 0, params rendered from
  `curate.project.render.FIGURES` (categories full/upper, eye keypoints, colour-style check on)
  and otherwise the code's defaults: nothing tuned on it.

Figures per run (goals from issue #16):
* dedup: copy recall (near-duplicates and reposts that end in their original's cluster) and
  pair precision (goal recall >= 0.95 at precision >= 0.98), with per-kind recall;
* outliers: precision and recall of planted outliers among live images, flagged by the quality
  stage, and by quality or matte (goal >= 0.9 each), with per-kind recall;
* split: accuracy of the distribution given to live base images vs their true category
  (unassigned counts as wrong; goal >= 0.95);
* alignment: median angle error of keypoint crops from the annotators' merged points (goal
  <= 3 deg) and of mask crops from the matte masks, each distribution's crops as prepare makes
  them (its calibrated settings); for figures also MTCNN (face) on base images.

    .venv/bin/python bench/out_of_sample.py [--n-base 120] [--figures-n-base 75]
                                            [--only in_sample,out_of_sample,figures]
                                            [--change "what the code change was"]

Writes bench/results/out_of_sample.json (runs not redone keep their earlier figures). With
``--change``, each re-run keeps the headline figures it replaces in its ``history``, labelled
with the change and the commit they were measured at: the before and after of a method fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.dedup_quality import evaluate as dedup_evaluate
from bench.dedup_quality import truth_groups
from bench.harness import provenance
from curate.demo.generate import Flavour

BIN = Path(sys.executable).parent
RESULT = REPO / "bench" / "results" / "out_of_sample.json"
STAGES = ("ingest", "dedup", "tags", "quality", "matte", "split", "prepare")
RUNS = {"in_sample": ("feet", "default", 0), "out_of_sample": ("feet", "shifted", 1),
        "figures": ("figures", "default", 0)}
GOALS = {"dedup_recall": 0.95, "dedup_precision": 0.98, "outlier_precision": 0.9,
         "outlier_recall": 0.9, "split_accuracy": 0.95, "keypoint_median_deg": 3.0}


def _env() -> dict[str, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.setdefault("CURATE_MODELS_DIR", str(REPO / "models" / "pretrained"))
    env["PYTHONPATH"] = str(REPO)
    return env


def _run(cmd: str, cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, shell=True, cwd=cwd, env=_env(), capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed in {cwd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def _commands(project: Path) -> list[tuple[str, str]]:
    """(stage, command) in order, prepare once per distribution of the project's params."""
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((project / "params.yaml").read_text())
    out = []
    for stage in STAGES:
        spec = pipeline[stage]
        cmd = " ".join(spec.get("do", spec)["cmd"].split())
        if "${item.name}" in cmd:
            out += [(f"{stage}:{d['name']}", cmd.replace("${item.name}", d["name"]))
                    for d in params["split"]["distributions"]]
        else:
            out.append((stage, cmd))
    return out


def build(name: str, root: Path, n_base: int, workers: int) -> Path:
    """Generate the run's demo into root/name and run every stage; return the project."""
    from curate.project.render import FIGURES, render_params

    subject, variant, seed = RUNS[name]
    project = root / name
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    if subject == "figures":
        (project / "params.yaml").write_text(render_params(FIGURES))
    else:
        shutil.copy2(REPO / "params.yaml", project / "params.yaml")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["workers"] = workers
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    seconds = {"demo": _run(f"curate demo-data --out data/demo --seed {seed} --n-base {n_base} "
                            f"--subject {subject} --variant {variant} --workers {workers}",
                            project)}
    for stage, cmd in _commands(project):
        print(f"[out_of_sample] {name}: {stage}", file=sys.stderr, flush=True)
        try:
            seconds[stage] = _run(cmd, project)
        except RuntimeError as exc:  # a distribution prepare refuses is a finding, not a crash
            if not stage.startswith("prepare"):
                raise
            seconds[stage] = f"failed: {str(exc).splitlines()[-3:]}"
    (project / "seconds.json").write_text(json.dumps(seconds))
    return project


def _truth(project: Path) -> pd.DataFrame:
    t = pd.read_parquet(project / "data/demo/ground_truth.parquet")
    return t[t["expected"] == "stored"]


def dedup_figures(project: Path) -> dict:
    t = _truth(project)
    root, kind = truth_groups(project / "data/demo")
    out = pd.read_parquet(project / "data/dedup/manifest.parquet")
    res = dedup_evaluate(out, root, kind, dict(zip(t["sha256"], t["file"])))
    copies = sum(v["copies"] for v in res["per_kind"].values())
    linked = sum(v["linked_to_original"] for v in res["per_kind"].values())
    return {"copy_recall": round(linked / max(1, copies), 4), "copies": copies,
            "pair_precision": res["pair_precision"], "pair_recall": res["pair_recall"],
            "link_precision": res["link_precision"], "false_links": res["false_links"],
            "per_kind_recall": {k: v["recall"] for k, v in res["per_kind"].items()},
            "missed": {k: v["missed"] for k, v in res["per_kind"].items() if v["missed"]}}


def _pr(flagged: pd.Series, planted: pd.Series, kinds: pd.Series) -> dict:
    tp = int((flagged & planted).sum())
    per_kind = {k: round(float(flagged[kinds == k].mean()), 3)
                for k in sorted(kinds[planted].unique())}
    return {"flagged": int(flagged.sum()), "planted": int(planted.sum()),
            "precision": round(tp / max(1, int(flagged.sum())), 4),
            "recall": round(tp / max(1, int(planted.sum())), 4), "per_kind_recall": per_kind}


def outlier_figures(project: Path) -> dict:
    t = _truth(project).drop_duplicates("sha256").set_index("sha256")
    m = pd.read_parquet(project / "data/matte/manifest.parquet")
    # live: not a duplicate nor rejected; a flagged image has status "outlier" and its reasons
    live = m[m["status"].isin(["ok", "outlier"])].set_index("image_id")
    planted = live.index.map(t["kind"]).to_series(index=live.index).eq("outlier")
    kinds = live.index.map(t["subkind"]).to_series(index=live.index)
    q = live["quality_reasons"].map(lambda r: len(r) > 0 if r is not None else False)
    mt = live["matte_reasons"].map(lambda r: len(r) > 0 if r is not None else False)
    false_flags = live[(q | mt) & ~planted]
    counts = pd.Series([x for r in false_flags.itertuples() for x in (
        *(r.quality_reasons if r.quality_reasons is not None else []),
        *(r.matte_reasons if r.matte_reasons is not None else []))]).value_counts().to_dict()
    reasons = {}
    for i, r in false_flags.iterrows():
        reasons[str(t.loc[i, "file"]) if i in t.index else i] = [
            *list(r["quality_reasons"] if r["quality_reasons"] is not None else []),
            *list(r["matte_reasons"] if r["matte_reasons"] is not None else [])]
    return {"quality_stage": _pr(q, planted, kinds), "quality_or_matte": _pr(q | mt, planted,
                                                                              kinds),
            "false_flag_reasons": counts, "false_flags": reasons}


def split_figures(project: Path, flavour: Flavour) -> dict:
    t = _truth(project).drop_duplicates("sha256").set_index("sha256")
    s = pd.read_parquet(project / "data/split/manifest.parquet")
    live = s[s["status"] == "ok"].set_index("image_id")
    base = live[live.index.map(t["kind"]).to_series(index=live.index).eq("base")]
    truth = base.index.map(t["category"]).to_series(index=base.index)
    got = base["distribution"]
    confusion = pd.crosstab(truth, got.fillna("unassigned")).to_dict()
    return {"images": len(base), "accuracy": round(float((got == truth).mean()), 4),
            "unassigned": int(got.isna().sum()), "confusion": confusion,
            "tagged_share": round(float(base["dist_source"].eq("tagged").mean()), 3)
            if "dist_source" in base else None}


def _stats(errors: list[float]) -> dict:
    e = np.asarray(errors)
    return ({"n": len(e), "median_deg": round(float(np.median(e)), 3),
             "p90_deg": round(float(np.percentile(e, 90)), 3), "over_30_deg": int((e > 30).sum())}
            if len(e) else {"n": 0})


def alignment_figures(project: Path, flavour: Flavour, face_sample: int = 40) -> dict:
    """Rotation error of each alignment method against the truth, on each distribution's
    images as the prepare stage crops them: its settings calibrated on its own tagged images
    (`calibrate`). `keypoints_alone` is the annotators' two points without the weighing against
    the mask's axis; `mask_shape_rule` the mask crops with the up end chosen by the subject's
    shape whatever the distribution's tagged images chose."""
    from curate.config import load_params
    from curate.prepare.align import NotApplicable, angle_error
    from curate.prepare.worker import method_crop
    from curate.stages.prepare import build_tasks, calibrate, settings_for

    t = _truth(project)
    base = t[t["kind"].eq("base")].drop_duplicates("sha256").set_index("sha256")
    params = load_params(project / "params.yaml")
    split = pd.read_parquet(project / "data/split/manifest.parquet")
    tags = pd.read_parquet(project / "data/tags/merged.parquet")
    errors: dict[str, list[float]] = {k: [] for k in (
        "keypoints_from_annotators", "keypoints_alone", "mask", "mask_shape_rule")}
    for dist in params.split.distributions:
        rows = split[split["status"].eq("ok") & split["distribution"].eq(dist.name)]
        plain = settings_for(params, dist)
        tasks = build_tasks(rows, tags, params, plain, project / "data/matte")
        calibrated = calibrate(params, tasks, plain)
        shape_rule = dataclasses.replace(calibrated, mask_upright=False)
        for task in (t for t in tasks if t.image_id in base.index):
            truth = float(base.loc[task.image_id, "rotation_deg"])
            for key, method, settings in (("keypoints_from_annotators", "keypoints", calibrated),
                                          ("keypoints_alone", "keypoints", plain),
                                          ("mask", "mask", calibrated),
                                          ("mask_shape_rule", "mask", shape_rule)):
                try:
                    angle = method_crop(task, method, settings).angle_deg
                except NotApplicable:
                    continue
                errors[key].append(angle_error(angle, truth))
    out = {key: _stats(values) for key, values in errors.items()}
    if flavour.subject == "figures":
        out["face_mtcnn"] = face_figures(project, base, face_sample)
    return out


def export_figures(project: Path) -> dict:
    """Per distribution, the images its dataset holds and those prepare left out (and why):
    a framing that needs more upscaling than allowed empties a dataset silently otherwise."""
    out = {}
    for summary in sorted((project / "data/prepare").glob("*/summary.json")):
        data = json.loads(summary.read_text())
        out[summary.parent.name] = {"exported": data["counts"].get("exported", 0),
                                    "excluded": data["counts"].get("excluded", 0),
                                    "reasons": data.get("reasons", {})}
    return out


def face_figures(project: Path, base: pd.DataFrame, sample: int) -> dict:
    """MTCNN on the first `sample` base images (by id): how many faces it finds, and the
    rotation error of the eye-aligned crop where it does."""
    from curate.prepare.align import NotApplicable, angle_error
    from curate.prepare.face import face_crop
    from curate.prepare.task import Settings, Task

    ingest = pd.read_parquet(project / "data/ingest/manifest.parquet").set_index("image_id")
    ids = sorted(base.index.intersection(ingest.index))[:sample]
    found, errors = 0, []
    for image_id in ids:
        g = base.loc[image_id]
        path = project / "data/store" / ingest.loc[image_id, "store_path"]
        try:
            crop = face_crop(Task(image_id, path, int(g.width), int(g.height)),
                             Settings(align=("face",), device="cpu"))
        except NotApplicable:
            continue
        found += 1
        errors.append(angle_error(crop.angle_deg, float(g.rotation_deg)))
    return {"images": len(ids), "faces_found": found,
            "found_share": round(found / max(1, len(ids)), 3), **_stats(errors)}


def measure(name: str, project: Path) -> dict:
    subject, variant, seed = RUNS[name]
    flavour = Flavour(subject, variant)
    counts = json.loads((project / "data/demo/summary.json").read_text())["counts"]
    res = {"subject": subject, "variant": variant, "seed": seed,
           "n_base": counts.get("base"), "demo_counts": counts,
           "stage_seconds": json.loads((project / "seconds.json").read_text()),
           "dedup": dedup_figures(project), "outliers": outlier_figures(project),
           "split": split_figures(project, flavour),
           "alignment": alignment_figures(project, flavour),
           "export": export_figures(project)}
    d, o = res["dedup"], res["outliers"]["quality_or_matte"]
    kp = res["alignment"]["keypoints_from_annotators"].get("median_deg", 99)
    res["goals_met"] = {
        "dedup_recall>=0.95@precision>=0.98": d["copy_recall"] >= GOALS["dedup_recall"]
        and d["pair_precision"] >= GOALS["dedup_precision"],
        "outlier_precision>=0.9": o["precision"] >= GOALS["outlier_precision"],
        "outlier_recall>=0.9": o["recall"] >= GOALS["outlier_recall"],
        "split_accuracy>=0.95": res["split"]["accuracy"] >= GOALS["split_accuracy"],
        "keypoint_median<=3deg": kp <= GOALS["keypoint_median_deg"]}
    return res


def headline(res: dict) -> dict:
    """The figures a method change is judged by, from one run's result."""
    d, o = res["dedup"], res["outliers"]
    return {"dedup": {"copy_recall": d["copy_recall"], "pair_precision": d["pair_precision"],
                      "false_links": len(d["false_links"])},
            **{f"outliers_{key}": {"precision": o[key]["precision"], "recall": o[key]["recall"]}
               for key in ("quality_stage", "quality_or_matte")},
            "split_accuracy": res["split"]["accuracy"]}


def with_history(new: dict, previous: dict | None, change: str | None) -> dict:
    """`new`, carrying `previous`'s history, plus `previous`'s figures under `change`."""
    if previous is None:
        return new
    history = list(previous.get("history", []))
    if change:
        history.append({"change": change, "commit": previous.get("commit"),
                        **headline(previous)})
    return {**new, "history": history} if history else new


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-base", type=int, default=120)
    ap.add_argument("--figures-n-base", type=int, default=75)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--root", type=Path, default=REPO / ".cache/bench/out_of_sample")
    ap.add_argument("--only", default=",".join(RUNS))
    ap.add_argument("--change", help="the code change being measured: keeps the replaced "
                    "figures in each run's history")
    ap.add_argument("--measure-only", action="store_true",
                    help="re-measure existing projects under --root (no generation, no stages)")
    args = ap.parse_args()
    result = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    result.update(bench="out_of_sample", goals=GOALS)
    for name in args.only.split(","):
        project = args.root / name
        if not args.measure_only:
            n = args.figures_n_base if name == "figures" else args.n_base
            build(name, args.root, n, args.workers)
        prov = provenance()
        new = {**measure(name, project), "commit": prov.get("commit")}
        result[name] = with_history(new, result.get(name), args.change)
        result["provenance"] = prov
        RESULT.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps({k: result[k].get("goals_met") for k in RUNS if k in result}))


if __name__ == "__main__":
    main()
