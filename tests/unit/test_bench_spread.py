"""bench/spread.py: what off_subject's spread would add, split by the demo's truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.spread import _demo_kinds, measure
from curate.project.render import DEMO, render_params


def test_it_counts_the_planted_outliers_and_ordinary_images_a_spread_adds(tmp_path: Path
                                                                          ) -> None:
    rng = np.random.default_rng(0)
    alike = list(0.13 + 0.025 * rng.standard_normal(40).clip(-2, 2))
    values = alike + [0.26, 0.25, 0.50]  # a planted outlier, an odd ordinary image, one far out
    ids = [f"{k:064x}" for k in range(len(values))]
    status = ["ok"] * 42 + ["outlier"]  # the far one was flagged by the absolute 0.34
    (tmp_path / "data/quality").mkdir(parents=True)
    (tmp_path / "data/demo").mkdir(parents=True)
    (tmp_path / "params.yaml").write_text(render_params(DEMO))
    pd.DataFrame({"image_id": ids, "status": status, "q_embed_outlier": values}).to_parquet(
        tmp_path / "data/quality/manifest.parquet")
    kinds = ["base"] * 40 + ["outlier", "base", "outlier"]
    subkinds = [""] * 40 + ["non_human", "", "off_subject"]
    pd.DataFrame({"sha256": ids, "kind": kinds, "subkind": subkinds}).to_csv(
        tmp_path / "data/demo/ground_truth.csv", index=False)

    out = measure(tmp_path, _demo_kinds, [3.0])

    assert out["judged"] == 43 and out["planted_outliers"] == 2
    assert out["flagged_by_the_project"] == 1 and out["absolute_cutoff"] == 0.34
    at = out["spreads"]["3"]
    assert at["cutoff"] < 0.25
    assert at["added_planted_outliers"] == 1 and at["added_by_kind"] == {"non_human": 1}
    assert at["added_ordinary_images"] == 1 and at["added"] == 2
