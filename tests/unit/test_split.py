"""Split: tags win, k-NN propagates with a confidence, k-means only proposes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from curate.config import Params
from curate.split.propagate import cross_validated_accuracy, kmeans, knn_predict
from curate.stages.split import assign, tagged_distribution


def _two_blobs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centre = np.zeros(32)
    centre[0] = 2.5
    x = np.vstack([rng.normal(0, 1, (n, 32)) + centre, rng.normal(0, 1, (n, 32)) - centre])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.r_[np.zeros(n, int), np.ones(n, int)]


def test_knn_separates_blobs_and_is_unsure_in_between() -> None:
    x, y = _two_blobs(100)
    pred = knn_predict(x[::2], y[::2], x[1::2], 2, k=10)
    assert (pred.labels == y[1::2]).mean() > 0.95
    middle = np.zeros((1, 32), np.float32)
    middle[0, 1] = 1.0  # orthogonal to both centres
    assert knn_predict(x, y, middle, 2, k=20).confidence[0] < 0.8
    assert cross_validated_accuracy(x, y, 2) > 0.95
    loo = knn_predict(x, y, x, 2, k=1, exclude_self=True)  # never its own label for free
    assert (loo.labels == y).mean() < 1.0 or len(set(loo.confidence)) > 1


def test_kmeans_finds_the_two_groups_deterministically() -> None:
    x, y = _two_blobs(80, seed=1)
    a, b = kmeans(x, 2, seed=3), kmeans(x, 2, seed=3)
    assert np.array_equal(a, b)
    assert max((a == y).mean(), (a != y).mean()) > 0.95


def test_assign_uses_tags_then_propagation_then_unassigned() -> None:
    x, y = _two_blobs(30)
    names = np.array(["soles", "pov"])
    live = pd.DataFrame({"image_id": [f"id{i}" for i in range(len(y))]})
    tagged_ids = [f"id{i}" for i in (*range(0, 10), *range(30, 40))]
    tags = pd.DataFrame({"image_id": [*tagged_ids, "id12"],
                         "verdict": ["soles"] * 10 + ["pov"] * 10 + ["disputed"]})
    tagged = tagged_distribution(live, tags, Params())
    assert pd.isna(tagged.iloc[12])  # disputed is not a tag
    x[7] = np.nan  # an image whose embedding failed: fine when tagged, else unassigned
    out, report = assign(live, x, tagged, Params())
    assert (out.dist_source.iloc[[0, 9, 30, 39]] == "tag").all()
    assert out.dist_source.iloc[7] == "tag"  # a tag needs no embedding
    x[17] = np.nan
    out, report = assign(live, x, tagged, Params())
    assert out.dist_source.iloc[17] == "unassigned"
    prop = out[out.dist_source == "propagated"]
    assert len(prop) > 30
    truth = names[y[prop.index]]
    assert (prop.distribution.to_numpy() == truth).mean() > 0.95
    assert report["tagged"] == 20 and report["cv_accuracy"] > 0.9


def test_no_tags_proposes_clusters_and_says_so() -> None:
    x, _ = _two_blobs(20)
    live = pd.DataFrame({"image_id": [f"id{i}" for i in range(40)]})
    out, report = assign(live, x, tagged_distribution(live, None, Params()), Params())
    assert set(out.distribution) == {"cluster_0", "cluster_1"}
    assert "proposed" in report["mode"]


def test_uncertain_strategy_sends_the_least_confident_first() -> None:
    from curate.tags.select import SelectionError, select

    rows = pd.DataFrame({"image_id": ["a", "b", "c", "d"],
                         "dist_confidence": [0.9, 0.4, np.nan, 0.6]})
    assert select("uncertain", rows, 3, seed=0) == ["c", "b", "d"]
    import pytest

    with pytest.raises(SelectionError, match="dvc repro split"):
        select("uncertain", rows.drop(columns="dist_confidence"), 2, seed=0)
