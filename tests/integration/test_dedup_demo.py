"""The dedup quality goals on the full default demo (slow: ingest and embed ~520 images).

Uses the checkout's data/demo when it is the default demo, else generates one. The same
figures are what bench/dedup_quality.py prints.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from core.config import from_mapping
from core.manifest import read_table
from curate.config import Params
from curate.dedup.hashing import HashSpec, hash_image
from curate.demo.generate import _version_text, generate_demo
from curate.stages.dedup import DedupOptions, run_dedup
from curate.stages.ingest import IngestOptions, run_ingest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("dedup_quality", REPO / "bench/dedup_quality.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pd.DataFrame]:
    demo = REPO / "data/demo"
    marker = demo / "VERSION"
    if not (marker.exists() and marker.read_text() == _version_text(0, 420)):
        demo = tmp_path_factory.mktemp("demo") / "demo"
        generate_demo(demo, seed=0, n_base=420, workers=2)
    root = tmp_path_factory.mktemp("run")
    params = from_mapping(Params, {
        "paths": {"store": str(root / "store"), "cache": str(root / "cache"),
                  "reports": str(root / "reports"), "models": str(REPO / "models/pretrained")},
        "ingest": {"sources": [{"kind": "folder", "path": str(demo / "raw")}]},
    }, "")
    run_ingest(params, IngestOptions(out_dir=root / "ingest"))
    result = run_dedup(params, DedupOptions(in_manifest=root / "ingest/manifest.parquet",
                                            out_dir=root / "dedup"))
    return demo, root, read_table(result.outputs["manifest"])


def test_default_params_reach_the_quality_goal(demo_run) -> None:
    """Easy copies >= 0.95 and each repost kind >= 0.9 linked to their original, no false
    link between two demo photos (bench/dedup_quality.py's goals)."""
    demo, _, out = demo_run
    bench = _bench()
    root, kind = bench.truth_groups(demo)
    truth = pd.read_parquet(demo / "ground_truth.parquet")
    res = bench.evaluate(out, root, kind, dict(zip(truth.sha256, truth.file)))
    assert all(bench.goals(res).values()), res
    assert res["link_precision"] == 1.0, res["false_links"]


def test_fast_decode_gives_the_full_decode_hash_on_99_percent(demo_run) -> None:
    _, root, out = demo_run
    store = root / "store"
    same = [hash_image(store / r.store_path, r.width, r.height, HashSpec(fast_decode=True),
                          r.exif_orientation).value
            == hash_image(store / r.store_path, r.width, r.height, HashSpec(fast_decode=False),
                          r.exif_orientation).value
            for r in out.itertuples()]
    assert sum(same) / len(same) >= 0.99, f"{len(same) - sum(same)} of {len(same)} differ"
