"""The split stage end to end (real MobileNetV2 embeddings): an untagged image whose tagged
neighbours vote below `split.min_confidence` stays `unassigned`, keeps its confidence, and
data/split/report.json counts it and lists it among the least confident."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import models
from core.config import from_mapping
from core.manifest import read_table
from curate.config import Params
from curate.stages.ingest import IngestOptions, run_ingest
from curate.stages.split import LEAST_CONFIDENT, SplitOptions, run_split

pytestmark = pytest.mark.integration

N = 30


def _params(root: Path, min_confidence: float) -> Params:
    path = models.default_models_dir()
    if not models.check(path, [s for s in models.MODELS if s.name == "mobilenet_v2"])[0].ok:
        pytest.fail(f"MobileNetV2 weights missing under {path}: run `make models` first")
    return from_mapping(Params, {
        "workers": 1,
        "paths": {"store": str(root / "store"), "cache": str(root / "cache"),
                  "reports": str(root / "reports"), "models": str(path)},
        "ingest": {"sources": [{"kind": "folder", "path": str(root / "raw")}]},
        "split": {"k": 5, "min_confidence": min_confidence},
    }, "")


def _split(root: Path, min_confidence: float, out: str) -> tuple[pd.DataFrame, dict]:
    run_split(_params(root, min_confidence),
              SplitOptions(manifest=root / "ingest/manifest.parquet", tags=root / "merged.parquet",
                           out_dir=root / out, report=root / out / "split.html", workers=1))
    return (read_table(root / out / "manifest.parquet").set_index("image_id"),
            json.loads((root / out / "report.json").read_text()))


@pytest.fixture
def root(tmp_path: Path, images) -> Path:
    """N noise images ingested; a third tagged soles or pov at random (so the votes of the
    untagged images' neighbours are split, and their confidences spread)."""
    root = tmp_path
    for i in range(N):
        images.write(root / "raw" / f"img{i:02d}.jpg", images.jpeg(96, 96, seed=i))
    run_ingest(_params(root, 0.0), IngestOptions(out_dir=root / "ingest", workers=1))
    ids = sorted(read_table(root / "ingest/manifest.parquet").image_id)
    rng = np.random.default_rng(0)
    tagged = ids[: N // 3]
    pd.DataFrame({"image_id": tagged,
                  "verdict": rng.choice(["soles", "pov"], len(tagged)).tolist()}
                 ).to_parquet(root / "merged.parquet")
    return root


def test_below_min_confidence_an_image_stays_unassigned_and_report_json_says_so(
        root: Path) -> None:
    every, _ = _split(root, 0.0, "all")
    voted = every[every.dist_source.eq("propagated")]
    assert len(voted) == N - N // 3  # at 0 every untagged image is assigned
    conf = voted.dist_confidence
    assert conf.nunique() > 2
    cut = float(conf.median())
    out, report = _split(root, cut, "cut")
    untagged = out[out.dist_source.ne("tag")]
    low = untagged.dist_confidence < cut
    assert low.any() and (~low).any()
    assert (untagged.dist_source[low] == "unassigned").all()
    assert untagged.distribution[low].isna().all()
    assert (untagged.dist_source[~low] == "propagated").all()
    assert (untagged.distribution[~low] == every.distribution[untagged.index[~low]]).all()
    # the confidence is recorded either way (what `tags push --strategy uncertain` sorts by)
    assert np.allclose(untagged.dist_confidence, every.dist_confidence[untagged.index])
    assert report["sources"] == {"tag": N // 3, "propagated": int((~low).sum()),
                                 "unassigned": int(low.sum())}
    assert sum(report["distributions"].values()) == N - int(low.sum())
    fewest = int(pd.read_parquet(root / "merged.parquet").verdict.value_counts().min())
    assert report["tagged"] == N // 3 and report["k"] == min(5, max(3, fewest))
    doubtful = report["least_confident"]
    assert len(doubtful) == min(LEAST_CONFIDENT, len(untagged))
    expected = untagged.dist_confidence.sort_values(kind="stable")
    assert [d["confidence"] for d in doubtful] == [round(c, 4) for c in
                                                    expected.iloc[:len(doubtful)]]
    for d in doubtful:
        row = out.loc[d["image_id"]]
        assert d["guess"] == (None if row.dist_source == "unassigned" else row.distribution)
        assert d["source_uri"] == out.source_uri[d["image_id"]]
