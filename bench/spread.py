"""What `off_subject`'s opt-in `spread` would add, on projects whose quality stage has run.

An absolute `off_subject` cut-off (0.34, kNN cosine distance) was chosen on photos; `spread: S`
also flags images S robust standard deviations past the judged set's median
(`curate.quality.checks`). Whether that is worth turning on depends on the set, so this bench
measures, per project, what it would add to the flags the project's own threshold made:

* projects that hold a demo's ground truth (`data/demo/ground_truth.csv`: the out-of-sample
  bench's in-sample, shifted and figures projects, `make demo`'s project): the images it adds,
  split into planted outliers (by kind) and ordinary images;
* projects of bench/scale.py (its synthetic images: random filled shapes on colour gradients,
  one style throughout; planted outliers known by file name): the same split.

Nothing runs but the stage's own evaluation (`curate.quality.checks.evaluate`) on the
`q_embed_outlier` values the quality stage wrote; no image is decoded. Each spread in
`--spreads` is reported, none chosen here.

    .venv/bin/python bench/spread.py --demo in_sample=DIR --demo figures=DIR \\
        --scale local-40000=/tmp/gan-curate-scale/local-40000/proj [--spreads 2.5,3,4]

Prints one JSON object; also writes bench/results/spread.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ must not shadow packages

from bench.harness import Bench
from bench.scale import planted
from curate.config import load_params
from curate.quality.checks import evaluate, make_check
from curate.quality.config import Threshold
from curate.quality.outliers import robust_centre_and_sd


def _demo_kinds(project: Path, ids: pd.Series) -> pd.Series:
    """Planted outlier kind per image id ("" for every other image), from the demo's truth."""
    truth = pd.read_csv(project / "data/demo/ground_truth.csv").drop_duplicates("sha256")
    kind = truth.subkind.where(truth.kind.eq("outlier"), "").fillna("")
    return ids.map(dict(zip(truth.sha256, kind))).fillna("")


def _scale_kinds(project: Path, ids: pd.Series) -> pd.Series:
    """Planted outlier kind per image id, from bench/scale.py's file names (img<k>.jpg)."""
    ingest = pd.read_parquet(project / "data/ingest/manifest.parquet")
    index = {i: int(Path(u).name[3:10]) for i, u in zip(ingest.image_id, ingest.source_uri)}

    def kind(image_id: str) -> str:
        plant = planted(index[image_id]) if image_id in index else None
        return plant[1] if plant and plant[0] == "outlier" else ""

    return ids.map(kind)


def measure(project: Path, kinds_of: Callable[[Path, pd.Series], pd.Series],
            spreads: list[float]) -> dict[str, Any]:
    """The judged set's distances and, per spread, what it adds to the project's flags."""
    manifest = project / "data/quality/manifest.parquet"
    quality = pd.read_parquet(manifest)
    judged = quality.status.isin(["ok", "outlier"])
    frame = quality.rename(columns={"q_embed_outlier": "embed_outlier"})
    kinds = kinds_of(project, quality.image_id)
    planted_out = kinds.ne("")
    flagged = quality.status.eq("outlier")
    threshold = load_params(project / "params.yaml").quality.checks.off_subject
    centre, sd = robust_centre_and_sd(frame.embed_outlier[judged].to_numpy(dtype=float))
    out: dict[str, Any] = {
        "manifest": str(manifest),
        "manifest_written": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                          time.gmtime(manifest.stat().st_mtime)),
        "judged": int(judged.sum()), "planted_outliers": int((planted_out & judged).sum()),
        "flagged_by_the_project": int(flagged.sum()),
        "absolute_cutoff": threshold.value,
        "median_distance": round(float(centre), 4),
        "robust_sd": round(float(sd), 4),
        "spreads": {},
    }
    check = make_check("off_subject")
    for spread in spreads:
        result = evaluate(check, frame, Threshold("absolute", threshold.value, spread), judged)
        added = result.flags & ~flagged
        caught = added & planted_out
        out["spreads"][f"{spread:g}"] = {
            "cutoff": round(float(result.cutoff), 4),
            "added": int(added.sum()),
            "added_planted_outliers": int(caught.sum()),
            "added_ordinary_images": int((added & ~planted_out).sum()),
            "added_by_kind": {k: int(v) for k, v in kinds[caught].value_counts().items()},
            "ordinary_share": round(float((added & ~planted_out).sum())
                                    / max(1, int((judged & ~planted_out).sum())), 4),
        }
    return out


def _named(pairs: list[str]) -> list[tuple[str, Path]]:
    out = []
    for pair in pairs:
        name, _, folder = pair.partition("=")
        if not folder:
            raise SystemExit(f"expected NAME=DIR, got {pair!r}")
        out.append((name, Path(folder)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--demo", action="append", default=[], metavar="NAME=DIR",
                        help="a project holding a demo's ground truth")
    parser.add_argument("--scale", action="append", default=[], metavar="NAME=DIR",
                        help="a project of bench/scale.py")
    parser.add_argument("--spreads", default="2.5,3,4")
    args = parser.parse_args()
    spreads = [float(s) for s in args.spreads.split(",")]
    run = Bench("spread")
    projects = {}
    for kinds_of, pairs in ((_demo_kinds, args.demo), (_scale_kinds, args.scale)):
        for name, folder in _named(pairs):
            run.log(f"{name}: {folder}")
            projects[name] = measure(folder, kinds_of, spreads)
    run.publish({"check": "off_subject", "projects": projects})


if __name__ == "__main__":
    main()
